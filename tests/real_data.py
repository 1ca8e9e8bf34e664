"""An independent base router for the tests that check the promise on real data.

A plain TF-IDF + logistic regression per model, written here rather than taken from
the project's routers, so that the guarantee tests do not depend on the code under test.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold


def logistic_scores(train, test) -> np.ndarray:
    """Per-model probability of a correct answer from TF-IDF features."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features_train = vectorizer.fit_transform(train.queries)
    features_test = vectorizer.transform(test.queries)
    columns = []
    for m in range(train.n_models):
        known = ~np.isnan(train.labels[:, m])
        y = train.labels[known, m]
        if y.min() == y.max():
            columns.append(np.full(test.n_queries, y[0]))
            continue
        model = LogisticRegression(C=1.0, max_iter=1000).fit(features_train[known], y)
        columns.append(model.predict_proba(features_test)[:, 1])
    return np.column_stack(columns)


class _Rows:
    """Queries and labels in the shape logistic_scores reads."""

    def __init__(self, queries, labels) -> None:
        self.queries, self.labels = queries, labels
        self.n_models, self.n_queries = labels.shape[1], len(queries)


def out_of_fold_scores(queries, labels, folds: int = 5) -> np.ndarray:
    """logistic_scores for every query from a router that never saw it (k-fold)."""
    queries = np.asarray(queries, dtype=object)
    scores = np.zeros_like(labels)
    for train, test in KFold(folds, shuffle=True, random_state=0).split(queries):
        scores[test] = logistic_scores(_Rows(queries[train], labels[train]),
                                       _Rows(queries[test], labels[test]))
    return scores
