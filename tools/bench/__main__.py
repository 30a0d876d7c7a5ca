"""Run every benchmark module in this package (device, cloud, fleet, …) and print their figures.

`python -m tools.bench [NAME ...]` runs only the named ones.
"""
import importlib
import pkgutil
import sys
import time

import tools.bench as pkg


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    wanted = argv or names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    failed = 0
    for name in wanted:
        print(f"== {name} ==", flush=True)
        t0 = time.monotonic()
        try:
            rc = importlib.import_module(f"tools.bench.{name}").main() or 0
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            print(f"{name}: FAILED: {exc!r}")
            rc = 1
        failed += rc != 0
        print(f"({name}: {time.monotonic() - t0:.1f} s)\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
