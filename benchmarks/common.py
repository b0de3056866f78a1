"""What the bench modules share: timing, the side-by-side harness, the machine, the report file.

The side-by-side harness compares a Lightning ``Trainer`` fitting a vitrain task with a plain
PyTorch loop doing the same training (same initial weights, batches, optimizer groups and
schedule). A family describes both sides with a :class:`Family`; two ways to time them:

- :func:`lockstep` (CPU, nothing asynchronous): one plain step just before or after every
  vitrain step, each timed from the end of the step before, so that load from other processes
  hits both alike; the ratio is the median of the paired step-time ratios. The two sides draw
  from separate random streams that start from the same seed (the global generators are
  swapped around every plain step), so a task that draws random numbers (dropout, MAE masks,
  SAM prompts) makes the same draws on both sides and both end with the same weights.
- :func:`alternate` (GPU): whole runs alternate (A B B A ...), each timed over its whole span
  with the device synchronised at the two ends only (per-step synchronisation would expose the
  framework's CPU time that asynchronous execution hides).

The vitrain side is a bare Trainer (no logger, checkpoints, progress bar or vitrain's default
callbacks): the framework itself, not the bookkeeping a run adds. The plain loops leave out what
the reference loops do for logging only (``loss.item()`` every step, gradient norms, metric
loggers, ``torch.cuda.synchronize()``), and where a reference's loss formula differs from the
task's only in rounding they compute the task's, so that both sides end with identical weights;
each module's docstring says which. :func:`noise_floor` pairs the plain loop with a copy of
itself: the resolution of every ratio on this machine at the time.
"""

from __future__ import annotations

import copy
import datetime
import gc
import logging
import os
import platform
import random
import re
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- timing
def now(device: torch.device | str, sync: bool = True) -> float:
    """``time.perf_counter()``, after synchronising a CUDA ``device`` when ``sync``."""
    if sync and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def quiet() -> None:
    """No warnings and no Lightning banners in the bench output."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def matmul_flops(device: str, dtype: torch.dtype, n: int, reps: int) -> tuple[float, float]:
    """(best, median) FLOP/s of an ``n x n`` matmul."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    torch.mm(a, b)
    rates = []
    for _ in range(reps):
        start = now(dev)
        torch.mm(a, b)
        rates.append(2 * n**3 / (now(dev) - start))
    return max(rates), statistics.median(rates)


def max_weight_difference(a: nn.Module, b: nn.Module) -> float:
    """The largest absolute difference between two networks' state dicts (same keys)."""
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return max((x.float() - y.float()).abs().max().item() for x, y in pairs)


def fmt_ratios(values: list[float], digits: int = 3) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


# ---------------------------------------------------------------------------- random streams
RngState = dict[str, Any]


def seeded_state(seed: int) -> RngState:
    """The global generators' state after seeding them all with ``seed`` (the current state is
    left as it was)."""
    outer = capture_rng()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    state = capture_rng()
    restore_rng(outer)
    return state


def capture_rng() -> RngState:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: RngState) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def rng_stream(state: RngState) -> Iterator[None]:
    """Run the block on the random stream ``state`` (updated in place), then switch back."""
    outer = capture_rng()
    restore_rng(state)
    try:
        yield
    finally:
        state.update(capture_rng())
        restore_rng(outer)


# ---------------------------------------------------------------------------- the two sides
class Plain(Protocol):
    """The hand-written side: ``net`` (the network it trains) and ``step()`` (one training step,
    its batch fetch included; returns the loss, detached)."""

    net: nn.Module

    def step(self) -> torch.Tensor: ...


@dataclass(frozen=True)
class Spec:
    """How long to run each side: ``steps`` per fit, the first ``warmup`` of them not timed,
    ``repeats`` fits (CPU) or alternating run pairs (GPU)."""

    steps: int
    warmup: int
    repeats: int
    device: str = "cpu"
    precision: str = "32-true"

    @property
    def bf16(self) -> bool:
        return self.precision.startswith("bf16")


class Family(Protocol):
    """One task family's side-by-side: what each side trains and how.

    ``template()`` builds the network both sides start from (each side trains a deep copy);
    ``batches()`` the ready-made batches (on the device) both sides iterate in the same order;
    ``task(net)`` the vitrain LightningModule; ``plain(net, batches, steps)`` the hand-written loop
    (its schedule ``steps`` long, as the Trainer's ``max_steps``);
    ``trainer_kwargs`` what the Trainer needs beyond the defaults (gradient clipping ...).
    """

    label: str
    trainer_kwargs: dict

    def template(self) -> nn.Module: ...

    def batches(self) -> list: ...

    def task(self, net: nn.Module) -> L.LightningModule: ...

    def plain(self, net: nn.Module, batches: list, steps: int) -> Plain: ...


