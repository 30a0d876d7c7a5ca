"""A database held busy by another process past the busy timeout (SQLite's single writer: the bridge, the
mailer, a migration): the API answers 503 with Retry-After and its JSON message, never a 500, and the same
request succeeds once the database is free. Real HTTP, a real SQLite file, a real second connection."""
from __future__ import annotations

import sqlite3
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from tests.live_cloud import LiveCloud

MAC = "24a16054cc01"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = LiveCloud(tmp_path_factory.mktemp("busy"), SQLITE_BUSY_TIMEOUT=0.3)
    status, _ = c.api("POST", "/locks", {"mac": MAC, "name": "Busy flat", "address": "1 Rue du Verrou, Lyon",
                                         "timezone": "UTC"})
    assert status == 201
    c.mark_active(MAC)
    yield c
    c.close()


def _post_code(cloud):
    now = datetime.now(timezone.utc)
    req = urllib.request.Request(
        f"{cloud.url}/api/v1/locks/{MAC}/codes", method="POST",
        data=f'{{"valid_from": "{now.isoformat()}", "valid_until": "{(now + timedelta(days=1)).isoformat()}"}}'
        .encode(), headers={"Authorization": f"Bearer {cloud.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_a_busy_database_is_a_503_with_retry_after(cloud):
    other = sqlite3.connect(cloud.db_path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the busy timeout
        status, headers, body = _post_code(cloud)
        assert status == 503, body
        assert int(headers["Retry-After"]) > 0
        assert headers["Content-Type"].startswith("application/json")
        assert b"busy; retry" in body and b"Traceback" not in body and b"sqlite" not in body.lower()
    finally:
        other.execute("ROLLBACK")
        other.close()
    status, _, body = _post_code(cloud)  # the same request once the other writer is done
    assert status == 201, body
    st, lock = cloud.api("GET", f"/locks/{MAC}")
    assert st == 200 and lock["desired_revision"] >= 2
