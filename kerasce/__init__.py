"""kerasce: cross-entropy losses for Keras 3, and REINFORCE as the same loss weighted by the return.

``import kerasce`` is cheap on purpose (it does not import TensorFlow), so command lines that only parse
their flags stay fast. Import the modules you use (``kerasce.losses``, ``kerasce.classifiers``,
``kerasce.rl``, ...); to load a saved ``.keras`` file, use :func:`kerasce.load_model`.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

# The single source of the version: pyproject.toml reads it ([tool.setuptools.dynamic]).
__version__ = "0.2.0.dev0"

# The modules whose import registers kerasce's Keras serializables (losses, optimizers, models); the models
# are TensorFlow's only, so on another backend their modules are not imported.
SERIALIZABLE_MODULES = ("kerasce.losses", "kerasce.optimizers", "kerasce.classifiers", "kerasce.rl")
TENSORFLOW_ONLY_MODULES = ("kerasce.classifiers", "kerasce.rl")


def register_serializables() -> None:
    """Imports every kerasce module that registers Keras serializables for the active Keras backend.

    After this call, ``keras.saving.load_model`` finds kerasce's classes (``SoftmaxCrossEntropy``,
    ``SkipNonFinite``, and on TensorFlow ``ImageClassifier``, ``ReinforceAgent``, ...) without
    ``custom_objects``.
    """
    import keras

    on_tensorflow = keras.backend.backend() == "tensorflow"
    for name in SERIALIZABLE_MODULES:
        if on_tensorflow or name not in TENSORFLOW_ONLY_MODULES:
            importlib.import_module(name)


def load_model(
    path: str | os.PathLike,
    *,
    custom_objects: dict[str, Any] | None = None,
    compile: bool = True,
    safe_mode: bool = True,
) -> keras.Model:
    """Loads a ``.keras`` file saved with kerasce objects in a fresh interpreter.

    ``keras.saving.load_model`` only knows the classes whose modules were imported; a file that holds a
    kerasce loss, classifier or agent then fails with ``Could not locate class 'ImageClassifier'``. This
    function registers every kerasce serializable first (:func:`register_serializables`), then calls it.

    Args:
        path: a ``.keras`` file.
        custom_objects: classes or functions of your own that the file refers to, by name.
        compile: whether to compile the model with the saved loss, metrics and optimizer.
        safe_mode: Keras's protection against loading arbitrary code (lambdas); keep it on for files you
            did not write yourself.

    Returns:
        The model, with its weights, and compiled if ``compile`` is true and it was compiled when saved.

    Raises:
        TypeError: the file refers to a class that neither kerasce nor ``custom_objects`` provides; the
            message names what to import or pass.
        ValueError: the path is not a ``.keras`` file Keras can read (Keras's own message).
    """
    register_serializables()
    import keras

    try:
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
    except TypeError as err:
        if "Could not locate" not in str(err):
            raise
        raise TypeError(
            "`custom_objects` must hold every class or function the file refers to that kerasce does not define. "
            f"Received: custom_objects={custom_objects!r} for path={os.fspath(path)!r}. Import the module that "
            "registers it (@keras.saving.register_keras_serializable) before loading, or pass it as "
            "custom_objects={'Name': Name}. Keras said: " + str(err)
        ) from err
