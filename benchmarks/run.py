"""``make bench`` (``python -m benchmarks``): vitrain against plain PyTorch, one module per measure.

Runs every module of :data:`MODULES` in turn, prints each one's section as it goes, then one
table of the headline ratios (one per family, each with what it compares), and writes it all
to ``docs/benchmarks.md`` (the section of this machine kind, ``cpu`` or the GPU's name, is
replaced; the others are kept; the section's table keeps the last runs' headline numbers).

Module contract (to add a measure, write ``benchmarks/<name>.py`` and add ``"<name>"`` to
:data:`MODULES`):

- ``TITLE: str``: one line saying what the module measures (printed as its section heading).
- ``main(argv: list[str] | None = None) -> list[Ratio] | None``: parses its own arguments, at
  least ``--quick`` (toy sizes, seconds: the smoke test in ``tests/cli/test_bench.py`` runs
  every module this way); prints its section's lines to stdout as it measures (four-space
  indent, each number on a line that says what it compares); returns its headline numbers as
  :class:`benchmarks.common.Ratio` (``key``, ``value``, ``what``, ``goal``) for the table, or
  None. It writes no file: the runner writes what it printed.
- Each module also runs alone: ``python -m benchmarks.<name> [--quick]``.

``--quick`` runs every module at toy sizes and writes nothing; ``--only gpt,detr`` runs some.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import ROOT, Ratio, cpu_model, machine_kind, machine_lines, quiet, write_markdown

# One module per measure, in the order of the report: each family's training step side by side
# with a plain loop, then the machine-level measures and the input pipelines.
MODULES: list[str] = [
    "classification",
    "gpt",
    "bert",
    "mae",
    "detr",
    "sam",
    "sam_cache",
    "finetune_padding",
    "flops",
    "pipeline",
    "streaming",
    "gpu",
]


class Tee(io.TextIOBase):
    """Writes to ``out`` and keeps every complete line."""

    def __init__(self, out) -> None:
        self.out, self.lines, self._partial = out, [], ""

    def write(self, text: str) -> int:
        self.out.write(text)
        self.out.flush()
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        self.lines += done
        return len(text)


def run_module(name: str, index: int, quick: bool) -> list[Ratio]:
    """Import ``benchmarks.<name>``, print its heading and run its ``main``."""
    module = importlib.import_module(f"benchmarks.{name}")
    title = getattr(module, "TITLE", None) or (module.__doc__ or name).strip().splitlines()[0]
    print(f"\n[{index}] {title}")
    return list(module.main(["--quick"] if quick else []) or [])


def table(ratios: list[Ratio]) -> list[str]:
    """The headline numbers, one per line: key, value, goal, what it compares."""
    width = max((len(r.key) for r in ratios), default=0)
    lines = []
    for r in ratios:
        met = r.meets_goal()
        mark = (
            "" if met is None else ("  ok" if met else "  ABOVE GOAL" if "<=" in r.goal else "  BELOW GOAL")
        )
        goal = f" (goal {r.goal}{mark})" if r.goal else ""
        lines.append(f"    {r.key:<{width}}  {r.value:7.3f}{goal}  {r.what}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, a smoke test; writes nothing")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--only", default="", help="comma-separated module names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or MODULES
    unknown = sorted(set(names) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")

    torch.set_num_threads(args.threads)
    quiet()
    tee = Tee(sys.stdout)
    start = time.perf_counter()
    with contextlib.redirect_stdout(tee):
        print(f"vitrain bench on {machine_kind()} ({cpu_model()}, {args.threads} torch threads)")
        ratios: list[Ratio] = []
        for index, name in enumerate(names, 1):
            ratios += run_module(name, index, args.quick)
        print("\nHeadline numbers (vitrain / plain step time: lower is better; <= 1.03 is no tax)")
        for line in table(ratios):
            print(line)
        print(f"\nbench time {time.perf_counter() - start:.0f} s")
    if args.quick or args.only:
        return
    write_markdown(args.out, machine_kind(), machine_lines(args.threads), ratios, tee.lines)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
