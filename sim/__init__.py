"""The simulated lock: the unchanged firmware on the MicroPython unix port with a simulated board (board/),
its real-time demo mode (demo/), and the host-side tools that build, run and drive it (tools/simlock)."""
