"""How fast the command lines answer `--help` and a bad flag, against a bare `import tensorflow`.

    python benchmarks/cli_startup.py --rounds 5

A fresh process per command is the point here: what a user waits for is the interpreter's start, the imports
and the flag checks. Each round runs every command once, interleaved; the table shows the median wall time
and its ratio to `python -c "import tensorflow"` (what importing TensorFlow before the flag checks would cost).
The figures go to benchmarks/results/cli-startup/.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from kerasce.cli.runs import ArgumentParser, positive_int

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "image_classifier.py --help": [str(REPO / "examples" / "image_classifier.py"), "--help"],
    "image_classifier.py --learning-rate -1": [str(REPO / "examples" / "image_classifier.py"), "--learning-rate", "-1"],
    "-m kerasce.cli.classify --help": ["-m", "kerasce.cli.classify", "--help"],
    "reinforce_cartpole.py --help": [str(REPO / "examples" / "reinforce_cartpole.py"), "--help"],
    "reinforce_cartpole.py --max-seconds 0": [str(REPO / "examples" / "reinforce_cartpole.py"), "--max-seconds", "0"],
    "python -c 'import tensorflow'": ["-c", "import tensorflow"],
}


def main() -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds")
    rounds = parser.parse_args().rounds
    from _results import save_result  # beside this script: importable when run as one, after --help answered

    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, args in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, check=False)
            times[name].append(time.perf_counter() - start)
    baseline = statistics.median(times["python -c 'import tensorflow'"])
    print(f"| command | median s ({rounds} rounds) | / import tensorflow |")
    print("| --- | --- | --- |")
    figures = {}
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} | {median / baseline:.3f} |")
        figures[name] = {"median_seconds": median, "ratio_to_import_tensorflow": median / baseline}
    print(f"saved {save_result('cli-startup', {'rounds': rounds, 'commands': figures})}")


if __name__ == "__main__":
    main()
