"""Boot selector: MicroPython runs boot.py first on the ESP32 (the simulator imports it, docs/simulator.md). A
lock that was never updated has no boot state: its factory application runs with nothing else loaded.
Otherwise bootsel.py installs a pending release, picks the slot and imports its main, and is dropped before that
main runs. An update never replaces this file."""
import os

try:
    os.stat("boot.bin")
except OSError:
    import main  # type: ignore

    main.main()
import bootsel  # noqa: E402  (reached only when a boot state exists)
import sys  # noqa: E402

app = bootsel.run(globals().get("__file__") or "")
del bootsel
sys.modules.pop("bootsel").__dict__.clear()  # the selector's code goes back before the application takes the heap
app.main()
