"""Firmware version, reported by the link and shown by the simulator."""
VERSION = "0.1.0"
