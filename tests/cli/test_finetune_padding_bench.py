"""benchmarks/finetune_padding.py runs at toy sizes and prints its ratio."""

import re

from benchmarks.finetune_padding import main


def test_padding_benchmark_prints_the_ratio(capsys):
    (ratio,) = main(["--quick"])
    out = capsys.readouterr().out
    assert re.search(r"per-batch padding / max_length padding samples/s = \d+\.\d{3}", out), out
    assert ratio.key == "finetune_padding" and ratio.value > 0
    lengths = [float(x) for x in re.findall(r"mean padded length (\d+\.\d)", out)]
    assert lengths and lengths[0] <= 64  # never longer than max_length
