"""Test helpers in one module: tiny configs, the CLI runner, composed configs, generated images, text
corpora and COCO-format detection sets, and the test-only classes that ``tests/configs`` references
(``tests.helpers.*``).

Fixtures live in ``tests/conftest.py``; everything a test imports lives here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import runpy
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

from vitrain.data.base import DataModule
from vitrain.run import main  # also registers the ${task_monitor:} resolver, as train.py does

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A ViT small enough for two CPU cores; timm accepts the size overrides.
TINY_VIT = [
    "+model.net.embed_dim=32",
    "+model.net.depth=2",
    "+model.net.num_heads=2",
]
QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


def run_cli(run_dir: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python train.py`` in a subprocess with its run directory at ``run_dir``.

    Uses ``logger=csv`` unless an override picks another logger (W&B runs cost seconds each).
    """
    if not any(o.startswith("logger=") for o in overrides):
        overrides = ("logger=csv", *overrides)
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        f"hydra.run.dir={run_dir}",
        f"paths.log_dir={run_dir.parent / 'logs'}",
        f"paths.data_dir={run_dir.parent / 'data'}",
        *QUIET,
        *overrides,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def run_train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """Run what ``python train.py`` runs, in this process: compose ``conf/train.yaml`` with the
    overrides ``run_cli`` adds, then ``vitrain.run.main``. Saves the ~10 s of imports a subprocess
    costs; returns a ``CompletedProcess`` whose ``stderr`` holds the INFO log (Hydra's console
    log in a real run) and the warnings, and ``stdout`` what was printed. A ``sys.exit`` becomes
    the return code; any other exception propagates.

    Use ``run_cli`` for what only a real process shows: signals, DDP ranks, multiruns, tracebacks.
    """
    if not any(o.startswith("logger=") for o in overrides):
        overrides = ("logger=csv", *overrides)
    run_dir = Path(run_dir)
    overrides = (
        f"paths.log_dir={run_dir.parent / 'logs'}",
        f"paths.data_dir={run_dir.parent / 'data'}",
        *QUIET,
        *overrides,
    )
    cfg = compose_train(*overrides, output_dir=str(run_dir))
    with open_dict(cfg):
        del cfg.hydra  # a task function never sees it; ${hydra:...} reads HydraConfig
    run_dir.mkdir(parents=True, exist_ok=True)
    stream, out = io.StringIO(), io.StringIO()
    code = 0
    with process_state_restored():
        # Hydra's job logging: the console (here: the returned stderr) and <run_dir>/train.log
        root = logging.getLogger()
        for handler in (logging.StreamHandler(stream), logging.FileHandler(run_dir / "train.log")):
            handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
            root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    main(cfg)
                finally:  # a process prints its warnings to stderr: so does this run
                    stream.writelines(f"{w.category.__name__}: {w.message}\n" for w in caught)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return subprocess.CompletedProcess(["train.py", *overrides], code, out.getvalue(), stream.getvalue())


