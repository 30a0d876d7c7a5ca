"""Benchmarks printed by `make bench`. Each area adds a module here with a `main()` that prints figures."""
