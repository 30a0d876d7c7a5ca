"""Firmware tests: they run the firmware on the MicroPython unix port (see device_tests/mpbuild.py)."""
