"""The health figures of a lock's hello (docs/protocol.md): the bridge stores the latest, the lock page and the
API's lock JSON show them; an older firmware's hello without them, or with figures out of range, changes
nothing it should not."""
from __future__ import annotations

import cloud.bridge as B  # noqa: F401  (registers bridge_lock_state before the app fixture creates tables)
from cloud.bridge import Envelope
from cloud.extensions import db
from cloud.models import Lock

HEALTH = {"reset": "watchdog", "uptime": 3 * 3600 + 300, "heap_free": 15360, "heap_block": 7168, "rssi": -61,
          "flash_writes": 12}


def _hello(bridge, lid, n, health):
    env = Envelope(bytes(db.session.get(Lock, lid).secret))
    msg = {"v": 1, "t": "hello", "n": n, "will": None, "fw": "0.1.0", "boot": 3, "time": None, "rev": 0,
           "nonce": "00112233aabbccdd"}
    if health is not None:
        msg["health"] = health
    topic = f"lock/{lid}/up"
    return bridge.handle(topic, env.seal(topic, msg))


def test_hello_health_is_stored_shown_and_served(app, client, bridge, make_agency, make_lock, login, api_token):
    bridge.setup()
    ag = make_agency()
    lid = make_lock(ag, active=False)
    with app.app_context():
        assert _hello(bridge, lid, 5, dict(HEALTH, extra="ignored", rssi=-61))
        lk = db.session.get(Lock, lid)
        assert lk.health == HEALTH and lk.health_at is not None
    login(client, ag)
    page = client.get(f"/locks/{lid}").data.decode()
    assert ("started by watchdog · up 3 h 5 min · memory 15.0 KB free (largest block 7.0 KB) · Wi-Fi -61 dBm · "
            "12 flash writes since start") in page
    body = client.get(f"/api/v1/locks/{lid}", headers={"Authorization": f"Bearer {api_token(ag)}"}).get_json()
    h = body["health"]
    assert {k: h[k] for k in HEALTH} == HEALTH and h["at"].endswith("Z")


def test_a_hello_without_usable_health_keeps_the_last_figures(app, bridge, make_agency, make_lock):
    bridge.setup()
    ag = make_agency()
    lid = make_lock(ag, active=False)
    with app.app_context():
        assert _hello(bridge, lid, 5, HEALTH)
        assert _hello(bridge, lid, 6, None)  # an older firmware: the hello is accepted, the figures stay
        assert _hello(bridge, lid, 7, {"rssi": 40, "uptime": -1, "heap_free": "a lot", "reset": "gremlins"})
        assert db.session.get(Lock, lid).health == HEALTH
        assert _hello(bridge, lid, 8, {"uptime": 5, "heap_free": True})
        assert db.session.get(Lock, lid).health == {"uptime": 5}


def test_the_api_says_null_before_the_first_health(client, make_agency, make_lock, api_token):
    ag = make_agency()
    lid = make_lock(ag)
    body = client.get(f"/api/v1/locks/{lid}", headers={"Authorization": f"Bearer {api_token(ag)}"}).get_json()
    assert body["health"] is None
