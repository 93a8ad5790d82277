"""Train an image classifier on an image dataset and export it: from data to a SavedModel in one run.

    python -m kerasce.cli.classify                          # digits (offline): ~5 s training, ~10 s in all
    python -m kerasce.cli.classify --dataset multi_digits   # multi-label (offline)
    python -m kerasce.cli.classify --dataset mnist --download
    python -m kerasce.cli.classify --dataset ./my_photos    # one sub-folder per class

The dataset decides the task: a ClassLabel label gives a softmax classifier trained with kerasce's
`SoftmaxCrossEntropy`; multi-hot / Sequence(ClassLabel) labels give a sigmoid classifier trained with
`SigmoidCrossEntropy`. The export directory (replaced atomically, so a failed run never leaves half an
export) holds:

* the SavedModel: ``serving_default(images=uint8 [N, H, W, C]) -> {"probabilities": float32 [N, K]}``,
  loadable with plain TensorFlow: ``tf.saved_model.load(export_dir).signatures["serving_default"]``;
* ``model.keras`` (for Keras users; needs kerasce to load);
* ``metrics.json``: ``test_accuracy`` (multi-class) or ``test_micro_f1`` and ``test_mean_auc``
  (multi-label), plus the run's settings and training time;
* ``training_log.csv``: the loss and metrics of every epoch, counted from 1 as the console counts;
* a plot: ``confusion_matrix.png`` (multi-class) or ``per_label_scores.png`` (multi-label).

Training is resumable: every epoch is backed up to ``--backup-dir``; a run that is killed resumes from
its last finished epoch when started again with the same flags (a run killed after training, while
evaluating or exporting, only evaluates and exports again), and says so in one line. The backup records the
flags it was made with (``kerasce.cli.runs``): a run with other flags is refused, not silently resumed; only
``--export-dir``, ``--backup-dir``, ``--data-dir`` and ``--download`` may differ (``--epochs`` may not: the
learning rate's cosine schedule spans the epochs). ``--fresh`` discards the backup. The backup is deleted
once the export is written; a start that fails before its first epoch is backed up (an unknown dataset, a
label the loss refuses) leaves no backup directory behind.

Flags are checked before TensorFlow is imported: ``--help`` and a bad value answer at once.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Light imports only: the flags are parsed and checked before TensorFlow (~5 s) is imported.
from kerasce.cli.runs import (
    STRATEGIES,
    ArgumentParser,
    RunBackup,
    non_negative_int,
    open_backup,
    positive_float,
    positive_int,
    quiet_tensorflow_startup,
)

if TYPE_CHECKING:
    import keras
    import numpy as np

    from kerasce.datasets import ImageDataset

__all__ = ["default_export_dir", "main", "parse_args", "run", "test_metrics"]

# Flags that may differ between a run and its resume: where things are read and written. Every other flag
# defines the run (a flag added later too), so a backup made with other values is not resumed.
MAY_CHANGE_ON_RESUME = ("export_dir", "backup_dir", "data_dir", "download", "fresh")
LOG_FILE = "training_log.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags (no TensorFlow import); a bad value exits with ``error: ...`` (status 2)."""
    as_module = Path(sys.argv[0]).resolve() == Path(__file__).resolve()  # python -m kerasce.cli.classify
    parser = ArgumentParser(
        prog="python -m kerasce.cli.classify" if as_module else None, description=__doc__.split("\n\n")[0]
    )
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
        help="where the SavedModel, metrics.json, training_log.csv and plot go (default saved_models/<dataset "
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


