"""The paths users take: XLA, shapes unknown when the graph is traced, bad data on every path.

* Every loss and option trains under ``jit_compile=True`` (CPU XLA reproduces what a GPU user gets with
  Keras's default ``"auto"``) with the loss and the one-step update of the non-XLA path, and the loss of a
  float64 reference.
* The label form (ids or one-hot) is decided at run time when the traced shapes fit both.
* Bad data is reported and never reaches the weights nor the optimizer's variables: eagerly, inside
  ``tf.function`` and under XLA.

Mutations tried, each turned tests here red:
* the control dependency of the checks dropped from ``Checks.gate``: test_bad_data_never_reaches_the_weights
  [tf.function-Model-*] (7 of 8 bad inputs: Adam's moments / the weights moved before the error);
* the run-time label-form decision replaced by "dense": test_label_form_is_decided_at_run_time_*[ids [B, 1]-*]
  and test_from_generator_dataset_fit_and_evaluate_*[ids [B, 1]-*];
* the NaN poisoning dropped (both NaN constants in losses.py set to 1): test_bad_data_never_reaches_the_weights
  [xla-*] (6 of 8; a NaN label is NaN anyway), test_under_xla_raise_on_non_finite_loss_names_the_step,
  test_stock_keras_step_under_xla_applies_the_nan, test_dense_labels_of_another_shape_*[True];
* apply_gradients_if_finite always applying: test_apply_gradients_if_finite[nan*/inf*] (9) and
  test_bad_data_never_reaches_the_weights[xla-*] (7), test_under_xla_raise_on_non_finite_loss_names_the_step;
* PolicyGradientLoss.call computing returns * softmax_cross_entropy itself:
  test_policy_gradient_loss_class_runs_the_function.
"""

import math

import keras
import numpy as np
import pytest
from backends import BACKEND, tensorflow_only
from loss_references import ref_sigmoid_ce, ref_softmax_ce

from kerasce import losses as L
from kerasce.losses import classes

# The same promises on JAX and torch (jax.jit, torch.compile, eager) are tested in test_losses_backends.py.
pytestmark = tensorflow_only("XLA, tf.function and kerasce's TensorFlow train steps")
if BACKEND == "tensorflow":
    import tensorflow as tf

    from kerasce.callbacks import RaiseOnNonFiniteLoss
    from kerasce.classifiers import ImageClassifier
    from kerasce.training import all_finite, apply_gradients_if_finite

B, F = 8, 5  # batch, input features


# ------------------------------------------------------------------------------------------------
# Every loss and option: XLA == non-XLA == float64 reference
# ------------------------------------------------------------------------------------------------


