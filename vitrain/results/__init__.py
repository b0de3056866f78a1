"""Reading run directories: the sweep table of a multirun and reports that average runs over
seeds. Plain Python over the files a run writes (``summary.json``, ``csv/metrics.csv``, the
resolved config); the command-line tools ``python -m vitrain.sweep`` and ``python -m
vitrain.report`` are their front ends (``vitrain/tools/``)."""