def default_export_dir(dataset: str, saved_models: Path) -> Path:
    """``<saved_models>/<slug>``: a folder's own name (``.`` resolved first), or the TFDS name made a file name.

    Raises:
        ValueError: The slug would be empty (``--dataset /``): the export would replace `saved_models`
            itself, deleting every other export in it.
    """
    from kerasce.datasets import is_folder_name

    if is_folder_name(dataset):
        slug = Path(dataset).expanduser().resolve().name  # "." and "./" name the current directory
    else:
        slug = dataset.replace(":", "_").replace("/", "_")  # "cifar10:3.0.2", "bigearthnet/rgb"
    export_dir = saved_models / slug
    if not slug or export_dir.resolve() == saved_models.resolve():
        raise ValueError(
            f"`--export-dir` must be given for dataset {dataset!r}: the default export directory would be "
            f"{saved_models} itself, replacing every export in it. Received: --dataset={dataset}"
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

    from kerasce.cli.plots import per_label_auc

    if not multilabel:
        return {"test_accuracy": float(np.mean(probabilities.argmax(axis=1) == labels))}
    return {
        "test_micro_f1": float(skmetrics.f1_score(labels, probabilities > 0.5, average="micro")),
        "test_mean_auc": float(np.nanmean(per_label_auc(labels, probabilities))),
    }


def finished_epochs(backup: RunBackup) -> int | None:
    """Epochs finished by the backed-up run (Keras's BackupAndRestore metadata); None if unreadable."""
    import json

    try:
        return int(json.loads((backup.state_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _print_versions() -> None:
    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_datasets as tfds

    import kerasce

    print(
        f"python {platform.python_version()}, tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"tensorflow-datasets {tfds.__version__}, kerasce {kerasce.__version__}, numpy {np.__version__}"
    )


def _load_data(args: argparse.Namespace) -> ImageDataset:
    from kerasce import datasets

    data = datasets.load_image_dataset(
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
    return data


def _build(args: argparse.Namespace, data: ImageDataset, strategy: Any) -> keras.Model:
    import keras

    from kerasce.classifiers import build_image_classifier

    steps = args.epochs * math.ceil(data.num_train / args.batch_size)
    with strategy.scope():
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
        model = build_image_classifier(data.input_shape, data.num_classes, data.multilabel, learning_rate=schedule)
    print(f"model: {model.count_params():,} parameters, loss {type(model.loss).__name__}")
    return model


def _train(args: argparse.Namespace, model: keras.Model, data: ImageDataset, backup: RunBackup) -> dict[str, Any]:
    """Fits (resuming the backup, if any); returns ``epochs_this_run`` and ``train_seconds``."""
    import keras

    from kerasce.callbacks import RaiseOnNonFiniteLoss
    from kerasce.cli.errors import check_failures_first
    from kerasce.cli.logs import TrainingLog

    if backup.resuming:
        done = finished_epochs(backup)
        progress = f"after epoch {done} of {args.epochs}" if done is not None else "at its last finished epoch"
        print(backup.resume_line(progress))
    # Resumes a killed run at its last finished epoch (weights, optimizer state and epoch number); two
    # checkpoints, so a kill in the middle of writing one falls back to the previous one. Kept after fit
    # (Keras would delete it there) until the export is written: a kill in between loses no training.
    restore = keras.callbacks.BackupAndRestore(str(backup.state_dir), double_checkpoint=True, delete_checkpoint=False)
    start = time.perf_counter()
    with check_failures_first():  # a label the loss refuses: its message, not TensorFlow's op trace
        history = model.fit(
            data.train,
            epochs=args.epochs,
            # First: a NaN loss fails the run (naming the step) before a bad state could be backed up. The
            # log's row before the backup: a kill in between redoes that epoch, and the log drops its row.
            callbacks=[RaiseOnNonFiniteLoss(), TrainingLog(backup.directory / LOG_FILE), restore],
            shuffle=False,  # the tf.data pipeline reshuffles the training set every epoch itself
            verbose=1 if sys.stdout.isatty() else 2,  # a progress bar in a terminal, one line per epoch in logs
        )
    seconds = time.perf_counter() - start
    epochs_run = len(history.epoch)
    steps = epochs_run * math.ceil(data.num_train / args.batch_size)
    print(f"trained {epochs_run} epoch(s) in this run: {seconds:.1f} s, {steps / max(seconds, 1e-9):.1f} steps/s")
    return {"train_seconds": round(seconds, 2), "epochs_this_run": epochs_run}  # < epochs after a resume


def _evaluate(
    args: argparse.Namespace, model: keras.Model, data: ImageDataset, trained: dict[str, Any], backup: RunBackup
) -> tuple[dict[str, float], str, Callable[[Path], None]]:
    """Scores the test split; returns the test metrics, the plot's file name and what writes the files that
    go beside the SavedModel (metrics.json, the plot, the training log, model.keras) into a directory."""
    import shutil

    from kerasce.cli import plots
    from kerasce.export import save_keras_atomic, write_json_atomic

    images, labels = test_arrays(data)
    probabilities = model.predict_probabilities(images, batch_size=args.batch_size, verbose=0)
    results = test_metrics(labels, probabilities, data.multilabel)
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    record = {
        **results,
        **{k: getattr(args, k) for k in ("epochs", "batch_size", "seed", "strategy")},
        "dataset": data.name,
        "num_test": data.num_test,
        **trained,
        "multilabel": data.multilabel,
        "class_names": list(data.class_names),
    }
    plot = plots.per_label_scores_plot if data.multilabel else plots.confusion_matrix_plot
    plot_name = "per_label_scores.png" if data.multilabel else "confusion_matrix.png"

    def write_extras(directory: Path) -> None:
        write_json_atomic(directory / "metrics.json", record)
        plot(directory / plot_name, data.name, data.class_names, labels, probabilities)
        if (backup.directory / LOG_FILE).is_file():
            shutil.copyfile(backup.directory / LOG_FILE, directory / LOG_FILE)
        save_keras_atomic(model, directory / "model.keras")

    return results, plot_name, write_extras


def main(argv: list[str] | None = None, *, saved_models: Path | None = None) -> dict[str, float]:
    """Runs the command line `argv` (default ``sys.argv[1:]``); returns the test metrics.

    Args:
        argv: The flags.
        saved_models: Where the default export directory goes (``<saved_models>/<dataset>``); default
            ``./saved_models``.

    Raises:
        ValueError: An unknown dataset, a backup made with other flags, a label the loss refuses, ...
        RuntimeError: A dataset that is not prepared, offline.
        FloatingPointError: A non-finite loss.
    """
    args = parse_args(argv)  # before any heavy import: --help and bad flags answer at once
    with quiet_tensorflow_startup():
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe prints here, inside the filter

    from kerasce import classifiers
    from kerasce.distribute import export_location, get_strategy, is_chief, worker_path

    strategy = get_strategy(args.strategy)  # first TensorFlow work (MultiWorkerMirroredStrategy needs it)
    keras.utils.set_random_seed(args.seed)
    export_dir = args.export_dir or default_export_dir(args.dataset, saved_models or Path.cwd() / "saved_models")
    backup_dir = worker_path(args.backup_dir or export_dir.with_name(export_dir.name + ".backup"), strategy)
    # Refuses a backup made with other flags before any data is loaded or weights are built.
    backup = open_backup(backup_dir, vars(args), may_change=MAY_CHANGE_ON_RESUME, fresh=args.fresh)
    with backup.removed_if_unused():
        print("settings: " + ", ".join(f"{key}={value}" for key, value in vars(args).items()))
        print(f"export to {export_dir}, backups in {backup_dir}, {strategy.num_replicas_in_sync} replica(s)")
        _print_versions()
        data = _load_data(args)
        model = _build(args, data, strategy)
        trained = _train(args, model, data, backup)
        results, plot_name, write_extras = _evaluate(args, model, data, trained, backup)
        with export_location(export_dir, strategy) as location:  # only the chief's copy is kept
            classifiers.export_image_classifier(location, model, write_extras=write_extras)
    backup.discard()  # trained and exported: nothing left to resume
    if is_chief(strategy):
        print(f"exported SavedModel, model.keras, metrics.json, {LOG_FILE} and {plot_name} to {export_dir}")
    return results


def run(argv: list[str] | None = None, *, saved_models: Path | None = None) -> None:
    """:func:`main` as a command: a user error (unknown dataset, offline, NaN loss, ...) exits with one line
    ``error: <message>`` and status 1."""
    try:
        main(argv, saved_models=saved_models)
    except (ValueError, RuntimeError, FloatingPointError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    run()