class Cycle(Dataset):
    """``steps`` items, cycling over ``batches`` (each item a whole batch)."""

    def __init__(self, batches: list, steps: int) -> None:
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        return self.batches[index % len(self.batches)]


def step_loader(batches: list, steps: int) -> DataLoader:
    """The DataLoader both sides iterate: whole batches, already on the device, in order."""
    return DataLoader(Cycle(batches, steps), batch_size=None, shuffle=False, collate_fn=lambda b: b)


def trainer(spec: Spec, callbacks: list, **kwargs) -> L.Trainer:
    """A bare Lightning Trainer for ``spec.steps`` steps (no logger, checkpoints or progress bar)."""
    return L.Trainer(
        accelerator="gpu" if spec.device == "cuda" else "cpu",
        devices=1,
        precision=spec.precision,
        max_steps=spec.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        **kwargs,
    )


def fit_vitrain(
    family: Family, template: nn.Module, batches: list, spec: Spec, callbacks: list
) -> L.LightningModule:
    """Fit ``family.task`` on a copy of ``template`` for ``spec.steps`` steps; returns the task."""
    task = family.task(copy.deepcopy(template))
    trainer(spec, callbacks, **family.trainer_kwargs).fit(
        task, train_dataloaders=step_loader(batches, spec.steps)
    )
    return task


class StepTimer(L.Callback):
    """The time at the end of every training step; the device is synchronised only at the steps
    in ``sync`` (the end of warm-up and of the run)."""

    def __init__(self, sync: set[int]) -> None:
        self.times: list[float] = []
        self.sync = sync

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(now(pl_module.device, batch_idx in self.sync))


class Lockstep(L.Callback):
    """Runs one plain step per vitrain step (CPU): both sides are timed in pairs, a fraction of a
    second apart.

    The plain step runs alternately just before the vitrain training step
    (``on_train_batch_start``) and just after it (``on_train_batch_end``), so neither side always
    follows the other. ``vitrain[i]``: the time from the end of vitrain step ``i - 1`` to the end
    of step ``i``, a whole Lightning cycle (batch-end hooks, fetching the batch, batch-start
    hooks, training step, backward, optimizer and schedule), less the plain block run inside it.
    ``plain[i]``: plain step ``i``, its batch fetch included. Each side has its own random
    stream, both seeded with ``seed`` before the first step.
    """

    def __init__(self, plain: Plain, seed: int = 0) -> None:
        self.plain_loop, self.vitrain, self.plain = plain, [], []
        self.losses: dict[str, list[torch.Tensor]] = {"vitrain": [], "plain": []}
        self._seed = seed
        self._plain_rng: RngState | None = None
        self._last_end: float | None = None
        self._inside = 0.0  # plain blocks since the last vitrain step ended

    def _plain_step(self) -> float:
        """Run a plain step on its own random stream; returns the time the block ended."""
        block = time.perf_counter()
        with rng_stream(self._plain_rng), torch.enable_grad():
            start = time.perf_counter()
            loss = self.plain_loop.step()
            self.plain.append(time.perf_counter() - start)
        self.losses["plain"].append(loss)
        end = time.perf_counter()
        self._inside += end - block
        return end

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._plain_rng is None:  # before the first step: both streams from the same seed
            self._plain_rng = seeded_state(self._seed)
            restore_rng(seeded_state(self._seed))
        if batch_idx % 2 == 0:
            end = self._plain_step()
            if self._last_end is None:  # the first step: time starts after the plain step
                self._last_end, self._inside = end, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        mark = time.perf_counter()
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses["vitrain"].append(loss.detach())
        if self._last_end is not None:
            self.vitrain.append(mark - self._last_end - self._inside)
        self._last_end, self._inside = mark, 0.0
        if batch_idx % 2 == 1:
            self._last_end = self._plain_step()
            self._inside = 0.0


@dataclass
class SideBySide:
    """The result of :func:`lockstep` or :func:`alternate`: medians of each side's step time, the
    ratio (vitrain / plain), the ratio per fit or run pair, and how far the sides ended apart."""

    vitrain_ms: float
    plain_ms: float
    ratio: float
    ratios: list[float]
    pairs: int
    weight_diff: float
    loss_diff: float  # largest |vitrain loss - plain loss| over the steps of a fit
    extra: dict = field(default_factory=dict)


