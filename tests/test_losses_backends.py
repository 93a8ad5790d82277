"""Every loss and option inside Keras's compile / fit / evaluate / predict on the active backend, with
``jit_compile`` off and on (TF XLA, ``jax.jit``, ``torch.compile``); bad data under jit; the warning for
probabilities passed as logits; what ``import kerasce.losses`` imports; ``.keras`` files of kerasce 0.2.

Run once per backend: ``KERAS_BACKEND=jax|torch|tensorflow python -m pytest tests/test_losses_backends.py``.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from backends import BACKEND, data_error, jit, to_numpy, value_and_grad
from loss_references import ref_sigmoid_ce, ref_softmax_ce
from test_losses_focal import ref_sigmoid_focal, ref_softmax_focal
from test_losses_gaussian import ref_gaussian_nll

from kerasce import losses as L

ROOT = Path(__file__).resolve().parents[1]
B, F = 12, 4  # batch, input features
RNG = np.random.default_rng(0)
X = RNG.normal(size=(B, F)).astype(np.float32)
IDS = RNG.integers(0, 3, size=B)
IDS_40 = RNG.integers(0, 40, size=B)
SOFT = RNG.dirichlet(np.ones(3), size=B).astype(np.float32)
MULTI_HOT = (RNG.uniform(size=(B, 3)) < 0.4).astype(np.float32)
RETURNS = RNG.normal(size=B).astype(np.float32)
ACTIONS = RNG.normal(size=(B, 2)).astype(np.float32)
SEG_IDS = np.where(RNG.uniform(size=(B, 5)) < 0.2, 255, RNG.integers(0, 3, size=(B, 5)))

# name: (loss, output activation, output shape, labels, reference(labels, predictions as float64) per example)
CASES = {
    "softmax ids": (L.SoftmaxCrossEntropy(), None, (3,), IDS, lambda y, p: ref_softmax_ce(y, p, sparse=True)[0]),
    # More than 32 classes: torch.compile's own form of the sparse cross-entropy.
    "softmax ids, 40 classes": (
        L.SoftmaxCrossEntropy(),
        None,
        (40,),
        IDS_40,
        lambda y, p: ref_softmax_ce(y, p, sparse=True)[0],
    ),
    "softmax ids [B, 1], all options": (
        L.SoftmaxCrossEntropy(label_smoothing=0.1, class_weight=[1.0, 2.0, 0.5], focal_gamma=2.0, poly_epsilon=1.0),
        None,
        (3,),
        IDS[:, None],
        lambda y, p: ref_softmax_focal(
            y[:, 0], p, sparse=True, smoothing=0.1, weights=[1.0, 2.0, 0.5], gamma=2.0, epsilon=1.0
        ),
    ),
    "softmax soft labels, stated form": (
        L.SoftmaxCrossEntropy(label_form="dense", label_smoothing=0.2, focal_gamma=0.5),
        None,
        (3,),
        SOFT,
        lambda y, p: ref_softmax_focal(y, p, sparse=False, smoothing=0.2, gamma=0.5),
    ),
    "softmax probabilities": (
        L.SoftmaxCrossEntropy(from_logits=False, class_weight=[0.5, 1.0, 2.0]),
        "softmax",
        (3,),
        IDS,
        lambda y, p: ref_softmax_ce(y, p, sparse=True, from_logits=False, weights=[0.5, 1.0, 2.0])[0],
    ),
    "softmax per position, axis 1, ignore_class": (
        L.SoftmaxCrossEntropy(axis=1, ignore_class=255, label_form="sparse"),
        None,
        (3, 5),
        SEG_IDS,
        lambda y, p: ref_softmax_ce(y, p, sparse=True, ignore=255, axis=1)[0],
    ),
    "sigmoid": (L.SigmoidCrossEntropy(), None, (3,), MULTI_HOT, lambda y, p: ref_sigmoid_ce(y, p)),
    "sigmoid pos_weight, smoothing": (
        L.SigmoidCrossEntropy(pos_weight=[1.0, 3.0, 0.5], label_smoothing=0.1),
        None,
        (3,),
        MULTI_HOT,
        lambda y, p: ref_sigmoid_ce(y, p, smoothing=0.1, pos_weight=[1.0, 3.0, 0.5]),
    ),
    "sigmoid focal alpha": (
        L.SigmoidCrossEntropy(focal_gamma=2.0, alpha=0.25, pos_weight=2.0),
        None,
        (3,),
        MULTI_HOT,
        lambda y, p: ref_sigmoid_focal(y, p, gamma=2.0, alpha=0.25, pos_weight=2.0),
    ),
    "sigmoid probabilities": (
        L.SigmoidCrossEntropy(from_logits=False, focal_gamma=1.0),
        "sigmoid",
        (3,),
        MULTI_HOT,
        lambda y, p: ref_sigmoid_focal(y, p, from_logits=False, gamma=1.0),
    ),
    "policy gradient": (
        L.PolicyGradientLoss(),
        None,
        (3,),
        IDS,
        lambda y, p: RETURNS * ref_softmax_ce(y, p, sparse=True)[0],
    ),
    "gaussian nll": (L.GaussianNLL(), None, (4,), ACTIONS, lambda y, p: ref_gaussian_nll(y, *np.split(p, 2, -1))),
}


def _model(activation, output_shape, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((F,))
    outputs = keras.layers.Dense(int(np.prod(output_shape)), activation=None)(inputs)
    outputs = keras.layers.Reshape(output_shape)(outputs)
    if activation is not None:
        outputs = keras.layers.Activation(activation)(outputs)
    return keras.Model(inputs, outputs)


def _reduce(per_example, name):
    """Keras's default sum_over_batch_size; ignore_class positions are masked out of the mean."""
    if "ignore_class" in name:
        return per_example[SEG_IDS != 255].mean()
    return per_example.mean()


