"""KeyDrop tools: simulator, installer, dev stack, benchmarks."""
