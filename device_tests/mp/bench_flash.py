"""Flash wear of a simulated day, measured inside MicroPython (unix port, -X heapsize=128k): the lock on the
simulated board with its link policy over a fake session; 20 entries (16 codes, 4 wrong), 2 code changes, a
reconnect an hour (hello, log upload, the uplink counter of session.py), one power cut. Prints one JSON line:
the files written (store.save / store.append calls) and their bytes, per kind of file."""
import gc
import json

import mputil
import store
from fakesession import FakeSession
from link import Link
from linkmsg import Down, LogAck, Up
from mputil import Sim
from session import UpCounter

T = 1767225600
per = {}


def _count(name, n):
    k = name.split(".")[0].rstrip("01")
    w = per.setdefault(k, [0, 0])
    w[0] += 1
    w[1] += n


_save = store.save
_append = getattr(store, "append", None)  # (firmware before the access log was appended: none)


def save(name, *parts):
    _count(name, 15 + sum(len(p) for p in parts))  # + the store envelope: header 7, checksum 8
    _save(name, *parts)


def append(name, data, clear=False):
    _count(name, len(data))
    _append(name, data, clear)


def boot():
    s = Sim()
    fs = FakeSession()
    fs.connected = True
    fs.counter = UpCounter()
    ln = Link(s.lock, fs)
    s.lock.add_service(ln)
    return s, fs


def reconnect(s, fs):
    fs.deliver(Down("keepalive timeout"))
    s.advance(10)
    fs.counter.next()  # the will of the new session
    fs.deliver(Up(fs.counter.value))
    s.advance(50)
    for m in fs.sent:  # what the policy queued is sealed with the next counter value when it goes out
        fs.counter.next()
        if m["t"] == "log":
            fs.deliver(LogAck(m["ev"][-1]["seq"]))
    fs.sent = []
    s.advance(50)


def main():
    mputil.fresh_dir()
    mputil.write_config()
    store.save, store.append = save, append
    s, fs = boot()
    s.lock.set_trusted_time(T, "server")
    codes = [(i + 1, mputil.digest("%04d" % (1000 + i)), T - 60, T + 86400 * 30) for i in range(10)]
    for hour in range(24):
        if hour in (9, 15):
            rev = s.lock.revision + 1
            assert s.lock.install_codeset(rev, codes, None), rev
            fs.sent.append({"t": "ack", "rev": rev})
        if hour == 12:  # the power cut: a reboot from what is on flash, then the cloud's signed time
            del s, fs
            gc.collect()  # the board's memory is the new boot's
            s, fs = boot()
            s.lock.set_trusted_time(T + hour * 3600, "server")
        if 8 <= hour < 18:
            for k in range(2):
                s.type("%04d" % (1000 + (hour + k) % 10) if (hour + k) % 5 else "9999")
                s.advance(6000)
        reconnect(s, fs)
        del s.events[:]  # the harness keeps every event; the lock does not
        s.advance(3600 * 1000 - 60000, step=60000)
    store.save, store.append = _save, _append
    print(json.dumps({"files": per, "writes": sum(v[0] for v in per.values()),
                      "bytes": sum(v[1] for v in per.values()), "last_seq": s.lock.last_seq,
                      "opened": len(s.lock.log_since(0, 500))}))


main()
