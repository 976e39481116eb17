"""The errors a user fixes before anything starts, and their one root.

`UsageError` is the root of every error that means "the command, its options or what they point at cannot work":
a bad flag, a model that is not in the repository or does not take the schema's features, a TF Serving that refuses
or does not answer, a Pub/Sub topic or subscription that is missing. It is the ground floor's (plumbing.cli), which
every command line turns into one `error:` line and exit 2, without a traceback.
"""

from __future__ import annotations

from plumbing.cli import UsageError


class ModelNotFoundError(UsageError, FileNotFoundError):
    """The model repository has no (such) version of the model."""


class SignatureMismatchError(UsageError, ValueError):
    """The model's serving signature does not take the interface's features, or lacks its outputs."""


class TFServingRefused(UsageError, ValueError):
    """TF Serving answered, with a permanent error (an unknown model, version or label)."""


class TFServingUnreachable(UsageError, ConnectionError):
    """TF Serving did not answer within the retry budget, when the job was about to start."""