STEP_GOAL = "<= 1.03"  # vitrain step / plain step, every family


def print_side_by_side(result: SideBySide, spec: Spec) -> None:
    """How the sides were paired, both step times, how far apart they ended, the ratio."""
    if spec.device == "cpu":
        print(f"    in lockstep: one plain step just before or after each vitrain step, {result.pairs} timed pairs "
              f"(after {spec.warmup} warm-up steps) in {spec.repeats} fits; medians")  # fmt: skip
        how = "median of the paired ratios; per fit"
    else:
        print(f"    alternating runs: mean step over {spec.steps - spec.warmup} steps after {spec.warmup} warm-up, "
              f"median of {spec.repeats} runs each")  # fmt: skip
        how = "median over run pairs; per pair"
    print(f"    vitrain {result.vitrain_ms:.1f} ms/step, plain {result.plain_ms:.1f} ms/step "
          f"({result.vitrain_ms - result.plain_ms:+.1f} ms); final weights max |difference| "
          f"{result.weight_diff:.1e}; losses max |difference| {result.loss_diff:.1e}")  # fmt: skip
    print(f"    vitrain step / plain step = {result.ratio:.3f} (goal {STEP_GOAL}; {how}: "
          f"{fmt_ratios(result.ratios)})")  # fmt: skip


def module_args(argv: list[str] | None, doc: str | None, extra: Callable | None = None):
    """A bench module's arguments: ``--quick`` (toy sizes), plus what ``extra(parser)`` adds."""
    import argparse

    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke test of seconds")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    quiet()
    return args


def lockstep(family: Family, spec: Spec, seed: int = 0, hooks: Callable | None = None) -> SideBySide:
    """CPU: ``spec.repeats`` vitrain fits, each with a plain step before or after every vitrain
    step (see :class:`Lockstep`). The ratio is the median over all timed pairs of (vitrain step /
    plain step); the step times are the medians of each side. ``hooks(task, plain)`` may attach
    probes to both sides of every fit (returns nothing)."""
    template, batches = family.template(), family.batches()
    fit_vitrain(
        family, template, batches, Spec(spec.warmup, 0, 1, spec.device, spec.precision), []
    )  # untimed
    vitrain_s, plain_s, ratios, per_fit = [], [], [], []
    weight_diff = loss_diff = 0.0
    for _ in range(spec.repeats):
        plain = family.plain(copy.deepcopy(template), batches, spec.steps)
        pairing = Lockstep(plain, seed)
        task = family.task(copy.deepcopy(template))
        if hooks is not None:
            hooks(task, plain)
        trainer(spec, [pairing], **family.trainer_kwargs).fit(
            task, train_dataloaders=step_loader(batches, spec.steps)
        )
        weight_diff = max(weight_diff, max_weight_difference(task.net, plain.net))
        losses = zip(pairing.losses["vitrain"], pairing.losses["plain"], strict=True)
        loss_diff = max(loss_diff, max(abs(float(a) - float(b)) for a, b in losses))
        v, p = pairing.vitrain[spec.warmup :], pairing.plain[spec.warmup :]
        vitrain_s += v
        plain_s += p
        pairs = [x / y for x, y in zip(v, p, strict=True)]
        ratios += pairs
        per_fit.append(statistics.median(pairs))
        del task, plain, pairing
        gc.collect()
    return SideBySide(
        vitrain_ms=1000 * statistics.median(vitrain_s),
        plain_ms=1000 * statistics.median(plain_s),
        ratio=statistics.median(ratios),
        ratios=per_fit,
        pairs=len(ratios),
        weight_diff=weight_diff,
        loss_diff=loss_diff,
    )


def noise_floor(family: Family, spec: Spec, seed: int = 0) -> tuple[float, list[float]]:
    """The plain loop against a copy of itself, paired step by step as :func:`lockstep` pairs
    vitrain and plain (alternating which runs first): the ratio two identical sides give on this
    machine now, ideally 1.000. Returns the median paired ratio and the median of each fit."""
    template, batches = family.template(), family.batches()
    ratios, per_fit = [], []
    for _ in range(spec.repeats):
        sides = [
            (family.plain(copy.deepcopy(template), batches, spec.steps), seeded_state(seed)) for _ in range(2)
        ]
        times: list[list[float]] = [[], []]
        for index in range(spec.steps):
            for which in (0, 1) if index % 2 == 0 else (1, 0):
                loop, state = sides[which]
                with rng_stream(state), torch.enable_grad():
                    start = time.perf_counter()
                    loop.step()
                    times[which].append(time.perf_counter() - start)
        pairs = [a / b for a, b in zip(times[0][spec.warmup :], times[1][spec.warmup :], strict=True)]
        ratios += pairs
        per_fit.append(statistics.median(pairs))
        del sides
        gc.collect()
    return statistics.median(ratios), per_fit


