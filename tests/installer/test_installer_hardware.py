"""hardware/ cannot drift from the firmware: the pin tables (hardware/README.md, docs/architecture.md), the Wokwi
diagram and the wiring SVG all give the pins of DEFAULT_PINS in device/config.py."""
from __future__ import annotations

import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from collections import defaultdict

from installer_support import ROOT

HW = ROOT / "hardware"


def firmware_pins() -> dict:
    spec = importlib.util.spec_from_file_location("keydrop_device_config", ROOT / "device" / "config.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.DEFAULT_PINS


def table_pins(markdown: str) -> dict:
    """The 'Default pin map' table: function → list of GPIO numbers, in the order written."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.search(r"\d", cells[1]) and not set(cells[1]) <= set("-"):
            rows[cells[0]] = [int(n) for n in re.findall(r"\d+", cells[1])]
    return rows


def expected_table(p: dict) -> dict:
    return {
        "keypad rows R1..R4 (outputs)": p["rows"],
        "keypad columns C1..C3 (inputs)": p["cols"],
        "relay / MOSFET gate": [p["relay"]],
        "buzzer": [p["buzzer"]],
        "status LED": [p["led"]],
        "setup button": [p["button"]],
        "DS3231 RTC (optional)": [p["sda"], p["scl"]],
    }


def test_pin_tables_match_the_firmware():
    want = expected_table(firmware_pins())
    for doc in (HW / "README.md", ROOT / "docs" / "architecture.md"):
        got = table_pins(doc.read_text(encoding="utf-8"))
        for function, pins in want.items():
            assert got.get(function) == pins, f"{doc.name}: {function}: {got.get(function)} != {pins}"


def wokwi_nets() -> dict:
    """ESP32 pin name → set of 'part:pin' wired to it (directly, or through one resistor)."""
    diagram = json.loads((HW / "wokwi" / "diagram.json").read_text())
    types = {p["id"]: p["type"] for p in diagram["parts"]}
    assert types["esp"] == "board-esp32-devkit-c-v4"
    adj = defaultdict(set)
    for a, b, *_ in diagram["connections"]:
        adj[a].add(b)
        adj[b].add(a)
    nets = defaultdict(set)
    for end, others in adj.items():
        if not end.startswith("esp:"):
            continue
        for other in others:
            nets[end[4:]].add(other)
            part, pin = other.split(":")
            if types.get(part) == "wokwi-resistor":  # follow a series resistor to what it feeds
                nets[end[4:]] |= adj[f"{part}:{'2' if pin == '1' else '1'}"]
    return nets


def test_wokwi_diagram_matches_the_firmware():
    p = firmware_pins()
    nets = wokwi_nets()
    for i, gpio in enumerate(p["rows"]):
        assert f"keypad:R{i + 1}" in nets[str(gpio)], (gpio, nets[str(gpio)])
    for i, gpio in enumerate(p["cols"]):
        assert f"keypad:C{i + 1}" in nets[str(gpio)], (gpio, nets[str(gpio)])
    assert "relay:IN" in nets[str(p["relay"])]
    assert "buzzer:2" in nets[str(p["buzzer"])]  # the buzzer's positive pin
    assert "led:A" in nets[str(p["led"])]
    assert any(x.startswith("setup:") for x in nets[str(p["button"])])
    assert "rtc:SDA" in nets[str(p["sda"])] and "rtc:SCL" in nets[str(p["scl"])]
    # nothing of the lock on a strapping pin
    for strap in ("2", "5", "12", "15"):
        assert not nets.get(strap), f"GPIO{strap} is a strapping pin"


def test_wiring_svg_is_well_formed_and_names_every_default_pin():
    root = ET.parse(HW / "wiring.svg").getroot()
    assert root.tag.endswith("svg")
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    p = firmware_pins()
    for gpio in [*p["rows"], *p["cols"], p["relay"], p["buzzer"], p["led"], p["sda"], p["scl"]]:
        assert f"GPIO{gpio}" in text, gpio
    for part in ("keypad", "DS3231", "buzzer", "status LED", "flyback diode", "buck converter", "strike"):
        assert part in text, part
