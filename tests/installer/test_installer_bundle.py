"""tools/bundle.py: what goes on a board, and the `mpremote mip install` path from a local index."""
from __future__ import annotations

import functools
import http.server
import json
import threading

from installer_support import ROOT
from tools import bundle


def test_bundle_layout_for_esp32(tmp_path):
    b = bundle.build("esp32", tmp_path / "esp32")
    dests = {f.dest for f in b.files}
    device = sorted(p.name for p in (ROOT / "device").glob("*.py"))
    assert device, "device/ has firmware sources"
    for name in device:
        if name in ("main.py", "boot.py"):
            assert name in dests  # MicroPython runs main.py as source at boot
        elif not name.startswith("test_"):
            assert name[:-3] + ".mpy" in dests, name
            assert name not in dests
    for core in bundle.MICRODOT_CORE:
        assert f"lib/microdot/{core}.mpy" in dests
    assert not any(d.startswith("config") and d.endswith(".json") for d in dests)  # no secrets in a bundle
    for f in b.files:
        assert (b.out / f.dest).stat().st_size == f.size > 0
        if f.dest.endswith(".mpy"):
            assert (b.out / f.dest).read_bytes()[:2] == b"M\x06"  # .mpy v6, what MicroPython >= 1.20 loads
    index = json.loads((b.out / "package.json").read_text())
    assert sorted(dest for dest, _ in index["urls"]) == sorted(dests)
    assert "total" in b.report()


def test_mip_install_from_a_local_index(tmp_path, board):
    """`mpremote mip install` fetches package.json and the files over HTTP, then writes them to the board."""
    b = bundle.build("host", tmp_path / "host")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(b.out))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/package.json"
        out = board.mpremote("mip", "install", "--target", ".", url).stdout
    finally:
        server.shutdown()
    assert "Done" in out
    for f in b.files:
        assert (board.flash / f.dest).read_bytes() == (b.out / f.dest).read_bytes()
    check = board.mpremote("exec", "import sys; sys.path.append('lib')\nimport codes, store\n"
                           "from microdot import Microdot\nprint('loaded')")
    assert "loaded" in check.stdout, check.stdout + check.stderr


def test_a_compiled_module_is_shown_by_its_module_name(tmp_path):
    """Tracebacks on the lock name the module (`File "boom", line 2`), a name the board interns anyway when it
    imports it; a file name (`boom.py`) would cost one name of heap per module in every boot of an updated
    lock (docs/firmware.md, "The qstr pool")."""
    import os
    import subprocess

    from sim import mpbuild

    src = tmp_path / "src"
    src.mkdir()
    (src / "boom.py").write_text("def go():\n    raise ValueError('boom')\n")
    b = bundle.build("host", tmp_path / "out", device_dir=src, mip_index=False)
    assert "boom.mpy" in {f.dest for f in b.files}
    r = subprocess.run([*mpbuild.command(), "-c", "import boom\nboom.go()"], capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=str(b.out)), timeout=30)
    assert r.returncode != 0 and 'File "boom", line 2' in r.stdout + r.stderr, r.stdout + r.stderr
