"""Connection state (online / offline since …) as the MQTT bridge records it, shown on the pages and in the API."""
import re

from cloud.bridge import Envelope
from cloud.extensions import db
from cloud.models import BridgeLockState, Lock
from cloud.timeutil import fmt_local


def _uplink(lock_id, obj):
    secret = bytes(db.session.get(Lock, lock_id).secret)
    topic = f"lock/{lock_id}/up"
    return topic, Envelope(secret).seal(topic, dict(obj, v=1))


def _hello(n, will):
    return {"t": "hello", "n": n, "will": will, "fw": "1.2.0", "boot": 1, "time": None, "rev": 0, "nonce": "ab12"}


def _row(client, lock_id):
    page = client.get("/locks/").data.decode()
    return re.search(rf'<tr data-lock="{lock_id}">(.*?)</tr>', page, re.S).group(1)


def _api_lock(client, token, lock_id):
    return client.get(f"/api/v1/locks/{lock_id}", headers={"Authorization": f"Bearer {token}"}).get_json()


def test_online_then_offline_through_the_bridge(app, client, bridge, make_agency, make_lock, login, api_token):
    ag = make_agency()
    lock_id = make_lock(ag, active=False, name="Harbour", timezone="America/New_York")
    quiet_id = make_lock(ag, active=False, name="Quiet")
    token = api_token(ag)
    bridge.setup()  # creates a state row per lock: a row alone does not mean the bridge saw the lock
    login(client, ag)

    assert bridge.handle(*_uplink(lock_id, _hello(10, will=9)))
    changed = db.session.get(BridgeLockState, lock_id).online_changed_at
    assert changed is not None
    row = _row(client, lock_id)
    assert '<span class="conn online"' in row and ">online</span>" in row and "offline" not in row
    page = client.get(f"/locks/{lock_id}").data.decode()
    assert re.search(r'id="connection"><span class="conn online"[^>]*>online</span>', page)
    body = _api_lock(client, token, lock_id)
    assert body["online"] is True and body["online_changed_at"] == changed.isoformat().replace("+00:00", "Z")

    assert bridge.handle(*_uplink(lock_id, {"t": "will", "n": 9}))  # the broker publishes the signed last will
    db.session.expire_all()
    state = db.session.get(BridgeLockState, lock_id)
    assert state.online is False
    since = fmt_local(state.online_changed_at, "America/New_York")  # the property's local time and zone
    assert f"offline since {since}" in _row(client, lock_id)
    assert f"offline since {since}" in client.get(f"/locks/{lock_id}").data.decode()
    body = _api_lock(client, token, lock_id)
    assert body["online"] is False
    assert body["online_changed_at"] == state.online_changed_at.isoformat().replace("+00:00", "Z")

    # a lock the bridge has never heard from (it has a state row since setup()): "—" and nulls
    row = _row(client, quiet_id)
    assert '<span class="conn unknown"' in row and "online" not in row and "offline" not in row
    assert '<span class="conn unknown"' in client.get(f"/locks/{quiet_id}").data.decode()
    listed = {lk["id"]: lk for lk in client.get("/api/v1/locks", headers={"Authorization": f"Bearer {token}"})
              .get_json()["locks"]}
    assert listed[quiet_id]["online"] is None and listed[quiet_id]["online_changed_at"] is None
    assert listed[lock_id]["online"] is False


def test_lock_without_bridge_row_is_unknown(app, client, make_agency, make_lock, login, api_token):
    ag = make_agency()
    lock_id = make_lock(ag)  # active through the domain directly: the bridge never saw it, no state row
    login(client, ag)
    assert '<span class="conn unknown"' in _row(client, lock_id)
    body = _api_lock(client, api_token(ag), lock_id)
    assert body["online"] is None and body["online_changed_at"] is None


def test_connection_state_stays_in_its_agency(app, client, bridge, make_agency, make_lock, api_token):
    owner_ag, other_ag = make_agency(), make_agency()
    lock_id = make_lock(owner_ag, active=False)
    assert bridge.handle(*_uplink(lock_id, _hello(3, will=2)))
    token = api_token(other_ag)
    assert client.get("/api/v1/locks", headers={"Authorization": f"Bearer {token}"}).get_json()["locks"] == []
    assert client.get(f"/api/v1/locks/{lock_id}", headers={"Authorization": f"Bearer {token}"}).status_code == 404


def test_openapi_describes_connection_fields(client):
    props = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]["Lock"]["properties"]
    assert props["online"] == dict(props["online"], type="boolean", nullable=True)
    assert props["online_changed_at"]["nullable"] is True and props["online_changed_at"]["format"] == "date-time"
