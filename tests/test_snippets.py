"""Every Python snippet of README.md and docs/**/*.md runs as pasted, and prints what its comments say.

A snippet is a fenced block opened by three backticks and ``python``. Each runs alone (no state shared with
the blocks before it) as ``python -c`` runs it, in an empty temporary directory, so it needs its own imports
and its own tiny model, and files it writes go nowhere near the repository. The interpreters are forked from
one that has imported tensorflow and keras and done nothing else (tests/helpers/zygote.py): the import is
paid once per pytest worker instead of once per snippet.

Printed values: a line ``print(...)  # 0.40761`` states what that call prints. In a snippet with such a line,
every ``print`` call must print exactly one line, and each stated output is compared with the printed one:
the text around the numbers must be the same (spaces aside), and each number must equal the stated one to
the precision it is written with (``0.40761`` allows ±0.000005, ``(2, 4)`` exactly 2 and 4).

Shell blocks are checked where it is cheap: every ``python some/script.py`` they show names a script that
exists.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_PRINT = re.compile(r"^\s*print\(")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def fenced_blocks(path: Path, language: str) -> list[tuple[str, str]]:
    """The ``language`` blocks of a Markdown file, as ``("file:line", code)`` pairs."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group(1) == language:
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{path.relative_to(ROOT)}:{line}", match.group(2)))
    return blocks


def stated_outputs(code: str) -> list[str | None]:
    """One entry per line that starts a ``print`` call: the output its ``  # comment`` states, or None."""
    stated = []
    for line in code.splitlines():
        if _PRINT.match(line):
            _, hash_mark, comment = line.rpartition("  # ")
            stated.append(comment.strip() if hash_mark else None)
    return stated


def tolerance(written: str) -> float:
    """Half a unit of the last digit ``written`` shows: ``0.4076`` -> 5e-5, ``3`` -> 0.5, ``1.5e-07`` -> 5e-09."""
    mantissa, _, exponent = written.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def output_problem(stated: str, printed: str) -> str | None:
    """Why ``printed`` is not the output ``stated`` in a comment, or None when it is."""
    skeleton = [re.sub(r"\s+", "", _NUMBER.sub("#", text)) for text in (stated, printed)]
    if skeleton[0] != skeleton[1]:
        return f"printed {printed!r}, the comment says {stated!r}"
    for want, got in zip(_NUMBER.findall(stated), _NUMBER.findall(printed)):
        if abs(float(got) - float(want)) > tolerance(want) + 1e-6 * abs(float(want)):
            return f"printed {printed!r}, the comment says {stated!r} ({got} is not {want} to ±{tolerance(want):g})"
    return None


def output_problems(code: str, stdout: str) -> list[str]:
    """What the snippet ``code`` printed (``stdout``) against what its comments state."""
    stated = stated_outputs(code)
    if all(s is None for s in stated):
        return []
    printed = stdout.splitlines()
    if len(printed) != len(stated):
        return [f"{len(stated)} print calls printed {len(printed)} lines (each must print one line): {printed}"]
    problems = [output_problem(s, p) for s, p in zip(stated, printed) if s is not None]
    return [p for p in problems if p is not None]


PYTHON_SNIPPETS = [block for path in DOCUMENTS for block in fenced_blocks(path, "python")]
SHELL_SNIPPETS = [block for path in DOCUMENTS for block in fenced_blocks(path, "bash")]


def test_the_documents_have_snippets_with_stated_outputs():
    """The extraction finds blocks and stated outputs at all (a broken regex would make the tests vacuous)."""
    where = {location.split(":")[0] for location, _ in PYTHON_SNIPPETS}
    assert "README.md" in where and len(where) >= 5, where
    assert len(PYTHON_SNIPPETS) >= 12
    stated = {loc: [s for s in stated_outputs(code) if s] for loc, code in PYTHON_SNIPPETS}
    assert any(stated[loc] for loc in stated if loc.startswith("README.md")), stated
    assert sum(len(s) for s in stated.values()) >= 8, stated


@pytest.mark.parametrize(
    "stated, printed",
    [
        ("0.40761", "0.4076059949398041"),
        ("0.6114", "0.61142"),
        ("(2, 4, 4)", "(2, 4, 4)"),
        ("(3,) (3, 2)", "(3,)  (3, 2)"),
        ("True", "True"),
        ("1.5e-07", "1.52e-07"),
        ("-2.0", "-2.00004"),
    ],
)
def test_a_printed_value_matches_its_comment_to_the_written_precision(stated, printed):
    assert output_problem(stated, printed) is None


@pytest.mark.parametrize(
    "stated, printed",
    [
        ("0.40761", "0.4077"),  # off in the last written digit
        ("0.6114", "-0.6114"),  # the sign
        ("(2, 4, 4)", "(2, 4, 5)"),  # an integer is exact
        ("(2, 4, 4)", "(2, 4)"),  # a number missing
        ("True", "False"),
        ("1.5e-07", "1.5e-06"),  # the exponent
        ("0.1", "0.2"),
    ],
)
def test_a_printed_value_that_differs_from_its_comment_is_reported(stated, printed):
    assert output_problem(stated, printed) is not None


def test_outputs_are_matched_to_print_calls_in_order():
    code = "x = 1\nprint(x)  # 1\nprint('unchecked')\n    print(x + 1)  # 2\n"
    assert stated_outputs(code) == ["1", None, "2"]
    assert output_problems(code, "1\nanything\n2\n") == []
    assert output_problems(code, "1\nanything\n3\n")  # a wrong value
    assert output_problems(code, "1\n2\n")  # a print call that printed nothing, or two calls on one line
    assert output_problems("print(1)\n", "1\n2\n") == []  # nothing stated: nothing compared


@pytest.fixture
def run_snippet(zygote):
    """``run_snippet(code, cwd)`` -> a CompletedProcess: ``code`` run as ``python -c`` in a fresh interpreter
    (forked from tests/helpers/zygote.py's, which imported tensorflow and keras) that imports this checkout's
    kerasce."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return lambda code, cwd: zygote.run(code=code, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("location, code", PYTHON_SNIPPETS, ids=[loc for loc, _ in PYTHON_SNIPPETS])
def test_python_snippet_runs_as_pasted_and_prints_what_it_states(location, code, tmp_path, run_snippet):
    result = run_snippet(code, tmp_path)
    assert result.returncode == 0, f"{location} fails as pasted:\n{code}\n--- stderr ---\n{result.stderr[-4000:]}"
    problems = output_problems(code, result.stdout)
    assert not problems, f"{location} does not print what it states:\n" + "\n".join(problems)


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


def test_relative_links_in_the_readme_point_to_files():
    """The README links into docs/ (mkdocs checks the links between docs pages, not the README's)."""
    prose = _FENCE.sub("", (ROOT / "README.md").read_text(encoding="utf-8"))
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose)
    relative = [link for link in links if "://" not in link]
    assert len(relative) >= 5, relative
    missing = [link for link in relative if not (ROOT / link).is_file()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


@pytest.mark.parametrize("location, code", SHELL_SNIPPETS, ids=[loc for loc, _ in SHELL_SNIPPETS])
def test_scripts_named_in_shell_snippets_exist(location, code):
    scripts = re.findall(r"\bpython3? (\S+\.py)\b", code)
    missing = [script for script in scripts if not (ROOT / script).is_file()]
    assert not missing, f"{location} runs scripts that do not exist: {missing}"
