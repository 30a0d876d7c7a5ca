"""Fixtures for the installer tests (helpers in installer_support.py)."""
import pytest

from installer_support import MICROPYTHON, PtyBoard

from tests.live_cloud import LiveCloud


@pytest.fixture
def make_board(tmp_path):
    if not MICROPYTHON:
        pytest.skip("the MicroPython unix port is not installed")
    boards = []

    def make(name="board", **kw):
        b = PtyBoard(tmp_path / name, **kw)
        boards.append(b)
        return b

    yield make
    for b in boards:
        b.close()


@pytest.fixture
def board(make_board):
    return make_board()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = LiveCloud(tmp_path_factory.mktemp("cloud"))
    yield c
    c.close()
