"""Test set-up shared by every test module: quiet TensorFlow, a fixed seed per test, working xdist groups."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook
def pytest_collection_modifyitems(config, items):
    """Keeps ``--dist loadgroup`` working on pytest >= 9.2 (pytest-xdist issue #1386, fix pending in #1388).

    pytest-xdist 3.8 sends the tests marked ``xdist_group("name")`` to one worker by appending ``@name`` to
    their node ids, but pytest 9.2 keeps node ids in ``item._id`` and ignores the ``item._nodeid`` that
    xdist writes: the tests are spread as if unmarked, and each worker runs their module fixtures (whole
    process launches) again. This appends the suffix where xdist's did not take effect, as xdist would.
    """
    if not getattr(config.option, "loadgroup", False):  # True only in xdist workers run with --dist loadgroup
        return
    for item in items:
        names = sorted(
            {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
        )
        node_id = getattr(item, "_id", None)
        if names and "@" not in item.nodeid and node_id is not None and hasattr(type(node_id), "parse"):
            item._id = type(node_id).parse(f"{item.nodeid}@{'_'.join(names)}")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same Python, NumPy and TensorFlow seeds."""
    # Imported here, not at the top: the pytest-xdist controller then never loads TensorFlow, whose
    # start-up messages would otherwise print after the test summary.
    import keras

    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    """A ``helpers.zygote.Zygote`` of this worker: fresh Python processes forked from one that imported TensorFlow.

    Started on first use (one TensorFlow import per pytest-xdist worker instead of one per process).
    """
    from helpers.zygote import Zygote

    root = str(Path(__file__).resolve().parents[1])  # this checkout's kerasce first, as PYTHONPATH=ROOT would
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    server = Zygote(tmp_path_factory.mktemp("zygote"), env=env)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _fresh_torch_compile_cache():
    """Each test compiles afresh on torch: after 8 recompilations of one function (Keras's train step, a test's
    lambda) torch.compile falls back to eager for good, silently, and a test of the compiled path would test
    the eager one."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and os.environ.get("KERAS_BACKEND") == "torch":
        torch.compiler.reset()
    yield
