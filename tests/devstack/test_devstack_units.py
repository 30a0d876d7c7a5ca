"""tools/devstack units: port choice (a taken port moves up, or fails clearly with --strict-ports), one stack per state folder."""
import socket

import pytest

from tools import devstack


@pytest.fixture
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_taken_port_moves_up(busy_port, capsys):
    got = devstack.pick_port("web", busy_port, strict=False, taken=set())
    assert got > busy_port
    assert f"port {busy_port} for web is taken, using {got}" in capsys.readouterr().out


def test_taken_port_fails_clearly_when_strict(busy_port):
    with pytest.raises(devstack.StackError, match=f"port {busy_port} for web is taken.*--web-port"):
        devstack.pick_port("web", busy_port, strict=True, taken=set())


def test_two_services_never_get_the_same_port():
    taken = set()
    a = devstack.pick_port("web", 47000, strict=False, taken=taken)
    b = devstack.pick_port("keypad", a, strict=False, taken=taken)
    assert a != b


def test_one_stack_per_state_folder(tmp_path):
    import argparse
    args = argparse.Namespace(var=str(tmp_path / "var"))
    first = devstack.Stack(args)
    first.claim_var()
    with pytest.raises(devstack.StackError, match="another dev stack .* is using"):
        devstack.Stack(args).claim_var()
    first._lockfile.close()
    devstack.Stack(args).claim_var()  # free again once the first one is gone
