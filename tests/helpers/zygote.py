"""Fresh Python processes without a TensorFlow import each: children forked from a parent that imported it.

A TensorFlow import costs about 7 s of CPU here, more than many of the snippets and job scripts the tests
start. ``Zygote`` (the test side; tests/conftest.py holds one per pytest-xdist worker, started on first use)
runs this file as a server that imports tensorflow and keras and nothing else of its own, then forks one
child per request. The child runs a script (``python script.py args``) or code (``python -c code``) as the
interpreter would: a fresh ``__main__``, ``sys.argv`` and ``sys.path[0]`` set as for that command, the
request's environment and working directory, stdin empty, stdout and stderr into files, a traceback and
status 1 on an uncaught exception, ``SystemExit`` honoured, ``atexit`` handlers run at the end.

Why a child counts as a fresh interpreter: the server runs no TensorFlow op and builds nothing before it
forks (TensorFlow's context, devices, thread pools and Keras state are created in the child, so splitting
the CPU into logical devices or joining a cluster from ``TF_CONFIG`` works as in a new process), and no
child sees what another did. kerasce and every module a child imports besides those two load in the child:
code that forgets an import, or relies on an import's side effect, fails as it would in a new process.
(The only threads alive at the fork are the BLAS pools of NumPy and SciPy, which OpenBLAS parks across
``fork``.) What a child cannot show is TensorFlow's own start-up (its import-time messages, the effect of
environment variables read at import): tests of those start real processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import traceback
import types
from pathlib import Path
from typing import Any

# --- the server (python zygote.py) ------------------------------------------------------------------------


def _run_child(request: dict) -> None:
    """In the forked child: runs the request and leaves through ``SystemExit``, as an interpreter exits."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    stdin = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    if "script" in request:
        script = os.path.abspath(request["script"])
        sys.argv = [request["script"], *request["args"]]
        sys.path[0] = os.path.dirname(script)  # python script.py: the script's directory
        main.__file__ = script
        with open(script, encoding="utf-8") as f:
            code = compile(f.read(), script, "exec")
    else:
        sys.argv = ["-c", *request["args"]]
        sys.path[0] = ""  # python -c: the working directory
        code = compile(request["code"], "<string>", "exec")
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001  (what the interpreter does with an uncaught exception)
        frames = error.__traceback__
        traceback.print_exception(type(error), error, frames.tb_next if frames else None)  # without this frame
        sys.exit(1)
    sys.exit(0)


def _serve() -> None:
    import keras  # noqa: F401  (preloaded: what every child would import again)
    import tensorflow  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _run_child(request)  # does not return
            reply: dict[str, int | None] = {"pid": pid}
        else:  # "wait": blocks until the child ends; "poll": answers at once (returncode None while it runs)
            pid, status = os.waitpid(request["pid"], 0 if request["op"] == "wait" else os.WNOHANG)
            reply = {"returncode": os.waitstatus_to_exitcode(status) if pid else None}
        print(json.dumps(reply), flush=True)


# --- the client (in the test process) ---------------------------------------------------------------------


class Zygote:
    """Starts the server; ``start(...)`` forks a child from it and returns a ``Child`` (a small ``Popen``)."""

    def __init__(self, directory: Path, env: dict[str, str] | None = None):
        self.directory = directory  # the children's stdout and stderr files
        self._count = 0
        self._log = directory / "zygote.stderr"
        with open(self._log, "w") as log:
            self._server = subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        if self._server.stdin is None or self._server.stdout is None:  # for the type checker: PIPE gives both
            raise RuntimeError("zygote.py started without pipes")
        self._requests, self._replies = self._server.stdin, self._server.stdout

    def _send(self, request: dict[str, Any]) -> None:
        self._requests.write(json.dumps(request) + "\n")
        self._requests.flush()

    def _reply(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next reply, or None if none came within `timeout` seconds."""
        if timeout is not None and not select.select([self._replies], [], [], timeout)[0]:
            return None
        line = self._replies.readline()
        if not line:
            raise RuntimeError(f"zygote.py died ({self._server.wait()}):\n{self._log.read_text()[-3000:]}")
        return json.loads(line)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self._send(request)
        reply = self._reply()
        assert reply is not None  # no timeout: a reply or an exception
        return reply

    def start(
        self,
        script: str | os.PathLike | None = None,
        *args: str,
        code: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> Child:
        """``python script args...`` or ``python -c code args...`` in a forked child; `env` replaces the
        environment (default: this process's), `cwd` the working directory (default: this process's)."""
        self._count += 1
        out, err = self.directory / f"{self._count}.stdout", self.directory / f"{self._count}.stderr"
        request: dict[str, Any] = {
            "op": "start",
            "args": [str(a) for a in args],
            "env": dict(os.environ if env is None else env),
            "cwd": str(cwd or os.getcwd()),
            "stdout": str(out),
            "stderr": str(err),
        }
        if script is not None:
            request["script"] = str(script)
        else:
            request["code"] = code
        return Child(self, self._ask(request)["pid"], out, err)

    def run(self, *args, timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
        """``start(...)`` and wait: a CompletedProcess with text stdout and stderr, as ``subprocess.run``."""
        child = self.start(*args, **kwargs)
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise
        return subprocess.CompletedProcess(child.args, child.wait(), out, err)

    def close(self) -> None:
        self._requests.close()
        self._server.wait(timeout=60)


class Child:
    """A forked child: ``pid``, ``returncode``, ``poll()``, ``wait(timeout)``, ``kill()``, ``communicate(timeout)``
    (stdout and stderr as text, read once the child has ended)."""

    def __init__(self, zygote: Zygote, pid: int, stdout: Path, stderr: Path):
        self._zygote, self.pid, self._stdout, self._stderr = zygote, pid, stdout, stderr
        self.args = ["<zygote child>", str(pid)]
        self.returncode: int | None = None
        self._waiting = False  # a "wait" request whose reply has not been read yet

    def poll(self) -> int | None:
        if self.returncode is None and not self._waiting:
            self.returncode = self._zygote._ask({"op": "poll", "pid": self.pid})["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._waiting:
                self._zygote._send({"op": "wait", "pid": self.pid})
                self._waiting = True
            reply = self._zygote._reply(timeout)
            if reply is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self._waiting, self.returncode = False, reply["returncode"]
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # ended, not yet reaped
                os.kill(self.pid, signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self._stdout.read_text(), self._stderr.read_text()


if __name__ == "__main__":
    _serve()
