"""Train an image classifier on an image dataset and export it: from data to a SavedModel in one run.

    python examples/image_classifier.py                          # digits (offline): ~5 s training, ~10 s in all
    python examples/image_classifier.py --dataset multi_digits   # multi-label (offline)
    python examples/image_classifier.py --dataset ./my_photos    # one sub-folder per class

The command line is ``kerasce.cli.classify`` (also ``python -m kerasce.cli.classify``; ``--help`` lists its
flags): resumable training, metrics.json, plots, exports under ``saved_models/``. What it does with the
library comes down to `train_and_export` below: load a dataset, build the classifier the dataset calls for
(softmax + ``SoftmaxCrossEntropy`` for one label per image, sigmoid + ``SigmoidCrossEntropy`` for several),
fit, export a SavedModel that plain TensorFlow serves:

    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    serve(images=uint8 [N, H, W, C])["probabilities"]  # float32 [N, K]
"""

from __future__ import annotations

from pathlib import Path

from kerasce.cli import classify

REPO = Path(__file__).resolve().parents[1]


def train_and_export(
    dataset: str = "digits", epochs: int = 15, export_dir: str | Path = "saved_models/api", data_dir: str | None = None
) -> float:
    """The library calls of a run, without the command line's resume and reports; returns the test accuracy
    (multi-class) or micro-F1 (multi-label) of the exported model. `data_dir`: TFDS's (default its own)."""
    from kerasce.classifiers import build_image_classifier, export_image_classifier
    from kerasce.datasets import load_image_dataset

    data = load_image_dataset(dataset, batch_size=64, data_dir=data_dir, seed=0)
    model = build_image_classifier(data.input_shape, data.num_classes, data.multilabel)
    model.fit(data.train, epochs=epochs, shuffle=False, verbose=2)  # the pipeline reshuffles every epoch
    export_image_classifier(export_dir, model)

    images, labels = classify.test_arrays(data)  # the whole test split as NumPy
    probabilities = model.predict_probabilities(images, verbose=0)
    scores = classify.test_metrics(labels, probabilities, data.multilabel)
    return scores.get("test_accuracy", scores.get("test_micro_f1", float("nan")))


def parse_args(argv: list[str] | None = None):
    """The command line's flags (checked without importing TensorFlow)."""
    return classify.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """The command line, with default exports under this checkout's ``saved_models/``."""
    return classify.main(argv, saved_models=REPO / "saved_models")


if __name__ == "__main__":
    classify.run(saved_models=REPO / "saved_models")
