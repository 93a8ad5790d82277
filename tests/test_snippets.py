"""Every Python snippet of README.md and docs/*.md runs as pasted, in a fresh interpreter.

A snippet is a fenced block opened by three backticks and ``python``. Each runs alone (no state shared with
the blocks before it) as ``python -c`` runs it, in an empty temporary directory, so it needs its own imports
and its own tiny model, and files it writes go nowhere near the repository. The interpreters are forked from
one that has imported tensorflow and keras and done nothing else (tests/helpers/zygote.py): the import is
paid once per pytest worker instead of once per snippet. Shell blocks are checked where it is cheap: every
``python some/script.py`` they show names a script that exists.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def fenced_blocks(path: Path, language: str) -> list[tuple[str, str]]:
    """The ``language`` blocks of a Markdown file, as ``("file:line", code)`` pairs."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group(1) == language:
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{path.relative_to(ROOT)}:{line}", match.group(2)))
    return blocks


PYTHON_SNIPPETS = [block for path in DOCUMENTS for block in fenced_blocks(path, "python")]
SHELL_SNIPPETS = [block for path in DOCUMENTS for block in fenced_blocks(path, "bash")]


def test_the_documents_have_snippets():
    """The extraction finds blocks at all (a broken regex would make every test below vacuous)."""
    where = {location.split(":")[0] for location, _ in PYTHON_SNIPPETS}
    assert "README.md" in where and len(where) >= 3, where
    assert len(PYTHON_SNIPPETS) >= 8


@pytest.fixture
def run_snippet(zygote):
    """``run_snippet(code, cwd)`` -> a CompletedProcess: ``code`` run as ``python -c`` in a fresh interpreter
    (forked from tests/helpers/zygote.py's, which imported tensorflow and keras) that imports this checkout's
    kerasce."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return lambda code, cwd: zygote.run(code=code, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("location, code", PYTHON_SNIPPETS, ids=[loc for loc, _ in PYTHON_SNIPPETS])
def test_python_snippet_runs_as_pasted(location, code, tmp_path, run_snippet):
    result = run_snippet(code, tmp_path)
    assert result.returncode == 0, f"{location} fails as pasted:\n{code}\n--- stderr ---\n{result.stderr[-4000:]}"


@pytest.mark.slow  # starts tests/helpers/zygote.py (a TensorFlow import)
def test_a_broken_snippet_is_reported(tmp_path, run_snippet):
    """Negative control: the runner sees a failure (a snippet that uses a name it never imports)."""
    result = run_snippet("x = keras.layers.Dense(3)\n", tmp_path)
    assert result.returncode != 0 and "NameError" in result.stderr


@pytest.mark.slow
def test_each_snippet_starts_from_a_fresh_interpreter(tmp_path, run_snippet):
    """The forked interpreters share nothing: kerasce is not preloaded (a snippet must import it, and what its
    import registers), Keras state set by one snippet is gone in the next, and a snippet's exit status, output
    and ``__main__`` are those of ``python -c``."""
    first = run_snippet(
        "import sys, keras\n"
        "assert not [m for m in sys.modules if m.startswith('kerasce')], 'kerasce preloaded'\n"
        "assert __name__ == '__main__' and sys.argv == ['-c'] and sys.path[0] == ''\n"
        "keras.config.set_floatx('float16')\n"
        "print('out'); print('err', file=sys.stderr)\n"
        "sys.exit(3)\n",
        tmp_path,
    )
    assert (first.returncode, first.stdout, first.stderr) == (3, "out\n", "err\n"), first.stderr
    second = run_snippet("import keras\nassert keras.config.floatx() == 'float32', keras.config.floatx()\n", tmp_path)
    assert second.returncode == 0, second.stderr


@pytest.mark.parametrize("location, code", SHELL_SNIPPETS, ids=[loc for loc, _ in SHELL_SNIPPETS])
def test_scripts_named_in_shell_snippets_exist(location, code):
    scripts = re.findall(r"\bpython3? (\S+\.py)\b", code)
    missing = [script for script in scripts if not (ROOT / script).is_file()]
    assert not missing, f"{location} runs scripts that do not exist: {missing}"