def launch_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``python train.py *args`` through its real entry point (``@hydra.main`` inside
    ``vitrain.run.cli.launch``, executed as ``__main__``) in this process, for command-line errors
    and multiruns: stdout and stderr are captured, a ``sys.exit`` becomes the return code."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    with process_state_restored():
        sys.argv = [str(ROOT / "train.py"), *args]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return subprocess.CompletedProcess(["train.py", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def process_state_restored():
    """Undo, on exit, what a run in this process leaves behind that a process's exit would:
    root log handlers (closed) and level, torch's thread count, the environment (Lightning sets
    ``PL_GLOBAL_SEED`` and friends), ``sys.argv`` and Hydra's global state."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    threads, environ, argv = torch.get_num_threads(), dict(os.environ), list(sys.argv)
    try:
        yield
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
            handler.close()
        root.handlers[:], root.level = handlers, level
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(environ)
        sys.argv = argv
        GlobalHydra.instance().clear()


def compose_train(*overrides: str, output_dir: str = "/tmp/vitrain-test-run"):
    """Compose ``conf/train.yaml`` as the CLI would, with Hydra's runtime values set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def write_image(path: Path, mode: str, size: int = 20, seed: int = 0) -> None:
    """Write a random image of PIL ``mode`` ("L", "RGB", "RGBA"); the suffix picks the format."""
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Non-zero exit, each needle in the message, and no traceback."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in output, output


class FakeTextDataModule(DataModule):
    """A data module of another kind, to test that model/data pairing is checked."""

    kind = "text"


# A small generated corpus for the language tests: predictable sentences, many documents.
SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "the teacher", "a robot"]
VERBS = ["sees", "likes", "follows", "finds", "helps", "calls"]
OBJECTS = ["the ball", "a tree", "the river", "an apple", "the house", "a book"]


def sentence(rng: np.random.Generator) -> str:
    s, v, o = (rng.integers(6) for _ in range(3))
    return f"{SUBJECTS[s].capitalize()} {VERBS[v]} {OBJECTS[o]}."


def documents(count: int = 40, sentences: int = 12, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(sentence(rng) for _ in range(sentences)) for _ in range(count)]


def write_txt_corpus(folder: Path, count: int = 40, sentences: int = 12, seed: int = 0) -> Path:
    """``folder/doc<i>.txt``, one document per file."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(documents(count, sentences, seed)):
        (folder / f"doc{i:03d}.txt").write_text(doc + "\n")
    return folder


def write_jsonl_corpus(path: Path, count: int = 40, sentences: int = 12, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in documents(count, sentences, seed)))
    return path


# ---------------------------------------------------------------- tagging and instruction data, as distributed
PEOPLE = [["Peter", "Blackburn"], ["Ada", "Lovelace"], ["Alan", "Turing"], ["Grace", "Hopper"]]
PLACES = ["Spain", "Brussels", "Baghdad", "Italy", "Germany", "Lyon"]


def conll_sentence(rng: np.random.Generator) -> list[tuple[str, str, str, str]]:
    """Rows ``(token, POS, chunk, NER)`` of a sentence, IOB1 tags as CoNLL-2003 writes them: a
    two-word person (I-PER I-PER), then one place or two adjacent places (I-LOC B-LOC)."""
    person = PEOPLE[int(rng.integers(len(PEOPLE)))]
    verb = ["visits", "leaves", "calls"][int(rng.integers(3))]
    places = [PLACES[int(i)] for i in rng.choice(len(PLACES), size=int(rng.integers(1, 3)), replace=False)]
    rows = [(w, "NNP", "I-NP", "I-PER") for w in person] + [(verb, "VBZ", "I-VP", "O")]
    rows += [(p, "NNP", "I-NP", "I-LOC" if i == 0 else "B-LOC") for i, p in enumerate(places)]
    return [*rows, (".", ".", "O", "O")]


def write_conll_distribution(root: Path, sizes: tuple[int, int, int] = (48, 12, 12), seed: int = 0) -> Path:
    """``root/eng.train``, ``eng.testa``, ``eng.testb`` as CoNLL-2003 ships them: 4 space-separated
    columns, ``-DOCSTART- -X- O O`` and a blank line before each document (4 sentences each),
    a blank line after each sentence, IOB1 tags."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, count in zip(("eng.train", "eng.testa", "eng.testb"), sizes, strict=True):
        lines = []
        for i in range(count):
            if i % 4 == 0:
                lines += ["-DOCSTART- -X- O O", ""]
            lines += [" ".join(row) for row in conll_sentence(rng)] + [""]
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def instruction_records(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Alpaca records whose response follows from the instruction (and the input)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        a, b = (int(x) for x in rng.integers(0, 20, size=2))
        if i % 2:
            records.append({"instruction": "Add the two numbers.", "input": f"{a} {b}", "output": f"{a + b}"})
        else:
            word = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
            records.append({"instruction": f"Repeat: {word}", "input": "", "output": word})
    return records


def write_instruction_files(folder: Path, count: int = 24) -> dict[str, Path]:
    """``folder/alpaca_data.json`` (a JSON list with indent 4, one key per line, as
    tatsu-lab/stanford_alpaca ships it) and ``folder/val.jsonl`` (prompt / response records)."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "alpaca_data.json"
    json_path.write_text(json.dumps(instruction_records(count), indent=4))
    jsonl = folder / "val.jsonl"
    records = instruction_records(8, seed=1)
    jsonl.write_text("".join(json.dumps({"prompt": r["instruction"], "input": r["input"], "response": r["output"]})
                             + "\n" for r in records))  # fmt: skip
    return {"json": json_path, "jsonl": jsonl}


class SignalAtStep(L.Callback):
    """Sends ``signal`` to this process after training step ``step`` of rank ``rank`` (-1: every
    rank), as SLURM or a user would: a deterministic point to interrupt a run from the CLI
    (``+callbacks.stop._target_=tests.helpers.SignalAtStep +callbacks.stop.step=6``)."""

    def __init__(self, step: int, rank: int = -1, signal: str = "SIGTERM") -> None:
        self.step, self.rank, self.signal = step, rank, signal

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import os
        import signal

        if trainer.global_step == self.step and self.rank in (-1, trainer.global_rank):
            os.kill(os.getpid(), getattr(signal, self.signal))


def write_small_coco(root: Path) -> None:
    """Both splits: category ids 2 and 5; image 2 has no boxes, image 1 a box past its edge."""
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).mkdir()
        images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
                  {"id": 2, "file_name": "b.png", "width": 20, "height": 20}]  # fmt: skip
        for info in images:
            Image.new("RGB", (info["width"], info["height"]), (90, 30, 200)).save(
                root / split / info["file_name"]
            )
        annotations = [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [4, 3, 10, 12], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 10, 20, 10], "iscrowd": 1},
        ]
        content = {"images": images, "annotations": annotations,
                   "categories": [{"id": 2, "name": "car"}, {"id": 5, "name": "dog"}]}  # fmt: skip
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))


# ---------------------------------------------------------------- GLUE, laid out as the official distribution
GLUE_HEADERS = {  # task folder -> (train/dev header or None, test header); columns as GLUE ships them
    "CoLA": (None, ["index", "sentence"]),
    "SST-2": (["sentence", "label"], ["index", "sentence"]),
    "MRPC": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"]),
    "QQP": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["id", "question1", "question2"]),
    "STS-B": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"],
              ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]),
    "MNLI": (["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"],
             ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]),
    "QNLI": (["index", "question", "sentence", "label"], ["index", "question", "sentence"]),
    "RTE": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"]),
    "WNLI": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"]),
}  # fmt: skip
GLUE_LABELS = {"CoLA": ["0", "1"], "SST-2": ["0", "1"], "MRPC": ["0", "1"], "QQP": ["0", "1"], "STS-B": None,
               "MNLI": ["contradiction", "entailment", "neutral"], "QNLI": ["entailment", "not_entailment"],
               "RTE": ["entailment", "not_entailment"], "WNLI": ["0", "1"]}  # fmt: skip


def glue_row(folder: str, i: int, text: str, pair: str, label: str | None) -> list[str]:
    """One row of ``folder``'s train/dev (``label`` given) or test file, in GLUE's column order."""
    test = label is None
    if folder == "CoLA":
        return [str(i), text] if test else ["gj04", label, "" if label == "1" else "*", text]
    if folder == "SST-2":
        return [str(i), text] if test else [text, label]
    if folder == "MRPC":
        return [label if not test else str(i), str(1000 + i), str(2000 + i), text, pair]
    if folder == "QQP":
        return [str(i), text, pair] if test else [str(i), str(2 * i), str(2 * i + 1), text, pair, label]
    if folder == "STS-B":
        return [
            str(i),
            "main-news",
            "2012",
            "2012test",
            str(i),
            "none",
            "none",
            text,
            pair,
            *([] if test else [label]),
        ]
    if folder == "MNLI":
        row = [str(i), str(100 + i), f"{100 + i}e", "fiction", f"( {text} )", f"( {pair} )", f"(ROOT {text})",
               f"(ROOT {pair})", text, pair]  # fmt: skip
        return row if test else [*row, label, label]
    return [str(i), text, pair, *([] if test else [label])]


def write_glue_task(
    root: Path, folder: str, n_train: int = 24, n_dev: int = 8, n_test: int = 6, seed: int = 0
) -> Path:
    """``root/<folder>/`` with train.tsv, dev.tsv and test.tsv (MNLI: dev_matched / dev_mismatched /
    test_matched / test_mismatched), headers and columns as the GLUE distribution has them. The label
    is readable from the text (its first word names it), so a tiny network can learn it."""
    rng = np.random.default_rng(seed)
    labels = GLUE_LABELS[folder]
    header, test_header = GLUE_HEADERS[folder]
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)

    def examples(n: int) -> list[tuple[str, str, str]]:
        rows = []
        for _ in range(n):
            k = int(rng.integers(len(labels))) if labels else int(rng.integers(6))
            label = labels[k] if labels else f"{k * 0.9:.3f}"
            text = f"w{k} " + sentence(rng)  # a "its quotes" sentence: GLUE files are not quoted
            rows.append((text.replace(".", ' "q".'), sentence(rng), label))
        return rows

    def write(name: str, rows: list[list[str]], head: list[str] | None) -> None:
        lines = (["\t".join(head)] if head else []) + ["\t".join(r) for r in rows]
        (out / name).write_text("\n".join(lines) + "\n")

    devs = ["dev_matched.tsv", "dev_mismatched.tsv"] if folder == "MNLI" else ["dev.tsv"]
    tests = ["test_matched.tsv", "test_mismatched.tsv"] if folder == "MNLI" else ["test.tsv"]
    dev_header = header
    if folder == "MNLI":  # dev files carry five annotator labels
        dev_header = [*header[:-2], "label1", "label2", "label3", "label4", "label5", "gold_label"]
    write(
        "train.tsv",
        [glue_row(folder, i, t, p, lab) for i, (t, p, lab) in enumerate(examples(n_train))],
        header,
    )
    for name in devs:
        rows = [glue_row(folder, i, t, p, lab) for i, (t, p, lab) in enumerate(examples(n_dev))]
        if folder == "MNLI":
            rows = [[*r[:-2], r[-1], r[-1], r[-1], r[-1], r[-1], r[-1]] for r in rows]
        write(name, rows, dev_header)
    for name in tests:
        write(
            name,
            [glue_row(folder, i, t, p, None) for i, (t, p, _) in enumerate(examples(n_test))],
            test_header,
        )
    return out


def write_digits_coco(
    root: Path,
    train_size: int = 1600,
    val_size: int = 200,
    canvas: int = 96,
    digit_sizes: tuple[int, int] = (16, 32),
    max_objects: int = 3,
    empty_fraction: float = 0.05,
    digits: tuple[int, ...] = tuple(range(10)),
    seed: int = 0,
) -> Path:
    """A COCO-format detection set of handwritten digits on noise, for learning checks.

    sklearn's 8x8 digits (bundled with sklearn: no download) of the classes ``digits`` are upscaled
    to a random side in ``digit_sizes`` and pasted, in a random bright colour, at non-overlapping
    places on a ``canvas`` x ``canvas`` RGB canvas of uniform noise (each channel below 160, every
    digit colour above 170): 1 to ``max_objects`` per image, none on about ``empty_fraction`` of
    the images. Category ids are ``10 * (digit + 1)`` (10, 20, ..., 100: not contiguous, as COCO's).
    Writes ``root/{train,val}/*.png`` and ``root/annotations/instances_{train,val}.json``, read by
    ``data=coco data.root=<root> data.train_ann=annotations/instances_train.json
    data.val_ann=annotations/instances_val.json data.train_images=train data.val_images=val``.
    The same arguments write the same files. Returns ``root``.
    """
    from sklearn.datasets import load_digits

    bundled = load_digits()
    keep = np.isin(bundled.target, list(digits))
    strokes, classes = bundled.images[keep] / 16.0, bundled.target[keep]  # (N, 8, 8) in [0, 1], (N,)
    rng = np.random.default_rng(seed)
    categories = [{"id": 10 * (d + 1), "name": str(d)} for d in sorted(digits)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train_size), ("val", val_size)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            pixels = rng.uniform(0, 160, size=(canvas, canvas, 3))
            objects = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
            for x, y, side in free_squares(rng, canvas, digit_sizes, objects):
                k = int(rng.integers(len(classes)))
                paste_digit(pixels, strokes[k], x, y, side, rng.uniform(170, 255, size=3))
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id, "category_id": 10 * (int(classes[k]) + 1),
                     "bbox": [x, y, side, side], "area": side * side, "iscrowd": 0}
                )  # fmt: skip
            name = f"{image_id:05d}.png"
            Image.fromarray(pixels.round().astype(np.uint8)).save(root / split / name)
            images.append({"id": image_id, "file_name": name, "width": canvas, "height": canvas})
        content = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    return root


def free_squares(
    rng: np.random.Generator, canvas: int, sides: tuple[int, int], count: int
) -> Iterator[tuple[int, int, int]]:
    """Up to ``count`` non-overlapping squares ``(x, y, side)`` inside the canvas, sides in ``sides``
    (inclusive), each yielded as it is placed (rejection sampling, 30 tries per square)."""
    placed: list[tuple[int, int, int]] = []
    for _ in range(30 * count):
        if len(placed) == count:
            return
        side = int(rng.integers(sides[0], sides[1] + 1))
        x, y = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
        if not any(x < px + ps and px < x + side and y < py + ps and py < y + side for px, py, ps in placed):
            placed.append((x, y, side))
            yield x, y, side


def paste_digit(
    pixels: np.ndarray, stroke: np.ndarray, x: int, y: int, side: int, colour: np.ndarray
) -> None:
    """Blend ``colour`` (3,) into ``pixels`` (H, W, 3) in place, in the square at ``(x, y)`` of side
    ``side``, with the 8x8 ``stroke`` in [0, 1] upscaled (bilinear) as the opacity."""
    alpha = Image.fromarray(stroke.astype(np.float32)).resize((side, side), Image.BILINEAR)
    alpha = np.clip(np.asarray(alpha), 0, 1)[..., None]
    region = pixels[y : y + side, x : x + side]
    pixels[y : y + side, x : x + side] = region * (1 - alpha) + colour * alpha
