"""The bridge's database goes away in the middle of a flood of uplinks and comes back (tools/fleetsim.py: simulated
locks, a real mosquitto, the bridge as its own process with a worker slot, i.e. a persistent session):

- PostgreSQL behind a TCP proxy that is cut (connections closed, new ones refused) and restored;
- the same, with the bridge killed (SIGKILL) while it holds uplinks and restarted once the database is back;
- SQLite locked by another connection (BEGIN EXCLUSIVE) for longer than the bridge's retries.

Every access-log upload sent is stored, none is counted `error`, and none is answered twice (a second `logack`
would mean a second application)."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import threading
import time

import pytest

from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("mosquitto") and not os.path.exists("/usr/sbin/mosquitto"),
                                 reason="mosquitto is not installed")]

N = 40
BEFORE, DURING = 2, 8  # log uploads per lock before the outage, and sent while the database is away


class TcpProxy:
    """127.0.0.1:<port> → target, in threads. `cut()` closes every connection and stops listening (a new one is
    refused, as with a server that is down); `restore()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self._conns: list[socket.socket] = []
        self._mutex = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def cut(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            ls.close()
        with self._mutex:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    close = cut

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._mutex:
                if self._listener is not ls:
                    client.close()
                    server.close()
                    return
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _run_outage(tmp_path, server_url, *, cut, restore, kill: bool, worker_db_url=None, worker_env=None,
                outage_s: float = 4.0):
    """Sync N locks, send BEFORE logs each and wait for them, cut the database, send DURING more each, wait
    until the bridge holds uplinks (and `outage_s`), [kill the bridge,] restore the database, [restart it]; then
    every upload must be stored once."""
    from tools.fleetsim import Cloud, Fleet, FleetLock, make_broker

    cloud = Cloud(tmp_path, server_url)
    creds = cloud.setup(N)
    cloud.worker_db_url = worker_db_url(cloud) if worker_db_url else None
    cloud.worker_env.update(worker_env or {})
    broker = cloud.broker = make_broker(tmp_path / "mqtt", creds).start()
    fleet = Fleet("127.0.0.1", broker.port)
    out: dict = {}

    async def scenario():
        fleet.locks = [FleetLock(lid, sec, pw, fleet) for lid, sec, pw in creds]
        cloud.start_worker(0)
        await asyncio.get_running_loop().run_in_executor(None, cloud.wait_connected, 0)
        await fleet.connect_all()
        desired = cloud.desired()
        await until(lambda: fleet.synced(desired) == N, 60, "every lock online with its state")
        sent = 0
        for seq in range(1, BEFORE + 1):
            for fl in fleet.locks:
                assert fl.send_log(seq)
                sent += 1
        await until(lambda: cloud.events() >= sent, 60, f"the first {sent} events stored")

        cut()
        t_cut = time.monotonic()
        for seq in range(BEFORE + 1, BEFORE + DURING + 1):
            for fl in fleet.locks:
                assert fl.send_log(seq)
                sent += 1
            await asyncio.sleep(0.05)
        held = 0
        while time.monotonic() - t_cut < outage_s:
            held = max(held, cloud.worker_counts(0).get("held", 0))
            await asyncio.sleep(0.1)
        out["held"] = held
        if kill:
            out["held_at_kill"] = cloud.worker_counts(0).get("held", 0)
            cloud.kill_worker(0)
        restore()
        if kill:
            cloud.start_worker(0)
        try:
            await until(lambda: cloud.events() >= sent, 60, f"{sent} events stored")
            await until(lambda: cloud.worker_counts(0).get("held", 0) == 0, 30, "nothing held any more")
        except AssertionError:
            pass  # counted below
        await asyncio.sleep(1.5)  # late logacks
        out.update(sent=sent, events=cloud.events(), counts=cloud.counts(), log=cloud.log_tail(0, 10 ** 7),
                   twice={(fl.id, s): k for fl in fleet.locks for s, k in fl.logacks.items() if k > 1},
                   answered=sum(len(fl.logacks) for fl in fleet.locks), lock_counts=dict(fleet.counts))

    async def run():
        try:
            await scenario()
        finally:
            fleet.close()
            await asyncio.sleep(0.1)

    try:
        asyncio.run(run())
    except BaseException:
        print(cloud.log_tail(0, 6000))
        raise
    finally:
        try:
            cloud.close()
        finally:
            broker.stop()
    c = out["counts"]
    print(f"held {out['held']} uplinks; {out['events']}/{out['sent']} events stored; counts {dict(c)}")
    assert out["events"] == out["sent"]                                   # none lost, none stored twice
    assert not out["twice"], f"uplinks applied twice (answered twice): {list(out['twice'].items())[:5]}"
    assert c["error"] == 0 and c["db_unavailable"] >= 1 and out["held"] > 0 and not c.get("held")
    assert out["lock_counts"].get("unsent_log", 0) == 0
    # one line when the database went away, one when it answered again: not one per message or per retry
    assert out["log"].count("the database is not answering") == 1, out["log"][-3000:]
    assert out["log"].count("the database answers again") == (0 if kill else 1), out["log"][-3000:]
    return out


@pytest.fixture
def pg_server():
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        pytest.skip("TEST_POSTGRES_URL is not set")
    return url


@pytest.fixture
def pg_proxy(pg_server):
    """A TCP proxy in front of the test PostgreSQL, for the bridge worker only (the test's own checks go
    straight to the server)."""
    import sqlalchemy as sa
    u = sa.engine.make_url(pg_server)
    proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432)
    yield proxy
    proxy.close()


def _cut_outage(tmp_path, pg_server, proxy: TcpProxy, *, kill: bool) -> dict:
    import sqlalchemy as sa

    def through(cloud):
        return sa.engine.make_url(cloud.db_url).set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False)
    return _run_outage(tmp_path, pg_server, cut=proxy.cut, restore=proxy.restore, kill=kill,
                       worker_db_url=through)


def test_postgresql_cut_mid_flood_loses_nothing_and_applies_nothing_twice(tmp_path, pg_server, pg_proxy):
    out = _cut_outage(tmp_path, pg_server, pg_proxy, kill=False)
    c = out["counts"]
    # one process throughout: every upload accepted once, answered once, nothing a replay
    assert c["ok_log"] == out["sent"] and c["replay"] == 0, dict(c)
    assert out["answered"] == out["sent"]


def test_postgresql_cut_and_the_bridge_killed_while_holding_still_applies_everything_once(tmp_path, pg_server,
                                                                                          pg_proxy):
    out = _cut_outage(tmp_path, pg_server, pg_proxy, kill=True)
    assert out["held_at_kill"] > 0
    # the held ones were never applied: the restarted worker applies and answers them (a message committed but
    # not yet acknowledged when killed would come back as a counted replay, unanswered: the lock resends it)
    assert out["answered"] >= out["sent"] - out["counts"]["replay"]


def test_sqlite_locked_longer_than_the_retries_loses_nothing(tmp_path):
    holder: dict = {}

    def lock():
        conn = sqlite3.connect(str(tmp_path / "fleet.sqlite3"), timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        holder["conn"] = conn

    def unlock():
        holder["conn"].execute("ROLLBACK")
        holder["conn"].close()

    # a busy timeout of 1 s: three attempts of a message take ~3 s, the lock is held 8 s
    out = _run_outage(tmp_path, None, cut=lock, restore=unlock, kill=False,
                      worker_env={"SQLITE_BUSY_TIMEOUT": "1"}, outage_s=8.0)
    c = out["counts"]
    assert c["ok_log"] == out["sent"] and c["replay"] == 0, dict(c)
    assert out["answered"] == out["sent"]
