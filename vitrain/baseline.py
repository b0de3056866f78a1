"""A bag-of-words baseline for ``data=text_classification``: what word counts alone achieve.

``python -m vitrain.baseline`` reads the same splits as ``data=text_classification`` (the embedded
help-topic task by default, or ``--train`` / ``--val`` / ``--test`` tables), counts words
(scikit-learn ``CountVectorizer``: lower-cased unigrams and bigrams), fits a multinomial logistic
regression for each inverse regularisation strength ``C`` of a grid, keeps the one with the best
validation accuracy and prints its validation and test accuracy and test cross-entropy (nats), the
numbers the transformer runs are compared with (experiments/language_finetune.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def bag_of_words(splits: dict[str, list], c_grid=C_GRID) -> dict:
    """Fit on ``splits["train"]``, select ``C`` on ``val``, score ``test`` (lists of examples with
    ``text``, ``pair``, ``label``); returns the metrics."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    def texts(split: str) -> list[str]:
        return [e.text + (" " + e.pair if e.pair else "") for e in splits[split]]

    labels = sorted({str(e.label) for e in splits["train"]})
    index = {name: i for i, name in enumerate(labels)}
    y = {s: np.asarray([index[str(e.label)] for e in splits[s]]) for s in splits if splits[s]}
    vectorizer = CountVectorizer(ngram_range=(1, 2), lowercase=True)
    x = {"train": vectorizer.fit_transform(texts("train"))}
    x.update({s: vectorizer.transform(texts(s)) for s in y if s != "train"})
    best = None
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=5000).fit(x["train"], y["train"])
        accuracy = float((model.predict(x["val"]) == y["val"]).mean())
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    val_acc, c, model = best
    out = {"C": c, "val/acc": val_acc, "features": int(x["train"].shape[1]),
           "sizes": {s: len(v) for s, v in y.items()}}  # fmt: skip
    if "test" in y:
        out["test/acc"] = float((model.predict(x["test"]) == y["test"]).mean())
        out["test/loss"] = float(
            log_loss(y["test"], model.predict_proba(x["test"]), labels=range(len(labels)))
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line; a mistake in the options or the files is one message (exit status 1)."""
    from vitrain.data.text_classification import TextClassificationDataModule
    from vitrain.errors import UserError

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--train", help="a table (CSV/TSV/JSONL/Parquet); default: the embedded help-topic task"
    )
    parser.add_argument("--val")
    parser.add_argument("--test")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--text-pair-column")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=8, help="the embedded task's number of topics")
    args = parser.parse_args(argv)
    try:
        data = TextClassificationDataModule(
            "masked", train=args.train, val=args.val, test=args.test, text_column=args.text_column,
            text_pair_column=args.text_pair_column, label_column=args.label_column,
            val_fraction=args.val_fraction, test_fraction=args.test_fraction, split_seed=args.split_seed,
            classes=args.classes,
        )  # fmt: skip
        result = bag_of_words(data.read_examples())
    except UserError as err:  # the data's messages name data.<key>: here the option --<key>
        message = re.sub(r"\bdata\.([a-z_]+)", lambda m: "--" + m.group(1).replace("_", "-"), str(err))
        print(f"error: {message}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
