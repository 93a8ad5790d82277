"""Train an image classifier on an image dataset and export it: from data to a SavedModel in one run.

    python examples/image_classifier.py                          # digits (offline): ~5 s training, ~10 s in all
    python examples/image_classifier.py --dataset multi_digits   # multi-label (offline)
    python examples/image_classifier.py --dataset mnist --download
    python examples/image_classifier.py --dataset ./my_photos    # one sub-folder per class

The dataset decides the task: a ClassLabel label gives a softmax classifier trained with kerasce's
`SoftmaxCrossEntropy`; multi-hot / Sequence(ClassLabel) labels give a sigmoid classifier trained with
`SigmoidCrossEntropy`. The export directory (replaced atomically, so a failed run never leaves half an
export) holds:

* the SavedModel: ``serving_default(images=uint8 [N, H, W, C]) -> {"probabilities": float32 [N, K]}``,
  loadable with plain TensorFlow: ``tf.saved_model.load(export_dir).signatures["serving_default"]``;
* ``model.keras`` (for Keras users; needs kerasce to load);
* ``metrics.json``: ``test_accuracy`` (multi-class) or ``test_micro_f1`` and ``test_mean_auc``
  (multi-label), plus the run's settings and training time;
* a plot: ``confusion_matrix.png`` (multi-class) or ``per_label_scores.png`` (multi-label).

Training is resumable: every epoch is backed up to ``--backup-dir``; a run that is killed resumes from
its last finished epoch when started again with the same flags (a run killed after training, while
evaluating or exporting, only evaluates and exports again), and says so in one line. The backup records the
flags it was made with (``kerasce.runs``): a run with other flags is refused, not silently resumed; only
``--export-dir``, ``--backup-dir``, ``--data-dir`` and ``--download`` may differ (``--epochs`` may not: the
learning rate's cosine schedule spans the epochs). ``--fresh`` discards the backup. The backup is deleted
once the export is written.

Flags are checked before TensorFlow is imported: ``--help`` and a bad value answer at once.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# Light imports only: the flags are parsed and checked before TensorFlow (~5 s) is imported.
from kerasce.runs import (
    STRATEGIES,
    HelpFormatter,
    RunBackup,
    non_negative_int,
    open_backup,
    positive_float,
    positive_int,
    quiet_tensorflow_startup,
)

if TYPE_CHECKING:
    import numpy as np

    from kerasce.datasets import ImageDataset

REPO = Path(__file__).resolve().parents[1]


# Flags that may differ between a run and its resume: where things are read and written. Every other flag
# defines the run (a flag added later too), so a backup made with other values is not resumed.
MAY_CHANGE_ON_RESUME = ("export_dir", "backup_dir", "data_dir", "download", "fresh")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags (no TensorFlow import); a bad value exits with ``error: ...`` (status 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument(
        "--dataset",
        default="digits",
        help="TFDS name (digits, multi_digits, mnist, bigearthnet/rgb, ...) or a folder with "
        "one sub-folder of images per class (an existing directory, or a path starting "
        "with ./, ../, / or ~)",
    )
    parser.add_argument("--epochs", type=positive_int, default=15, help="passes over the training set")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="global batch size (all replicas)")
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=2e-3,
        help="Adam's initial learning rate, cosine-decayed to 0 over the run",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of weights, dropout and shuffling")
    parser.add_argument(
        "--export-dir",
        type=Path,
        default=None,
        help="where the SavedModel, metrics.json and plot go (default saved_models/<dataset "
        "name, or the folder's name>)",
    )
    parser.add_argument(
        "--backup-dir",
        type=Path,
        default=None,
        help="per-epoch training backup for resuming after a kill (default <export-dir>.backup)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="discard the backup of an earlier run instead of resuming it"
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (default TFDS's own)")
    parser.add_argument(
        "--download", action="store_true", help="let TFDS download a dataset that is not prepared yet (needs network)"
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="resize images to H×W (needed for datasets whose images vary in size)",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="default",
        help="tf.distribute strategy; the model is built and compiled in its scope",
    )
    return parser.parse_args(argv)


def default_export_dir(dataset: str) -> Path:
    """``saved_models/<slug>``: a folder's own name (``.`` resolved first), or the TFDS name made a file name.

    Raises:
        ValueError: The slug would be empty (``--dataset /``): the export would replace ``saved_models``
            itself, deleting every other export in it.
    """
    from kerasce.datasets import is_folder_name

    root = REPO / "saved_models"
    if is_folder_name(dataset):
        slug = Path(dataset).expanduser().resolve().name  # "." and "./" name the current directory
    else:
        slug = dataset.replace(":", "_").replace("/", "_")  # "cifar10:3.0.2", "bigearthnet/rgb"
    export_dir = root / slug
    if not slug or export_dir.resolve() == root.resolve():
        raise ValueError(
            f"cannot name the default export directory after dataset {dataset!r} (it would be "
            f"{root} itself, replacing every export in it): pass --export-dir."
        )
    return export_dir


def test_arrays(data: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    """The whole test split as NumPy: images ``uint8 [N, H, W, C]``, labels ``[N]`` or ``[N, K]``."""
    import numpy as np

    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in data.test))
    return np.concatenate(images), np.concatenate(labels)


def test_metrics(labels: np.ndarray, probabilities: np.ndarray, multilabel: bool) -> dict[str, float]:
    """``test_accuracy`` (argmax) or ``test_micro_f1`` (at 0.5) and ``test_mean_auc`` (over labels)."""
    import numpy as np
    from sklearn import metrics as skmetrics

    if not multilabel:
        return {"test_accuracy": float(np.mean(probabilities.argmax(axis=1) == labels))}
    return {
        "test_micro_f1": float(skmetrics.f1_score(labels, probabilities > 0.5, average="micro")),
        "test_mean_auc": float(np.nanmean(per_label_auc(labels, probabilities))),
    }


def per_label_auc(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """ROC AUC of every label; NaN for a label that is always (or never) present in the test set."""
    import numpy as np
    from sklearn import metrics as skmetrics

    return np.array(
        [
            skmetrics.roc_auc_score(labels[:, k], probabilities[:, k])
            if 0 < labels[:, k].sum() < len(labels)
            else np.nan
            for k in range(labels.shape[1])
        ]
    )


def plot(path: Path, data: ImageDataset, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Confusion matrix (multi-class) or per-label precision / recall / F1 / AUC bars (multi-label)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn import metrics as skmetrics

    names = data.class_names
    if not data.multilabel:
        matrix = skmetrics.confusion_matrix(labels, probabilities.argmax(axis=1), labels=range(len(names)))
        size = 2.5 + 0.45 * len(names)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        image = ax.imshow(matrix, cmap="Blues")
        fig.colorbar(image, ax=ax, label="test images")
        if len(names) <= 30:
            for (i, j), count in np.ndenumerate(matrix):
                ax.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if count > matrix.max() / 2 else "black",
                )
        ax.set(
            xticks=range(len(names)),
            yticks=range(len(names)),
            xlabel="predicted",
            ylabel="true",
            title=f"{data.name}: confusion matrix (accuracy {np.trace(matrix) / matrix.sum():.4f})",
        )
        ax.set_xticklabels(names, rotation=90 if max(map(len, names)) > 3 else 0)
        ax.set_yticklabels(names)
    else:
        predicted = probabilities > 0.5
        scores = {
            "precision": skmetrics.precision_score(labels, predicted, average=None, zero_division=0),
            "recall": skmetrics.recall_score(labels, predicted, average=None, zero_division=0),
            "F1": skmetrics.f1_score(labels, predicted, average=None, zero_division=0),
            "ROC AUC": per_label_auc(labels, probabilities),
        }
        fig, ax = plt.subplots(figsize=(3 + 0.6 * len(names), 4.5))
        positions = np.arange(len(names))
        for offset, (label, values) in enumerate(scores.items()):
            ax.bar(positions + (offset - 1.5) * 0.2, values, width=0.2, label=label)
        low = min(np.nanmin(v) for v in scores.values())
        ax.set(
            xticks=positions,
            xlabel="label",
            ylabel="score",
            ylim=(max(0.0, low - 0.05), 1.0),
            title=f"{data.name}: per-label test scores (threshold 0.5)",
        )
        ax.set_xticklabels(names, rotation=90 if max(map(len, names)) > 3 else 0)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=4, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finished_epochs(backup: RunBackup) -> int | None:
    """Epochs finished by the backed-up run (Keras's BackupAndRestore metadata); None if unreadable."""
    try:
        return int(json.loads((backup.state_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)  # before any heavy import: --help and bad flags answer at once
    with quiet_tensorflow_startup():
        import keras
        import numpy as np
        import tensorflow as tf
        import tensorflow_datasets as tfds

        tf.config.list_physical_devices()  # the CUDA probe prints here, inside the filter

    import kerasce
    from kerasce.callbacks import RaiseOnNonFiniteLoss
    from kerasce.classifiers import build_image_classifier, export_image_classifier
    from kerasce.datasets import load_image_dataset
    from kerasce.distribute import export_location, get_strategy, is_chief, worker_path
    from kerasce.export import save_keras_atomic, write_json_atomic

    strategy = get_strategy(args.strategy)  # first TensorFlow work (MultiWorkerMirroredStrategy needs it)
    keras.utils.set_random_seed(args.seed)
    export_dir = args.export_dir or default_export_dir(args.dataset)
    backup_dir = worker_path(args.backup_dir or export_dir.with_name(export_dir.name + ".backup"), strategy)
    # Refuses a backup made with other flags before any data is loaded or weights are built.
    backup = open_backup(backup_dir, vars(args), may_change=MAY_CHANGE_ON_RESUME, fresh=args.fresh)

    print("settings: " + ", ".join(f"{key}={value}" for key, value in vars(args).items()))
    print(f"export to {export_dir}, backups in {backup_dir}, {strategy.num_replicas_in_sync} replica(s)")
    print(
        f"python {platform.python_version()}, tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"tensorflow-datasets {tfds.__version__}, kerasce {kerasce.__version__}, numpy {np.__version__}"
    )

    data = load_image_dataset(
        args.dataset,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        download=args.download,
        image_size=args.image_size,
        seed=args.seed,
    )
    task = "multi-label (sigmoid)" if data.multilabel else "multi-class (softmax)"
    print(
        f"{data.name}: {data.num_train} train / {data.num_test} test images of {data.input_shape}, "
        f"{data.num_classes} {'labels' if data.multilabel else 'classes'}, {task}"
    )

    steps_per_epoch = math.ceil(data.num_train / args.batch_size)
    with strategy.scope():
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.epochs * steps_per_epoch)
        model = build_image_classifier(data.input_shape, data.num_classes, data.multilabel, learning_rate=schedule)
    print(f"model: {model.count_params():,} parameters, loss {type(model.loss).__name__}")
    if backup.resuming:
        epochs_done = finished_epochs(backup)
        print(
            backup.resume_line(
                f"after epoch {epochs_done} of {args.epochs}"
                if epochs_done is not None
                else "at its last finished epoch"
            )
        )

    # Resumes a killed run at its last finished epoch (weights, optimizer state and epoch number); two
    # checkpoints, so a kill in the middle of writing one falls back to the previous one. Kept after fit
    # (Keras would delete it there) until the export is written: a kill in between loses no training.
    restore = keras.callbacks.BackupAndRestore(str(backup.state_dir), double_checkpoint=True, delete_checkpoint=False)
    start = time.perf_counter()
    history = model.fit(
        data.train,
        epochs=args.epochs,
        # First: a NaN loss fails the run (naming the step) before a bad state could be backed up.
        callbacks=[RaiseOnNonFiniteLoss(), restore],
        shuffle=False,  # the tf.data pipeline reshuffles the training set every epoch itself
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar in a terminal, one line per epoch in logs
    )
    seconds = time.perf_counter() - start
    epochs_run = len(history.epoch)
    print(
        f"trained {epochs_run} epoch(s) in this run: {seconds:.1f} s, "
        f"{epochs_run * steps_per_epoch / seconds:.1f} steps/s"
    )

    images, labels = test_arrays(data)
    probabilities = model.predict_probabilities(images, batch_size=args.batch_size, verbose=0)
    results = test_metrics(labels, probabilities, data.multilabel)
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))

    record = {
        **results,
        "dataset": data.name,
        "num_test": data.num_test,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "strategy": args.strategy,
        "train_seconds": round(seconds, 2),
        "epochs_this_run": epochs_run,  # < epochs after a resume
        "multilabel": data.multilabel,
        "class_names": list(data.class_names),
    }
    plot_name = "per_label_scores.png" if data.multilabel else "confusion_matrix.png"

    def write_extras(directory: Path) -> None:
        write_json_atomic(directory / "metrics.json", record)
        plot(directory / plot_name, data, labels, probabilities)
        save_keras_atomic(model, directory / "model.keras")

    with export_location(export_dir, strategy) as location:  # only the chief's copy is kept
        export_image_classifier(location, model, write_extras=write_extras)
    backup.discard()  # trained and exported: nothing left to resume
    if is_chief(strategy):
        print(f"exported SavedModel, model.keras, metrics.json and {plot_name} to {export_dir}")
    return results


if __name__ == "__main__":
    try:
        main()
    except (ValueError, RuntimeError, FloatingPointError) as error:  # unknown dataset, offline, NaN loss, ...
        sys.exit(f"error: {error}")
