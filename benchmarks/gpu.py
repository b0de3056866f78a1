"""``make bench-gpu`` (``python -m benchmarks.gpu``): the GPU numbers in one command.

On one H100 or H200 it runs in under 8 minutes (``--budget`` seconds, default 420: a part that
would start later is skipped and says so) and writes the section ``bench-gpu: <GPU name>`` of
``docs/benchmarks.md``:

1. ViT-B/16, 224 px, batch 128, bf16 autocast: images/s and MFU, vitrain (Lightning ``Trainer``
   fitting ``ClassificationTask``) against a plain PyTorch + timm loop.
2. GPT-2 124M, context 1024, batch 12, bf16 autocast, fused AdamW: tokens/s and MFU, vitrain
   (``CausalLMTask``) against a nanoGPT-style loop, eager and with ``torch.compile`` (both sides;
   vitrain compiles in place as ``compile=true`` does).
3. DETR-R50 (shapes data at 512 px, batch 8) and SAM ViT-B (1024 px, batch 2, 11 prompt rounds):
   step times, vitrain against the plain loops of ``benchmarks.detr`` / ``benchmarks.sam``; the
   DETR matcher per image against the reference's batched costs; SAM's prompt-round share.

Every part reports the peak device memory of each side. Whole runs alternate (A B B A), each
timed over its span with the device synchronised at the two ends (``benchmarks.common.alternate``).
The networks are randomly initialised and the data is synthetic (random images and tokens, the
embedded shapes): nothing is downloaded, so it runs on a bare machine after ``make install``.
MFU divides the FLOPs counted with ``FlopCounterMode`` (one eager step, forward + backward) by the
GPU's dense bf16 peak (``vitrain.callbacks.throughput.gpu_peak_flops``).

Without a GPU (or with ``--quick``) the same code runs at tiny sizes on the CPU in fp32 (the
smoke test of this script; ``torch.compile`` with the ``eager`` backend) and writes nothing.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks import detr, sam
from benchmarks.classification import ViTFamily
from benchmarks.common import (
    ROOT,
    STEP_GOAL,
    Family,
    Ratio,
    SideBySide,
    Spec,
    alternate,
    fmt_ratios,
    machine_kind,
    machine_lines,
    module_args,
    write_markdown,
)
from benchmarks.gpt import GPTFamily
from vitrain.callbacks.throughput import flop_counter, gpu_peak_flops

TITLE = "GPU: ViT-B/16 and GPT-2 124M throughput and MFU, DETR-R50 and SAM ViT-B steps, vitrain against plain loops"
GIB = 2**30


def parts(cuda: bool) -> list[tuple[str, str, Family, Spec, str, int]]:
    """``(key, label, family, spec, unit, units per step)`` of every part, at the GPU's sizes or
    (``cuda`` False) at tiny sizes on the CPU."""
    if cuda:
        dev, bf16, p = "cuda", True, "bf16-mixed"
        vit = ViTFamily("vit", "vit_base_patch16_224", 224, 128, dev, bf16)
        gpt = GPTFamily(
            "gpt", "gpt2_124m", vocab=50304, context=1024, batch=12, device=dev, bf16=bf16, fused=True
        )
        gpt_c = replace(gpt, compile=True)
        detr_f = detr.DETRFamily("detr", "detr_r50", image_size=512, batch=8, device=dev, bf16=bf16)
        sam_f = sam.SAMFamily(
            "sam", "sam_vit_b", image_size=1024, render_size=256, batch=2, device=dev, bf16=bf16
        )
        specs = [Spec(40, 10, 2, dev, p), Spec(30, 10, 2, dev, p), Spec(30, 10, 1, dev, p), Spec(20, 5, 2, dev, p),
                 Spec(12, 4, 2, dev, p)]  # fmt: skip
        labels = ["ViT-B/16, 224 px, batch 128, bf16 autocast, AdamW", "GPT-2 124M, context 1024, batch 12, bf16, fused AdamW, eager",
                  "GPT-2 124M, context 1024, batch 12, bf16, fused AdamW, torch.compile",
                  "DETR-R50, shapes at 512 px, batch 8, bf16 autocast", "SAM ViT-B, 1024 px, batch 2, 11 prompt rounds, bf16 autocast"]  # fmt: skip
    else:
        tiny_vit = {"embed_dim": 32, "depth": 1, "num_heads": 2}
        vit = ViTFamily("vit", image_size=32, batch=4, net_kwargs=tiny_vit)
        gpt = GPTFamily(
            "gpt", vocab=128, context=32, batch=2, net_kwargs={"n_layer": 1, "n_embd": 32, "n_head": 2}
        )
        gpt_c = replace(gpt, compile=True, compile_backend="eager")
        detr_f = replace(detr.CPU_FAMILY, image_size=32, batch=2, net_kwargs=detr.TINY)
        sam_f = replace(
            sam.CPU_FAMILY, image_size=32, batch=2, num_rounds=3, mask_only_rounds=1, net_kwargs=sam.TINY
        )
        specs = [Spec(4, 1, 1)] * 5
        labels = [
            f"{name} (CPU path, tiny sizes, fp32)"
            for name in ("ViT", "GPT", "GPT compiled (eager backend)", "DETR", "SAM")
        ]
    return [
        ("vit", labels[0], vit, specs[0], "images", vit.batch),
        ("gpt2", labels[1], gpt, specs[1], "tokens", gpt.batch * gpt.context),
        ("gpt2_compile", labels[2], gpt_c, specs[2], "tokens", gpt.batch * gpt.context),
        ("detr_r50", labels[3], detr_f, specs[3], "images", detr_f.batch),
        ("sam_vit_b", labels[4], sam_f, specs[4], "images", sam_f.batch),
    ]


def step_flops(family: Family) -> int:
    """Training FLOPs of one step of the plain loop in eager mode (forward + backward)."""
    if getattr(family, "compile", False):
        family = replace(family, compile=False)
    template, batches = family.template(), family.batches()
    loop = family.plain(copy.deepcopy(template), batches, 10**6)
    with flop_counter() as counter:
        loop.step()
    return counter.get_total_flops()


def report(
    label: str, result: SideBySide, spec: Spec, unit: str, per_step: int, flops: int, peak: float | None
) -> None:
    rate = {
        side: per_step / (ms / 1000)
        for side, ms in (("vitrain", result.vitrain_ms), ("plain", result.plain_ms))
    }
    print(f"    {label}: mean step over {spec.steps - spec.warmup} steps after {spec.warmup} warm-up, "
          f"{spec.repeats} run(s) per side, alternating")  # fmt: skip
    print(f"    vitrain {rate['vitrain']:.0f} {unit}/s ({result.vitrain_ms:.1f} ms/step), plain "
          f"{rate['plain']:.0f} {unit}/s ({result.plain_ms:.1f} ms/step)")  # fmt: skip
    print(
        f"    vitrain step / plain step = {result.ratio:.3f} (goal {STEP_GOAL}; runs: {fmt_ratios(result.ratios)})"
    )
    if peak:
        mfu = {
            side: flops / (ms / 1000) / peak
            for side, ms in (("vitrain", result.vitrain_ms), ("plain", result.plain_ms))
        }
        print(f"    {flops / 1e12:.2f} TFLOP per step; MFU against the dense bf16 peak {peak / 1e12:.0f} TFLOP/s: "
              f"vitrain {mfu['vitrain']:.3f}, plain {mfu['plain']:.3f}")  # fmt: skip
    else:
        print(f"    {flops / 1e9:.2f} GFLOP per step; MFU: n/a (no listed peak for {machine_kind()})")
    peaks = result.extra.get("peak_bytes", {})
    memory = ", ".join(
        f"{side} {peaks[side] / GIB:.1f} GiB" for side in ("vitrain", "plain") if peaks.get(side)
    )
    print(f"    peak memory: {memory or 'n/a (CPU)'}; final weights max |difference| {result.weight_diff:.1e}, "
          f"losses max |difference| {result.loss_diff:.1e}")  # fmt: skip


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__, lambda p: p.add_argument("--budget", type=float, default=420.0))
    cuda = torch.cuda.is_available() and not args.quick
    if not cuda and not args.quick:
        print(
            "    skipped: no CUDA device (`make bench-gpu` runs it on a GPU; `python -m benchmarks.gpu --quick`"
        )
        print("    runs its CPU path at tiny sizes)")
        return []
    start = time.perf_counter()
    peak = gpu_peak_flops(torch.cuda.get_device_name(0), "bf16") if cuda else None
    print(f"    on {machine_kind()}: random initial weights, synthetic data (nothing downloaded)")
    ratios = []
    for key, label, family, spec, unit, per_step in parts(cuda):
        if time.perf_counter() - start > args.budget:
            print(f"    {label}: skipped (past the {args.budget:.0f} s budget)")
            continue
        part_start = time.perf_counter()
        print()
        flops = step_flops(family)
        result = alternate(family, spec, warm=not getattr(family, "compile", False))
        report(label, result, spec, unit, per_step, flops, peak)
        if key == "detr_r50":
            m = detr.matcher_variants(family, family.batches()[:2], reps=5)["ms"]
            print(f"    matcher ms per call: vitrain (batched, one copy to the host) {m['vitrain']:.2f}, a cost matrix per "
                  f"image {m['per_image']:.2f}, reference {m['reference']:.2f}, linear_sum_assignment alone "
                  f"{m['scipy']:.2f}")  # fmt: skip
        if key == "sam_vit_b":
            split = sam.phases(family, 3)
            total = sum(split.values())
            print(
                "    plain step: " + ", ".join(f"{name} {t / total * 100:.1f}%" for name, t in split.items())
            )
        print(f"    ({time.perf_counter() - part_start:.0f} s)")
        ratios.append(Ratio(f"gpu_{key}", result.ratio, f"{label}: vitrain / plain step", STEP_GOAL))
        if cuda:
            torch.cuda.empty_cache()
    print(f"\n    bench-gpu time {time.perf_counter() - start:.0f} s")
    return ratios


def script(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.gpu``: run :func:`main`; on a GPU, write its section of
    ``docs/benchmarks.md`` (``--out``)."""
    from benchmarks.run import Tee, table

    argv = list(sys.argv[1:] if argv is None else argv)
    out = ROOT / "docs" / "benchmarks.md"
    if "--out" in argv:
        index = argv.index("--out")
        out = Path(argv[index + 1])
        del argv[index : index + 2]
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        print(f"vitrain bench-gpu on {machine_kind()}")
        ratios = main(argv)
        print()
        print("\n".join(table(ratios)) if ratios else "    (no numbers)")
    if torch.cuda.is_available() and "--quick" not in argv:
        write_markdown(
            out, f"bench-gpu: {machine_kind()}", machine_lines(torch.get_num_threads()), ratios, tee.lines
        )
        print(f"wrote {out}")


if __name__ == "__main__":
    script()
