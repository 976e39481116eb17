"""Following a version label while the pipeline runs: the in-process hot swap.

A `FollowedModel` serves the version that its labels name in the model repository (model_handlers/labels.py), or
one fixed version. With a `refresh_secs`, a background thread resolves the labels again every `refresh_secs`;
when they name another version, the thread loads it beside the serving one (a load checks the signature and warms
up), and only then swaps it in. Scoring takes the serving copy once per call, so a batch is scored by one version,
the switch falls between batches, and no batch waits for a load: Beam's own refresh (`model_metadata_pcoll`)
loads inside `process()`, so the batch that first sees a new model stalls, and a failed load leaves it serving the
old model under the new one's name.

The old copy is dropped and collected at the swap (a loaded SavedModel holds reference cycles, so only the cyclic
collector frees it). A batch still scoring with it keeps it until that batch ends; the next collection frees it.

A version that fails to load, to match the interface or to warm up is refused: the serving one stays, and the
refusal is logged and reported. It is not tried again until the labels name another version and come back to it.
A worker that starts while its label names such a version has nothing serving yet: it falls back (for `stable`,
to `previous`), as its running peers, which refused the version, still serve that one.

The thread cannot increment Beam metrics, which belong to the bundle being processed, so what it does is kept as
`News`, which the handler takes with the next batch and counts.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

_LOGGER = logging.getLogger(__name__)

SWAPPED = "swapped"
REFUSED = "refused"


class News(NamedTuple):
    """Something the follower did since the handler last asked: a swap, or a refused version."""

    kind: str  # SWAPPED or REFUSED
    version: int  # the version swapped in, or refused
    detail: str  # for a swap, "from N in S s"; for a refusal, the reason


class FollowedModel:
    """The serving copy of one model, and the thread that moves it along its labels.

    `resolve()` says which version should serve (it may raise: the serving one then stays, and the problem is
    logged once); `load(version)` returns a loaded, checked and warmed-up copy with a `predict` method.
    """

    def __init__(
        self,
        name: str,
        resolve: Callable[[], int],
        load: Callable[[int], Any],
        refresh_secs: float = 0,
        fallbacks: Callable[[], list[int]] | None = None,
    ):
        self._name = name
        self._resolve = resolve
        self._load = load
        self._lock = threading.Lock()
        self._refused: set[int] = set()
        self._news: list[News] = []
        self._problem: str | None = None
        self._version = resolve()
        freeze_what_lives_forever()
        self._model = self._first_load(fallbacks)
        self._stop = threading.Event()
        if refresh_secs > 0:
            # The thread holds only a weak reference, so that the follower is freed (and the thread ends) when Beam
            # lets go of the model.
            weakref.finalize(self, self._stop.set)
            threading.Thread(
                target=_follow,
                args=(weakref.ref(self), refresh_secs, self._stop),
                name=f"follow-{name}-model",
                daemon=True,
            ).start()

    def _first_load(self, fallbacks: Callable[[], list[int]] | None):
        """The version the labels name; if it cannot serve, the first of `fallbacks()` that can (a worker that
        starts, or restarts, while the label names a broken version serves what its running peers serve, the
        version before it); if none can, the error: a worker without a model cannot score."""
        try:
            return self._load(self._version)
        except Exception as error:  # pylint: disable=broad-except
            candidates = [v for v in (fallbacks() if fallbacks else []) if v != self._version]
            if not candidates:
                raise
            refused, reason = self._version, f"{type(error).__name__}: {error}"
            self._refused.add(refused)
            self._news.append(News(REFUSED, refused, reason))
            self._version = candidates[0]
            _LOGGER.error(
                "%s: refused version %d, so version %d serves (its fallback): %s",
                self._name,
                refused,
                self._version,
                reason,
            )
            return self._load(self._version)

    def predict(self, *args) -> tuple[int, Any, list[News]]:
        """Calls the serving copy's `predict`: (its version, its answer, the news since the last call). The copy
        is taken once, so one call is answered by one version; a plain tuple, so it crosses a process boundary
        (Beam's MultiProcessShared) as it is."""
        with self._lock:
            version, model = self._version, self._model
            news, self._news = self._news, []
        return version, model.predict(*args), news

    def pid(self) -> int:
        """The process holding the copies (tests use it to prove cross-process sharing)."""
        return os.getpid()

    def serving_version(self) -> int:
        with self._lock:
            return self._version

    def close(self) -> None:
        self._stop.set()

    def refresh(self) -> News | None:
        """One check of the labels; what it did, if anything. The thread calls it every `refresh_secs`."""
        try:
            wanted = self._resolve()
        except Exception as error:  # pylint: disable=broad-except
            problem = f"{type(error).__name__}: {error}"
            if problem != self._problem:  # once per distinct problem, not once per check
                _LOGGER.warning(
                    "%s: cannot read its version label, so version %s serves on: %s", self._name, self._version, problem
                )
                self._problem = problem
            return None
        self._problem = None
        self._refused &= {wanted}  # a version refused before is tried again once its label has moved away and back
        if wanted == self._version or wanted in self._refused:
            return None
        start = time.monotonic()
        try:
            model = self._load(wanted)
        except Exception as error:  # pylint: disable=broad-except
            self._refused.add(wanted)
            reason = f"{type(error).__name__}: {error}"
            _LOGGER.error(
                "%s: refused version %d, so version %s serves on: %s", self._name, wanted, self._version, reason
            )
            return self._tell(News(REFUSED, wanted, reason))
        seconds = time.monotonic() - start
        with self._lock:
            old = self._version
            self._version, self._model = wanted, model
        del model
        # A loaded SavedModel holds reference cycles, so dropping it frees nothing until Python's cyclic collector
        # runs: collect now, so that the old copy's memory is released at the swap rather than at some later
        # collection. TensorFlow's own objects were frozen out of collections (freeze_what_lives_forever), so this
        # walks the models and what the pipeline made since. A copy that a batch still held is released by the
        # next collection.
        gc.collect()
        _LOGGER.info(
            "%s: version %d now serves, after %d (loaded beside it in %.2fs)", self._name, wanted, old, seconds
        )
        return self._tell(News(SWAPPED, wanted, f"from {old} in {seconds:.2f}s"))

    def _tell(self, news: News) -> News:
        with self._lock:
            self._news.append(news)
        return news


_frozen = False


def freeze_what_lives_forever() -> None:
    """Once per process, before the first model loads: TensorFlow's modules hold a great many objects that live as
    long as the process, and every full collection (Python's own, and the one at a swap) walks them all, holding
    the GIL for about 0.25 s. gc.freeze() moves everything alive now into a generation no collection visits; the
    models loaded after this stay collectable, so a swapped-out copy is still freed."""
    global _frozen  # noqa: PLW0603 (one process-wide fact)
    if _frozen:
        return
    import tensorflow  # noqa: F401  (its modules are what this takes out of the collections)

    gc.collect()  # what is garbage now is freed, not frozen
    gc.freeze()
    _frozen = True


def _follow(follower_ref: weakref.ref, refresh_secs: float, stop: threading.Event) -> None:
    while not stop.wait(refresh_secs):
        follower = follower_ref()
        if follower is None:
            return
        try:
            follower.refresh()
        except Exception:  # pylint: disable=broad-except
            _LOGGER.exception("the model follower's check failed; it checks again in %ss", refresh_secs)
        del follower
