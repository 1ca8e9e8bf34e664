"""The abstention head: a classifier of "no candidate model answers this query"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from racer.routers.base import check_router_labels
from racer.routers.embeddings import Embedder, QueryTexts, check_queries
from racer.routers.linear import LogisticRouter

__all__ = ["AbstentionHead", "no_model_correct"]


def no_model_correct(labels: np.ndarray) -> np.ndarray:
    """1 where every model is wrong, 0 where one is right, NaN where that is unknown."""
    any_correct = np.nanmax(np.where(np.isnan(labels), -1.0, labels), axis=1) == 1.0
    all_known = ~np.isnan(labels).any(axis=1)
    return np.where(any_correct, 0.0, np.where(all_known, 1.0, np.nan))


class AbstentionHead(BaseEstimator):
    """Estimates P(no candidate model is correct | query), the learned abstain score.

    A logistic regression on the query embedding whose target is 1 when every model's
    label is 0. Its :meth:`abstain_score` plugs into ``RACER(abstain_score="given")``
    as ``abstain_scores=``. Fit it on the training split, never on calibration data.

    Parameters
    ----------
    C : float or None, default=None
        Inverse L2 strength; None picks one of ``Cs`` by cross-validation.
    Cs : sequence of float, default=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
        Candidates for ``C``.
    embedder : str or Embedder, default="tfidf"
        The embedding step; a fitted embedder is used as is.
    cv : int, default=5
        Folds for choosing ``C``.
    random_state : int or None, default=0
        Seed of the folds.

    Attributes
    ----------
    classifier_ : LogisticRouter
        The fitted classifier (one output: "no model is correct").
    base_rate_ : float
        Share of training queries that no model answers.

    Examples
    --------
    >>> head = AbstentionHead().fit(train_queries, train_labels)  # doctest: +SKIP
    >>> racer = RACER(abstain_score="given").fit(  # doctest: +SKIP
    ...     cal_scores, cal_labels, abstain_scores=head.abstain_score(cal_queries))
    """

    name = "abstention"

    def __init__(
        self,
        C: float | None = None,
        *,
        Cs: Sequence[float] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
        embedder: str | Embedder = "tfidf",
        cv: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.Cs = Cs
        self.embedder = embedder
        self.cv = cv
        self.random_state = random_state

    def fit(self, queries: QueryTexts, labels: Any) -> AbstentionHead:
        """Learn "no model is correct" from training queries and their (n, M) labels."""
        texts = check_queries(queries)
        target = no_model_correct(check_router_labels(labels, len(texts)))
        self.classifier_ = LogisticRouter(
            self.C,
            Cs=self.Cs,
            embedder=self.embedder,
            cv=self.cv,
            random_state=self.random_state,
        ).fit(texts, target[:, None], model_names=["no_model_correct"])
        self.base_rate_ = float(np.nanmean(target))
        return self

    def abstain_score(self, queries: QueryTexts) -> np.ndarray:
        """P(no model answers the query correctly), shape (n,), in [0, 1]."""
        if not hasattr(self, "classifier_"):
            raise NotFittedError(
                "This AbstentionHead is not fitted yet. Call fit(queries, labels) first."
            )
        return self.classifier_.predict_proba(queries)[:, 0]

    def get_state(self) -> dict[str, Any]:
        """The fitted head as JSON values and numpy arrays."""
        return {
            "name": self.name,
            "base_rate": self.base_rate_,
            "classifier": self.classifier_.get_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AbstentionHead:
        """Rebuild a fitted head from :meth:`get_state` output."""
        classifier = LogisticRouter.from_state(state["classifier"])
        head = cls(
            classifier.C,
            Cs=classifier.Cs,
            embedder=classifier.embedder,
            cv=classifier.cv,
            random_state=classifier.random_state,
        )
        head.classifier_ = classifier
        head.base_rate_ = float(state["base_rate"])
        return head
