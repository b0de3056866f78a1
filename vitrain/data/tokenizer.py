"""Tokenizers (Hugging Face ``tokenizers``): trained on a corpus or loaded from local files.

Two flavours, one per packing:

* ``causal`` (GPT): byte-level BPE, like GPT-2, with the end-of-text token ``<|endoftext|>``.
  Loads a ``tokenizer.json`` or GPT-2's ``vocab.json`` + ``merges.txt``.
* ``masked`` (BERT): WordPiece with BERT's normaliser (lower-cased unless told otherwise) and
  the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``. Loads a ``tokenizer.json`` or BERT's
  ``vocab.txt``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vitrain.errors import UserError

EOT = "<|endoftext|>"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SPECIAL_TOKENS = {"causal": (EOT,), "masked": BERT_SPECIALS}
PACKINGS = tuple(SPECIAL_TOKENS)


def _byte_level(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _wordpiece(model: models.Model, lowercase: bool) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def train_tokenizer(texts: Iterable[str], packing: str, vocab_size: int, lowercase: bool = True) -> Tokenizer:
    """A tokenizer of at most ``vocab_size`` tokens learnt from ``texts`` (byte-level BPE for
    ``causal``, WordPiece for ``masked``); the special tokens come first."""
    specials = list(SPECIAL_TOKENS[packing])
    if packing == "causal":
        minimum = 256 + len(specials)  # every byte has a token
        if vocab_size < minimum:
            raise UserError(f"data.vocab_size={vocab_size}: byte-level BPE needs at least {minimum}.")
        tok = _byte_level(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        if vocab_size < 100:
            raise UserError(f"data.vocab_size={vocab_size}: too small for WordPiece, use at least 100.")
        tok = _wordpiece(models.WordPiece(unk_token="[UNK]"), lowercase)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        )
    tok.train_from_iterator(texts, trainer)
    return tok


def load_tokenizer(path: str | Path, packing: str, lowercase: bool = True) -> Tokenizer:
    """A tokenizer from ``path``: a ``tokenizer.json``, a GPT-2 ``vocab.json`` (with ``merges.txt``
    beside it), a BERT ``vocab.txt``, or a folder holding one of these."""
    path = Path(path)
    key = "data.tokenizer"
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.json", "vocab.txt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise UserError(f"{key}={path}: the folder has no tokenizer.json, vocab.json or vocab.txt.")
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file. Give a tokenizer.json, vocab.json or vocab.txt.")
    try:
        if path.suffix == ".txt":
            tok = _wordpiece(models.WordPiece.from_file(str(path), unk_token="[UNK]"), lowercase)
        elif path.name == "tokenizer.json" or path.suffix == ".json" and not path.name.startswith("vocab"):
            tok = Tokenizer.from_file(str(path))
        else:
            merges = path.with_name("merges.txt")
            if not merges.is_file():
                raise UserError(f"{key}={path}: a GPT-2 vocab.json needs merges.txt in the same folder.")
            tok = _byte_level(models.BPE.from_file(str(path), str(merges)))
    except UserError:
        raise
    except Exception as err:  # the tokenizers library raises plain Exceptions
        raise UserError(f"{key}={path}: not a tokenizer file ({err}).") from err
    check_special_tokens(tok, packing, str(path))
    return tok


def tokenizer_files(spec: str | Path | None) -> list[Path]:
    """The files whose content defines the tokenizer ``spec`` (a file, with a GPT-2 ``merges.txt``
    beside it, or a folder's tokenizer files; not a model folder's weights); [] for None."""
    if not spec:
        return []
    path = Path(spec)
    if path.is_dir():
        return [path / name for name in ("tokenizer.json", "vocab.json", "merges.txt", "vocab.txt")]
    return [path, path.with_name("merges.txt")]


def check_special_tokens(tok: Tokenizer, packing: str, where: str) -> None:
    """Fail when the tokens ``packing`` needs are missing from ``tok``'s vocabulary."""
    missing = [t for t in SPECIAL_TOKENS[packing] if tok.token_to_id(t) is None]
    if missing:
        model = "GPT (causal)" if packing == "causal" else "BERT (masked)"
        raise UserError(
            f"data.tokenizer={where} lacks the token(s) {', '.join(missing)} a {model} model needs: "
            f"use a tokenizer made for this model, or data.tokenizer=null to train one on the corpus."
        )


def special_ids(tok: Tokenizer, packing: str) -> dict[str, int]:
    """``{"eot": id}`` (causal) or ``{"pad", "unk", "cls", "sep", "mask"}`` ids (masked)."""
    if packing == "causal":
        return {"eot": tok.token_to_id(EOT)}
    return {t.strip("[]").lower(): tok.token_to_id(t) for t in BERT_SPECIALS}


# the key under which vitrain's language tasks store their tokenizer.json in a checkpoint
TOKENIZER_KEY = "vitrain_tokenizer"


def check_checkpoint_tokenizer(stored: str | None, current: str | None, out_dir: str | Path) -> None:
    """Refuse to continue a checkpoint trained with another tokenizer than the data's.

    ``stored`` / ``current``: ``tokenizer.json`` texts of the checkpoint and of the data (None:
    unknown, nothing to compare). Training a tokenizer is not reproducible bit for bit (ties between
    merges), so a token cache that was rebuilt (deleted, moved, another vitrain version's cache key)
    can hold a different tokenizer than the run's checkpoints: continuing would feed the embedding
    rows of other tokens. The checkpoint's tokenizer is written to ``out_dir/checkpoint_tokenizer.json``
    and the message says how to use it."""
    if not stored or not current:
        return
    ours, theirs = Tokenizer.from_str(current).get_vocab(), Tokenizer.from_str(stored).get_vocab()
    if ours == theirs:
        return
    path = Path(out_dir) / "checkpoint_tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(stored)
    differ = len(set(ours.items()) ^ set(theirs.items()))
    raise UserError(
        f"the checkpoint was trained with another tokenizer than the data's ({differ} token ids differ): its "
        f"token cache was rebuilt or data.tokenizer changed. Continue with the checkpoint's tokenizer, written "
        f"to {path}: add data.tokenizer={path}."
    )
