"""The access log's record kinds are numbers on flash and names in the cloud (accesslog.KINDS). The modules
that record them name each as a private constant (`_KIND_OPENED = const(2)`: no name on the lock's heap, where
a public one costs one), so nothing but this test ties a constant to its name: every constant must be the
index of its own name in KINDS, and every kind must be recorded by some module."""
import ast
import re
from pathlib import Path

DEVICE = Path(__file__).resolve().parents[1] / "device"
KIND = re.compile(r"^_KIND_([A-Z_]+) = const\((\d+)\)", re.M)


def kinds() -> tuple:
    tree = ast.parse((DEVICE / "accesslog.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "KINDS":
            return ast.literal_eval(node.value)
    raise AssertionError("accesslog.py has no KINDS")


def constants() -> list:
    return [(p.name, name, int(n)) for p in sorted(DEVICE.glob("*.py")) for name, n in KIND.findall(p.read_text())]


def test_each_kind_constant_is_the_index_of_its_name():
    table = kinds()
    found = constants()
    assert found, "no _KIND_ constants in device/"
    wrong = [(f, name, n) for f, name, n in found if not (0 < n < len(table) and table[n] == name.lower())]
    assert not wrong, f"constants that do not match accesslog.KINDS {table}: {wrong}"


def test_every_kind_is_recorded_by_some_module():
    recorded = {name.lower() for _, name, _ in constants()}
    assert set(kinds()[1:]) <= recorded, set(kinds()[1:]) - recorded


def test_a_constant_is_used_where_it_is_defined():
    for p in sorted(DEVICE.glob("*.py")):
        src = p.read_text()
        for name, _ in KIND.findall(src):
            assert len(re.findall(r"\b_KIND_%s\b" % name, src)) >= 2, f"{p.name}: _KIND_{name} defined, never used"
