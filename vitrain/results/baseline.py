"""A bag-of-words baseline for ``data=text_classification``: what word counts alone achieve.

:func:`bag_of_words` takes the splits ``data=text_classification`` reads, counts words
(scikit-learn ``CountVectorizer``: lower-cased unigrams and bigrams), fits a multinomial logistic
regression for each inverse regularisation strength ``C`` of a grid, keeps the one with the best
validation accuracy and returns its validation and test accuracy and test cross-entropy (nats), the
numbers the transformer runs are compared with (experiments/language_finetune.md). ``python -m
vitrain.baseline`` prints them.
"""

from __future__ import annotations

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
