"""The simulator's `!` commands (docs/simulator.md): world, network, power and lock-state lines. Loaded for one
command and dropped after it (sim/board/board.py): the simulated board's code shares the firmware's heap, and
a board that kept all of this resident would leave the firmware less than an ESP32 has."""
import gc
import sys

import exitcodes
import simnet
from board import KEYS, emit


def run(board, line: str) -> None:
    parts = line[1:].split()
    cmd, args = parts[0], parts[1:]
    lock = board.lock
    w = board.world
    if cmd == "advance":
        board.wait_for(int(float(args[0]) * 1000), True)
    elif cmd == "net":
        simnet.command(args, emit)
    elif cmd == "quit":
        board.quit()
    elif cmd == "power-cycle":
        emit({"event": "power", "state": "off"})
        w.save()
        sys.exit(exitcodes.POWER_CYCLE)
    elif cmd == "crash":
        raise RuntimeError("simulated firmware fault")  # out of the main loop: the master handler runs
    elif cmd == "hold":
        w.w["hold_ms"] = int(args[0])
        w.w["gap_ms"] = int(args[1]) if len(args) > 1 else int(args[0])
    elif cmd == "busy":
        # block the main loop for ms of virtual time while keys are typed (the timer keeps scanning)
        ms = int(args[0])
        end = w.ms + ms
        hold = w.w.get("hold_ms", w.hold_ms)
        gap = w.w.get("gap_ms", w.gap_ms)
        for k in args[1] if len(args) > 1 else "":
            w.pressed = KEYS.index(k)
            w.step(hold)
            w.pressed = -1
            w.step(gap)
        if w.ms < end:
            w.step(end - w.ms)
        emit({"event": "busy_done", "ms": ms})
        board.wait_for(w.settle_ms)
    elif cmd == "hang":
        # the main loop stops without feeding the watchdog (the timer keeps ticking); a started watchdog
        # (simwdt.py) resets the board on its deadline: the world's steps land on it
        import simwdt

        end = w.ms + int(float(args[0]) * 1000)
        while w.ms < end:
            d = end - w.ms
            for t in w.timers:
                if isinstance(t[2], simwdt.SimWDT) and t[1] > w.ms:
                    d = min(d, t[1] - w.ms)
            w.step(min(d, 1000))
        emit({"event": "hang", "ms": int(float(args[0]) * 1000)})  # it ended without a reset
        board.wait_for(w.settle_ms)
    elif cmd == "time":
        t = epoch(w, args[0]) if args else w.epoch()
        src = args[1] if len(args) > 1 else "server"
        ok = lock.set_trusted_time(t, src)
        emit({"event": "time", "ok": ok, "trusted_now": lock.trusted_now()})
    elif cmd == "codes":
        rev = int(args[0])
        codes = []
        backup = None
        for a in args[1:]:
            if a.startswith("backup="):
                backup = lock.digest(a[7:].encode())
                continue
            cid, code, vf, vu = a.split(":")
            codes.append((int(cid), lock.digest(code.encode()), epoch(w, vf), epoch(w, vu)))
        ok = lock.install_codeset(rev, codes, backup)
        emit({"event": "codeset", "ok": ok, "revision": lock.revision})
    elif cmd == "gen-codes":
        # n codes 0000.. upwards (skipping the backup key), valid for a year from now, installed from a
        # generator: the code set is built record by record, no list of tuples on the heap
        rev, n = int(args[0]), int(args[1])
        now = w.epoch()

        def codes():
            i = 0
            made = 0
            while made < n:
                d = lock.digest(("%04d" % i).encode())
                i += 1
                if lock.codes.is_backup(d):
                    continue
                made += 1
                yield made, d, now - 60, now + 365 * 86400

        ok = lock.install_codeset(rev, codes(), None)
        gc.collect()
        emit({"event": "codeset", "ok": ok, "revision": lock.revision, "count": lock.codes.count})
    elif cmd == "status":
        gc.collect()
        d = {"event": "status", "world_epoch": w.epoch(), "heap_used": gc.mem_alloc(),
             "heap_free": gc.mem_free()}
        d.update(lock.status())
        emit(d)
    elif cmd == "log":
        seq = int(args[0]) if args else 0
        limit = int(args[1]) if len(args) > 1 else 50
        emit({"event": "log_since", "last_seq": lock.last_seq, "events": lock.log_since(seq, limit)})
    elif cmd == "rtc":
        # takes effect from the next boot (the bus is probed at boot), like plugging the module in
        if args[0] == "on":
            w.w["rtc"] = True
        elif args[0] == "off":
            w.w["rtc"] = False
        elif args[0] == "battery-out":
            w.w["rtc_osf"] = True
        else:
            raise ValueError(args[0])
        w.save()
        emit({"event": "rtc", "state": args[0]})
    else:
        raise ValueError("unknown command " + cmd)


def epoch(w, s: str) -> int:
    """An epoch: absolute, or relative to the world's now with a leading + or -."""
    if s[0] == "+" or s[0] == "-":
        return w.epoch() + int(s)
    return int(s)
