"""Test set-up shared by every test module: quiet TensorFlow, a fixed seed per test."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same Python, NumPy and TensorFlow seeds."""
    # Imported here, not at the top: the pytest-xdist controller then never loads TensorFlow, whose
    # start-up messages would otherwise print after the test summary.
    import keras

    keras.utils.set_random_seed(0)
    yield
