"""Result files shared by the benchmarks: one JSON record per run, read by the docs' benchmarks page.

Every benchmark script ends with ``save_result(name, figures)``. The record holds what is needed to trust
and repeat a figure: the command line, the UTC date, the git commit (with a ``+dirty`` mark when the tree
had uncommitted changes), the machine, the library versions, and the figures themselves. Files are named
``benchmarks/results/<name>/<UTC timestamp>.json`` so that a claim's history is its folder, oldest first.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
LIBRARIES = ("kerasce", "keras", "tensorflow", "jax", "torch", "numpy", "gymnasium", "stable-baselines3")


def _commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True)
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: processor, cores, memory, Python, and how busy it was."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]  # a busy machine makes every figure of the run noisier
    except OSError:
        load = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "load_average_1_5_15_min": load,
    }


def save_result(name: str, figures: dict[str, Any], *, argv: list[str] | None = None) -> Path:
    """Writes one run's record to ``benchmarks/results/<name>/<timestamp>.json`` and returns its path.

    Args:
        name: the claim's name, e.g. ``"losses-tensorflow"``; also the folder of its history.
        figures: what the run measured, JSON-serialisable (numbers, lists, nested dicts).
        argv: the command line to record; defaults to ``sys.argv``.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    argv = sys.argv if argv is None else argv
    record = {
        "name": name,
        "command": "python " + shlex.join([os.path.relpath(argv[0]) if argv else "", *argv[1:]]),
        "date": now.isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": machine(),
        "versions": _versions(),
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "figures": figures,
    }
    folder = RESULTS / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
