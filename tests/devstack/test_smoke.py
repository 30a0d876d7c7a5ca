"""`make run` smoke test: the dev stack starts, answers on its URLs, and stops cleanly on Ctrl-C."""
import json
import urllib.request

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def test_starts_answers_and_stops_cleanly(devstack):
    urls = devstack.urls
    out = devstack.output()
    for text in (urls["web"], urls["mailbox"], urls["login"]["email"], urls["login"]["password"]):
        assert text in out  # printed for the person who ran it
    assert get(urls["web"].rstrip("/") + "/healthz")[0] == 200
    status, page = get(urls["web"])
    assert status == 200
    status, page = get(urls["mailbox"])
    assert status == 200 and "Mailbox" in page
    assert urls["keypad"] in out
    status, body = get(urls["keypad"] + "state.json")
    assert status == 200 and json.loads(body)["door"] in ("open", "closed")
    status, page = get(urls["keypad"])
    assert "data-key='#'" in page
    assert devstack.urls["children"], "no child processes recorded"

    code = devstack.interrupt()
    assert code == 0, devstack.output()
    assert "devstack: stopped" in devstack.output()
    assert devstack.leftover_groups() == []
