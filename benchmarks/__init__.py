"""Benchmarks of the pipeline against the in-process Gladly emulator (`make bench`)."""
