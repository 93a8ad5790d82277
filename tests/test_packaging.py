"""Habits of an installable library: one version, a py.typed marker in the wheel, loading saved models.

The wheel itself is built and installed into a fresh environment by ``.ci/run`` (``.ci/smoke_test.py``);
these tests check the configuration that produces it and ``kerasce.load_model``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from packaging.version import Version

import kerasce
from kerasce.losses import SoftmaxCrossEntropy

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_is_written_once():
    """pyproject.toml reads the version from kerasce.__version__ (setuptools parses it without importing)."""
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kerasce.__version__"}
    # setuptools reads the attribute statically only when it is a plain string literal in kerasce/__init__.py.
    tree = ast.parse((ROOT / "kerasce" / "__init__.py").read_text(encoding="utf-8"))
    literals = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert literals == [kerasce.__version__]
    Version(kerasce.__version__)  # PEP 440, or this raises


def test_the_changelog_has_a_section_for_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[?([^\]\s]+)\]?(.*)$", changelog, flags=re.MULTILINE)
    release = Version(kerasce.__version__).base_version  # 0.2.0.dev0 is recorded under 0.2.0
    assert any(release in name + rest for name, rest in headings), (release, headings)
    assert headings[-1][0] == "0.1.0"


def test_py_typed_is_shipped_as_package_data():
    assert (ROOT / "kerasce" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["kerasce"]


def test_import_kerasce_does_not_import_tensorflow():
    """Command lines import kerasce before they parse flags: that must stay cheap."""
    code = "import sys, kerasce; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["False", "False"]


class Unregistered(keras.layers.Dense):
    """A layer of the user's own that no module registers."""


def test_load_model_round_trip_and_missing_class_message(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", loss=SoftmaxCrossEntropy(label_smoothing=0.2, class_weight=[1.0, 2.0, 3.0]))
    model.save(tmp_path / "ok.keras")
    loaded = kerasce.load_model(tmp_path / "ok.keras")
    assert isinstance(loaded.loss, SoftmaxCrossEntropy)
    assert loaded.loss.get_config() == model.loss.get_config()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))

    mine = keras.Sequential([keras.Input((4,)), Unregistered(2)])
    mine.save(tmp_path / "mine.keras")
    with pytest.raises(TypeError, match=r"(?s)'.*mine\.keras'.*Import the module.*custom_objects.*Unregistered"):
        kerasce.load_model(tmp_path / "mine.keras")
    assert isinstance(
        kerasce.load_model(tmp_path / "mine.keras", custom_objects={"Unregistered": Unregistered}).layers[0],
        Unregistered,
    )
    with pytest.raises(ValueError, match="File not found"):
        kerasce.load_model(tmp_path / "missing.keras")


def _registering_modules() -> set[str]:
    """Every kerasce module whose source registers a Keras serializable."""
    modules = set()
    for path in (ROOT / "kerasce").rglob("*.py"):
        if "register_keras_serializable" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


@pytest.mark.slow
def test_a_fresh_interpreter_loads_kerasce_models_with_load_model_only(tmp_path, zygote):
    """What a user meets: keras.saving.load_model alone fails on kerasce classes, kerasce.load_model works,
    and register_serializables imports every module that registers a serializable. (The interpreter is forked
    from tests/helpers/zygote.py's, which imported only tensorflow and keras: kerasce and its registrations are new.)"""
    from kerasce.classifiers import build_image_classifier

    build_image_classifier((8, 8, 1), 3).save(tmp_path / "classifier.keras")
    code = textwrap.dedent(
        """
        import sys, keras, kerasce
        try:
            keras.saving.load_model("classifier.keras")
        except TypeError as err:
            assert "Could not locate class 'ImageClassifier'" in str(err), err
        else:
            sys.exit("keras.saving.load_model found ImageClassifier without kerasce: the test is stale")
        model = kerasce.load_model("classifier.keras")
        assert type(model).__name__ == "ImageClassifier" and type(model.loss).__name__ == "SoftmaxCrossEntropy"
        print(" ".join(sorted(m for m in sys.modules if m.startswith("kerasce"))))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    result = zygote.run(code=code, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = set(result.stdout.split())
    assert _registering_modules() <= loaded, _registering_modules() - loaded


TENSORFLOW_ONLY = textwrap.dedent(
    """
    import json
    import keras
    from kerasce import distribute, export
    from kerasce.classifiers import ImageClassifier, build_image_classifier
    from kerasce.rl import ReinforceAgent

    def message(call):
        try:
            call()
        except RuntimeError as err:
            return str(err)
        return None

    inputs = keras.Input((4,))
    print(json.dumps({
        "ImageClassifier": message(lambda: ImageClassifier(inputs, keras.layers.Dense(2)(inputs))),
        "build_image_classifier": message(lambda: build_image_classifier((8, 8, 1), 3)),
        "kerasce.export.export_saved_model": message(lambda: export.export_saved_model("x", None, None, [])),
        "kerasce.distribute.get_strategy": message(lambda: distribute.get_strategy("mirrored")),
        "kerasce.distribute.split_cpu": message(lambda: distribute.split_cpu(2)),
        "ReinforceAgent": message(lambda: ReinforceAgent(observation_shape=(4,), num_actions=2)),
    }))
    """
)


@pytest.mark.slow
def test_tensorflow_only_parts_say_so_on_another_backend(tmp_path):
    """On JAX, each TensorFlow-only entry point refuses at construction with the one message naming the backend
    and the switch (and nothing is written)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", TENSORFLOW_ONLY], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = json.loads(proc.stdout.strip().splitlines()[-1])
    for what, message in messages.items():
        name = "ImageClassifier" if what == "build_image_classifier" else what
        assert message == (
            f'`KERAS_BACKEND` must be "tensorflow" for {name}, which runs on TensorFlow only. '
            "Received: KERAS_BACKEND=jax. Set KERAS_BACKEND=tensorflow before Python imports keras "
            '(and pip install "kerasce[tensorflow]").'
        ), what
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", ["kerasce", "kerasce.optimizers", "kerasce.backend", "kerasce.export"])
def test_backend_neutral_modules_import_no_tensorflow_on_jax(module):
    code = f"import sys, keras, {module}; print(keras.backend.backend(), 'tensorflow' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND="jax")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["jax", "False"]


LOAD_ON_JAX = textwrap.dedent(
    """
    import subprocess, sys, keras, numpy as np
    from kerasce.losses import SoftmaxCrossEntropy
    from kerasce.optimizers import SkipNonFinite

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(SkipNonFinite(keras.optimizers.Adam()), loss=SoftmaxCrossEntropy(label_smoothing=0.1))
    model.fit(np.ones((8, 4)), np.zeros(8), verbose=0)
    model.save("m.keras")
    probe = (
        "import sys, kerasce; m = kerasce.load_model('m.keras'); "
        "print(type(m.optimizer).__name__, type(m.loss).__name__, 'tensorflow' in sys.modules)"
    )
    print(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    """
)


@pytest.mark.slow
def test_load_model_on_jax_registers_losses_and_optimizers_without_tensorflow(tmp_path):
    """`kerasce.load_model` on JAX finds the losses and `SkipNonFinite` and imports none of the TensorFlow-only
    model modules (mutation tried: registering every module on every backend -> TensorFlow imported, red)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_ON_JAX], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["SkipNonFinite", "SoftmaxCrossEntropy", "False"]
