"""tools/cloudclient.py and simlock's credential writer against the real cloud app: clear errors (unreachable,
refused, not JSON), and a refresh of a simulated lock's credentials that keeps its own settings."""
from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest

from tests.live_cloud import LiveCloud
from tools import simlock_cloud
from tools.cloudclient import ApiClient, CloudError, CloudUnreachable, api_url


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = LiveCloud(tmp_path_factory.mktemp("cloud"))
    yield c
    c.close()


def test_unreachable_cloud_is_one_clear_error():
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/api/v1"
        with pytest.raises(CloudUnreachable, match=f"Cannot reach the cloud at {url}"):
            ApiClient(url, token="t", timeout=5).call("GET", "/me")


def test_status_and_message_of_a_refusal(cloud):
    api = ApiClient(api_url(cloud.url), token="kd_not-a-token")
    status, body = api.call("GET", "/me")
    assert status == 401 and isinstance(body, dict)
    with pytest.raises(CloudError) as err:
        api.request("GET", "/me")
    assert err.value.status == 401 and "GET /me answered HTTP 401" in str(err.value)
    assert ApiClient(api_url(cloud.url), token=cloud.token).request("GET", "/me")["agency"]


def test_a_reply_that_is_not_json_comes_back_as_its_text():
    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(502)
            self.end_headers()
            self.wfile.write(b"<html>Bad gateway</html>")

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, body = ApiClient(f"http://127.0.0.1:{server.server_port}").call("GET", "/x")
        assert status == 502 and body == {"message": "<html>Bad gateway</html>"}
    finally:
        server.shutdown()


def test_refreshed_credentials_keep_the_locks_own_settings(cloud, tmp_path):
    api = ApiClient(api_url(cloud.url), token=cloud.token)
    lock_id = simlock_cloud.register(api, "02:CA:FE:00:00:AA", "Demo", "1 rue du Test", "UTC")
    assert lock_id == "02cafe0000aa"
    assert simlock_cloud.register(api, "02cafe0000aa", "Again", "1 rue du Test", "UTC") == lock_id  # taken
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "config.json").write_text(json.dumps({
        "lock_id": "old", "secret": "00", "relay_ms": 1234, "wifi": {"ssid": "Home", "password": "pw"},
        "mqtt": {"host": "old", "port": 1, "ca": "ca.crt"}}))
    prov = simlock_cloud.write_credentials(flash, api, lock_id, cloud_url="http://demo")
    cfg = json.loads((flash / "config.json").read_text())
    assert cfg["lock_id"] == lock_id and cfg["secret"] == prov["secret"] != "00"
    assert cfg["mqtt"]["host"] == "mqtt.test.invalid" and cfg["mqtt"]["port"] == 8883
    assert cfg["mqtt"]["ca"] == "ca.crt"  # the CA the lock already had is kept
    assert cfg["relay_ms"] == 1234 and cfg["wifi"] == {"ssid": "Home", "password": "pw"}
    assert cfg["cloud_url"] == "http://demo"
    assert (flash / "config.json").stat().st_mode & 0o777 == 0o600
    # Another agency's token: a clear error, and the lock's config is untouched.
    before = (flash / "config.json").read_bytes()
    with pytest.raises(CloudError, match="HTTP 404"):
        simlock_cloud.write_credentials(flash, ApiClient(api_url(cloud.url), token=cloud.other_token), lock_id)
    assert (flash / "config.json").read_bytes() == before
