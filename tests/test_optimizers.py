"""SkipNonFinite: a bad batch leaves the weights and every inner optimizer variable bit-identical; a good one
trains exactly as the inner optimizer alone.

Backend-neutral: run this file once per backend (``KERAS_BACKEND=tensorflow|jax|torch``). It imports no
TensorFlow at module level (the torch environment has none). The reference is the bare inner optimizer:
the same model, the same batches, the stock Keras train step.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasce.optimizers import SkipNonFinite, all_finite

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()

INNER = {
    "adam": lambda: keras.optimizers.Adam(0.01),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01),
}


@pytest.fixture(autouse=True)
def _fresh_torch_compile_cache():
    """torch.compile recompiles Keras's train step for each new model and, past its recompile limit (8),
    silently runs it eagerly: without a reset, later tests would compare an eager model with a compiled one."""
    if BACKEND == "torch":
        import torch

        torch.compiler.reset()
    yield


def batches():
    """A good batch, a bad batch of each kind, and a second good batch (float32 [8, 3] -> [8, 1])."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 8, 3)).astype("float32")
    y1, y2 = rng.normal(size=(2, 8, 1)).astype("float32")
    nan_x = x1.copy()
    nan_x[3, 1] = np.nan
    inf_x = x1.copy()
    inf_x[0, 0] = np.inf
    nan_y = y1.copy()
    nan_y[5, 0] = np.nan  # the input is fine; the loss goes NaN
    bad = {"nan_input": (nan_x, y1), "inf_input": (inf_x, y1), "nan_loss": (x1, nan_y)}
    return (x1, y1), bad, (x2, y2)


def model(optimizer, jit_compile, weights=None):
    """A plain Keras MLP (3 -> 4 -> 1), mean squared error, compiled with `optimizer`."""
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    if weights is not None:
        net.set_weights(weights)
    net.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    return net


def values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def assert_identical(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w, strict=True)


def trained_pair(inner, jit_compile):
    """(wrapped model, reference model with the bare inner optimizer), equal weights, one good step each."""
    good, _, _ = batches()
    wrapped = model(SkipNonFinite(INNER[inner]()), jit_compile)
    reference = model(INNER[inner](), jit_compile, weights=wrapped.get_weights())
    for net in (wrapped, reference):
        net.train_on_batch(*good)
    return wrapped, reference


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager_or_graph", "jit"])
@pytest.mark.parametrize("inner", sorted(INNER))
@pytest.mark.parametrize("bad", ["nan_input", "inf_input", "nan_loss"])
def test_a_bad_batch_changes_nothing_and_a_good_one_trains_as_the_inner_optimizer(inner, jit_compile, bad):
    wrapped, reference = trained_pair(inner, jit_compile)
    _, bad_batches, good = batches()
    optimizer = wrapped.optimizer
    assert_identical(values(wrapped.weights), values(reference.weights))  # the first good step is the inner's
    before = values(wrapped.weights), values(optimizer.inner_optimizer.variables)

    wrapped.train_on_batch(*bad_batches[bad])  # inf_input: a finite loss (tanh saturates), NaN gradients

    assert_identical(values(wrapped.weights), before[0])
    assert_identical(values(optimizer.inner_optimizer.variables), before[1])
    assert int(keras.ops.convert_to_numpy(optimizer.skipped_steps)) == 1
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 1

    wrapped.train_on_batch(*good)
    reference.train_on_batch(*good)
    assert_identical(values(wrapped.weights), values(reference.weights))
    assert_identical(values(optimizer.inner_optimizer.variables), values(reference.optimizer.variables))
    assert int(keras.ops.convert_to_numpy(optimizer.skipped_steps)) == 1


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager_or_graph", "jit"])
def test_fit_over_a_bad_batch_trains_as_the_inner_optimizer_on_the_good_ones(jit_compile):
    (x1, y1), bad, (x2, y2) = batches()
    x, y = np.concatenate([x1, bad["nan_input"][0], x2]), np.concatenate([y1, y1, y2])
    wrapped = model(SkipNonFinite(INNER["adam"]()), jit_compile)
    reference = model(INNER["adam"](), jit_compile, weights=wrapped.get_weights())
    wrapped.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    for batch in ((x1, y1), (x2, y2)):
        reference.train_on_batch(*batch)
    assert_identical(values(wrapped.weights), values(reference.weights))
    assert int(keras.ops.convert_to_numpy(wrapped.optimizer.skipped_steps)) == 1
    assert int(keras.ops.convert_to_numpy(wrapped.optimizer.iterations)) == 2


