"""Every command line of the project (examples, benchmarks, kerasce.cli, the launcher) answers --help at once: no
TensorFlow import, its defaults shown."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Modules whose name starts with "_" (benchmarks/_timing.py) are helpers the scripts import, not command lines.
SCRIPTS = sorted(
    str(p.relative_to(ROOT))
    for p in [*ROOT.glob("examples/*.py"), *ROOT.glob("benchmarks/*.py")]
    if not p.name.startswith("_")
)

# Runs a script's --help as `python script.py --help` would, then reports whether TensorFlow was imported.
PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    if sys.argv[0].startswith("-m "):
        runpy.run_module(sys.argv[0][3:], run_name="__main__")
    else:
        runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print("TENSORFLOW IMPORTED" if "tensorflow" in sys.modules else "no tensorflow")
"""


@pytest.mark.parametrize("script", [*SCRIPTS, "-m kerasce.launch", "-m kerasce.cli.classify"])
def test_help_answers_without_tensorflow_and_shows_defaults(script):
    """Mutation tried: `import tensorflow` back at the top of benchmarks/losses.py -> red."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().endswith("no tensorflow"), done.stdout[-500:]
    assert "usage:" in done.stdout and "(default" in done.stdout
