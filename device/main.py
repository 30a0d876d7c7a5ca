"""Boot, the composition root: config -> board -> lock -> watchdog -> (portal, link, updates) -> main loop
feeding the watchdog, under a master exception handler that releases the relay. The board module is device/board.py on the ESP32 and sim/board/board.py on the host (it comes
first on the module path there); nothing here knows which one it got."""
import gc
import sys

from micropython import const

import board

_WATCHDOG_S = const(8)  # far longer than any main-loop pass (the longest: installing a code set, a few KB of flash)
_WORKER_S = const(300)
_KIND_CRASH = const(13)
_KIND_WORKER_STUCK = const(14)  # access-log record kinds (accesslog.KINDS; private: no name on the heap)


def drivers(b, cfg):
    """The lock's drivers on the board's pins: relay, buzzer + LED feedback, keypad matrix (the board created the
    relay pin released; Relay releases it again)."""
    from keypad import Keypad
    from relay import Feedback, Relay

    return Relay(b.relay, bool(cfg["relay_active_high"])), Feedback(b.buzzer, b.led), Keypad(b.rows, b.cols)


def _start_link(lock, cfg, b, small):
    """Plug the MQTT link in when the config asks for it; returns it or None. A board without device/link.py
    fails here, loudly (the crash handler reports it), rather than running as a lock without its cloud.
    small: an update's boot (ota.update_boot()), whose link takes the small receiving buffer."""
    if not cfg.get("mqtt"):
        return None
    import link

    svc = link.start(lock, cfg, b, small)
    if svc is not None:
        lock.add_service(svc)
    return svc


def _start_updates(lock, cfg, b, link, small) -> None:
    """Firmware updates (ota.py), after the link has its boot-time buffers. They also run without a link: a
    version on trial that cannot reach the cloud rolls back. A heap too short for them leaves a working lock that
    says so (on stderr, the board's console) rather than a lock that reboots forever: a normal boot goes on
    without updates; an update's boot restarts (a trial then rolls back, a fetch is dropped after a few)."""
    if not cfg.get("fw_pubkey"):
        return
    try:
        import ota

        updates = ota.Ota(lock, b, cfg)
    except MemoryError as e:
        sys.print_exception(e, sys.stderr)  # type: ignore
        print("ota: no memory left for firmware updates", file=sys.stderr)
        if small:
            b.reboot("update")
        return
    if link is not None:
        updates.attach(link)
    lock.add_service(updates)


def _portal(b, cfg, window_ms):
    """Hand over to the setup portal (device/portal.py; a board without it fails here, loudly). A provisioned
    lock gets the portal back as a service (codes keep working while it is open; it closes itself after
    window_ms), else None."""
    import portal

    return portal.run(b, cfg, window_ms=window_ms)


def main() -> None:
    import config

    cfg = config.load()
    b = board.Board(cfg)  # relay released here, before anything can go wrong
    lock = None
    try:
        # the setup portal policy (config.portal_window): None = no portal, 0 = for good, else a window in ms
        window = config.portal_window(cfg, b.setup_requested(), hasattr(b, "start_ap"))
        del config, sys.modules["config"]  # read at boot only: its heap goes back before the lock takes its own
        if not cfg["provisioned"]:
            _portal(b, cfg, window)
            raise RuntimeError("not provisioned")
        from lock import Lock

        lock = Lock(b, cfg, *drivers(b, cfg))
        # The watchdog is fed by this loop only, and only while the link's worker shows signs of life (its
        # beat: each pass of its session loop, each connection attempt, each step of a back-off; the longest
        # gap, a Wi-Fi join and a connect that times out, stays well under _WORKER_S).
        bound = int(cfg.get("worker_stuck_s") or _WORKER_S) * 1000
        wdt = b.watchdog(_WATCHDOG_S * 1000)
        if window is not None:  # after the lock's own buffers: the portal takes what is left, codes keep working
            svc = _portal(b, cfg, window)
            if svc is not None:
                lock.add_service(svc)
                svc.bind(lock)
        small = False  # an update's boot: a link with the small receiving buffer (ota.update_boot())
        if cfg.get("fw_pubkey"):  # the release key: without it no update could be checked
            import ota

            small = ota.update_boot()
        svc = _start_link(lock, cfg, b, small)
        _start_updates(lock, cfg, b, svc, small)
        b.started(lock)
        # the boot's garbage (config, the code set's file buffer, parsed JSON) goes back now, in one pass: the
        # link's first session (its TLS handshake, the code set) then allocates in a collected heap. Without it
        # the first collection came in the middle of the handshake, and at 128k with 200 codes it left the
        # session's messages no 1 KB block (MemoryError at every connection, docs/ota.md "Memory")
        gc.collect()
        while True:
            lock.poll(b.ticks_ms())
            if svc is not None and svc.worker_stuck(bound):
                if wdt is not None:  # stuck: logged once, then no more feeding, the watchdog resets the board
                    wdt = None
                    lock.record(_KIND_WORKER_STUCK)
            elif wdt is not None:
                wdt.feed()
            b.idle()
    except Exception as e:
        b.relay_off()
        sys.print_exception(e, sys.stderr)  # type: ignore
        if lock is not None:
            try:
                lock.record(_KIND_CRASH)
            except Exception:
                pass
        b.crashed(e)
    finally:
        b.relay_off()


if __name__ == "__main__":
    main()
