"""Which Keras backend kerasce's parts need: one check, one message, for the parts that run on TensorFlow only.

The losses and `kerasce.optimizers` run on every Keras backend. `ImageClassifier`, `ReinforceAgent`,
`kerasce.export` and `kerasce.distribute` are built on TensorFlow (``tf.GradientTape``, SavedModel,
``tf.distribute``); on another backend they refuse at construction with the message of `require_tensorflow`.
"""

from __future__ import annotations

import keras

__all__ = ["require_tensorflow"]


def require_tensorflow(what: str) -> None:
    """Raises unless Keras runs on TensorFlow; `what` names the part that needs it (e.g. ``"ImageClassifier"``).

    Raises:
        RuntimeError: ``KERAS_BACKEND`` is ``jax``, ``torch`` or another backend; the message says how to switch.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f'`KERAS_BACKEND` must be "tensorflow" for {what}, which runs on TensorFlow only. '
            f"Received: KERAS_BACKEND={backend}. Set KERAS_BACKEND=tensorflow before Python imports keras "
            '(and pip install "kerasce[tensorflow]").'
        )
