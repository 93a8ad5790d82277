"""Run Python code in a fresh process that cannot import kerasce: exports must need TensorFlow only.

kerasce is installed (editable) in the test environment, so leaving it off ``sys.path`` is not enough:
the process blocks the import itself, checks that the block works, runs the code, and finally checks that
no kerasce module was loaded. The process is forked from tests/helpers/zygote.py's, which has imported tensorflow
and keras but never kerasce (so the block is checked before anything could have loaded it).
"""

import os
import textwrap

from helpers.zygote import Zygote

_PRELUDE = """
import importlib.abc, sys

class _BlockKerasce(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "kerasce" or name.startswith("kerasce."):
            raise ImportError("kerasce is blocked in this process")

sys.meta_path.insert(0, _BlockKerasce())
try:
    import kerasce  # noqa: F401
except ImportError:
    pass
else:
    sys.exit("kerasce could still be imported")
"""

_POSTLUDE = """
if any(m == "kerasce" or m.startswith("kerasce.") for m in sys.modules):
    sys.exit("a kerasce module was loaded")
"""


def run_without_kerasce(zygote: Zygote, code: str, *args: object, cwd: str | os.PathLike) -> str:
    """Runs `code` (with ``sys.argv[1:] == [str(a) for a in args]``) in a fresh interpreter forked from `zygote`
    (the ``zygote`` fixture) that cannot import kerasce; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    script = _PRELUDE + textwrap.dedent(code) + _POSTLUDE
    result = zygote.run(None, *map(str, args), code=script, cwd=cwd, env=env, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"kerasce-free process failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout
