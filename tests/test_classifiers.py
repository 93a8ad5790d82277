"""Image classifiers: structure, logits-to-loss / probabilities-to-metrics, learning, export, bad inputs."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import references

from kerasce.classifiers import ImageClassifier, build_image_classifier, export_image_classifier
from kerasce.datasets import load_image_dataset
from kerasce.losses import SigmoidCrossEntropy, SoftmaxCrossEntropy


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _constant_logits(model, bias):
    """Makes the model output `bias` for every image: logits layer kernel 0, bias as given."""
    layer = model.get_layer("logits")
    kernel, _ = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.asarray(bias, np.float32)])


@pytest.mark.slow
@pytest.mark.parametrize("multilabel, loss_class", [(False, SoftmaxCrossEntropy), (True, SigmoidCrossEntropy)])
def test_compiled_structure(multilabel, loss_class):
    model = build_image_classifier((16, 12, 3), 5, multilabel=multilabel)
    assert isinstance(model, ImageClassifier) and model.multilabel == multilabel
    assert isinstance(model.loss, loss_class) and model.loss.from_logits
    assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape) == (None, 16, 12, 3)
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)
    images = np.full((2, 16, 12, 3), 255, np.uint8)
    assert tuple(model(images).shape) == (2, 5)
    labels = np.eye(5, dtype=np.float32)[[0, 3]] if multilabel else np.array([0, 3])
    result = model.evaluate(images, labels, return_dict=True, verbose=0)
    assert sorted(result) == sorted(
        ["loss"] + (["auc", "precision", "recall", "micro_f1"] if multilabel else ["accuracy"])
    )


def test_xla_is_off_unless_asked_for(monkeypatch):
    # Keras's default jit_compile="auto" turns XLA on when a GPU exists, and XLA compiles the loss's label
    # checks out. A GPU is faked so that "auto" would mean XLA on this machine too.
    devices = tf.config.list_physical_devices()
    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda device_type=None: [*devices, gpu])
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    plain.compile(loss="mse")
    assert plain.jit_compile is True  # Keras's "auto" with a GPU
    assert build_image_classifier((8, 8, 1), 3).jit_compile is False
    assert build_image_classifier((8, 8, 1), 3, jit_compile=True).jit_compile is True


def test_softmax_loss_sees_logits_exactly():
    model = build_image_classifier((8, 8, 1), 4, dropout=0.0)
    bias = np.array([50.0, 0.0, -50.0, 3.0])  # clipped probabilities would cap each loss at -log(1e-7)
    _constant_logits(model, bias)
    labels = np.array([0, 1, 2, 3, 2, 2])
    result = model.evaluate(np.zeros((6, 8, 8, 1), np.uint8), labels, return_dict=True, verbose=0)
    expected = np.mean(references.logsumexp(bias[None]) - bias[labels])  # float64: log-sum-exp minus the true logit
    assert result["loss"] == pytest.approx(expected, rel=1e-6)
    assert result["accuracy"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("batch_size", [4, 3])  # 4 == K: one-hot labels [B, K] would broadcast against ids [B]
@pytest.mark.parametrize("labels_as", ["ids", "ids [B, 1]", "one-hot"])
def test_accuracy_of_class_ids_and_one_hot_labels(labels_as, batch_size):
    model = build_image_classifier((8, 8, 1), 4, dropout=0.0)
    _constant_logits(model, [0.0, 2.0, 1.0, -1.0])  # every image predicted as class 1
    classes = np.array([1, 1, 0, 2, 1, 3, 3, 1])  # 4 of 8 are class 1
    labels = {"ids": classes, "ids [B, 1]": classes[:, None], "one-hot": np.eye(4, dtype=np.float32)[classes]}
    result = model.evaluate(
        np.zeros((8, 8, 8, 1), np.uint8), labels[labels_as], batch_size=batch_size, return_dict=True, verbose=0
    )
    assert result["accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize("labels_as", ["ids [B, 1]", "one-hot"])
def test_class_accuracy_when_the_label_axis_size_is_unknown_until_run_time(labels_as):
    from kerasce.classifiers import class_accuracy

    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)  # predicted classes 1, 0, 1
    classes = np.array([1, 0, 0])
    labels = classes[:, None] if labels_as == "ids [B, 1]" else np.eye(2, dtype=np.float32)[classes]
    accuracy = tf.function(class_accuracy, input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None, 2])])
    np.testing.assert_array_equal(accuracy(labels.astype(np.float32), scores).numpy(), [1.0, 1.0, 0.0])


@pytest.mark.slow
def test_sigmoid_loss_sees_logits_and_metrics_see_probabilities():
    model = build_image_classifier((8, 8, 1), 5, multilabel=True, dropout=0.0)
    # Logits in (0, 0.5] are positive as probabilities (> 0.5) but would be negative if a metric
    # thresholded the logits themselves at 0.5; ±60 would be capped by a clipped-probability loss.
    bias = np.array([60.0, -60.0, 0.3, -0.2, 0.1])
    _constant_logits(model, bias)
    labels = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 1, 1], [1, 1, 1, 0, 1], [0, 0, 0, 0, 1]], np.float32)
    result = model.evaluate(np.zeros((4, 8, 8, 1), np.uint8), labels, return_dict=True, verbose=0)

    z = np.broadcast_to(bias, labels.shape)
    elementwise = np.maximum(z, 0) - z * labels + np.log1p(np.exp(-np.abs(z)))  # stable softplus form
    assert result["loss"] == pytest.approx(elementwise.mean(), rel=1e-6)
    predicted = z > 0  # sigmoid(z) > 0.5
    tp = np.sum(predicted & (labels == 1))
    fp = np.sum(predicted & (labels == 0))
    fn = np.sum(~predicted & (labels == 1))
    assert result["precision"] == pytest.approx(tp / (tp + fp))
    assert result["recall"] == pytest.approx(tp / (tp + fn))
    assert result["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_probabilities_are_softmax_or_sigmoid_of_logits():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    for multilabel in (False, True):
        model = build_image_classifier((8, 8, 1), 3, multilabel=multilabel)
        z = np.asarray(model.predict(images, verbose=0), np.float64)
        expected = references.sigmoid(z) if multilabel else references.softmax(z)
        np.testing.assert_allclose(model.predict_probabilities(images, verbose=0), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_digits_classifier_learns(data_dir):
    data = load_image_dataset("digits", batch_size=32, data_dir=data_dir)
    model = build_image_classifier(data.input_shape, data.num_classes)
    before = model.evaluate(data.test, return_dict=True, verbose=0)
    model.fit(data.train, epochs=4, shuffle=False, verbose=0)  # the pipeline shuffles
    after = model.evaluate(data.test, return_dict=True, verbose=0)
    assert before["accuracy"] < 0.3 and after["accuracy"] > 0.9
    assert after["loss"] < before["loss"] / 4


@pytest.mark.slow
def test_multi_digits_classifier_learns(data_dir):
    data = load_image_dataset("multi_digits", batch_size=64, data_dir=data_dir)
    # Half the default convolution widths: half the time. Measured (seed 0): micro-F1 0.85, AUC 0.965, loss
    # 0.26x; with the default widths 0.92, 0.988, 0.15x in twice the time.
    model = build_image_classifier(
        data.input_shape, data.num_classes, multilabel=True, filters=(16, 32), dropout=0.0, learning_rate=2e-3
    )
    before = model.evaluate(data.test, return_dict=True, verbose=0)
    model.fit(data.train, epochs=2, shuffle=False, verbose=0)  # the pipeline shuffles
    after = model.evaluate(data.test, return_dict=True, verbose=0)
    # Predicting every label present would score F1 = 2p / (1 + p) ≈ 0.45 (p ≈ 0.29 labels per digit).
    assert after["micro_f1"] > 0.55 and after["auc"] > 0.85
    assert after["loss"] < 0.6 * before["loss"]


@pytest.mark.slow
def test_built_and_trained_under_a_strategy_scope():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_image_classifier((8, 8, 1), 3)
    assert model.distribute_strategy is strategy
    before = [w.copy() for w in model.get_weights()]
    model.fit(np.zeros((8, 8, 8, 1), np.uint8), np.arange(8) % 3, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.slow  # one of the heaviest: kept out of the quick subset (-m "not slow")
def test_keras_file_round_trip(tmp_path):
    model = build_image_classifier((8, 8, 1), 4, multilabel=True)
    images = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    model.fit(images, np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]], verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, ImageClassifier) and loaded.multilabel
    assert isinstance(loaded.loss, SigmoidCrossEntropy)
    np.testing.assert_allclose(
        loaded.predict_probabilities(images, verbose=0), model.predict_probabilities(images, verbose=0), rtol=1e-6
    )


@pytest.mark.slow
def test_export_serves_probabilities_of_uint8_images(tmp_path):
    model = build_image_classifier((8, 8, 1), 10)
    images = np.random.default_rng(2).integers(0, 256, (7, 8, 8, 1), dtype=np.uint8)
    path = export_image_classifier(tmp_path / "export", model)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 8, 8, 1]
    outputs = serve(images=tf.constant(images))
    assert list(outputs) == ["probabilities"]
    np.testing.assert_allclose(outputs["probabilities"], model.predict_probabilities(images, verbose=0), rtol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-6)


def test_public_methods_are_annotated():
    for name in ("call", "probabilities", "compute_metrics", "predict_probabilities", "get_config"):
        signature = inspect.signature(getattr(ImageClassifier, name))
        missing = [p.name for p in list(signature.parameters.values())[1:] if p.annotation is p.empty]
        assert not missing and signature.return_annotation is not signature.empty, (name, missing)


# ------------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(input_shape=(8, 8)), ValueError, r"`input_shape` must be \(height, .*Received: input_shape=\(8, 8\)"),
        (dict(input_shape=(1, 8, 8, 1)), ValueError, r"`input_shape` must be \(height, width, channels\)"),
        (dict(input_shape=(8, 0, 1)), ValueError, r"`input_shape` must be .* Received: input_shape=\(8, 0, 1\)"),
        (dict(input_shape=8), TypeError, r"`input_shape` must be \(height, width, channels\).*Received: input_shape=8"),
        (dict(num_classes=1), ValueError, "`num_classes` must be >= 2. Received: num_classes=1"),
        (dict(num_classes=0, multilabel=True), ValueError, "`num_classes` must be >= 2. Received: num_classes=0"),
        (dict(num_classes=2.5), TypeError, "`num_classes` must be an integer >= 2. Received: num_classes=2.5"),
        (dict(filters=()), ValueError, r"`filters` must be a non-empty sequence of .* Received: filters=\(\)"),
        (dict(dense_units=0), ValueError, "`dense_units` must be an integer >= 1. Received: dense_units=0"),
        (dict(dropout=1.0), ValueError, r"`dropout` must be in \[0, 1\)\. Received: dropout=1.0"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    arguments = dict(input_shape=(8, 8, 1), num_classes=10) | kwargs
    with pytest.raises(error, match=match):
        build_image_classifier(**arguments)


def test_images_of_the_wrong_rank_are_rejected():
    model = build_image_classifier((8, 8, 1), 10)
    with pytest.raises(
        ValueError, match=r"`inputs` must be images of rank 4 with shape \('B', 8, 8, 1\)\. Received: inputs.shape=\(2,"
    ):
        model(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"`inputs` must be images of rank 4 .* Received: inputs.shape=\(None, 8, 8\)"):
        model.fit(np.zeros((2, 8, 8), np.uint8), np.zeros(2), verbose=0)


def test_export_needs_an_image_classifier(tmp_path):
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="`model` must be an ImageClassifier .* Received: model of type Sequential"):
        export_image_classifier(tmp_path / "x", plain)
