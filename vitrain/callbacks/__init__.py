"""Lightning callbacks."""

from vitrain.callbacks.run_stats import RunStats

__all__ = ["RunStats"]
