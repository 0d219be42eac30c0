"""Benchmarks outside the suite, each its own command: the scorer's profiler, the feedback loop's
replay, and the memory of the dedupe and join windows (see bench/README.md)."""