def run_plain(family: Family, template: nn.Module, batches: list, spec: Spec, seed: int = 0):
    """The plain side alone for ``spec.steps`` steps: ``(step end times, plain loop, losses)``."""
    loop = family.plain(copy.deepcopy(template), batches, spec.steps)
    sync, times, losses = {spec.warmup - 1, spec.steps - 1}, [], []
    restore_rng(seeded_state(seed))
    for index in range(spec.steps):
        losses.append(loop.step())
        times.append(now(spec.device, index in sync))
    return times, loop, losses


class LossRecorder(L.Callback):
    """Seeds the global generators with ``seed`` before the first step (as :func:`run_plain`
    does) and records every step's loss."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.losses: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            restore_rng(seeded_state(self.seed))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach())


def alternate(family: Family, spec: Spec, seed: int = 0, warm: bool = True) -> SideBySide:
    """GPU: alternate whole vitrain and plain runs (A B B A ...); each run's step time is the
    mean over its timed span, synchronised at the two ends only. Also records the peak device
    memory of each side (``extra``). ``warm``: one untimed run of each side first (a process's
    first steps are slow); without it the warm-up steps of each run absorb that."""
    template, batches = family.template(), family.batches()
    sync = {spec.warmup - 1, spec.steps - 1}
    if warm:
        run_plain(family, template, batches, spec, seed)
        fit_vitrain(family, template, batches, spec, [])
    vitrain_s, plain_s, ratios, peaks = [], [], [], {"vitrain": 0, "plain": 0}
    weight_diff = loss_diff = None
    for repeat in range(spec.repeats):
        order = ("vitrain", "plain") if repeat % 2 == 0 else ("plain", "vitrain")
        result = {}
        for side in order:
            gc.collect()
            if spec.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            if side == "vitrain":
                timer, recorder = StepTimer(sync), LossRecorder(seed)
                task = fit_vitrain(family, template, batches, spec, [recorder, timer])
                times, net, losses = timer.times, task.net, recorder.losses
            else:
                times, loop, losses = run_plain(family, template, batches, spec, seed)
                net = loop.net
            if spec.device == "cuda":
                peaks[side] = max(peaks[side], torch.cuda.max_memory_allocated())
            span = (times[-1] - times[spec.warmup - 1]) / (len(times) - spec.warmup)
            result[side] = (span, net, losses)
        if weight_diff is None:  # both sides computed the same training
            weight_diff = max_weight_difference(result["vitrain"][1], result["plain"][1])
            pairs = zip(result["vitrain"][2], result["plain"][2], strict=True)
            loss_diff = max(abs(float(a) - float(b)) for a, b in pairs)
        vitrain_s.append(result["vitrain"][0])
        plain_s.append(result["plain"][0])
        ratios.append(vitrain_s[-1] / plain_s[-1])
        del result
    return SideBySide(
        vitrain_ms=1000 * statistics.median(vitrain_s),
        plain_ms=1000 * statistics.median(plain_s),
        ratio=statistics.median(ratios),
        ratios=ratios,
        pairs=len(ratios),
        weight_diff=weight_diff or 0.0,
        loss_diff=loss_diff or 0.0,
        extra={"peak_bytes": peaks},
    )


# ---------------------------------------------------------------------------- machine and report
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_kind() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def machine_lines(threads: int) -> list[str]:
    lines = [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores visible, torch threads {threads}",
        f"- torch {torch.__version__}, lightning {L.__version__}, python {platform.python_version()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})")
    return lines


@dataclass(frozen=True)
class Ratio:
    """A headline number of a bench module, for the table at the end of ``make bench``.

    ``key``: a short column name (``gpt``); ``value``: the ratio; ``what``: what it compares, in
    a few words; ``goal``: e.g. ``"<= 1.03"`` (empty: none)."""

    key: str
    value: float
    what: str
    goal: str = ""

    def meets_goal(self) -> bool | None:
        if not self.goal:
            return None
        op, bound = self.goal.split()
        return self.value <= float(bound) if op == "<=" else self.value >= float(bound)


HEADER = [
    "# Benchmarks",
    "",
    "Written by `make bench` (`python -m benchmarks`: one module per measure under `benchmarks/`, listed",
    "in `benchmarks/run.py` with the module contract) and `make bench-gpu` (`python -m benchmarks.gpu`):",
    "vitrain against plain PyTorch, measured side by side in one process. Each run replaces the section",
    "of its machine kind (`cpu`, the GPU's name, or `bench-gpu: <GPU name>`) and keeps the others; a",
    "section's table keeps the headline numbers of the last runs, a column per run, and the report",
    "below it is the latest run's. The section `Findings` is written by hand and kept.",
    "",
    "Reading the numbers: on a shared machine absolute times drift (on the 2-core development VM by",
    "3-5x, as other jobs take the cores); the ratios pair the two sides a fraction of a second apart",
    "(step by step in lockstep, or alternating runs) and are the numbers to compare. The",
    "classification module also pairs the plain loop with a copy of itself: that ratio (ideally",
    "1.000) and the scatter of its fits are the resolution of every other ratio at the time of the",
    "run. Alternating epochs with DataLoader workers scatter more (see the per-epoch ratios). With",
    "`num_workers=0` the transforms run in the training process, where torch uses all its intra-op",
    "threads: on a busy 2-core machine a small tensor op then waits for the second thread, so",
    "images/s there swings with the load; DataLoader workers use one thread each.",
    "",
]
HISTORY_RUNS = 4  # rows kept in a section's table of runs


def read_sections(path: Path) -> dict[str, list[str]]:
    """The ``## <name>`` sections of ``path`` (lines after the heading), in order."""
    sections: dict[str, list[str]] = {}
    if path.exists():
        current = None
        for line in path.read_text().splitlines():
            if line.startswith("## "):
                current = line[3:].strip()
                sections[current] = []
            elif current is not None:
                sections[current].append(line)
    return sections


