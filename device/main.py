"""Boot: config -> board -> lock -> (link) -> main loop, under a master exception handler that releases the
relay. The board module is device/board.py on the ESP32 and sim/board/board.py on the host (it comes
first on the module path there); nothing here knows which one it got."""
import sys

import board
import config


def _start_link(lock, cfg, b):
    """Plug the MQTT link in when the config asks for it and device/link.py is present; returns it or None."""
    if not cfg.get("mqtt"):
        return None
    try:
        import link  # type: ignore
    except ImportError:
        return None
    svc = link.start(lock, cfg, b)
    if svc is not None:
        lock.add_service(svc)
    return svc


def _start_updates(lock, cfg, b, link) -> None:
    """Firmware updates (ota.py), after the link has its boot-time buffers, for a lock given the release key
    (`fw_pubkey`: without it no update could be checked). They also run without a link: a version on trial that
    cannot reach the cloud rolls back. A heap too short for them leaves a working lock that says so (on stderr,
    the board's console) rather than a lock that reboots forever."""
    if not cfg.get("fw_pubkey"):
        return
    try:
        import ota

        updates = ota.Ota(lock, b, cfg)
    except MemoryError as e:
        sys.print_exception(e, sys.stderr)  # type: ignore
        print("ota: no memory left for firmware updates", file=sys.stderr)
        return
    if link is not None:
        updates.attach(link)
    lock.add_service(updates)


def _portal(b, cfg, window_ms):
    """Hand over to the setup portal when device/portal.py provides run(). A provisioned lock gets the portal
    back as a service (codes keep working while it is open; it closes itself after window_ms), else None."""
    try:
        import portal  # type: ignore
    except ImportError:
        return None
    run = getattr(portal, "run", None)
    return run(b, cfg, window_ms=window_ms) if run is not None else None


def main() -> None:
    cfg = config.load()
    b = board.Board(cfg)  # relay released here, before anything can go wrong
    lock = None
    try:
        # the setup portal policy (config.portal_window): None = no portal, 0 = for good, else a window in ms
        window = config.portal_window(cfg, b.setup_requested(), hasattr(b, "start_ap"))
        if not cfg["provisioned"]:
            _portal(b, cfg, window)
            raise RuntimeError("not provisioned")
        from lock import Lock

        lock = Lock(b, cfg)
        if window is not None:  # after the lock's own buffers: the portal takes what is left, codes keep working
            svc = _portal(b, cfg, window)
            if svc is not None:
                lock.add_service(svc)
                svc.bind(lock)
        svc = _start_link(lock, cfg, b)
        _start_updates(lock, cfg, b, svc)
        b.started(lock)
        while True:
            lock.poll(b.ticks_ms())
            b.idle()
    except Exception as e:
        b.relay_off()
        sys.print_exception(e, sys.stderr)  # type: ignore
        if lock is not None:
            try:
                import accesslog

                lock.record(accesslog.CRASH)
            except Exception:
                pass
        b.crashed(e)
    finally:
        b.relay_off()


if __name__ == "__main__":
    main()
