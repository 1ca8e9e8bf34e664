"""A group classifier: the slice of a query (its task, domain) predicted from its text.

Per-group certificates need a group that is a fixed function of the query
(METHOD.md section 5d). When traffic carries no group, a classifier trained on the
*training* split only (never the calibration data) provides one: TF-IDF over word
n-grams and a multinomial logistic regression. Its predicted group then defines the
slices at calibration and at serving, so calibration and test points of a predicted
group stay exchangeable whatever its accuracy.

Its state is JSON and numeric arrays (vocabulary, idf, coefficients): no pickle.

Examples
--------
>>> from racer.routers.group_classifier import GroupClassifier
>>> texts = ["def add(a, b): return a + b", "Which gas do plants absorb?"] * 5
>>> classifier = GroupClassifier().fit(texts, ["code", "science"] * 5)
>>> classifier.predict(["def mul(a, b): return a * b"]).tolist()
['code']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from racer.exceptions import NotFittedError

__all__ = ["GroupClassifier"]

STATE_VERSION = 1


class GroupClassifier:
    """TF-IDF (word 1-2 grams, sublinear tf) and logistic regression over query texts.

    Parameters
    ----------
    max_features : int, default=20000
        Vocabulary size (the most frequent n-grams of the training texts).
    C : float, default=10.0
        Inverse regularisation strength of the logistic regression.

    Attributes
    ----------
    classes_ : tuple of str
        The groups seen in training, sorted.
    vocabulary_ : tuple of str
        The n-gram of each feature column.
    idf_ : numpy.ndarray, shape (F,)
        Inverse document frequencies of the training texts.
    coef_ : numpy.ndarray, shape (G, F) (or (1, F) with two groups)
    intercept_ : numpy.ndarray, shape (G,) (or (1,))
    """

    def __init__(self, max_features: int = 20000, C: float = 10.0) -> None:
        self.max_features = max_features
        self.C = C

    def fit(self, queries: Sequence[str], groups: Sequence[Any]) -> GroupClassifier:
        """Learn the groups of the training ``queries``.

        Raises
        ------
        ValueError
            When ``groups`` has another length than ``queries``, or fewer than two groups.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        labels = np.asarray([str(g) for g in groups])
        if labels.shape != (len(queries),):
            raise ValueError(
                f"groups must hold one label per query ({len(queries)}); got {labels.shape[0]}."
            )
        classes = np.unique(labels)
        if classes.size < 2:
            raise ValueError(
                f"A group classifier needs at least two groups in the training data; got "
                f"{classes.tolist()}. Calibrate without it (one group is the marginal "
                "certificate)."
            )
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, max_features=self.max_features
        )
        features = vectorizer.fit_transform(list(queries))
        model = LogisticRegression(C=self.C, max_iter=2000).fit(features, labels)
        terms = np.empty(len(vectorizer.vocabulary_), dtype=object)
        for term, column in vectorizer.vocabulary_.items():
            terms[column] = term
        self.vocabulary_ = tuple(str(t) for t in terms)
        self.idf_ = np.asarray(vectorizer.idf_, dtype=float)
        self.coef_ = np.asarray(model.coef_, dtype=float)
        self.intercept_ = np.asarray(model.intercept_, dtype=float)
        self.classes_ = tuple(str(c) for c in model.classes_)
        return self

    def _features(self, queries: Sequence[str]) -> Any:
        """TF-IDF rows of ``queries`` (the fitted vectorizer's weighting, recomputed)."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize

        counter = CountVectorizer(ngram_range=(1, 2), vocabulary=list(self.vocabulary_))
        counts = counter.transform(list(queries)).astype(float)
        counts.data = np.log(counts.data) + 1.0  # sublinear tf
        return normalize(counts.multiply(self.idf_[None, :]).tocsr())

    def decision_function(self, queries: Sequence[str]) -> np.ndarray:
        """The logistic regression's scores, shape (n, G) (or (n,) with two groups)."""
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                "This GroupClassifier is not fitted yet; call fit(queries, groups) first."
            )
        scores = np.asarray(self._features(queries) @ self.coef_.T) + self.intercept_
        return scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, queries: Sequence[str]) -> np.ndarray:
        """The predicted group of each query (str array, shape (n,))."""
        scores = self.decision_function(queries)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return np.asarray(self.classes_)[index]

    def get_state(self) -> dict[str, Any]:
        """The fitted classifier as JSON values and numeric arrays (no pickle)."""
        if not hasattr(self, "classes_"):
            raise NotFittedError("This GroupClassifier is not fitted yet; nothing to save.")
        return {
            "version": STATE_VERSION,
            "params": {"max_features": self.max_features, "C": self.C},
            "classes": list(self.classes_),
            "vocabulary": list(self.vocabulary_),
            "arrays": {"idf": self.idf_, "coef": self.coef_, "intercept": self.intercept_},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GroupClassifier:
        """Rebuild a fitted classifier from :meth:`get_state` output."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"Unsupported GroupClassifier state version {state.get('version')!r}; this "
                f"racer reads version {STATE_VERSION}."
            )
        classifier = cls(**state["params"])
        arrays = state["arrays"]
        classifier.classes_ = tuple(state["classes"])
        classifier.vocabulary_ = tuple(state["vocabulary"])
        classifier.idf_ = np.asarray(arrays["idf"], dtype=float)
        classifier.coef_ = np.asarray(arrays["coef"], dtype=float)
        classifier.intercept_ = np.asarray(arrays["intercept"], dtype=float)
        return classifier
