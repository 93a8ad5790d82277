"""Smoke test of an installed kerasce wheel, run by .ci/run from a directory outside the source tree.

It checks what a user of the wheel meets first: the installed package (not the checkout) is imported, its
version is the wheel's, it ships ``py.typed``, a kerasce loss trains in ``compile``/``fit`` behind
``SkipNonFinite``, and the model goes through a ``.keras`` round trip that a fresh interpreter loads with
``kerasce.load_model``. .ci/run installs the wheel with its ``jax`` extra alone and runs this on JAX: the
loss-only install works without TensorFlow.
"""

import importlib.metadata
import importlib.resources
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def fail(message: str) -> None:
    sys.exit(f"smoke test: {message}")


def main() -> None:
    import kerasce

    source_tree = Path(__file__).resolve().parent.parent
    installed = Path(kerasce.__file__).resolve()
    if source_tree in installed.parents:
        fail(f"kerasce was imported from the source tree ({installed}), not from the installed wheel")
    if importlib.metadata.version("kerasce") != kerasce.__version__:
        fail(f"metadata version {importlib.metadata.version('kerasce')} != kerasce.__version__ {kerasce.__version__}")
    if not importlib.resources.files("kerasce").joinpath("py.typed").is_file():
        fail("the installed package has no py.typed marker (PEP 561): check [tool.setuptools.package-data]")

    import keras
    import numpy as np

    from kerasce.losses import SoftmaxCrossEntropy
    from kerasce.optimizers import SkipNonFinite

    if os.environ.get("KERAS_BACKEND") == "jax" and importlib.util.find_spec("tensorflow") is not None:
        fail("the loss-only install (kerasce[jax]) brought TensorFlow")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)  # 3 classes learnable from the inputs
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    model.compile(SkipNonFinite(keras.optimizers.Adam(0.05)), loss=SoftmaxCrossEntropy(label_smoothing=0.1))
    history = model.fit(x, y, epochs=20, verbose=0).history["loss"]
    if not (np.isfinite(history).all() and history[-1] < history[0]):
        fail(f"training with SoftmaxCrossEntropy did not lower the loss: {history[0]} -> {history[-1]}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        expected = model.predict(x, verbose=0)
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "expected.npy", expected)
        # A fresh interpreter, as a user loading the file later: kerasce.load_model must find the loss class.
        code = (
            "import sys, numpy as np, kerasce\n"
            "m = kerasce.load_model(sys.argv[1])\n"
            "assert type(m.loss).__name__ == 'SoftmaxCrossEntropy', m.loss\n"
            "assert m.loss.get_config()['label_smoothing'] == 0.1, m.loss.get_config()\n"
            "assert type(m.optimizer).__name__ == 'SkipNonFinite', m.optimizer\n"
            "np.testing.assert_allclose(m.predict(np.load(sys.argv[2]), verbose=0), np.load(sys.argv[3]), atol=1e-6)\n"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(path), str(Path(tmp) / "x.npy"), str(Path(tmp) / "expected.npy")],
            cwd=tmp,
            check=True,
        )
    print(f"smoke test passed: kerasce {kerasce.__version__} from {installed.parent}")


if __name__ == "__main__":
    main()
