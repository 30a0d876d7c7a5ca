"""Browser fixtures: a fresh context per test on the session's Chromium (tests/conftest.py `browser`);
axe-core from tests/browser/node_modules (npm ci, done by `make test`) for accessibility checks."""
import json
import os
from pathlib import Path

import pytest

from tests.chromium import CHROMIUM

AXE = Path(__file__).with_name("node_modules") / "axe-core" / "axe.min.js"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")


@pytest.fixture
def new_context(browser, live_server):
    contexts = []

    def make(**kwargs):
        ctx = browser.new_context(base_url=live_server.url, **kwargs)
        ctx.set_default_timeout(15000)
        contexts.append(ctx)
        return ctx
    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def page(new_context):
    return new_context(accept_downloads=True).new_page()


@pytest.fixture(scope="session")
def axe():
    """axe(page) → the page's serious and critical violations, as {"id", "impact", "help", "nodes"}."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm ci --prefix tests/browser` (make test does it)")
    source = AXE.read_text()
    return lambda page, impacts=("serious", "critical"): _violations(page, source, impacts)


def _violations(page, axe_source: str, impacts) -> list[dict]:
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source)  # evaluated by the test driver: the page's CSP does not apply to it
    result = page.evaluate("async () => JSON.stringify((await axe.run(document)).violations)")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in json.loads(result) if v["impact"] in impacts]
