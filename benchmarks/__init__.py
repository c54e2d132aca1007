"""The benchmark runner: ``python -m benchmarks run --study <name>`` and ``python -m benchmarks report`` (README.md)."""
