"""How fast the examples answer `--help` and a bad flag, against a bare `import tensorflow` (what they used to pay).

    python benchmarks/cli_startup.py --rounds 5

Each round runs every command once, interleaved, in fresh processes; the table shows the median wall time
and its ratio to `python -c "import tensorflow"`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kerasce.cli.runs import HelpFormatter

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "image_classifier.py --help": [str(REPO / "examples" / "image_classifier.py"), "--help"],
    "image_classifier.py --learning-rate -1": [str(REPO / "examples" / "image_classifier.py"), "--learning-rate", "-1"],
    "reinforce_cartpole.py --help": [str(REPO / "examples" / "reinforce_cartpole.py"), "--help"],
    "reinforce_cartpole.py --max-seconds 0": [str(REPO / "examples" / "reinforce_cartpole.py"), "--max-seconds", "0"],
    "python -c 'import tensorflow'": ["-c", "import tensorflow"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    rounds = parser.parse_args().rounds
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, args in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, check=False)
            times[name].append(time.perf_counter() - start)
    baseline = statistics.median(times["python -c 'import tensorflow'"])
    print(f"| command | median s ({rounds} rounds) | / import tensorflow |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} | {median / baseline:.3f} |")


if __name__ == "__main__":
    main()
