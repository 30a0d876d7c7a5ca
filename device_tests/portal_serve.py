# Serves the setup portal on the unix port for device_tests/test_portal.py.
# argv: port config_path [status_json]. Settings are read from and saved to config_path (config.json format).
import sys
import json
import os
import portal

port = int(sys.argv[1])
cfg_path = sys.argv[2]
live = {"mac": "24a16054ab3c", "version": "0.1.0-test", "wifi": "not configured", "cloud": "offline"}
if len(sys.argv) > 3:
    live.update(json.loads(sys.argv[3]))

p = portal.Portal(portal.config_status(cfg_path, lambda: live), portal.config_saver(cfg_path))
mode = os.getenv("PORTAL_MODE") or "async"
if mode == "step":
    # a plain loop, as the firmware's main loop would run it
    import time
    st = portal.Stepper()
    st.start(p.serve("127.0.0.1", port))
    print("READY", port)
    while True:
        st.poll()
        time.sleep_ms(5)
else:
    import asyncio
    print("READY", port)
    asyncio.run(p.serve("127.0.0.1", port))