def _problem(name):
    """(loss, output shape of the model, labels, sample_weight, per-example float64 reference of outputs)."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    ids = rng.integers(0, 3, size=B)
    soft = rng.dirichlet(np.ones(3), size=B).astype(np.float32)
    multi_hot = (rng.uniform(size=(B, 3)) < 0.4).astype(np.float32)
    returns = rng.normal(size=B).astype(np.float32)
    seg_ids = rng.integers(0, 3, size=(B, 2))  # class axis 1 of [B, 3, 2] predictions

    def softmax(labels, sparse, **kw):
        return lambda z: ref_softmax_ce(labels, z, sparse=sparse, **kw)[0].mean()

    with_ignored = np.where(np.arange(B) % 3 == 0, 255, ids)
    valid = with_ignored != 255
    table = {
        "sparse ids [B]": (L.SoftmaxCrossEntropy(), (3,), ids, None, softmax(ids, True)),
        "sparse ids [B, 1]": (L.SoftmaxCrossEntropy(), (3,), ids[:, None], None, softmax(ids, True)),
        "one-hot": (
            L.SoftmaxCrossEntropy(),
            (3,),
            np.eye(3, dtype=np.float32)[ids],
            None,
            softmax(np.eye(3)[ids], False),
        ),
        "soft labels": (L.SoftmaxCrossEntropy(), (3,), soft, None, softmax(soft, False)),
        "smoothing": (L.SoftmaxCrossEntropy(label_smoothing=0.2), (3,), ids, None, softmax(ids, True, smoothing=0.2)),
        "class_weight sparse": (
            L.SoftmaxCrossEntropy(class_weight=[1.0, 3.0, 0.5]),
            (3,),
            ids,
            None,
            softmax(ids, True, weights=[1.0, 3.0, 0.5]),
        ),
        "class_weight dense": (
            L.SoftmaxCrossEntropy(class_weight=[1.0, 3.0, 0.5]),
            (3,),
            soft,
            None,
            softmax(soft, False, weights=[1.0, 3.0, 0.5]),
        ),
        "ignore_class": (
            L.SoftmaxCrossEntropy(ignore_class=255),
            (3,),
            with_ignored,
            None,
            lambda z: ref_softmax_ce(with_ignored, z, sparse=True, ignore=255)[0][valid].mean(),
        ),
        "axis=1": (
            L.SoftmaxCrossEntropy(axis=1),
            (3, 2),
            seg_ids,
            None,
            lambda z: ref_softmax_ce(seg_ids, z, sparse=True, axis=1)[0].mean(),
        ),
        "from_logits=False": (
            L.SoftmaxCrossEntropy(from_logits=False),
            (3,),
            ids,
            None,
            lambda p: ref_softmax_ce(ids, p, sparse=True, from_logits=False)[0].mean(),
        ),
        "sigmoid": (L.SigmoidCrossEntropy(), (3,), multi_hot, None, lambda z: ref_sigmoid_ce(multi_hot, z).mean()),
        "sigmoid pos_weight smoothing": (
            L.SigmoidCrossEntropy(pos_weight=[1.0, 4.0, 2.0], label_smoothing=0.1),
            (3,),
            multi_hot,
            None,
            lambda z: ref_sigmoid_ce(multi_hot, z, pos_weight=[1.0, 4.0, 2.0], smoothing=0.1).mean(),
        ),
        "sigmoid from_logits=False": (
            L.SigmoidCrossEntropy(from_logits=False),
            (3,),
            multi_hot,
            None,
            lambda p: ref_sigmoid_ce(multi_hot, p, from_logits=False).mean(),
        ),
        "policy gradient": (
            L.PolicyGradientLoss(),
            (3,),
            ids,
            returns,
            lambda z: (returns * ref_softmax_ce(ids, z, sparse=True)[0]).mean(),
        ),
    }
    return table[name]


PROBLEMS = [
    "sparse ids [B]",
    "sparse ids [B, 1]",
    "one-hot",
    "soft labels",
    "smoothing",
    "class_weight sparse",
    "class_weight dense",
    "ignore_class",
    "axis=1",
    "from_logits=False",
    "sigmoid",
    "sigmoid pos_weight smoothing",
    "sigmoid from_logits=False",
    "policy gradient",
]


def _model(output_shape, name, jit_compile, loss, *, cls=keras.Model):
    """A seeded Dense model; probabilities out (through a Rescaling, which drops Keras's logits cache) for
    from_logits=False, so the clipped-probability path is the one compiled."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((F,))
    x = keras.layers.Dense(int(np.prod(output_shape)))(inputs)
    x = keras.layers.Reshape(output_shape)(x) if len(output_shape) > 1 else x
    if "from_logits=False" in name:
        x = keras.layers.Activation("sigmoid" if "sigmoid" in name else "softmax")(x)
        x = keras.layers.Rescaling(1.0)(x)
    model = cls(inputs, x)
    # SGD, not Adam: Adam's first steps are about lr * sign(g), which turns float32 rounding in a near-zero
    # gradient component (XLA fuses and reorders sums) into a weight difference of up to 2 lr; SGD compares the
    # gradients themselves (seen in CI: one weight off by 7.8e-6 after two Adam steps, policy gradient).
    model.compile(keras.optimizers.SGD(0.5), loss=loss, jit_compile=jit_compile)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", PROBLEMS)
def test_every_loss_and_option_trains_under_xla_with_the_same_numbers(name):
    loss, output_shape, labels, sample_weight, reference = _problem(name)
    x = np.random.default_rng(5).normal(size=(B, F)).astype(np.float32)
    results = {}
    for jit in (False, True):
        model = _model(output_shape, name, jit, loss)
        outputs = np.asarray(model(x), np.float64)
        got = [model.train_on_batch(x, labels, sample_weight=sample_weight) for _ in range(2)]
        results[jit] = (outputs, got, [w.copy() for w in model.get_weights()])
    (out, loss_plain, weights_plain), (out_xla, loss_xla, weights_xla) = results[False], results[True]
    np.testing.assert_allclose(out_xla, out)  # the same starting point
    np.testing.assert_allclose(loss_plain[0], reference(out), rtol=1e-5)  # float64 reference
    np.testing.assert_allclose(loss_xla, loss_plain, rtol=1e-5, atol=1e-6)  # two steps: the update agrees
    for a, b in zip(weights_xla, weights_plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(weights_plain[0], _model(output_shape, name, False, loss).get_weights()[0])


def test_jit_compile_auto_on_a_gpu_machine_is_xla_and_trains(monkeypatch):
    # "auto" means XLA whenever a GPU is present; faked here so that CPU XLA runs what a GPU user gets.
    monkeypatch.setattr(keras.Model, "_resolve_auto_jit_compile", lambda self: True)
    loss, output_shape, labels, _, reference = _problem("sparse ids [B]")
    model = _model(output_shape, "auto", "auto", loss)
    assert model.jit_compile is True
    x = np.random.default_rng(5).normal(size=(B, F)).astype(np.float32)
    want = reference(np.asarray(model(x), np.float64))
    np.testing.assert_allclose(model.train_on_batch(x, labels), want, rtol=1e-5)


def test_no_string_ops_in_the_compiled_loss():
    # AsString has no XLA kernel: one in the graph made every jit_compile=True step fail to compile.
    labels, logits = tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, 3], tf.float32)
    graphs = [
        tf.function(lambda y, z: L.SoftmaxCrossEntropy()(y, z)).get_concrete_function(labels, logits),
        tf.function(lambda y, z: L.SoftmaxCrossEntropy()(y, z)).get_concrete_function(logits, logits),
        tf.function(lambda y, z: L.SigmoidCrossEntropy(from_logits=False)(y, z)).get_concrete_function(logits, logits),
    ]
    for graph in graphs:
        ops = {op.type for op in graph.graph.get_operations()}
        for function in graph.graph._functions.values():  # the cond branches of the asserts
            ops |= {node.op for node in function.definition.node_def}
        assert "Assert" in ops and "AsString" not in ops and "StringFormat" not in ops