def _train(case, jit_compile):
    loss, activation, shape, labels, _ = CASES[case]
    model = _model(activation, shape)
    model.compile(keras.optimizers.SGD(0.1), loss=loss, jit_compile=jit_compile)
    weights = RETURNS if isinstance(loss, L.PolicyGradientLoss) else None
    evaluated = model.evaluate(X, labels, sample_weight=weights, batch_size=B, verbose=0)
    predicted = to_numpy(model.predict(X, batch_size=B, verbose=0)).astype(np.float64)
    model.fit(X, labels, sample_weight=weights, batch_size=B, epochs=2, shuffle=False, verbose=0)
    return evaluated, predicted, [to_numpy(w) for w in model.weights]


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_compile_evaluate_predict_fit_match_the_reference(case, jit_compile):
    evaluated, predicted, weights = _train(case, jit_compile)
    want = _reduce(CASES[case][4](CASES[case][3], predicted), case)
    np.testing.assert_allclose(evaluated, want, rtol=2e-5, atol=1e-6)
    assert all(np.all(np.isfinite(w)) for w in weights)


@pytest.mark.parametrize("batch", [B, 0])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean", "sum", None])
@pytest.mark.parametrize("case", list(CASES))
def test_a_loss_reduces_its_values_as_keras_loss_call_does(case, reduction, batch):
    """The classes reduce a plain mean themselves (fewer ops than Keras's ``Loss.__call__``): the same value,
    masked positions (ignore_class) left out, an empty batch as Keras gives it."""
    loss, activation, shape, case_labels, _ = CASES[case]
    labels = np.asarray(case_labels)
    loss = type(loss).from_config({**loss.get_config(), "reduction": reduction})
    predictions = _model(activation, shape)(X[:batch])  # a softmax / sigmoid output keeps its cached logits
    if isinstance(loss, L.PolicyGradientLoss):  # the returns travel with the actions as y_true
        got = to_numpy(loss(labels[:batch], predictions, RETURNS[:batch]))
        want = to_numpy(keras.losses.Loss.__call__(loss, (labels[:batch], RETURNS[:batch]), predictions))
    else:
        got = to_numpy(loss(labels[:batch], predictions))
        want = to_numpy(keras.losses.Loss.__call__(loss, labels[:batch], predictions))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile only: JAX and TF XLA compile a whole function or fail")
@pytest.mark.parametrize("case", list(CASES))
def test_under_torch_compile_a_loss_is_one_graph(case):
    """A graph break runs the rest of the loss eagerly, with a graph per piece (each with its own guards)."""
    import torch

    loss, activation, shape, labels, _ = CASES[case]
    predictions = _model(activation, shape)(X)
    args = (labels, predictions, RETURNS) if isinstance(loss, L.PolicyGradientLoss) else (labels, predictions)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(loss)(*(keras.ops.convert_to_tensor(a) for a in args))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_fit_with_jit_compile_equals_fit_without(case):
    _, _, plain = _train(case, False)
    _, _, compiled = _train(case, True)
    for got, want in zip(compiled, plain):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Bad data: raised where the values are known, NaN under jit
