"""Fleet benchmark: N simulated locks (tools/fleetsim.py) against a real mosquitto, B bridge workers sharing the
uplinks, SQLite or PostgreSQL. Every code created and every message sent is counted; anything not delivered is
reported as lost and fails the run; latency percentiles include the late ones (a lost code counts as the wait).

Phases, for each bridge count in KEYDROP_FLEET_BRIDGES (default "1,2"):
1. connect and sync the fleet (hello → time, state → ack);
2. codes created by another process like the web (domain.generate_code) at each rate of KEYDROP_FLEET_CODE_RATES
   (default 50,200 per second), KEYDROP_FLEET_CODES per round (default min(N, 1000)), one per lock:
   created (after commit) → installed and acknowledged on the lock;
3. a flood of KEYDROP_FLEET_FLOOD signed acks (default 30,000): verified messages per second;
4. resync storm: the broker restarts (no persistence: retained states gone, every lock reconnects with jitter)
   while every lock's desired state changes: time until every lock holds its current state, and until every
   lock's hello was answered (a hello not answered by then counts as lost); and each worker's peak rate of
   states published over any 5 s, from its metrics file's counts paired with the times the file was written
   (beside the rate the locks received them live, by arrival time): above the token bucket's rate + 2 bursts / 5 s
   fails the run.

Prints the figures and one JSON line per bridge count:
{"bench":"fleet","locks":…,"bridges":…,"db":…,"codes":…,"lost":…,"p50_ms":…,"p99_ms":…,"msgs_per_s":…, …}
KEYDROP_FLEET_N (default 1000), KEYDROP_FLEET_DATABASE_URL (a PostgreSQL server URL: each run creates and drops a
private database on it; default a SQLite file), KEYDROP_FLEET_STATE_RATE (the workers' state rate limit, default
theirs: 1,000/s).
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.fleetsim import Cloud, Fleet, FleetLock, code_round, make_broker  # noqa: E402

WAIT = 30.0  # seconds after the last code of a round before a code not on its lock counts as lost
WINDOW = 5.0  # seconds over which the resync's peak rates are taken


def _env_list(name, default):
    return [x for x in os.environ.get(name, default).split(",") if x.strip()]


async def flood(cloud: Cloud, fleet: Fleet, total: int) -> dict:
    """Every lock sends signed acks of the revision it holds; applied = the workers' ok_ack counters."""
    base = cloud.counts()
    per = max(1, total // len(fleet.locks))
    t0 = time.monotonic()
    for _ in range(per):
        for fl in fleet.locks:
            fl.send({"v": 1, "t": "ack", "rev": fl.rev}, "flood")
        await asyncio.sleep(0)
    sent = per * len(fleet.locks)
    samples = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        c = cloud.counts()
        applied = c["ok_ack"] - base["ok_ack"]
        samples.append((time.monotonic(), applied))
        if applied >= sent:
            break
        await asyncio.sleep(0.1)
    applied = samples[-1][1]
    t_first = next((t for t, a in samples if a > 0), t0)
    rate = applied / max(1e-6, samples[-1][0] - min(t_first, t0 + 0.1)) if applied else 0.0
    drops = {k: v - base.get(k, 0) for k, v in cloud.counts().items()
             if k in ("bad_signature", "replay", "malformed", "unknown_lock", "oversize", "error", "overload")
             and v - base.get(k, 0)}
    return {"sent": sent, "applied": applied, "lost": max(0, sent - applied), "msgs_per_s": rate, "drops": drops,
            "seconds": samples[-1][0] - t0}


async def resync(cloud: Cloud, fleet: Fleet, limit: float = 300.0) -> dict:
    """Broker restart + every lock's state changed meanwhile: seconds until every lock holds its new state, and
    until the cloud answered every lock's hello (a hello sent before a worker had subscribed again is gone: the
    broker has no subscriber and no persistence; the lock repeats it until answered, device/link.py)."""
    published0 = cloud.counts()["states_published"]
    # each worker's states_published with the time its metrics file was written (not read: a worker waiting
    # for PUBACKs or busy with its periodic jobs rewrites nothing, and a count paired with the time it was read
    # made windows that started on such a stale count look faster than the worker published)
    by_worker: dict[int, list] = {i: [] for i in cloud.workers}

    def sample() -> None:
        for i, ws in by_worker.items():
            got = cloud.worker_sample(i)
            if got is not None and (not ws or got[0] > ws[-1][0]):
                ws.append((got[0], got[1]["states_published"]))

    sample()
    cloud.broker.stop()
    n = await asyncio.get_running_loop().run_in_executor(None, cloud.bump_all)
    t0 = time.monotonic()
    live0 = len(fleet.live_states)
    cloud.broker.start()
    desired = await asyncio.get_running_loop().run_in_executor(None, cloud.desired)
    deadline = t0 + limit
    # the locks' count of every state received, retained ones included (more than published: a lock connecting
    # after a state was published gets it from the broker, retained, on subscribing, whenever that is)
    peak_in = 0.0
    samples = [(t0, fleet.counts["states_in"])]
    held_at = answered_at = None
    # sampled for at least WINDOW + 1 s, so that a phase shorter than the window still has one
    while time.monotonic() < deadline and (held_at is None or answered_at is None
                                           or time.monotonic() - t0 < WINDOW + 1.0):
        await asyncio.sleep(0.5)
        now = time.monotonic()
        samples.append((now, fleet.counts["states_in"]))
        sample()
        old = [s for s in samples if now - s[0] >= WINDOW]
        if old:
            peak_in = max(peak_in, (samples[-1][1] - old[-1][1]) / (now - old[-1][0]))
        if held_at is None and fleet.holding(desired) >= n:
            held_at = now
        if answered_at is None and all(fl.hello_ok for fl in fleet.locks):
            answered_at = now
    peaks = {i: _peak(ws, WINDOW) for i, ws in by_worker.items()}
    # a cross-check from the other end: the states the locks received live (not retained, i.e. forwarded as
    # published), by their arrival time, all workers together
    live = fleet.live_states[live0:]
    j = peak_live = 0
    for k, t in enumerate(live):
        while t - live[j] > WINDOW:
            j += 1
        peak_live = max(peak_live, k - j + 1)
    synced = fleet.holding(desired)
    unanswered = sum(1 for fl in fleet.locks if not fl.hello_ok)
    return {"locks": n, "synced": synced, "hello_unanswered": unanswered, "lost": (n - synced) + unanswered,
            "seconds": (held_at or time.monotonic()) - t0,
            "hellos_answered_s": (answered_at or time.monotonic()) - t0,
            "states_published": cloud.counts()["states_published"] - published0,
            "peak_states_per_s": max(peaks.values(), default=0.0), "peak_by_worker": peaks,
            "peak_live_states_in_per_s": peak_live / WINDOW, "peak_states_in_per_s": peak_in}


def _peak(samples: list, window: float) -> float:
    """The highest average rate over a span of at least `window` s between two (time, count) samples."""
    best, j = 0.0, 0
    for t, c in samples:
        while j + 1 < len(samples) and t - samples[j + 1][0] >= window:
            j += 1
        if t - samples[j][0] >= window:
            best = max(best, (c - samples[j][1]) / (t - samples[j][0]))
    return best


async def run_config(n: int, bridges: int, db_url: str | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="keydrop-fleet-"))
    rate = os.environ.get("KEYDROP_FLEET_STATE_RATE")
    cloud = Cloud(tmp, db_url, state_rate=float(rate) if rate else None)
    broker = fleet = None
    try:
        t0 = time.monotonic()
        creds = await asyncio.get_running_loop().run_in_executor(None, cloud.setup, n)
        broker = cloud.broker = make_broker(tmp / "mqtt", creds).start()
        fleet = Fleet("127.0.0.1", broker.port)
        fleet.locks = [FleetLock(lid, sec, pw, fleet) for lid, sec, pw in creds]
        print(f"fleet: {n} locks registered ({time.monotonic() - t0:.1f} s), {bridges} bridge worker(s), "
              f"{cloud.db_kind}", flush=True)
        for i in range(bridges):
            cloud.start_worker(i)
        for i in range(bridges):
            await asyncio.get_running_loop().run_in_executor(None, cloud.wait_connected, i)
        gc.collect()
        gc.freeze()
        t0 = time.monotonic()
        await fleet.connect_all()
        desired = await asyncio.get_running_loop().run_in_executor(None, cloud.desired)
        deadline = time.monotonic() + max(120, n / 20)
        while time.monotonic() < deadline and fleet.synced(desired) < n:
            await asyncio.sleep(0.25)
        synced = fleet.synced(desired)
        t_locks = time.monotonic() - t0
        # the cloud recorded every lock's ack too (the bridge worked through the storm): the code rounds measure
        # codes, not what is left of the connect storm
        behind = n
        while time.monotonic() < deadline:
            behind = await asyncio.get_running_loop().run_in_executor(None, cloud.unacked)
            if not behind:
                break
            await asyncio.sleep(0.5)
        print(f"  connected and synced: {synced}/{n} locks hold their state and were answered in {t_locks:.1f} s; "
              f"the cloud recorded every ack after {time.monotonic() - t0:.1f} s ({behind} not)", flush=True)

        per_round = int(os.environ.get("KEYDROP_FLEET_CODES", str(min(n, 1000))))
        rounds = {}
        ids = [fl.id for fl in fleet.locks]
        for k, rate in enumerate(float(r) for r in _env_list("KEYDROP_FLEET_CODE_RATES", "50,200")):
            start = (k * per_round) % n
            chosen = (ids[start:] + ids[:start])[:per_round]
            r = await code_round(cloud, fleet, chosen, rate, WAIT)
            rounds[rate] = r
            print(f"  codes at {rate:.0f}/s: {r['codes']} created, {r['codes'] - r['lost']} acknowledged on their "
                  f"lock, {r['lost']} lost; created → on the lock p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
                  f"max {r['max_ms']:.0f} ms (lost ones count as {WAIT:.0f} s)", flush=True)

        f = await flood(cloud, fleet, int(os.environ.get("KEYDROP_FLEET_FLOOD", "30000")))
        print(f"  flood: {f['applied']}/{f['sent']} signed acks verified and applied in {f['seconds']:.1f} s, "
              f"{f['lost']} lost: {f['msgs_per_s']:.0f} verified msgs/s with {bridges} worker(s) "
              f"({f['msgs_per_s'] / bridges:.0f} per worker); drops {f['drops'] or 'none'}", flush=True)

        rs = await resync(cloud, fleet)
        rate = cloud.state_rate or 1000.0
        # the token bucket allows rate × T + its burst in any T s, and a worker counts a batch once the broker
        # acknowledged it (a batch sent before the window may count in it): at most rate + 2 bursts / WINDOW
        bound = rate + 2 * 200 / WINDOW
        over = {i: round(v) for i, v in rs["peak_by_worker"].items() if v > bound}
        print(f"  resync after a broker restart with every state changed: {rs['synced']}/{rs['locks']} locks hold "
              f"their current state after {rs['seconds']:.1f} s ({rs['states_published']} states published; "
              f"per worker at most {', '.join(f'{v:.0f}' for v in rs['peak_by_worker'].values())}/s over "
              f"{WINDOW:.0f} s, limit {rate:.0f}/s per worker + a burst of 200; the locks received live at most "
              f"{rs['peak_live_states_in_per_s']:.0f}/s from all workers, {rs['peak_states_in_per_s']:.0f}/s with the "
              f"retained ones); every hello answered after {rs['hellos_answered_s']:.1f} s "
              f"({rs['hello_unanswered']} not answered, {fleet.counts['sent_hello_repeat']} hellos repeated by "
              f"the locks)" + (f"; OVER THE RATE LIMIT: {over}" if over else ""), flush=True)
        unsent = sum(v for k, v in fleet.counts.items() if k.startswith("unsent_"))
        lost = (n - synced) + sum(r["lost"] for r in rounds.values()) + f["lost"] + rs["lost"]
        first = next(iter(rounds.values()), {})
        load = os.getloadavg()[0]
        out = {"bench": "fleet", "locks": n, "bridges": bridges, "db": cloud.db_kind,
               "codes": sum(r["codes"] for r in rounds.values()), "lost": lost,
               "p50_ms": round(first.get("p50_ms", float("nan")), 1),
               "p99_ms": round(first.get("p99_ms", float("nan")), 1),
               "msgs_per_s": round(f["msgs_per_s"]), "msgs_per_s_per_bridge": round(f["msgs_per_s"] / bridges),
               "p99_ms_by_rate": {str(int(k)): round(v["p99_ms"], 1) for k, v in rounds.items()},
               "resync_s": round(rs["seconds"], 1), "resync_hellos_answered_s": round(rs["hellos_answered_s"], 1),
               "resync_hello_unanswered": rs["hello_unanswered"], "resync_peak_states_per_s": round(rs["peak_states_per_s"]),
               "resync_peak_live_states_in_per_s": round(rs["peak_live_states_in_per_s"]),
               "resync_over_rate_limit": over,
               "resync_peak_states_in_per_s": round(rs["peak_states_in_per_s"]),
               "unsent": unsent,
               "lock_disconnects": fleet.counts["disconnects"], "load_1min": round(load, 2)}
        print(f"  lock side: {dict(fleet.counts)}", flush=True)
        print(json.dumps(out), flush=True)
        if os.environ.get("KEYDROP_FLEET_DEBUG"):
            for i in cloud.workers:
                print(cloud.log_tail(i, 200000))
        return out
    finally:
        if fleet is not None:
            fleet.close()
        cloud.close()
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    from tools import mosquitto
    if not mosquitto.installed():
        print("fleet: mosquitto is not installed; skipped")
        return 0
    n = int(os.environ.get("KEYDROP_FLEET_N", "1000"))
    db_url = os.environ.get("KEYDROP_FLEET_DATABASE_URL") or None
    failed = 0
    for b in _env_list("KEYDROP_FLEET_BRIDGES", "1,2"):
        out = asyncio.run(run_config(n, int(b), db_url))
        if out["lost"]:
            print(f"fleet: FAILED: {out['lost']} lost")
            failed = 1
        if out["resync_over_rate_limit"]:
            print(f"fleet: FAILED: workers published faster than their rate limit: {out['resync_over_rate_limit']}")
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
