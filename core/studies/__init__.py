"""Studies over many runs: comparison legs, comparisons, speedup maps, the benchmark."""