# ------------------------------------------------------------------------------------------------

Z = np.zeros((2, 3), np.float32)
BAD = {
    "id out of range": lambda z: L.softmax_cross_entropy([0, 3], z),
    "fractional id": lambda z: L.SoftmaxCrossEntropy(reduction="none")([0.0, 1.5], z),
    "id beside ignore_class": lambda z: L.softmax_cross_entropy([255, 7], z, ignore_class=255),
    "soft label below 0": lambda z: L.softmax_cross_entropy([[0.5, 0.7, -0.2]] * 2, z),
    "probability above 1": lambda z: L.softmax_cross_entropy([0, 1], z + 1.3, from_logits=False),
    "sigmoid label 2": lambda z: L.sigmoid_cross_entropy([[0.0, 2.0, 1.0]] * 2, z),
    "sigmoid NaN label": lambda z: L.sigmoid_cross_entropy([[0.0, np.nan, 1.0]] * 2, z),
    "sigmoid probability 1.5": lambda z: L.sigmoid_cross_entropy([[0.0, 1.0, 1.0]] * 2, z + 1.5, from_logits=False),
    "policy gradient action out of range": lambda z: L.policy_gradient_loss([0, 4], z, [1.0, -1.0]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_values_raise_eagerly(case):
    with pytest.raises(data_error(), match="must be"):
        BAD[case](Z)


@pytest.mark.parametrize("case", list(BAD))
def test_under_jit_bad_values_make_the_loss_and_its_gradient_nan(case):
    # The examples (entries) with bad data get NaN gradients: an update that skips non-finite gradients skips it.
    loss, grad = value_and_grad(lambda z: keras.ops.sum(BAD[case](z)), Z, compiled=True)
    assert np.isnan(loss) and np.any(np.isnan(grad))


def test_under_jit_exactly_the_examples_with_a_bad_id_are_nan():
    got = to_numpy(jit(lambda z: L.softmax_cross_entropy(np.array([0, 5, 2, -1]), z))(np.zeros((4, 3), np.float32)))
    np.testing.assert_array_equal(np.isnan(got), [False, True, False, True])
    np.testing.assert_allclose(got[[0, 2]], np.log(3), rtol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_bad_batch_in_fit_raises_or_gives_a_nan_loss(jit_compile):
    # Where the step can raise (no jit) it does, before the update; under jit the loss is NaN.
    model = _model(None, (3,))
    model.compile(keras.optimizers.SGD(0.1), L.SoftmaxCrossEntropy(), jit_compile=jit_compile)
    before = [to_numpy(w) for w in model.weights]
    bad = np.array([0, 1, 5] * 4)
    if not jit_compile:
        with pytest.raises(data_error(), match=r"class ids in \[0, 3\)"):
            model.fit(X, bad, batch_size=B, epochs=1, verbose=0)
        if BACKEND != "jax":  # Keras's JAX trainer does not write the variables back after an exception in fit
            for got, want in zip(model.weights, before):
                np.testing.assert_array_equal(to_numpy(got), want)
    else:
        history = model.fit(X, bad, batch_size=B, epochs=1, verbose=0)
        assert np.isnan(history.history["loss"][0])


# ------------------------------------------------------------------------------------------------
# Probabilities given as logits
# ------------------------------------------------------------------------------------------------

NO_JAX_DETECTION = pytest.mark.skipif(
    BACKEND == "jax", reason="JAX arrays take no attributes: an activation's output cannot be told from logits"
)


@NO_JAX_DETECTION
@pytest.mark.parametrize(
    "activation,call",
    [
        ("softmax", lambda p: L.softmax_cross_entropy([0, 1], p)),
        ("softmax", lambda p: L.SoftmaxCrossEntropy(focal_gamma=2.0)([0, 1], p)),
        ("sigmoid", lambda p: L.sigmoid_cross_entropy([[0.0, 1.0, 1.0]] * 2, p)),
        ("sigmoid", lambda p: L.SigmoidCrossEntropy()([[0.0, 1.0, 1.0]] * 2, p)),
    ],
)
def test_an_activation_output_passed_as_logits_warns(activation, call):
    probs = getattr(keras.activations, activation)(keras.ops.convert_to_tensor(RNG.normal(size=(2, 3)), "float32"))
    with pytest.warns(UserWarning, match=r"received `from_logits=True`.*Pass `from_logits=False`"):
        call(probs)


@NO_JAX_DETECTION
@pytest.mark.parametrize(
    "jit_compile",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                BACKEND == "torch", reason="torch.compile traces fake tensors, which carry no cached logits"
            ),
        ),
    ],
)
def test_a_softmax_model_compiled_with_a_logits_loss_warns(jit_compile):
    model = _model("softmax", (3,))
    model.compile("sgd", L.SoftmaxCrossEntropy(), jit_compile=jit_compile)
    with pytest.warns(UserWarning, match="received `from_logits=True`"):
        model.fit(X, IDS, batch_size=B, epochs=1, verbose=0)


