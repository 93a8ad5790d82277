"""kerasce.launch: local workers with their TF_CONFIG, fail-as-a-whole, Ctrl-C forwarding. No TensorFlow here:
the workers are tiny Python scripts, so each test takes a second or two."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from kerasce.launch import tf_configs, worker_cpus

LAUNCH = [sys.executable, "-m", "kerasce.launch"]


def script(tmp_path, body: str) -> str:
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.parametrize("workers", [1, 3])
def test_tf_configs_name_distinct_loopback_ports_and_every_index(workers):
    configs = [json.loads(c) for c in tf_configs(workers)]
    addresses = configs[0]["cluster"]["worker"]
    assert len(addresses) == len(set(addresses)) == workers
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(workers)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)


def test_every_worker_gets_its_tf_config_and_thread_limits(tmp_path):
    worker = script(
        tmp_path,
        """
        import json, os, sys
        config = json.loads(os.environ["TF_CONFIG"])
        print("task", config["task"]["index"], len(config["cluster"]["worker"]), os.environ["OMP_NUM_THREADS"],
              os.environ["TF_NUM_INTRAOP_THREADS"], sys.argv[1:])
    """,
    )
    done = subprocess.run(
        LAUNCH + ["--workers", "2", "--threads", "1", worker, "--flag", "x"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = sorted(line for line in done.stdout.splitlines() if "task" in line)
    assert lines == ["[w0] task 0 2 1 1 ['--flag', 'x']", "[w1] task 1 2 1 1 ['--flag', 'x']"]


def test_a_failing_worker_stops_the_others_and_is_named(tmp_path):
    worker = script(
        tmp_path,
        """
        import json, os, sys, time
        if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
            sys.exit(3)
        time.sleep(120)  # the chief would wait for worker 1 forever
    """,
    )
    start = time.monotonic()
    done = subprocess.run(LAUNCH + ["--workers", "2", worker], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "worker 1 (pid" in done.stderr and "exited with code 3" in done.stderr
    assert time.monotonic() - start < 30


@pytest.mark.slow  # waits out a 2 s grace period
def test_a_worker_ignoring_sigint_is_killed_after_the_grace_period(tmp_path):
    worker = script(
        tmp_path,
        """
        import json, os, signal, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0:
            sys.exit(5)
        time.sleep(120)
    """,
    )
    start = time.monotonic()
    done = subprocess.run(
        LAUNCH + ["--workers", "2", "--grace", "2", worker], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 5 and "worker 0" in done.stderr
    assert time.monotonic() - start < 30


def test_ctrl_c_is_forwarded_to_every_worker(tmp_path):
    worker = script(
        tmp_path,
        f"""
        import json, os, signal, sys, time
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        def stop(signum, frame):
            open(os.path.join({str(tmp_path)!r}, f"stopped{{index}}"), "w").close()
            sys.exit(130)
        signal.signal(signal.SIGINT, stop)
        print("ready", flush=True)
        time.sleep(120)
    """,
    )
    proc = subprocess.Popen(
        LAUNCH + ["--workers", "2", worker], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    ready = 0
    while ready < 2:  # both workers have installed their handler
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        ready += "ready" in line
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert (tmp_path / "stopped0").exists() and (tmp_path / "stopped1").exists()


def test_pinned_workers_and_their_threads_run_on_cpus_of_their_own(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    worker = script(
        tmp_path,
        """
        import json, os, threading
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        seen = []
        thread = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
        thread.start(); thread.join()
        print("cpus", index, sorted(os.sched_getaffinity(0)), seen[0])
    """,
    )
    done = subprocess.run(
        LAUNCH + ["--workers", "2", "--threads", "1", "--pin", worker], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    expected = worker_cpus(2, 1)
    lines = sorted(line for line in done.stdout.splitlines() if "cpus" in line)
    assert lines == [f"[w{i}] cpus {i} {expected[i]} {expected[i]}" for i in range(2)]
    assert expected[0] != expected[1]


def test_worker_cpus_are_disjoint_groups_and_too_many_is_a_clear_error():
    cpus = sorted(os.sched_getaffinity(0))
    groups = worker_cpus(len(cpus), 1)
    assert groups == [[c] for c in cpus]
    with pytest.raises(ValueError, match=rf"must be at most the {len(cpus)} CPUs available .*Received: workers="):
        worker_cpus(len(cpus) + 1, 1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--workers", "64", "--threads", "64", "--pin", "x.py"],
            "`workers * threads` must be at most the ",
        ),
        (["--workers", "0", "x.py"], "error: `--workers` must be an integer >= 1. Received: --workers=0"),
        (
            ["--workers", "2", "--threads", "0", "x.py"],
            "error: `--threads` must be an integer >= 1. Received: --threads=0",
        ),
        (["--workers", "2", "no_such_script.py"], "error: `script` must be an existing file. Received: script="),
    ],
)
def test_bad_arguments_are_clear_errors(argv, message):
    done = subprocess.run(LAUNCH + argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr
