"""`make bench` keeps working: every bench module runs at toy sizes (``--quick``) in one runner
call, each side-by-side ends with the same weights on both sides, and the report file keeps the
last runs."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from benchmarks import common, gpu, run
from benchmarks.common import Ratio, history, read_sections, write_markdown
from tests.helpers import ROOT, process_state_restored

SIDE_BY_SIDE = ("classification", "gpt", "bert", "mae", "detr", "sam")


@pytest.mark.slow  # every bench module once at toy sizes: ~25 CPU-seconds (make test runs it, test-fast not)
def test_every_module_runs_quick_and_the_runner_prints_one_table(tmp_path, capsys):
    out = tmp_path / "benchmarks.md"
    loggers = {
        name: logging.getLogger(name).level for name in ("lightning", "lightning.pytorch", "lightning.fabric")
    }
    with process_state_restored():
        try:
            run.main(["--quick", "--threads", "1", "--out", str(out)])
        finally:
            for name, level in loggers.items():
                logging.getLogger(name).setLevel(level)
    text = capsys.readouterr().out
    for pattern in (
        r"num_workers=0: vitrain / torchvision images/s = \d+\.\d{3}",
        r"num_workers=2: the noise floor, torchvision against a copy of itself alternated the same way = \d+\.\d{3}",
        r"full-token step / MAE step = \d+\.\d{2}x",
        r"FLOP ratio full / masked \d+\.\d{2}",
        r"matching: [\d.]+ ms per vitrain step .* = [\d.]+% of the step",
        r"vitrain matcher / reference matcher = \d+\.\d{3}; per-image / batched \d+\.\d{2}x",
        r"prompt rounds \(forward \+ backward\) = [\d.]+% of the step",
        r"streaming / ImageFolder images/s = \d+\.\d{3}",
        r"text_stream / encode_batch tokens/s = \d+\.\d{3}",
        r"MFU: n/a \(no listed peak for cpu\)",  # the GPU script's CPU path
    ):
        assert re.search(pattern, text), (pattern, text)
    assert len(re.findall(r"vitrain training FLOP/s / matmul FLOP/s = \d+\.\d{3}", text)) == 3
    # every family side by side, on the CPU (lockstep) and on the GPU script's CPU path (alternating)
    assert len(re.findall(r"vitrain step / plain step = \d+\.\d{3}", text)) == len(SIDE_BY_SIDE) + 5
    assert text.count("final weights max |difference| 0.0e+00") == len(SIDE_BY_SIDE) + 5
    assert "same assignments: yes" in text
    table = text.split("Headline numbers")[1]
    for key in SIDE_BY_SIDE:
        assert re.search(rf"^    {key} +\d+\.\d{{3}} \(goal <= 1.03", table, re.M), key
    assert not out.exists()  # --quick writes nothing


def test_every_module_is_registered_and_follows_the_contract():
    """A module under benchmarks/ that the runner does not list would never run."""
    helpers = {"__init__", "__main__", "common", "run"}
    modules = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - helpers
    assert modules == set(run.MODULES)
    for name in run.MODULES:
        module = __import__(f"benchmarks.{name}", fromlist=["main"])
        assert callable(module.main) and isinstance(getattr(module, "TITLE", ""), str)


def test_report_replaces_its_section_and_keeps_the_last_runs(tmp_path, monkeypatch):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n## NVIDIA H100 80GB HBM3\n\nkept as it was\n")
    monkeypatch.setattr(common, "HISTORY_RUNS", 2)
    printed = [
        "[2] GPT",
        "    vitrain step / plain step = 1.010",
        "Worker 0 is done.",
        "[vitrain.prepare] Wrote 4",
    ]
    for value in (1.01, 0.99, 1.02):
        ratios = [Ratio("gpt", value, "GPT step", "<= 1.03")]
        if value == 0.99:
            ratios.append(Ratio("mae", 2.9, "MAE full / masked", ">= 2.8"))
        write_markdown(out, "cpu", ["- CPU: test"], ratios, printed)
    sections = read_sections(out)
    assert sections["NVIDIA H100 80GB HBM3"][1] == "kept as it was"
    runs, numbers = history(sections["cpu"])
    assert len(runs) == 2  # the last two runs, a column each
    assert numbers == {
        "gpt": ["GPT step", "<= 1.03", "0.990", "1.020"],
        "mae": ["MAE full / masked", ">= 2.8", "2.900", ""],
    }
    assert "    vitrain step / plain step = 1.010" in sections["cpu"] and "[2] GPT" in sections["cpu"]
    assert "Worker 0 is done." not in sections["cpu"] and "[vitrain.prepare] Wrote 4" not in sections["cpu"]
    assert out.read_text().count("## cpu") == 1


def test_gpu_script_writes_its_own_section_on_a_gpu(tmp_path, monkeypatch):
    """``python -m benchmarks.gpu`` on a GPU machine: the numbers go to ``bench-gpu: <name>``."""
    out = tmp_path / "benchmarks.md"

    def fake_main(argv):
        print("    ViT-B/16 ...: vitrain step / plain step = 1.010")
        return [Ratio("gpu_vit", 1.01, "ViT-B/16 step", "<= 1.03")]

    monkeypatch.setattr(gpu, "main", fake_main)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    gpu.script(["--out", str(out)])
    section = read_sections(out)["bench-gpu: NVIDIA H100 80GB HBM3"]
    assert history(section)[1]["gpu_vit"][-1] == "1.010"
    assert "    ViT-B/16 ...: vitrain step / plain step = 1.010" in section
