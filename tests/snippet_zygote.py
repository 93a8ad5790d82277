"""Runs Python snippets as ``python -c`` would, without importing TensorFlow again for each one.

tests/test_snippets.py starts this once per pytest-xdist worker. It imports tensorflow and keras (about 7 s
of CPU here, most of what a short snippet costs) and nothing else of its own, then reads requests from
stdin, one JSON line each: ``{"code": ..., "cwd": ..., "stdout": path, "stderr": path}``. For each it forks
a child that runs the code as ``python -c`` does (a fresh ``__main__``, ``sys.argv == ["-c"]``, the working
directory first on ``sys.path``, stdin empty, stdout and stderr into the two files, a traceback and status 1
on an exception, ``SystemExit`` honoured, ``atexit`` handlers run) and answers ``{"returncode": n}``.

Why the children count as fresh interpreters: the parent runs no TensorFlow op and builds nothing (no
thread pool, no graph, no Keras state) before it forks, so every child starts from the state a plain
``import tensorflow, keras`` leaves, and no child sees what an earlier one did. kerasce and every other
module a snippet imports load in the child: a snippet that forgets an import, or relies on an import's side
effect (registering the TFDS builders), fails here as it fails when pasted. (Threads alive at the fork are
the BLAS pools of NumPy and SciPy, which OpenBLAS parks across ``fork``.)
"""

import json
import os
import sys
import traceback
import types

import keras  # noqa: F401  (preloaded: the cost every snippet would pay again)
import tensorflow  # noqa: F401


def _run_child(request: dict) -> None:
    """In the forked child: runs the snippet and leaves through ``SystemExit`` (the interpreter's exit)."""
    os.chdir(request["cwd"])
    stdin = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    sys.argv = ["-c"]
    sys.path[0] = ""  # python -c: the working directory, where this script's directory was
    try:
        exec(compile(request["code"], "<string>", "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001  (what the interpreter does with an uncaught exception)
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        sys.exit(1)
    sys.exit(0)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request)  # does not return
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
