"""The one gate to TensorFlow for training: import it once, quiet, on a bounded number of cores.

The entry point (`training.train`) passes through here before it imports any module that imports TensorFlow at its
top (`layers`, the recipes, `fit`, `export`, `trainer`), because both settings only take effect early: the C++ log
level is read when TensorFlow is first imported, and the thread pools are fixed when the runtime first runs an op.
"""

from __future__ import annotations

import os

_tf = None


def tensorflow(threads: int = 2):
    """Import TensorFlow once, pinned to `threads` cores when the runtime is not initialised yet."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # the runtime was already initialised by the caller; keep its settings
            pass
        _tf = tf
    return _tf