def test_stock_optimizer_applies_the_nan_the_control():
    """The failure the wrapper prevents: the bare optimizer turns the weights NaN and counts the step."""
    good, bad, _ = batches()
    net = model(INNER["adam"](), jit_compile=True)
    net.train_on_batch(*good)
    net.train_on_batch(*bad["nan_input"])
    assert not all(np.isfinite(w).all() for w in values(net.weights))
    assert int(keras.ops.convert_to_numpy(net.optimizer.iterations)) == 2


def test_direct_apply_skips_and_applies():
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = SkipNonFinite(keras.optimizers.SGD(0.5, momentum=0.5))
    optimizer.apply([keras.ops.convert_to_tensor(np.array([np.nan, 0, 0], "float32"))], [variable])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), np.ones(3, "float32"))
    optimizer.apply([keras.ops.convert_to_tensor(np.full(3, 2.0, "float32"))], [variable])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), np.zeros(3, "float32"))  # 1 - 0.5 * 2
    assert int(keras.ops.convert_to_numpy(optimizer.skipped_steps)) == 1
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 1


@pytest.mark.parametrize(
    "tensors, expected",
    [
        ([np.ones(3, "float32"), None, np.zeros((2, 2), "float32")], True),
        ([np.ones(3, "float32"), np.array([1.0, np.nan], "float32")], False),
        ([np.array([np.inf, -np.inf], "float32")], False),
        ([np.array([-np.inf], "float16"), np.ones(2, "float32")], False),
        ([np.array([6e4, 6e4], "float16")], True),  # summed in float32: no float16 overflow
        ([], True),
    ],
)
def test_all_finite(tensors, expected):
    converted = [None if t is None else keras.ops.convert_to_tensor(t) for t in tensors]
    assert bool(keras.ops.convert_to_numpy(all_finite(converted))) is expected


def test_saved_and_loaded_with_the_model(tmp_path):
    good, bad, second = batches()
    net = model(SkipNonFinite(INNER["adam"]()), jit_compile=False)
    net.train_on_batch(*good)
    net.train_on_batch(*bad["nan_input"])
    path = tmp_path / "model.keras"
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, SkipNonFinite)
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.Adam)
    assert loaded.optimizer.inner_optimizer.get_config() == net.optimizer.inner_optimizer.get_config()
    assert_identical(values(loaded.optimizer.variables), values(net.optimizer.variables))
    for m in (net, loaded):
        m.train_on_batch(*second)
    assert_identical(values(loaded.weights), values(net.weights))


def test_config_round_trip_and_learning_rate_pass_through():
    optimizer = SkipNonFinite(keras.optimizers.SGD(0.25, momentum=0.5), name="guarded")
    config = keras.optimizers.serialize(optimizer)
    assert config["config"]["inner_optimizer"]["class_name"] == "SGD"
    copy = keras.optimizers.deserialize(config)
    assert isinstance(copy, SkipNonFinite) and copy.name == "guarded"
    assert copy.inner_optimizer.get_config() == optimizer.inner_optimizer.get_config()
    optimizer.learning_rate = 0.125
    assert float(keras.ops.convert_to_numpy(optimizer.inner_optimizer.learning_rate)) == 0.125


