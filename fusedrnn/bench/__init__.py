"""The benchmark CLI `fusedrnn-bench` (python -m fusedrnn.bench)."""
