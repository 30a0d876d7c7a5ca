"""Starts `python -m tools.devstack` on free ports with a temporary state folder (shared by the tests here)."""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def have_mosquitto():
    return bool(shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto"))


class DevStack:
    def __init__(self, var):
        self.var = pathlib.Path(var)
        web, keypad, smtp, mqtt = free_ports(4)
        self.out = open(self.var.parent / "devstack.out", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.devstack", "--var", str(self.var), "--strict-ports", "--no-install",
             "--web-port", str(web), "--keypad-port", str(keypad), "--smtp-port", str(smtp),
             "--mqtt-port", str(mqtt)],
            cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        self.urls = None

    def output(self):
        return (self.var.parent / "devstack.out").read_text(errors="replace")

    def wait_ready(self, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Press Ctrl-C to stop." in self.output():
                self.urls = json.loads((self.var / "urls.json").read_text())
                return self.urls
            if self.proc.poll() is not None:
                raise AssertionError("devstack exited early (%s):\n%s" % (self.proc.returncode, self.output()))
            time.sleep(0.3)
        raise AssertionError("devstack not ready in %ss:\n%s" % (timeout, self.output()))

    def interrupt(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("devstack did not stop within %ss:\n%s" % (timeout, self.output()))

    def leftover_groups(self):
        left = []
        for name, pgid in ((self.urls or {}).get("children") or {}).items():
            try:
                os.killpg(pgid, 0)
                left.append(name)
            except ProcessLookupError:
                pass
        return left

    def kill(self):
        """Last resort cleanup: only the process groups this test started."""
        for pgid in list(((self.urls or {}).get("children") or {}).values()) + [self.proc.pid]:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()


@pytest.fixture(scope="module")
def devstack(tmp_path_factory):
    if not have_mosquitto():
        pytest.skip("mosquitto is not installed")
    stack = DevStack(tmp_path_factory.mktemp("devstack") / "var")
    try:
        stack.wait_ready()
        yield stack
    finally:
        if stack.proc.poll() is None:
            try:
                stack.interrupt()
            except AssertionError:
                pass
        stack.out.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (rep_setup, rep_call, …) for fixtures that act on failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
