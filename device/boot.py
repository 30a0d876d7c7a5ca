"""Boot selector: MicroPython runs boot.py first on the ESP32 (the simulator imports it, docs/simulator.md). A
lock that was never updated has no boot state: its factory application runs with nothing else loaded.
Otherwise bootsel.py installs a pending release, picks the slot, and runs it. An update never replaces this
file."""
import os

try:
    os.stat("boot.bin")
except OSError:
    import main  # type: ignore

    main.main()
import bootsel  # noqa: E402  (reached only when a boot state exists)

bootsel.run(globals().get("__file__") or "")
