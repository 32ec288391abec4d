"""accel's benchmark harness: plain TCP vs accelerated vs AF_UNIX, measured
in the same run, interleaved, with real tools. ``python -m benchmarks``."""
