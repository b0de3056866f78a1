"""A bag-of-words baseline for ``data=text_classification``: what word counts alone achieve.

``python -m vitrain.baseline`` reads the same splits as ``data=text_classification`` (the embedded
help-topic task by default, or ``--train`` / ``--val`` / ``--test`` tables) and prints, as JSON,
what ``vitrain.results.baseline.bag_of_words`` achieves on them: the validation and test accuracy
and the test cross-entropy (nats) of the best regularisation strength.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from vitrain.results.baseline import bag_of_words


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