def table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of the first markdown table in ``lines``, header first (separator left out)."""
    table = [line for line in lines if line.startswith("|")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table[:1] + table[2:]]


def history(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The runs (column labels) of a section's table of headline numbers and, per number, its
    ``[what, goal, value per run]``."""
    rows = table_rows(lines)
    if not rows or rows[0][:3] != HISTORY_COLUMNS:
        return [], {}
    runs = rows[0][3:]
    return runs, {row[0].strip("`"): row[1:] + [""] * (len(runs) + 3 - len(row)) for row in rows[1:]}


def history_table(runs: list[str], numbers: dict[str, list[str]]) -> list[str]:
    out = ["| " + " | ".join(HISTORY_COLUMNS + runs) + " |", "|" + "---|" * (3 + len(runs))]
    return out + [f"| `{key}` | " + " | ".join(cells) + " |" for key, cells in numbers.items()]


HISTORY_COLUMNS = ["number", "what it compares", "goal"]
REPORT_LINE = re.compile(
    r"^(|    .*|\[\d+\] .*|vitrain bench.*|Headline numbers.*|bench time.*|bench-gpu time.*)$"
)


def report_lines(lines: list[str]) -> list[str]:
    """The lines a bench printed for the report: blank, indented four spaces, section headings and
    the runner's own; not what libraries print on the way (progress bars, logs)."""
    return [line for line in lines if REPORT_LINE.match(line) and "\r" not in line]


def git_commit() -> str:
    """The checkout's short commit (``?`` outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


def write_markdown(path: Path, kind: str, machine: list[str], ratios: list[Ratio], output: list[str]) -> None:
    """Replace the ``## <kind>`` section of ``path`` (keeping the others): the machine, the table
    of headline numbers with a column per run (this run added, the last ``HISTORY_RUNS`` kept),
    this run's report lines."""
    sections = read_sections(path)
    runs, numbers = history(sections.get(kind, []))
    keep = runs[-(HISTORY_RUNS - 1) :] if HISTORY_RUNS > 1 else []
    start = len(runs) - len(keep)
    numbers = {key: cells[:2] + cells[2 + start :] for key, cells in numbers.items()}
    label = f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} {git_commit()}"
    for key in numbers:
        numbers[key].append("")
    for r in ratios:
        cells = numbers.setdefault(r.key, ["", ""] + [""] * (len(keep) + 1))
        cells[0], cells[1], cells[-1] = r.what, r.goal, f"{r.value:.3f}"
    body = [
        "",
        *machine,
        "",
        *history_table([*keep, label], numbers),
        "",
        "```",
        *report_lines(output),
        "```",
        "",
    ]
    sections[kind] = body
    out = list(HEADER)
    for name, lines in sections.items():
        while lines and not lines[-1].strip():
            lines.pop()
        out += [f"## {name}", *lines, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
