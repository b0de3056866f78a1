"""Achieved training FLOP/s as a fraction of this machine's matmul FLOP/s, and where the rest goes.

For each shape: the training FLOPs of one step (``FlopCounterMode``: matmuls, convolutions and
attention, forward + backward), the vitrain step time (a Lightning ``Trainer`` fitting the
task, median step after warm-up), their quotient against the best ``torch.mm`` rate of a 2048 x
2048 fp32 matmul. Then ``torch.profiler`` splits a training step (the plain loop of the same
family) by operator: matmuls, fused attention, convolutions (each with its own FLOP/s against
the matmul rate), the operators that do no counted FLOPs (norms, GELU, softmax, adds, copies,
the loss), the optimizer step, and the time outside any operator (Python, autograd engine).

Shapes: ViT-Ti/16 at 32 px (4 tokens, a shape no matmul runs well at: the number the first
``make bench`` reported), ViT-S/16 at 224 px (197 tokens) and GPT-tiny at context 256.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections import defaultdict
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.classification import ViTFamily
from benchmarks.common import Family, Ratio, Spec, StepTimer, fit_vitrain, matmul_flops, module_args
from benchmarks.gpt import GPTFamily
from vitrain.callbacks.throughput import flop_counter

TITLE = "achieved training FLOP/s against this CPU's fp32 matmul, and which parts of the step fall below it"

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv"}
CATEGORIES = {
    "matmul": "matmuls (mm, addmm, bmm)",
    "attention": "fused attention (SDPA)",
    "conv": "convolutions (patch embedding)",
    "other_ops": "ops without counted FLOPs (norms, GELU, softmax, adds, copies, embedding, loss)",
    "optimizer": "optimizer step and zero_grad (AdamW)",
    "outside": "outside any operator (Python, autograd engine, hooks)",
}


def op_category(name: str) -> str:
    """The category of a profiler operator (by its ``aten::`` name) or FLOP counter key."""
    name = name.replace("aten.", "aten::")
    if name in MATMUL_OPS:
        return "matmul"
    if "scaled_dot_product" in name:
        return "attention"
    if "convolution" in name:
        return "conv"
    return "other_ops"


def counted_flops(step) -> tuple[int, dict[str, int]]:
    """Total training FLOPs of ``step()`` and their split by category."""
    with flop_counter() as counter:
        step()
    split: dict[str, int] = defaultdict(int)
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        split[op_category(str(op))] += flops
    return counter.get_total_flops(), dict(split)


def profile_split(step, steps: int) -> tuple[float, dict[str, float]]:
    """Wall seconds of ``steps`` calls of ``step()`` and the seconds of each category (operators'
    self time; the optimizer's operators count as ``optimizer``; the rest is ``outside``)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - start
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name.startswith(("Optimizer.", "ProfilerStep")):
            continue  # ranges: their operators are counted themselves
        parent, in_optimizer = event.cpu_parent, False
        while parent is not None:
            if parent.name.startswith(("Optimizer.step", "Optimizer.zero_grad")):
                in_optimizer = True
                break
            parent = parent.cpu_parent
        key = "optimizer" if in_optimizer else op_category(event.name)
        seconds[key] += event.self_cpu_time_total / 1e6
    seconds["outside"] = max(wall - sum(seconds.values()), 0.0)
    return wall, dict(seconds)


def vitrain_step_ms(family: Family, spec: Spec) -> float:
    """Median vitrain step (a Lightning Trainer fitting the family's task) after warm-up, in ms."""
    timer = StepTimer({spec.steps - 1})
    fit_vitrain(family, family.template(), family.batches(), spec, [timer])
    steps = [b - a for a, b in zip(timer.times, timer.times[1:], strict=False)][spec.warmup - 1 :]
    return 1000 * statistics.median(steps)


def measure(family: Family, spec: Spec, profile_steps: int, matmul_best: float) -> dict:
    template, batches = family.template(), family.batches()
    plain = family.plain(copy.deepcopy(template), batches, 10**6)
    plain.step()  # warm-up
    flops, flop_split = counted_flops(plain.step)
    wall, seconds = profile_split(plain.step, profile_steps)
    step_ms = vitrain_step_ms(family, spec)
    achieved = flops / (step_ms / 1000)
    parts = {}
    for key in CATEGORIES:
        share = seconds.get(key, 0.0) / wall
        rate = None
        if flop_split.get(key) and seconds.get(key):
            rate = flop_split[key] * profile_steps / seconds[key] / matmul_best
        parts[key] = (share, rate)
    return {
        "flops": flops,
        "step_ms": step_ms,
        "fraction": achieved / matmul_best,
        "achieved": achieved,
        "parts": parts,
    }


def report(label: str, result: dict) -> None:
    print(f"    {label}: {result['flops'] / 1e9:.2f} GFLOP per step; vitrain {result['step_ms']:.1f} ms/step "
          f"= {result['achieved'] / 1e9:.1f} GFLOP/s")  # fmt: skip
    print(f"    vitrain training FLOP/s / matmul FLOP/s = {result['fraction']:.3f}")
    print(
        "      where a step's time goes (torch.profiler, operators' self time, the plain loop): share of the step,"
    )
    print("      and the part's own FLOP/s / matmul FLOP/s")
    for key, (share, rate) in result["parts"].items():
        rate_text = f", {rate:.2f} of the matmul rate" if rate is not None else ""
        print(f"      {share * 100:5.1f}%  {CATEGORIES[key]}{rate_text}")


SHAPES = [
    ("ViT-Ti/16, 32 px (4 tokens), batch 32, fp32", ViTFamily("vit_ti_32"), Spec(12, 4, 1)),
    (
        "ViT-S/16, 224 px (197 tokens), batch 8, fp32",
        ViTFamily("vit_s_224", "vit_small_patch16_224", 224, 8),
        Spec(8, 3, 1),
    ),
    ("GPT-tiny, context 256, batch 8, vocabulary 2048, fp32", GPTFamily("gpt_tiny_256"), Spec(12, 4, 1)),
]
QUICK = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__)
    n, reps, profile_steps = (256, 3, 1) if args.quick else (2048, 7, 3)
    best, median = matmul_flops("cpu", torch.float32, n, reps)
    print(f"    torch.mm fp32 {n}x{n}: best {best / 1e9:.1f} GFLOP/s of {reps} (median {median / 1e9:.1f})")
    ratios = []
    for label, family, spec in SHAPES:
        if args.quick:
            small = {"net_kwargs": QUICK, "batch": 2} if isinstance(family, ViTFamily) else {}
            if isinstance(family, GPTFamily):
                small = {"net_kwargs": {"n_layer": 1, "n_embd": 32, "n_head": 2}, "context": 32, "batch": 2}
            family, spec, label = replace(family, **small), Spec(4, 2, 1), label + " (quick: tiny)"
        result = measure(family, spec, profile_steps, best)
        report(label, result)
        ratios.append(
            Ratio(f"flops_{family.label}", result["fraction"], f"{label}: training FLOP/s / matmul FLOP/s")
        )
    return ratios


if __name__ == "__main__":
    main()
