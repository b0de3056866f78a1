"""vitrain's benchmarks: ``python -m benchmarks`` (``make bench``); see ``benchmarks/run.py``."""
