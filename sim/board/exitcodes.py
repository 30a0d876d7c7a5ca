# Exit codes of the simulated board's firmware process that mean "the board resets": the host powers it up again.
POWER_CYCLE = 75  # `!power`: the power was cut
CRASH = 70  # the firmware raised out of its main loop (a real ESP32 resets)
RESET = 76  # the firmware asked for a reset (board.reboot: a firmware update switching slots)
WATCHDOG = 77  # the watchdog was not fed in time
REBOOT = (POWER_CYCLE, CRASH, RESET, WATCHDOG)
