# Exit codes of the simulated board's firmware process that mean "the board resets": the host powers it up again.
POWER_CYCLE = 75  # `!power`: the power was cut
CRASH = 70  # the firmware raised out of its main loop (a real ESP32 resets)
RESET = 76  # the board reset: board.reboot (a firmware update switching slots), or its watchdog
REBOOT = (POWER_CYCLE, CRASH, RESET)
