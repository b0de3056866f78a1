"""``benchmarks/sam_cache.py`` keeps working: its --quick mode prints every ratio (seconds)."""

import re

from benchmarks import sam_cache


def test_sam_cache_bench_quick_prints_the_ratios(capsys):
    sam_cache.main(["--quick"])
    out = capsys.readouterr().out
    measured = re.search(r"sam_tiny: step without cache / step with cache = (\d+\.\d\d)x \(measured\)", out)
    assert measured and float(measured.group(1)) > 0, out
    flops = [
        float(v) for v in re.findall(r"step without cache / step with cache = (\d+\.\d\d)x \(by FLOPs\)", out)
    ]
    # sam_vit_b at 1024 px: the encoder dominates one box per image, the decoder 64 objects x 11 rounds
    assert len(flops) == 3 and flops[2] > 50 > flops[1] > flops[0] > 1, out
    assert "image encoder forward 972 GFLOPs per image" in out
