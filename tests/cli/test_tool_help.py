"""The command-line tools say what they do: ``--help`` names the command as it is typed, in plain
text, and documents the behaviour a user would otherwise only find in the source."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from vitrain.models.sam_weights import create_sam
from vitrain.tools import prepare, report, segment, sweep

TOOLS = {
    "prepare": lambda argv: prepare.build_parser().parse_args(argv),
    "report": report.main,
    "segment": segment.main,
    "sweep": sweep.main,
}


def help_text(tool: str, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        TOOLS[tool](["--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_help_names_the_command_in_plain_text(tool, capsys):
    text = help_text(tool, capsys)
    assert text.startswith(f"usage: python -m vitrain.{tool} "), text
    assert "``" not in text and ".py" not in text.splitlines()[0]


def test_segment_help_says_a_single_point_writes_three_masks(capsys):
    text = " ".join(help_text("segment", capsys).split())
    assert "A prompt of a single point writes its 3 multimask outputs" in text
    assert "even without --multimask" in text


def test_segment_logs_what_it_loaded(tmp_path, caplog, capsys):
    torch.manual_seed(0)
    net = create_sam("sam_tiny", image_size=32)
    weights = tmp_path / "sam_tiny.pth"  # a plain state dict, as the official releases are
    torch.save(net.state_dict(), weights)
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((24, 20, 3), dtype=np.uint8)).save(image)
    caplog.set_level(logging.INFO)
    assert segment.main([str(weights), str(image), "--point", "5,5", "--out", str(tmp_path / "out")]) == 0
    assert f"Loaded {weights} (sam_tiny at 32 px)" in caplog.text
    assert "Loaded  from" not in caplog.text  # timm's message with an empty key
    assert capsys.readouterr().out.count("predicted IoU") == 3  # one point, no --multimask: 3 masks
