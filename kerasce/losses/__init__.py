"""Cross-entropy losses for Keras 3 on every backend, the policy gradient as the same loss weighted by the
return, and the Gaussian negative log-likelihood for continuous actions.

Shape letters used below: ``B`` the batch (any number of leading dimensions, e.g. ``[B, H, W]`` for
per-pixel losses), ``C`` the classes (softmax) or labels (sigmoid), ``D`` the action dimensions.

Each loss is a pure function that returns one value per example (the class axis reduced), plus a thin
``keras.losses.Loss`` class of the matching name that stores the options and lets Keras apply
``sample_weight``, the reduction, masks and the ``1 / num_replicas`` scaling under ``tf.distribute``. The
math is written once in ``keras.ops`` and runs on the TensorFlow, JAX and PyTorch backends, eagerly and
under ``jit_compile`` (TF XLA, ``jax.jit``, ``torch.compile``), with the same values and gradients.

Numerics shared by all functions:

* Half-precision inputs (float16, bfloat16) are computed in float32 and the result is float32; other
  float dtypes are kept.
* ``from_logits=True`` uses log-sum-exp / softplus forms, finite for logits of any magnitude. A Keras
  ``softmax`` / ``sigmoid`` output passed with ``from_logits=True`` gets a warning on TensorFlow and torch
  (JAX arrays carry no trace of the activation, so there it cannot be detected).
* ``from_logits=False`` clips probabilities to ``[eps, 1 - eps]`` (``eps = keras.config.epsilon()``)
  for the *value* only. The gradient is passed straight through the clip, so a confidently wrong
  probability of exactly 0 still gets the (large, finite) gradient ``-1 / eps`` instead of the zero that a
  plain ``clip`` gives. When the probabilities come from a Keras ``softmax``/``sigmoid`` activation, the
  logits Keras caches on that tensor are used instead (as Keras's own losses do; TensorFlow and torch).
* Bad input is reported and never reaches the weights. Shapes and options: ``ValueError`` when traced.
  Values (and shapes known only at run time): where the backend can raise before the update, it does —
  ``tf.errors.InvalidArgumentError`` eagerly or inside ``tf.function`` (the loss *and its gradient* depend
  on the check, so Keras's ``fit`` raises before ``apply_gradients``), ``ValueError`` on eager JAX
  (``jit_compile=False``) and eager torch. Where nothing can raise (TF XLA, ``jax.jit``, ``torch.compile``;
  Keras's default ``jit_compile="auto"`` on a GPU, and on JAX) the loss and its gradients are NaN for that
  batch instead: `kerasce.optimizers.SkipNonFinite` skips such updates.
* The label form of `softmax_cross_entropy` (class ids or one-hot / soft) is read from the shapes, at run
  time where the traced shapes fit both (TensorFlow's ``[None, None]`` labels for ``[None, C]``
  predictions), or stated with ``label_form``.
* On TensorFlow under XLA, the fused TF cross-entropy forms are used where XLA compiles them faster.
"""

from kerasce.losses.classes import (
    GaussianNLL,
    PolicyGradientLoss,
    SigmoidCrossEntropy,
    SoftmaxCrossEntropy,
)
from kerasce.losses.gaussian import gaussian_entropy, gaussian_nll
from kerasce.losses.policy_gradient import policy_gradient_loss
from kerasce.losses.sigmoid import sigmoid_cross_entropy
from kerasce.losses.softmax import softmax_cross_entropy, softmax_entropy

__all__ = [
    "GaussianNLL",
    "PolicyGradientLoss",
    "SigmoidCrossEntropy",
    "SoftmaxCrossEntropy",
    "gaussian_entropy",
    "gaussian_nll",
    "policy_gradient_loss",
    "sigmoid_cross_entropy",
    "softmax_cross_entropy",
    "softmax_entropy",
]