def test_logits_and_from_logits_false_do_not_warn():
    z = keras.ops.convert_to_tensor(RNG.normal(size=(2, 3)), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.softmax_cross_entropy([0, 1], z)
        L.softmax_cross_entropy([0, 1], keras.activations.softmax(z), from_logits=False)
        L.sigmoid_cross_entropy([[0.0, 1.0, 1.0]] * 2, keras.activations.sigmoid(z), from_logits=False)


# ------------------------------------------------------------------------------------------------
# Imports and saved files
# ------------------------------------------------------------------------------------------------

FRAMEWORKS = {"tensorflow", "jax", "jaxlib", "torch"}
ACTIVE = {"tensorflow": {"tensorflow"}, "jax": {"jax", "jaxlib"}, "torch": {"torch"}}[BACKEND]


def test_import_kerasce_losses_imports_no_other_backend():
    # What Keras itself imports (on TensorFlow, Keras 3.15 imports jax too) is Keras's; kerasce adds at most the
    # active backend's framework.
    code = (
        "import json, sys\n"
        f"def frameworks(): return sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(FRAMEWORKS)!r}))\n"
        "import kerasce; plain = frameworks()\n"
        "import keras; by_keras = frameworks()\n"
        "import kerasce.losses; print(json.dumps([plain, by_keras, frameworks()]))\n"
    )
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    plain, by_keras, with_losses = json.loads(out.stdout.strip().splitlines()[-1])
    assert plain == []  # import kerasce imports no framework at all
    assert set(with_losses) - set(by_keras) <= ACTIVE
    if BACKEND != "tensorflow":
        assert "tensorflow" not in with_losses and (BACKEND == "torch") == ("torch" in with_losses)


def test_a_keras_file_saved_by_kerasce_0_2_loads_with_its_losses():
    # tests/fixtures/make_losses_v0_2.py wrote it with kerasce 0.2 (TensorFlow backend); the options below are
    # those it was compiled with.
    # keras.saving.load_model: importing kerasce.losses registers its classes (kerasce.load_model also imports
    # the TensorFlow-only modules).
    model = keras.saving.load_model(ROOT / "tests" / "fixtures" / "losses_v0_2.keras")
    loss = model.loss
    assert type(loss["softmax_out"]) is L.SoftmaxCrossEntropy
    assert loss["softmax_out"].get_config() == dict(
        from_logits=True,
        label_smoothing=0.1,
        class_weight=[1.0, 2.0, 0.5, 1.0],
        ignore_class=3,
        axis=-1,
        label_form="sparse",
        focal_gamma=2.0,
        poly_epsilon=0.5,
        reduction="sum",
        name="sce",
        dtype=None,
    )
    assert type(loss["sigmoid_out"]) is L.SigmoidCrossEntropy
    assert loss["sigmoid_out"].get_config() == dict(
        from_logits=False,
        label_smoothing=0.2,
        pos_weight=[1.0, 3.0],
        axis=-1,
        focal_gamma=1.5,
        alpha=0.25,
        reduction="mean_with_sample_weight",
        name="bce",
        dtype=None,
    )
    assert type(loss["policy_out"]) is L.PolicyGradientLoss
    assert loss["policy_out"].get_config() == dict(reduction="sum", name="pg", dtype=None)
    x = RNG.normal(size=(4, 3)).astype(np.float32)
    out = {k: to_numpy(v).astype(np.float64) for k, v in model(x).items()}
    ids = np.array([0, 3, 2, 1])  # 3 is the ignored class
    got = to_numpy(loss["softmax_out"](ids, out["softmax_out"]))
    options = dict(smoothing=0.1, weights=[1, 2, 0.5, 1], gamma=2.0, epsilon=0.5, ignore=3)
    np.testing.assert_allclose(got, ref_softmax_focal(ids, out["softmax_out"], sparse=True, **options).sum(), rtol=1e-5)
