"""The processes of a one-machine stack (`make run`, `make prod-run`): each child in its own process group with
its log file, waited for until it answers, watched while it runs, all stopped on Ctrl-C or SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


class StackError(Exception):
    """The stack cannot start; the message says why and what to do."""


def wait_http(url: str, timeout: float, child: "Child | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            pass
        if child is not None and not child.alive():
            raise StackError(f"{child.name} exited while starting; see {child.log_path}\n{child.tail()}")
        if time.monotonic() > deadline:
            raise StackError(f"{url} did not answer within {timeout:.0f} s" +
                             (f"; see {child.log_path}\n{child.tail()}" if child else ""))
        time.sleep(0.2)


def wait_tcp(port: int, timeout: float, child: "Child | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        if child is not None and not child.alive():
            raise StackError(f"{child.name} exited while starting; see {child.log_path}\n{child.tail()}")
        if time.monotonic() > deadline:
            raise StackError(f"nothing listens on port {port} after {timeout:.0f} s")
        time.sleep(0.1)


def end(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """Stop one process that is not a group leader: SIGTERM, SIGKILL if it is still there after `grace`
    seconds, and reap it either way (no zombie left to the caller)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Child:
    """A child process in its own process group (so it is stopped as a whole), output to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path, cwd: Path = ROOT,
                 say: Callable[[str], None] = print):
        self.name = name
        self.say = say
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + ln for ln in text[-lines:])

    def stop(self, grace: float = 8.0) -> None:
        if self.proc.poll() is not None:
            self._reap_group()
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.say(f"{self.name} did not stop within {grace:.0f} s, killing it")
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._reap_group()

    def _reap_group(self) -> None:
        # Anything the child left behind in its group (e.g. a helper it forked) goes too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass



class Supervisor:
    """The children of one stack: started in order, watched, stopped in reverse order. The stack's state lives
    under `var` (logs in var/log); its ports are chosen by the subclass."""

    def __init__(self, var: Path, say: Callable[[str], None]):
        self.var = var.resolve()
        self.log_dir = self.var / "log"
        self.say = say
        self.ports: dict[str, int] = {}
        self.children: list[Child] = []
        self.stopping = False

    def child_env(self) -> dict:
        """The environment a child gets when start() is given none."""
        raise NotImplementedError

    def start(self, name: str, argv: list[str], env: dict | None = None) -> Child:
        child = Child(name, argv, env or self.child_env(), self.log_dir, say=self.say)
        self.children.append(child)
        return child

    def run(self) -> int:
        raise NotImplementedError

    def watch(self) -> int:
        """Until a stop is asked: 0; as soon as a child dies on its own: 1, with its log's tail."""
        while not self.stopping:
            for c in self.children:
                if not c.alive():
                    self.say(f"{c.name} exited unexpectedly (code {c.proc.returncode}); see {c.log_path}\n{c.tail()}")
                    return 1
            time.sleep(0.5)
        return 0

    def stop(self) -> None:
        for c in reversed(self.children):
            c.stop()
        self.children.clear()


class _Stop(Exception):
    pass


def run_until_signal(stack: Supervisor, say: Callable[[str], None]) -> int:
    """stack.run() until it returns or Ctrl-C / SIGTERM arrives; then every child is stopped. Exit code: run's,
    0 after a signal, 2 when the stack could not start (the message says why)."""

    def on_signal(signum, frame):
        if not stack.stopping:
            stack.stopping = True
            raise _Stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        code = stack.run()
    except _Stop:
        code = 0
    except (StackError, subprocess.CalledProcessError) as e:
        say(f"error: {e}")
        code = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack.children:
            say("stopping: " + ", ".join(c.name for c in reversed(stack.children)))
        stack.stop()
    if stack.stopping:
        say("stopped")
    return code
