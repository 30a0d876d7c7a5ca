"""Firmware tests: they run the firmware on the MicroPython unix port with the simulated board of sim/."""
