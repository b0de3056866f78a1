"""Text from a trained GPT checkpoint: sampling a continuation, or an instruction-tuned model's
response (``python -m vitrain.generate`` is the command line).

The checkpoint carries the network config (``checkpoint["vitrain"]["net"]``) and the tokenizer
(``checkpoint["vitrain_tokenizer"]``), so no training data or config is needed. An
instruction-tuned checkpoint (``model=gpt*_sft``) also carries its prompt template: the prompt is
the instruction (and the record's input), formatted as in training, and the response alone is
returned, up to the end-of-text token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vitrain.checkpoints import checkpoint_network, load_checkpoint, load_fitting, net_state_dict
from vitrain.errors import UserError
from vitrain.hub import describe_config
from vitrain.models.gpt import GPT, GPTConfig, create_gpt
from vitrain.tasks.instruction import GPT_CONFIG_KEY, PROMPT_KEY
from vitrain.tasks.language import TOKENIZER_KEY

GPT_TARGETS = ("vitrain.models.create_gpt", "vitrain.models.create_gpt_sft")


def load_gpt(path: str | Path):
    """``(net, tokenizer)`` of a GPT checkpoint written by vitrain (``CausalLMTask``,
    ``InstructionTuningTask``)."""
    net, tokenizer, _ = load_generator(path)
    return net, tokenizer


def load_generator(path: str | Path):
    """``(net, tokenizer, template)`` of a GPT checkpoint written by vitrain; ``template`` is the
    prompt template of an instruction-tuning run (:class:`vitrain.data.sft.PromptTemplate`), else None."""
    from tokenizers import Tokenizer

    from vitrain.data.sft import PromptTemplate

    checkpoint = load_checkpoint(path, key="checkpoint")
    net_cfg = dict(checkpoint.get("vitrain", {}).get("net", {}))
    if net_cfg.get("_target_") not in GPT_TARGETS:
        raise UserError(
            f"checkpoint={path}: not a GPT checkpoint (its network is {net_cfg.get('_target_')}); "
            "give a checkpoint of a model=gpt* run."
        )
    if TOKENIZER_KEY not in checkpoint:
        raise UserError(
            f"checkpoint={path}: holds no tokenizer; it was not written by a data=text or data=sft run."
        )
    if GPT_CONFIG_KEY in checkpoint:  # the architecture as built (from init_from / hf_weights)
        net = GPT(GPTConfig(**checkpoint[GPT_CONFIG_KEY]))
    else:
        net_cfg.pop("_target_")
        net_cfg["hf_weights"] = None
        net = create_gpt(**net_cfg)
    load_fitting(
        net,
        net_state_dict(checkpoint),
        ignore=("lm_head.weight",),  # tied to wte
        source=f"checkpoint={path}",
        holds=checkpoint_network(checkpoint),
        network=f"the GPT its config describes ({describe_config(net.config)})",
        fix="Its weights and its recorded architecture disagree: give a checkpoint a vitrain GPT run wrote.",
    )
    prompt = checkpoint.get(PROMPT_KEY)
    template = PromptTemplate(**prompt) if prompt else None
    return net.eval(), Tokenizer.from_str(checkpoint[TOKENIZER_KEY]), template


def generate_text(
    net: GPT,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """The prompt followed by up to ``max_new_tokens`` sampled tokens, decoded.

    The same ``seed`` gives the same text; ``top_k=1`` (or ``temperature=0``) is greedy. An
    empty prompt starts from the end-of-text token. Generation stops at end-of-text.
    """
    return prompt + continuation(net, tokenizer, prompt, max_new_tokens, temperature, top_k, seed)


def respond(
    net: GPT,
    tokenizer,
    template,
    instruction: str,
    input: str = "",
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """The response of an instruction-tuned GPT to ``instruction`` (and ``input``), formatted with
    its prompt ``template`` (a :class:`vitrain.data.sft.PromptTemplate`), up to end-of-text."""
    prompt = template.format(instruction, input)
    return continuation(net, tokenizer, prompt, max_new_tokens, temperature, top_k, seed)


def continuation(
    net: GPT,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """Up to ``max_new_tokens`` tokens sampled after ``prompt``, decoded (see :func:`generate_text`)."""
    eot = tokenizer.token_to_id("<|endoftext|>")
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []
    if not ids:
        ids = [eot if eot is not None else 0]
    device = next(net.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(seed)
    was_training = net.training
    net.eval()
    try:
        out = net.generate(idx, max_new_tokens, temperature, top_k, generator=generator, stop_token=eot)
    finally:
        net.train(was_training)
    new = [i for i in out[0, len(ids) :].tolist() if i != eot]
    return tokenizer.decode(new, skip_special_tokens=True)
