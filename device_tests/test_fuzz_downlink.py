"""Property-based fuzzing of the firmware's downlink parser on the unix port at the 128k heap cap: random,
foreign-signed and mutated payloads never raise out of the parser, every payload gives a message or a counted
drop reason, well-formed states parse to their revision and size, and the heap is the same after the batch.

FUZZ_EXAMPLES (default 40 batches of up to 100 payloads, a few thousand cases) sets the run's size; `make fuzz`
runs a bigger one."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from device_tests.fuzzcases import dump, payloads, run_batch, sign, state_body

EXAMPLES = int(os.getenv("FUZZ_EXAMPLES", "40"))
TOTAL = {"cases": 0}
KNOWN = {"oversize", "bad_signature", "malformed", "bad_version", "unknown_type", "wrong_topic", "no_memory"}


# no shrinking: each step would be a MicroPython run; the failing batch's figures are in the assertion
@settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(st.lists(payloads, min_size=50, max_size=100))
def test_parser_never_raises_and_counts_every_drop(tmp_path_factory, cases):
    tmp = tmp_path_factory.mktemp("fuzz")
    out = run_batch(cases, tmp)
    TOTAL["cases"] += out["cases"]
    assert out["escaped"] == []
    assert out["cases"] == len(cases)
    # a message or a drop for every payload; one bigger than the receiving buffer (a mutated full state) is
    # dropped unread by the lock's MQTT client before any parser, as the harness does (tests/e2e/test_mqtt_client.py)
    assert sum(out["kinds"].values()) + out["too_big"] == len(cases)
    assert out["kinds"].get("Refused", 0) == sum(out["reasons"].values())
    assert set(out["reasons"]) <= KNOWN, out["reasons"]
    # nothing kept from case to case: the heap stays within 2 KB of where it started (the harness's tallies,
    # and whatever of the last case the conservative GC still sees on the stack), over 50 to 100 cases
    assert out["free_after"] >= out["free_before"] - 2048, out
    assert out.get("min_free", out["free_after"]) >= out["free_before"] - 2048, out


def test_well_formed_states_parse_exactly(tmp_path):
    sizes = [0, 1, 7, 50, 199, 200]
    out = run_batch([sign(dump(state_body(1000 + n, n))) for n in sizes], tmp_path)
    assert out["states"] == [[1000 + n, n] for n in sizes]
    over = state_body(5, 200)
    over["n"] = 201
    out = run_batch([sign(dump(over))], tmp_path)
    assert out["reasons"] == {"malformed": 1}


def teardown_module(module):
    print(f"downlink fuzz: {TOTAL['cases']} cases")
