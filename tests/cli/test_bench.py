"""`make bench` keeps working: its --quick mode runs every comparison on toy sizes."""

import re
import subprocess
import sys

from tests.helpers import ROOT


def test_bench_quick_prints_every_ratio(tmp_path):
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for pattern in (
        r"vitrain step / plain step = \d+\.\d{3}",
        r"num_workers=0: vitrain / torchvision images/s = \d+\.\d{3}",
        r"vitrain training FLOP/s / matmul FLOP/s = \d+\.\d{3}",
        r"full-token step / MAE step = \d+\.\d{2}x",
        r"streaming / ImageFolder images/s = \d+\.\d{3}",
        r"text_stream / encode_batch tokens/s = \d+\.\d{3}",
    ):
        assert re.search(pattern, proc.stdout), (pattern, proc.stdout)
    assert "final weights max |difference| 0.0e+00" in proc.stdout  # same training on both sides
    assert not out.exists()  # --quick writes nothing
