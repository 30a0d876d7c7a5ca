"""A small fleet end to end (tools/fleetsim.py): 200 simulated locks, a real mosquitto, two bridge workers sharing the
uplinks, SQLite. Asserts that nothing is lost, not timings (the figures are `make bench`): every lock synced, every
code created reaches its lock, and a worker killed with SIGKILL in the middle of a flood (then restarted, as a
supervisor does) loses no uplink and applies none twice."""
from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("mosquitto") and not shutil.os.path.exists("/usr/sbin/mosquitto"),
                                 reason="mosquitto is not installed")]

N = 200
LOGS_PER_LOCK = 5


def test_two_workers_lose_nothing_and_apply_nothing_twice_through_a_kill(tmp_path):
    from tools.fleetsim import Cloud, Fleet, FleetLock, code_round, make_broker

    cloud = Cloud(tmp_path)
    creds = cloud.setup(N)
    broker = cloud.broker = make_broker(tmp_path / "mqtt", creds).start()
    fleet = Fleet("127.0.0.1", broker.port)

    async def run():
        try:
            await scenario()
        finally:
            fleet.close()
            await asyncio.sleep(0.1)

    async def scenario():
        fleet.locks = [FleetLock(lid, sec, pw, fleet) for lid, sec, pw in creds]
        for i in (0, 1):
            cloud.start_worker(i)
        for i in (0, 1):
            cloud.wait_connected(i)
        await fleet.connect_all()
        desired = cloud.desired()
        await until(lambda: fleet.synced(desired) == N, 120, "every lock online with its state")

        r = await code_round(cloud, fleet, [fl.id for fl in fleet.locks[:100]], 50.0, 30.0)
        assert r["codes"] == 100 and r["lost"] == 0, r

        # a flood of access-log uploads, one event per message; worker 0 is killed part-way and restarted
        sent = 0
        for seq in range(1, LOGS_PER_LOCK + 1):
            for fl in fleet.locks:
                assert fl.send_log(seq)
                sent += 1
            await asyncio.sleep(0)
            if seq == 2:
                await until(lambda: cloud.events() > 0, 60, "the first events stored")
                cloud.kill_worker(0)
                await asyncio.sleep(1.0)
                cloud.start_worker(0)
        await until(lambda: cloud.events() >= sent, 120, f"{sent} events stored")
        await asyncio.sleep(1.0)  # let late logacks arrive
        assert cloud.events() == sent                                    # none lost, none stored twice
        twice = {(fl.id, seq): k for fl in fleet.locks for seq, k in fl.logacks.items() if k > 1}
        assert not twice, f"uplinks applied twice (answered twice): {list(twice.items())[:5]}"
        assert sum(len(fl.logacks) for fl in fleet.locks) >= sent * 0.9  # answers lost only with the killed one
        assert fleet.counts["unsent_log"] == 0 and fleet.counts["disconnects"] == 0

    try:
        asyncio.run(run())
    finally:
        try:
            cloud.close()
        finally:
            broker.stop()
