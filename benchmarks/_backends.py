"""How each Keras backend runs one timed forward + backward step, and its own cross-entropy ops.

`load(name)` imports only that backend's framework (and Optax on JAX). A *step* is a compiled function
``step(labels, logits) -> (mean loss, d loss / d logits)``; a backend times it in each of its ``modes``:

- ``tensorflow``: ``graph`` (``tf.function``) and ``xla`` (``tf.function(jit_compile=True)``, what Keras's
  default ``jit_compile="auto"`` gives on a GPU); reference ops ``tf.nn``'s fused cross-entropies.
- ``jax``: ``jit`` (``jax.jit(jax.value_and_grad(...))``); reference ops Optax's
  ``softmax_cross_entropy_with_integer_labels`` and ``sigmoid_binary_cross_entropy``.
- ``torch``: ``eager`` and ``compile`` (``torch.compile`` of the forward; autograd compiles the backward);
  reference ops ``torch.nn.functional.cross_entropy`` and ``binary_cross_entropy_with_logits``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

LossFn = Callable[[Any, Any], Any]  # (labels, logits) -> scalar mean loss
Step = Callable[[Any, Any], tuple[Any, Any]]  # (labels, logits) -> (loss, gradient)


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    modes: tuple[str, ...]  # the compiled forms each variant is timed in
    reference: str  # the name of the framework's own ops in tables ("tf.nn", "optax", "F")
    reference_target: float | None  # kerasce / reference must stay at or under this (None: no target)
    make_step: Callable[[LossFn, str], Step]  # (loss_fn, mode) -> step
    sparse_ce: LossFn  # mean softmax cross-entropy of integer ids [...] and logits [..., C]
    sigmoid_ce: LossFn  # mean sigmoid cross-entropy of labels and logits [..., C]
    ids_dtype: str  # the dtype the reference ops take class ids in
    wait: Callable[[Any], Any]  # blocks until a step's result is computed
    versions: str
    # (loss_fn, labels, logits) -> MiB a step allocates (temporaries + outputs), from the compiler's own
    # analysis; None: measure the process's resident memory instead
    compiled_memory: Callable[[LossFn, Any, Any], float] | None = None


def load(name: str) -> Backend:
    """The backend `name`; ``KERAS_BACKEND`` must already name it (Keras reads it once, on import)."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != name:
        raise ValueError(f"`KERAS_BACKEND` must be {name!r}. Received: KERAS_BACKEND={os.environ.get('KERAS_BACKEND')}")
    return {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}[name]()


def _tensorflow() -> Backend:
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # each variant is its own tf.function: no retracing warnings

    def make_step(loss_fn: LossFn, mode: str) -> Step:
        @tf.function(jit_compile=mode == "xla")
        def step(labels, logits):
            with tf.GradientTape() as tape:
                tape.watch(logits)
                loss = loss_fn(labels, logits)
            return loss, tape.gradient(loss, logits)

        return step

    return Backend(
        name="tensorflow",
        modes=("graph", "xla"),
        reference="tf.nn",
        reference_target=None,
        make_step=make_step,
        sparse_ce=lambda y, z: tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, z)),
        sigmoid_ce=lambda y, z: tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, z)),
        ids_dtype="int32",
        wait=lambda out: out[1].numpy(),
        versions=f"tensorflow {tf.__version__}",
    )


def _jax() -> Backend:
    import jax
    import jax.numpy as jnp

    try:
        import optax
    except ImportError as error:
        raise SystemExit(
            f"--backend jax compares with Optax, which is not installed ({error}): pip install optax"
        ) from error

    def jitted(loss_fn: LossFn) -> Any:
        return jax.jit(jax.value_and_grad(lambda logits, labels: loss_fn(labels, logits)))

    def make_step(loss_fn: LossFn, mode: str) -> Step:
        value_and_grad = jitted(loss_fn)
        return lambda labels, logits: value_and_grad(logits, labels)

    def compiled_memory(loss_fn: LossFn, labels: Any, logits: Any) -> float:
        # XLA:CPU keeps a step's temporaries between calls: the resident size does not show them.
        analysis = jitted(loss_fn).lower(logits, labels).compile().memory_analysis()
        return (analysis.temp_size_in_bytes + analysis.output_size_in_bytes) / 2**20

    return Backend(
        name="jax",
        modes=("jit",),
        reference="optax",
        reference_target=1.1,
        make_step=make_step,
        sparse_ce=lambda y, z: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y)),
        sigmoid_ce=lambda y, z: jnp.mean(optax.sigmoid_binary_cross_entropy(z, y)),
        ids_dtype="int32",
        wait=lambda out: out[1].block_until_ready(),
        versions=f"jax {jax.__version__}, optax {optax.__version__}",
        compiled_memory=compiled_memory,
    )


def _torch() -> Backend:
    # OpenMP's default spin-wait makes calls 30-300x slower when the other core is busy (a shared machine).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    import torch.nn.functional as F

    # Every variant is compiled on its own, but Dynamo counts recompiles per code object (Keras's
    # `Loss.__call__` serves them all): past its default limit of 8 it would silently run the rest eagerly.
    torch._dynamo.config.recompile_limit = 256

    def make_step(loss_fn: LossFn, mode: str) -> Step:
        forward = torch.compile(loss_fn) if mode == "compile" else loss_fn

        def step(labels, logits):
            logits = logits.detach().requires_grad_(True)
            loss = forward(labels, logits)
            (grad,) = torch.autograd.grad(loss, logits)
            return loss.detach(), grad

        return step

    return Backend(
        name="torch",
        modes=("eager", "compile"),
        reference="F",
        reference_target=1.2,
        make_step=make_step,
        sparse_ce=lambda y, z: F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1)),
        sigmoid_ce=lambda y, z: F.binary_cross_entropy_with_logits(z, y),
        ids_dtype="int64",
        wait=lambda out: out[1],  # eager CPU work is done when the call returns
        versions=f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
    )