# ------------------------------------------------------------------------------------------------
# Label form: decided at run time when the traced shapes fit both forms
# ------------------------------------------------------------------------------------------------

ISSUE_LOGITS = np.array([[2.0, 1.0, -0.5], [0.3, -1.2, 0.5]], np.float32)
ISSUE_IDS = np.array([[0], [1]])


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("form", ["ids [B, 1]", "one-hot", "soft"])
def test_label_form_is_decided_at_run_time_for_unknown_label_shapes(form, jit_compile):
    labels = {
        "ids [B, 1]": ISSUE_IDS.astype(np.float32),
        "one-hot": np.eye(3, dtype=np.float32)[ISSUE_IDS[:, 0]],
        "soft": np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], np.float32),
    }[form]
    sparse = form == "ids [B, 1]"
    want, _ = ref_softmax_ce(labels[:, 0] if sparse else labels, ISSUE_LOGITS, sparse=sparse)
    run = tf.function(
        L.softmax_cross_entropy,
        jit_compile=jit_compile,
        input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, 3], tf.float32)],
    )
    got = run(labels, ISSUE_LOGITS).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)  # ids read as one-hot would broadcast: [3.48, 0.0]


@pytest.mark.parametrize("label_form", ["sparse", "dense"])
def test_label_form_can_be_stated(label_form):
    labels = ISSUE_IDS.astype(np.float32) if label_form == "sparse" else np.eye(3, dtype=np.float32)[[0, 1]]
    spec = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, 3], tf.float32)]
    loss = L.SoftmaxCrossEntropy(label_form=label_form, reduction="none")
    assert loss.get_config()["label_form"] == label_form
    got = tf.function(loss.__call__, input_signature=spec)(labels, ISSUE_LOGITS).numpy()
    want, _ = ref_softmax_ce(ISSUE_IDS[:, 0], ISSUE_LOGITS, sparse=True)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: L.softmax_cross_entropy([0, 1], ISSUE_LOGITS, label_form="dense"), "label_form='dense' expects"),
        (lambda: L.softmax_cross_entropy(np.eye(3)[[0, 1]], ISSUE_LOGITS, label_form="sparse"), "label_form='sparse'"),
        (lambda: L.softmax_cross_entropy([0, 1], ISSUE_LOGITS, label_form="ids"), "`label_form` must be one of"),
        (lambda: L.SoftmaxCrossEntropy(label_form="onehot"), "`label_form` must be one of"),
    ],
)
def test_a_stated_label_form_that_does_not_fit_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_under_xla_exactly_the_bad_entries_are_nan():
    """The XLA check is elementwise (a clamp that must change nothing); each bad id or label poisons its own
    example and no other, against the float64 reference for the good ones. Mutation tried: the integer clamp
    without the comparison against the float value (fractions pass) -> red."""
    ids = np.array([0, -0.5, 2.5, 3, 1e10, -1e10, np.inf, np.nan, 2, 1e-7, 1.9999], np.float32)
    bad = np.array([False, True, True, True, True, True, True, True, False, True, True])
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(len(ids), 3)).astype(np.float32)
    got = tf.function(lambda y, z: L.softmax_cross_entropy(y, z), jit_compile=True)(ids, logits).numpy()
    assert np.isnan(got[bad]).all()
    np.testing.assert_allclose(
        got[~bad], ref_softmax_ce(ids[~bad].astype(int), logits[~bad], sparse=True)[0], rtol=1e-6
    )
    labels = np.array([[0, 1, 0.5], [-1e-3, 0, 0], [0, 1.01, 0], [np.nan, 0, 0], [0, 0, np.inf], [1, 1, 1]], np.float32)
    logits = rng.normal(size=labels.shape).astype(np.float32)
    got = tf.function(lambda y, z: L.sigmoid_cross_entropy(y, z), jit_compile=True)(labels, logits).numpy()
    assert np.isnan(got[1:5]).all()
    np.testing.assert_allclose(got[[0, 5]], ref_sigmoid_ce(labels[[0, 5]], logits[[0, 5]]), rtol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_dense_labels_of_another_shape_are_caught_at_run_time(jit_compile):
    # [B, 1] labels stated dense would broadcast against [B, 3] predictions: a run-time shape check stops it.
    run = tf.function(
        lambda y, z: L.softmax_cross_entropy(y, z, label_form="dense"),
        jit_compile=jit_compile,
        input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, 3], tf.float32)],
    )
    bad = np.array([[1.0], [0.0]], np.float32)
    if jit_compile:
        assert np.isnan(run(bad, ISSUE_LOGITS).numpy()).all()  # XLA cannot raise: NaN
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match="must have the predictions"):
            run(bad, ISSUE_LOGITS)


