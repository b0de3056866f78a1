"""Instruction-tuning data: prompt + response records, formatted by a prompt template.

Records are JSON objects in one of two layouts, told apart per record:

* Alpaca (tatsu-lab/stanford_alpaca's ``alpaca_data.json``): ``instruction``, optional ``input``
  (absent or empty: none), ``output`` (the response);
* ``prompt`` / ``response`` (``input`` optional as well).

A file is ``.jsonl`` (one record per line) or ``.json`` (a list of records, as the Alpaca
distribution ships). A record without a response, or without an instruction / prompt, is one
:class:`UserError` naming ``file:line``.

The prompt template turns a record into the text the model reads before the response. The default
is Alpaca's (``PROMPT_DICT`` of stanford_alpaca ``train.py``: "Below is an instruction that
describes a task ..." with ``### Instruction:`` / ``### Input:`` / ``### Response:`` sections),
ending in a newline after ``### Response:`` as litgpt's ``Alpaca`` prompt style does
(litgpt ``prompts.py``; the original ends at the colon). Each sequence is ``prompt tokens +
response tokens + <|endoftext|>``; its labels are the tokens themselves on the response and the
end-of-text token and -100 on the prompt (the task shifts them: position ``t`` predicts label
``t + 1``). The prompt and the response are tokenized apart and joined, so the boundary is exact.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vitrain.data.finetune import IGNORE_INDEX, EncodedSplit, FinetuneDataModule, special_token_ids
from vitrain.data.text_classification import split_off
from vitrain.errors import UserError, require_choice

log = logging.getLogger(__name__)

SFT_SUFFIXES = (".jsonl", ".json")
# tatsu-lab/stanford_alpaca train.py PROMPT_DICT, with litgpt's newline after "### Response:"
ALPACA = {
    "no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
    "with_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
}
# the instruction (and the input) as they are, each followed by a newline
PLAIN = {"no_input": "{instruction}\n", "with_input": "{instruction}\n{input}\n"}
TEMPLATES = {"alpaca": ALPACA, "plain": PLAIN}


@dataclass
class PromptTemplate:
    """The text before the response: ``no_input`` (with ``{instruction}``) and ``with_input`` (with
    ``{instruction}`` and ``{input}``) for records without and with an input."""

    no_input: str
    with_input: str

    @classmethod
    def build(cls, name: str, no_input: str | None = None, with_input: str | None = None) -> PromptTemplate:
        """The named template (``alpaca``, ``plain``) with either string replaced when given."""
        require_choice("data.template", name, TEMPLATES, "or set data.template_*")
        template = cls(no_input or TEMPLATES[name]["no_input"], with_input or TEMPLATES[name]["with_input"])
        for key, text, fields in (("template_no_input", template.no_input, ("instruction",)),
                                  ("template_with_input", template.with_input, ("instruction", "input"))):  # fmt: skip
            missing = [f for f in fields if "{" + f + "}" not in text]
            if missing:
                raise UserError(f"data.{key}={text!r} lacks {', '.join('{' + f + '}' for f in missing)}.")
        return template

    def format(self, instruction: str, input: str = "") -> str:
        """The prompt of one record (``input`` empty: the template without input)."""
        if input:
            return self.with_input.replace("{instruction}", instruction).replace("{input}", input)
        return self.no_input.replace("{instruction}", instruction)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Record:
    """One instruction record and where it was read (``file:line``)."""

    instruction: str
    input: str
    response: str
    where: str


def record_from(obj, where: str) -> Record:
    """A :class:`Record` from one JSON value of a file (either layout)."""
    if not isinstance(obj, dict):
        raise UserError(
            f"{where}: not a JSON object (a record has instruction/input/output or prompt/response)."
        )
    layout = ("prompt", "response") if "prompt" in obj or "response" in obj else ("instruction", "output")
    keys = ", ".join(obj) or "none"
    instruction, response = obj.get(layout[0]), obj.get(layout[1])
    if not isinstance(response, str) or not response.strip():
        raise UserError(
            f"{where}: the record has no response ({layout[1]!r} missing or empty; keys found: {keys}): an "
            "Alpaca record needs 'output', a prompt record 'response'. Fix or remove the record."
        )
    if not isinstance(instruction, str) or not instruction.strip():
        raise UserError(
            f"{where}: the record has no {layout[0]!r} (keys found: {keys}): an Alpaca record needs 'instruction', "
            "a response record 'prompt'. Fix or remove the record."
        )
    extra = obj.get("input") or ""
    if not isinstance(extra, str):
        raise UserError(f"{where}: the record's 'input' is not a string.")
    return Record(instruction, extra, response, where)


def read_records(path: str | Path, key: str) -> list[Record]:
    """The records of a ``.jsonl`` or ``.json`` (list) file."""
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix.lower() not in SFT_SUFFIXES:
        raise UserError(f"{key}={path}: no such .jsonl / .json file of instruction records.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{key}: cannot read {path} ({err}).") from err
    if path.suffix.lower() == ".json":
        return [record_from(obj, f"{path}:{line}") for line, obj in json_array(text, path)]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number} is not JSON ({err.msg}).") from err
            records.append(record_from(obj, f"{path}:{number}"))
    if not records:
        raise UserError(f"{key}={path} holds no records.")
    return records


def json_array(text: str, path: Path) -> list[tuple[int, object]]:
    """``(line, value)`` of each element of a JSON list (the line where the element starts)."""
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if text[position : position + 1] != "[":
        raise UserError(
            f"{path}: a .json file of records is one JSON list ([{{...}}, ...]); use .jsonl for one per line."
        )
    position, line, counted, out = _skip_space(text, position + 1), 1, 0, []
    while position < len(text) and text[position] != "]":
        line += text.count("\n", counted, position)
        counted = position
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno} is not JSON ({err.msg}).") from err
        out.append((line, value))
        position = _skip_space(text, position)
        if text[position : position + 1] == ",":
            position = _skip_space(text, position + 1)
    return out


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


# ------------------------------------------------------------------ the DataModule
class SFTDataModule(FinetuneDataModule):
    """``data=sft``: instruction records for a GPT (see the module docstring).

    Args:
        train, val, test: ``.jsonl`` / ``.json`` files of records. ``train: null`` is the embedded
            set (:mod:`vitrain.data.python_instructions`). Without ``val`` (``test``) a
            ``val_fraction`` (``test_fraction``) of the training records is held out with
            ``split_seed`` (``test_fraction: 0``: no test split).
        template: the prompt template, ``alpaca`` or ``plain`` (see :data:`TEMPLATES`).
        template_no_input: replaces the template's string for records without an input (it
            must hold ``{instruction}``; None: the named template's).
        template_with_input: replaces its string for records with an input (it must hold
            ``{instruction}`` and ``{input}``; None: the named template's).
        val_fraction, test_fraction: shares of the training records held out when ``val``
            (``test``) is not given (``test_fraction`` 0: no test split).
        split_seed: seed of the draw of the held-out records.
        require_files: fail unless ``train`` is given (recipes for real data set it).
        **kwargs: see :class:`vitrain.data.finetune.FinetuneDataModule` (``max_length``: prompt +
            response + end-of-text; longer sequences lose the end of their response, counted).
    """

    kind = "instructions"
    cache_name = "sft"
    gpt1_tokens = False  # instruction tuning adds no token to the tokenizer
    model_size_keys = ("vocab_size",)  # a language model: no label count

    def __init__(
        self,
        packing: str,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        template: str = "alpaca",
        template_no_input: str | None = None,
        template_with_input: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        require_files: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(packing, **kwargs)
        if require_files and train is None:
            raise UserError(
                "data.train is required here (a recipe for a real instruction set): data.train=<.json / .jsonl "
                "file, e.g. alpaca_data_cleaned_archive.json>. Without it the embedded set is used."
            )
        if packing != "causal":
            raise UserError(f"data.packing={packing}: instruction tuning is for GPT models (packing causal).")
        if train is None and (val or test):
            raise UserError("data.val / data.test need data.train (null: the embedded set).")
        self.files = {"train": train, "val": val, "test": test}
        self.prompt_template = PromptTemplate.build(template, template_no_input, template_with_input)
        self.hold_out(val_fraction, test_fraction, split_seed)

    def model_sizes(self) -> dict[str, int]:
        return {"vocab_size": self.vocab_size}

    def source_settings(self) -> tuple[list, list[Path]]:
        given = {split: Path(f).expanduser() for split, f in self.files.items() if f}
        settings = [sorted(self.files.items(), key=str), self.prompt_template.to_dict(), self.val_fraction,
                    self.test_fraction, self.split_seed]  # fmt: skip
        if not given:
            settings.append(f"embedded python instructions v2 {sys.version}")  # v2: grouped by name
        return settings, [p for p in given.values() if p.is_file()]

    def read_examples(self) -> dict[str, list[Record]]:
        if self.files["train"] is None:
            from vitrain.data.python_instructions import python_instructions

            splits = python_instructions(self.val_fraction, self.test_fraction, self.split_seed)
            return {
                split: [Record(r["instruction"], r.get("input", ""), r["output"], f"embedded {split} record {i}")
                        for i, r in enumerate(records)]
                for split, records in splits.items() if records
            }  # fmt: skip
        examples = {split: read_records(f, f"data.{split}") for split, f in self.files.items() if f}
        train = examples["train"]
        if "val" not in examples:
            train, examples["val"] = split_off(train, self.val_fraction, self.split_seed, "data.val_fraction")
        if "test" not in examples and self.test_fraction > 0:
            train, examples["test"] = split_off(
                train, self.test_fraction, self.split_seed + 1, "data.test_fraction"
            )
        examples["train"] = train
        return examples

    def training_texts(self, examples: list[Record]) -> Iterable[str]:
        for record in examples:
            yield self.prompt_template.format(record.instruction, record.input) + record.response

    def encode(self, tok, examples: list[Record], labels: list[str]) -> tuple[EncodedSplit, int]:
        """``prompt + response + <|endoftext|>`` ids with labels on the response (see the module
        docstring); a sequence over ``max_length`` loses the end of its response (counted as
        truncated). A record whose prompt alone fills ``max_length`` keeps no response token: it
        adds nothing to the loss, and the build logs how many there are, naming the first."""
        eot = special_token_ids(tok, "causal")["eot"]
        prompts = tok.encode_batch(
            [self.prompt_template.format(r.instruction, r.input) for r in examples], add_special_tokens=False
        )
        responses = tok.encode_batch([r.response for r in examples], add_special_tokens=False)
        tokens: dict[str, list] = {"input_ids": [], "labels": []}
        cut, no_response = 0, []
        for record, prompt, response in zip(examples, prompts, responses, strict=True):
            answer = [*response.ids, eot]
            ids = (prompt.ids + answer)[: self.max_length]
            cut += len(prompt.ids) + len(answer) > self.max_length
            if len(prompt.ids) >= len(ids):
                no_response.append(record.where)
            tokens["input_ids"].append(ids)
            tokens["labels"].append([IGNORE_INDEX] * len(prompt.ids) + ids[len(prompt.ids) :])
        if no_response:
            log.warning(
                "data: %d of %d records keep no response token within data.max_length=%d (the prompt fills it; "
                "first: %s): they add nothing to the loss. Raise data.max_length or shorten them.",
                len(no_response), len(examples), self.max_length, no_response[0],
            )  # fmt: skip
        sequences = {"index": np.arange(len(examples), dtype=np.int64)}
        return EncodedSplit.from_lists(tokens, sequences), cut
