"""Which predictions the losses work from: logits, the logits Keras cached on an activation's output, or
probabilities; and the warning for probabilities passed as logits."""

from __future__ import annotations

import warnings
from typing import Any

from ._backend import activation_of, cached_logits  # the backend seam: framework internals live there


def resolve_logits(predictions: Any, from_logits: bool, fn: str, activation: str) -> tuple[Any, bool]:
    """``(predictions, from_logits)`` the math should use.

    With ``from_logits=False``, the logits that a Keras ``softmax`` / ``sigmoid`` activation cached on its
    output are used instead of the probabilities (exact, as Keras's own losses do). With ``from_logits=True``,
    an output that the backend can tell comes from such an activation gets a warning (as Keras's own losses
    give): the loss would apply a second `activation` to probabilities. TensorFlow and torch can tell (Keras
    caches the logits on the output tensor; in a TensorFlow graph the producing op also tells); JAX cannot
    (its arrays take no attributes), so there the mistake passes silently.
    """
    if from_logits:
        produced_by = activation_of(predictions)
        if produced_by is not None:
            warnings.warn(
                f"`{fn}` received `from_logits=True`, but the predictions were produced by a {produced_by} "
                f"activation (a Keras softmax / sigmoid output): they are probabilities, not logits, and the loss "
                f"would apply a second {activation} to them. Pass `from_logits=False`, or remove the activation "
                "from the model's output layer.",
                stacklevel=3,
            )
        return predictions, True
    cached = cached_logits(predictions)
    if cached is not None:
        return cached, True
    return predictions, False