def _generator_dataset(labels):
    """A from_generator dataset whose label shape is [None, None] when the graph is traced."""
    images = np.zeros((len(labels), F), np.float32)

    def gen():
        for i in range(0, len(labels), 3):
            yield images[i : i + 3], labels[i : i + 3].astype(np.float32)

    signature = (tf.TensorSpec([None, F], tf.float32), tf.TensorSpec([None, None], tf.float32))
    return tf.data.Dataset.from_generator(gen, output_signature=signature)


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("labels_as", ["ids [B, 1]", "one-hot"])
def test_from_generator_dataset_fit_and_evaluate_read_the_label_form_right(labels_as, jit_compile):
    # Uniform logits over 3 classes: the loss is log 3 = 1.0986 in either form (3.2958 if ids were one-hot).
    ids = np.arange(9) % 3
    labels = ids[:, None] if labels_as == "ids [B, 1]" else np.eye(3)[ids]
    model = keras.Sequential([keras.Input((F,)), keras.layers.Dense(3, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.0), loss=L.SoftmaxCrossEntropy(), jit_compile=jit_compile)
    assert model.evaluate(_generator_dataset(labels), verbose=0) == pytest.approx(math.log(3), rel=1e-6)
    history = model.fit(_generator_dataset(labels), epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(math.log(3), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# Bad data never reaches the weights: eager, tf.function, XLA
# ------------------------------------------------------------------------------------------------

GOOD_IDS = np.array([0, 1, 2, 1, 0, 2])
BAD_DATA = {
    # name: (multilabel, from_logits, labels as given to fit)
    "id out of range": (False, True, np.array([0, 1, 5, 1, 0, 2])),
    "fractional id": (False, True, np.array([0.0, 1.5, 2.0, 1.0, 0.0, 2.0])),
    "NaN id": (False, True, np.array([0.0, np.nan, 2.0, 1.0, 0.0, 2.0])),
    "soft label 2.0": (False, True, np.eye(3)[GOOD_IDS] * 2.0),
    "NaN multi-hot label": (True, True, np.where(np.eye(3)[GOOD_IDS] == 1, np.nan, 0.0)),
    "multi-hot label 2.0": (True, True, np.eye(3)[GOOD_IDS] * 2.0),
    "probability 1.5": (False, False, GOOD_IDS),
    "label shape [B, 2] for 3 classes": (False, True, np.eye(2)[GOOD_IDS % 2]),
}


def _bad_data_model(multilabel, from_logits, jit_compile, cls):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((F,))
    outputs = keras.layers.Dense(3, bias_initializer=keras.initializers.Constant([1.5, 0.2, 0.1]))(inputs)
    if cls is ImageClassifier:
        model = ImageClassifier(inputs, outputs, multilabel=multilabel)
    else:
        model = keras.Model(inputs, outputs)
    loss = (L.SigmoidCrossEntropy if multilabel else L.SoftmaxCrossEntropy)(from_logits=from_logits)
    model.compile(keras.optimizers.Adam(0.01), loss=loss, jit_compile=jit_compile, run_eagerly=jit_compile == "eager")
    return model


def _state(model, *, iterations=True):
    optimizer = model.optimizer
    counter = getattr(optimizer, "skipped_steps", None)  # SkipNonFinite counts a skipped step: it moves by design
    variables = model.weights + [
        v for v in optimizer.variables if v is not counter and (iterations or v is not optimizer.iterations)
    ]
    return [np.array(v.numpy(), copy=True) for v in variables]


@pytest.mark.slow
@pytest.mark.parametrize("bad", list(BAD_DATA))
@pytest.mark.parametrize(
    "path,cls",
    [
        ("eager", "Model"),
        ("tf.function", "Model"),
        ("eager", "ImageClassifier"),
        ("tf.function", "ImageClassifier"),
        ("xla", "ImageClassifier"),
    ],
)
def test_bad_data_never_reaches_the_weights(path, cls, bad):
    cls = {"Model": keras.Model, "ImageClassifier": ImageClassifier}[cls]
    multilabel, from_logits, bad_labels = BAD_DATA[bad]
    jit = {"eager": "eager", "tf.function": False, "xla": True}[path]
    model = _bad_data_model(multilabel, from_logits, jit, cls)
    x = np.random.default_rng(6).normal(size=(6, F)).astype(np.float32)
    if not from_logits:  # probabilities out of the Dense layer: kernel 0, bias 1.5 on class 0
        model.layers[-1].kernel.assign(np.zeros((F, 3), np.float32))
    shape_case = bad.startswith("label shape")
    good = np.eye(3, dtype=np.float32)[GOOD_IDS] if multilabel or shape_case else GOOD_IDS
    model.optimizer.build(model.trainable_variables)

    def fit(labels):
        if shape_case:  # shapes unknown when traced: only the run time can tell
            data = tf.data.Dataset.from_generator(
                lambda: iter([(x, labels.astype(np.float32))]),
                output_signature=(tf.TensorSpec([None, F], tf.float32), tf.TensorSpec([None, None], tf.float32)),
            )
            return model.fit(data, epochs=1, verbose=0)
        return model.fit(x, labels, batch_size=6, epochs=1, verbose=0, shuffle=False)

    if not from_logits:
        good_history = None  # the probabilities themselves are bad: no good step to take first
    else:
        good_history = fit(good)  # Adam's moments and iterations are non-zero before the bad step
        assert np.isfinite(good_history.history["loss"][0])
    # Keras's stock step increments the optimizer's `iterations` with no data dependency on the gradients:
    # nothing a loss returns can order it after the check (measured: it moves by one before the error).
    # kerasce's own train step (ImageClassifier) keeps it too.
    iterations = cls is ImageClassifier
    before = _state(model, iterations=iterations)
    if path == "xla" and shape_case:
        # XLA compiles for the concrete shapes: a mismatch fails the compilation, before any update.
        with pytest.raises(tf.errors.InvalidArgumentError, match="Incompatible shapes"):
            fit(bad_labels)
    elif path == "xla":
        history = fit(bad_labels)
        assert np.isnan(history.history["loss"][0])  # reported: the loss is NaN
    else:
        # Eagerly the shapes are known: a shape mismatch is a ValueError before any step.
        errors = (tf.errors.InvalidArgumentError, ValueError) if shape_case else tf.errors.InvalidArgumentError
        with pytest.raises(errors, match="must|class ids|neither form"):
            fit(bad_labels)
    after = _state(model, iterations=iterations)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)  # bit-identical, weights and optimizer variables alike
    if good_history is not None and path == "xla":
        assert np.isfinite(fit(good).history["loss"][0])  # and training goes on from there


def test_under_xla_raise_on_non_finite_loss_names_the_step():
    multilabel, from_logits, bad_labels = BAD_DATA["id out of range"]
    model = _bad_data_model(multilabel, from_logits, True, ImageClassifier)
    x = np.random.default_rng(6).normal(size=(12, F)).astype(np.float32)
    labels = np.concatenate([GOOD_IDS, bad_labels])
    before = None

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            nonlocal before
            before = before or _state(model)

    message = r"`loss` must be finite. Received: loss=nan at epoch 1, batch 2 \(optimizer step 1\)"
    with pytest.raises(FloatingPointError, match=message):
        model.fit(
            x, labels, batch_size=6, epochs=1, verbose=0, shuffle=False, callbacks=[RaiseOnNonFiniteLoss(), Snapshot()]
        )
    assert before is not None
    for a, b in zip(_state(model), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_stock_keras_step_under_xla_applies_the_nan():
    # What a user compiling their own model with jit_compile=True gets (documented in kerasce.training):
    # the loss is NaN, and Keras's stock train step applies the NaN gradients.
    multilabel, from_logits, bad_labels = BAD_DATA["id out of range"]
    model = _bad_data_model(multilabel, from_logits, True, keras.Model)
    x = np.random.default_rng(6).normal(size=(6, F)).astype(np.float32)
    history = model.fit(x, bad_labels, batch_size=6, epochs=1, verbose=0)
    assert np.isnan(history.history["loss"][0])
    assert np.isnan(model.layers[-1].kernel.numpy()).all()


# ------------------------------------------------------------------------------------------------
# apply_gradients_if_finite
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["eager", "tf.function", "xla"])
@pytest.mark.parametrize("bad", [None, "nan loss", "inf gradient", "nan gradient"])
def test_apply_gradients_if_finite(path, bad):
    variables = [keras.Variable(np.ones((2, 3), np.float32)), keras.Variable(np.zeros(3, np.float32))]
    optimizer = keras.optimizers.Adam(0.1)
    reference = keras.optimizers.Adam(0.1)  # what an unconditional apply does with finite input
    ref_variables = [keras.Variable(v.numpy()) for v in variables]
    grads = [np.full((2, 3), 0.5, np.float32), np.array([1.0, -1.0, 2.0], np.float32)]
    loss = np.float32(np.nan if bad == "nan loss" else 1.0)
    if bad in ("inf gradient", "nan gradient"):
        grads[1] = np.array([1.0, np.inf if bad == "inf gradient" else np.nan, 2.0], np.float32)

    def step(grads, loss):
        return apply_gradients_if_finite(optimizer, grads, variables, loss)

    if path != "eager":
        step = tf.function(step, jit_compile=path == "xla")
    optimizer.build(variables)
    before = [v.numpy().copy() for v in variables + optimizer.variables]
    applied = bool(step([tf.constant(g) for g in grads], tf.constant(loss)))
    assert applied is (bad is None)
    after = [v.numpy() for v in variables + optimizer.variables]
    if bad is None:
        reference.apply([tf.constant(g) for g in grads], ref_variables)
        for got, want in zip(variables, ref_variables):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
        assert int(optimizer.iterations.numpy()) == 1
    else:
        for a, b in zip(after, before):
            np.testing.assert_array_equal(a, b)


ALL_FINITE_CASES: dict[str, tuple[float, list[np.ndarray | None]]] = {
    # name: (loss, gradients); the reference is NumPy's isfinite over every entry
    "finite": (1.0, [np.full((2, 3), 0.5, np.float32), np.array([1.0, -1.0], np.float32)]),
    "+inf and -inf in one gradient (sum NaN)": (1.0, [np.array([np.inf, -np.inf, 1.0], np.float32)]),
    "+inf and -inf in two gradients": (1.0, [np.array([np.inf], np.float32), np.array([-np.inf], np.float32)]),
    "NaN beside finite": (1.0, [np.array([0.0, np.nan], np.float32), np.ones(2, np.float32)]),
    "inf loss": (np.inf, [np.ones(2, np.float32)]),
    "large but finite": (1.0, [np.full(4, 1e37, np.float32), np.full(3, -1e37, np.float32)]),
    "float16 whose sum exceeds the float16 range": (1.0, [np.full(8, 6e4, np.float16)]),
    "float16 inf": (1.0, [np.array([1.0, np.inf], np.float16)]),
    "float64 beyond float32 range": (1.0, [np.array([1e300, -1e300], np.float64)]),
    "float64 NaN": (1.0, [np.array([1.0, np.nan], np.float64)]),
    "None gradient": (1.0, [None, np.ones(2, np.float32)]),
}


@pytest.mark.parametrize("path", ["eager", "tf.function", "xla"])
@pytest.mark.parametrize("case", list(ALL_FINITE_CASES))
def test_all_finite_agrees_with_numpy(path, case):
    """Mutations tried: the loss left out of the total -> "inf loss" red (3 paths); half-precision gradients
    summed in float16 -> "float16 whose sum exceeds the float16 range" red (3 paths)."""
    loss, grads = ALL_FINITE_CASES[case]
    want = np.isfinite(loss) and all(np.isfinite(g).all() for g in grads if g is not None)
    fn = all_finite if path == "eager" else tf.function(all_finite, jit_compile=path == "xla")
    tensors = [None if g is None else tf.constant(g) for g in grads]
    assert bool(fn(tf.constant(loss, tf.float32), tensors)) is bool(want)


def test_apply_gradients_if_finite_needs_one_gradient_per_variable():
    with pytest.raises(ValueError, match="one gradient per variable"):
        apply_gradients_if_finite(keras.optimizers.SGD(), [tf.ones(2)], [], tf.constant(1.0))


# ------------------------------------------------------------------------------------------------
# One implementation of the policy-gradient loss
# ------------------------------------------------------------------------------------------------


def test_policy_gradient_loss_class_runs_the_function(monkeypatch):
    calls = []
    function = L.policy_gradient_loss

    def spy(actions, logits, returns):
        calls.append(1)
        return function(actions, logits, returns)

    monkeypatch.setattr(classes, "policy_gradient_loss", spy)
    rng = np.random.default_rng(9)
    logits, actions, returns = rng.normal(size=(5, 3)), rng.integers(0, 3, 5), rng.normal(size=5)
    per_step = L.PolicyGradientLoss(reduction="none")(actions, logits, returns).numpy()
    assert calls
    want = returns * ref_softmax_ce(actions, logits, sparse=True)[0]
    np.testing.assert_allclose(per_step, want, rtol=1e-5)
    np.testing.assert_allclose(
        L.PolicyGradientLoss(reduction="sum")(actions, logits, returns[:, None]), want.sum(), rtol=1e-5
    )


def test_policy_gradient_returns_of_another_shape_are_rejected():
    with pytest.raises(ValueError, match=r"`returns` must have the shape of the per-step losses, \[2\]"):
        L.policy_gradient_loss([0, 1], np.zeros((2, 3), np.float32), np.ones((2, 2), np.float32))