def test_inner_optimizer_must_be_an_optimizer():
    with pytest.raises(TypeError, match=r"`inner_optimizer` must be a keras.optimizers.Optimizer instance. Received"):
        SkipNonFinite("adam")


DISTRIBUTED = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf, keras
    from kerasce.distribute import split_cpu
    from kerasce.optimizers import SkipNonFinite
    split_cpu(2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    bad = x.copy()
    bad[11, 2] = np.nan  # on the second replica's half of the global batch only
    out = {}
    # XLA under MirroredStrategy on logical CPUs fails in TensorFlow itself, stock optimizer included
    # ("Trying to access resource ... located in device CPU:1 from device CPU:0").
    for jit in (False,):
        def make(optimizer):
            net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
            net.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
            return net
        with strategy.scope():
            wrapped = make(SkipNonFinite(keras.optimizers.Adam(0.01)))
        single = make(keras.optimizers.Adam(0.01))
        single.set_weights(wrapped.get_weights())
        for net in (wrapped, single):
            net.fit(x, y, batch_size=16, shuffle=False, verbose=0)  # fit splits the batch: 8 rows per replica
        before = [v.numpy() for v in wrapped.weights + wrapped.optimizer.inner_optimizer.variables]
        wrapped.fit(bad, y, batch_size=16, shuffle=False, verbose=0)
        after = [v.numpy() for v in wrapped.weights + wrapped.optimizer.inner_optimizer.variables]
        unchanged = all(np.array_equal(a, b) for a, b in zip(before, after))
        for net in (wrapped, single):
            net.fit(x[::-1], y, batch_size=16, shuffle=False, verbose=0)
        gap = max(float(np.max(np.abs(a - b))) for a, b in zip(wrapped.get_weights(), single.get_weights()))
        out[str(jit)] = dict(unchanged=unchanged, skipped=int(wrapped.optimizer.skipped_steps.numpy()),
                             iterations=int(wrapped.optimizer.iterations.numpy()), gap=gap)
    print(json.dumps(out))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute needs the TensorFlow backend")
def test_mirrored_strategy_skips_on_every_replica_when_one_saw_a_nan():
    """MirroredStrategy on 2 logical CPUs: a NaN in one replica's shard skips the update on both; the good
    steps equal one device on the same global batch (to float tolerance: the all-reduce sums in another order)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["KERAS_BACKEND"] = "tensorflow"
    proc = subprocess.run([sys.executable, "-c", DISTRIBUTED], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(results) == ["False"]
    got = results["False"]
    assert got["unchanged"]
    assert (got["skipped"], got["iterations"]) == (1, 2)
    assert got["gap"] < 1e-6


@pytest.mark.skipif(BACKEND != "tensorflow", reason="ImageClassifier needs the TensorFlow backend")
def test_image_classifier_trains_through_skip_non_finite_and_keeps_it_when_loaded(tmp_path):
    from kerasce.classifiers import ImageClassifier

    inputs = keras.Input((3,))
    net = ImageClassifier(inputs, keras.layers.Dense(2)(inputs))
    net.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", jit_compile=True)
    assert isinstance(net.optimizer, SkipNonFinite)
    (x, _), bad, _ = batches()
    labels = np.arange(8) % 2
    net.fit(x, labels, batch_size=8, verbose=0)
    before = values(net.weights), values(net.optimizer.inner_optimizer.variables)
    net.fit(bad["nan_input"][0], labels, batch_size=8, verbose=0)
    assert_identical(values(net.weights), before[0])
    assert_identical(values(net.optimizer.inner_optimizer.variables), before[1])
    net.save(tmp_path / "classifier.keras")
    loaded = keras.saving.load_model(tmp_path / "classifier.keras")
    assert isinstance(loaded.optimizer, SkipNonFinite)
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.Adam)  # not wrapped twice
    assert_identical(values(loaded.optimizer.variables), values(net.optimizer.variables))
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.skipped_steps)) == 1
