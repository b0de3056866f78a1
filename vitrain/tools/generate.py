"""Sample text from a trained GPT checkpoint.

    python -m vitrain.generate logs/train/runs/<run>/checkpoints/last.ckpt --prompt "def main" \\
        --max-new-tokens 100 --temperature 0.8 --top-k 50 --seed 0

The checkpoint carries the network config and the tokenizer, so no training data or config is
needed (``vitrain.inference.text``). An instruction-tuned checkpoint (``model=gpt*_sft``) also
carries its prompt template: the prompt is the instruction (``--input`` adds the record's input),
formatted as in training, and the response alone is printed, up to the end-of-text token
(``--raw`` continues the prompt as it is).
"""

from __future__ import annotations

import argparse
import sys

import torch

from vitrain.errors import UserError
from vitrain.inference.text import generate_text, load_generator, respond


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitrain.generate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a .ckpt of a GPT run (e.g. <run_dir>/checkpoints/last.ckpt)")
    parser.add_argument(
        "--prompt",
        default="",
        help="text to continue (default: start of a document); an instruction-tuned "
        "checkpoint: the instruction",
    )
    parser.add_argument("--input", default="", help="an instruction-tuned checkpoint: the record's input")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="an instruction-tuned checkpoint: continue --prompt without the template",
    )
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        if args.max_new_tokens < 1 or (args.top_k is not None and args.top_k < 1):
            raise UserError("--max-new-tokens and --top-k must be positive integers.")
        net, tokenizer, template = load_generator(args.checkpoint)
        if args.input and (template is None or args.raw):
            raise UserError(
                "--input is the input of an instruction: it needs an instruction-tuned checkpoint."
            )
        net.to(args.device)
        sampling = (args.max_new_tokens, args.temperature, args.top_k)
        for i in range(args.num_samples):
            if template is not None and not args.raw:
                text = respond(
                    net, tokenizer, template, args.prompt, args.input, *sampling, seed=args.seed + i
                )
            else:
                text = generate_text(net, tokenizer, args.prompt, *sampling, seed=args.seed + i)
            print(text if args.num_samples == 1 else f"--- sample {i}\n{text}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
