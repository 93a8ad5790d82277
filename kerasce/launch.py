"""Start N local worker processes of one training script, each with its ``TF_CONFIG`` on 127.0.0.1.

    python -m kerasce.launch --workers 2 examples/reinforce_cartpole.py --strategy multiworker --env Acrobot-v1

Every worker runs ``python SCRIPT ARGS...`` with ``TF_CONFIG`` naming a cluster of ``--workers`` workers
on free ports of 127.0.0.1 (worker 0 is the chief) and its own index, and with its TensorFlow, OpenMP
and BLAS thread pools limited to ``--threads`` (default: the cores divided among the workers), so that
N workers share the machine instead of fighting over it. With ``--pin`` each worker is also bound to
cores of its own (worker ``i`` to the ``i``-th group of ``--threads`` cores this process may use): its
side threads (gRPC, collectives) then never preempt another worker's main thread. Output lines are
prefixed with ``[w<i>]``.

The launch fails as a whole: when one worker exits with an error, the others get SIGINT (then SIGKILL
after ``--grace`` seconds), and the launcher exits with that worker's code, naming it. Ctrl-C (SIGINT)
or SIGTERM to the launcher is forwarded to every worker. Nothing here is needed across machines: there
the user sets ``TF_CONFIG`` on each machine and runs the same script command line.

This module imports no TensorFlow: it starts in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from kerasce.cli.runs import ArgumentParser, positive_int

__all__ = ["launch", "main", "tf_configs", "worker_cpus"]


def tf_configs(num_workers: int, host: str = "127.0.0.1") -> list[str]:
    """``TF_CONFIG`` values of a cluster of `num_workers` workers on free ports of `host`; worker 0 is the chief.

    Raises:
      ValueError: `num_workers` < 1.
    """
    if num_workers < 1:
        raise ValueError(f"`num_workers` must be >= 1. Received: num_workers={num_workers}")
    sockets = [socket.socket() for _ in range(num_workers)]
    try:
        for s in sockets:  # all bound at once: distinct ports
            s.bind((host, 0))
        cluster = {"worker": [f"{host}:{s.getsockname()[1]}" for s in sockets]}
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(num_workers)]


def _worker_env(config: str, threads: int) -> dict[str, str]:
    env = dict(os.environ, TF_CONFIG=config)
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ):
        env[name] = str(threads)
    return env


def _relay(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(f"{prefix}{line}")
        out.flush()
    stream.close()


def default_threads(workers: int) -> int:
    """Threads per worker when not given: the cores divided among the workers, at least 1."""
    return max((os.cpu_count() or 1) // max(workers, 1), 1)


def worker_cpus(workers: int, threads: int) -> list[list[int]]:
    """Disjoint groups of `threads` CPUs, one per worker, from those this process may run on.

    Raises:
      ValueError: fewer than ``workers * threads`` CPUs are available.
    """
    available = sorted(os.sched_getaffinity(0))
    if workers * threads > len(available):
        raise ValueError(
            f"`workers * threads` must be at most the {len(available)} CPUs available ({available}) to pin each "
            f"worker to cores of its own. Received: workers={workers}, threads={threads}. Lower --workers or "
            "--threads, or leave out --pin."
        )
    return [available[i * threads : (i + 1) * threads] for i in range(workers)]


def launch(
    command: Sequence[str], workers: int, threads: int | None = None, grace: float = 20.0, pin: bool = False
) -> int:
    """Run `command` (argv of a Python script and its arguments) as `workers` local workers.

    With `pin`, worker ``i`` runs on the CPUs ``worker_cpus(workers, threads)[i]`` (Linux).

    Returns:
      0 when every worker succeeds; else the exit code of the first worker that failed (130 after a
      forwarded Ctrl-C).

    Raises:
      ValueError: `workers` < 1, `threads` < 1, an empty command, or `pin` with too few CPUs.
    """
    if not command:
        raise ValueError(
            "`command` must name a script to run, e.g. examples/reinforce_cartpole.py --strategy multiworker. "
            "Received: command=[]"
        )
    if threads is None:
        threads = default_threads(workers)
    if threads < 1:
        raise ValueError(f"`threads` must be >= 1. Received: threads={threads}")
    cpus = worker_cpus(workers, threads) if pin else None
    configs = tf_configs(workers)
    procs: list[subprocess.Popen] = []
    relays = []
    for i, config in enumerate(configs):
        # A session of its own: Ctrl-C in a terminal reaches the launcher, which forwards it once.
        proc = subprocess.Popen(
            [sys.executable, *command],
            env=_worker_env(config, threads),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        if cpus is not None:
            # Bound right after exec, before the interpreter starts a thread: later threads inherit it.
            os.sched_setaffinity(proc.pid, cpus[i])
        procs.append(proc)
        relay = threading.Thread(target=_relay, args=(proc.stdout, f"[w{i}] ", sys.stdout), daemon=True)
        relay.start()
        relays.append(relay)

    interrupted: list[int] = []

    def forward(signum, _frame):
        interrupted.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    failed: tuple[int, int] | None = None
    deadline = None
    try:
        while any(p.poll() is None for p in procs):
            for i, p in enumerate(procs):
                code = p.poll()
                if code not in (None, 0) and failed is None and not interrupted:
                    failed = (i, code)
                    print(
                        f"kerasce.launch: worker {i} (pid {p.pid}) exited with code {code}; stopping the "
                        "other workers.",
                        file=sys.stderr,
                        flush=True,
                    )
                    forward(signal.SIGINT, None)
                    interrupted.clear()
            if (failed is not None or interrupted) and deadline is None:
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.05)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for relay in relays:
            relay.join(timeout=5)
    if failed is None:
        failed = next(((i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0), None)
        if failed is not None:
            print(
                f"kerasce.launch: worker {failed[0]} (pid {procs[failed[0]].pid}) exited with code {failed[1]}.",
                file=sys.stderr,
                flush=True,
            )
    if interrupted and failed is None:
        return 130
    if failed is None:
        return 0
    return failed[1] if failed[1] > 0 else 128 - failed[1]  # killed by signal s: 128 + s, as a shell says


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m kerasce.launch", description=__doc__)
    parser.add_argument("--workers", type=positive_int, required=True, help="local worker processes to start (>= 1)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="TensorFlow/OpenMP/BLAS threads per worker (default: cores // workers, at least 1)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="bind each worker to --threads cores of its own (Linux; default: the OS schedules them)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds the other workers get to stop after a failure or Ctrl-C before SIGKILL",
    )
    parser.add_argument("script", help="the Python script every worker runs")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args(argv)
    if args.pin:
        try:
            worker_cpus(args.workers, args.threads or default_threads(args.workers))
        except ValueError as error:
            parser.error(str(error))
    if not os.path.isfile(args.script):
        parser.error(f"`script` must be an existing file. Received: script={args.script!r}")
    return launch([args.script, *args.args], args.workers, args.threads, args.grace, pin=args.pin)


if __name__ == "__main__":
    sys.exit(main())
