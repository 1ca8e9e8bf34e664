"""A certified answer-level policy (METHOD.md section 8) as a gateway route holds it.

A route whose artifact carries a certified policy (``racer calibrate --objective``)
answers with that policy instead of the calibrated set; how it answers is
:mod:`racer.serve.answering.certified_policy`. This module only reads the artifact's
policy and certificate into a :class:`ServedPolicy`, checked against the route's models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from racer.policies import ParallelSets, Policy, policy_from_state
from racer.similarity import agreement_function, is_free_text

CERTIFICATE_FIELDS = ("objective", "alpha", "delta", "n", "certified", "only_fallback")


@dataclass(frozen=True)
class ServedPolicy:
    """A certified policy as a route serves it.

    Attributes
    ----------
    policy : Policy
        The policy (columns index ``model_names``).
    certificate : dict
        Objective, alpha, delta, n, reference, certified, only_fallback, description.
    answer_kind : str or None
        How answers are extracted for the stop rule and the votes (None: free text).
    """

    policy: Policy
    certificate: dict[str, Any]
    answer_kind: str | None

    @property
    def alpha(self) -> float:
        """The certified risk level of the policy's objective."""
        return float(self.certificate["alpha"])

    @property
    def aggregator(self) -> str | None:
        """The aggregator of a parallel policy (None for the others)."""
        return self.policy.aggregator if isinstance(self.policy, ParallelSets) else None

    def judge(self, model_names: Sequence[str], configured: str | None) -> str | None:
        """The judge backend: the route's ``judge`` if it names one, else the policy's."""
        policy = self.policy
        if not isinstance(policy, ParallelSets) or policy.judge is None:
            return None
        return configured or model_names[policy.judge]


def served_policy(state: dict[str, Any], model_names: Sequence[str]) -> ServedPolicy:
    """The servable policy of an artifact's ``policy`` metadata.

    Raises
    ------
    ValueError
        When the state does not hold a policy over ``model_names``, or its free-text
        answer kind cannot be computed here (``"similarity-dense"`` without the extra).
    """
    certificate = state.get("certificate")
    if not isinstance(certificate, dict) or not isinstance(certificate.get("policy"), dict):
        raise ValueError("the artifact's policy has no certificate with a policy.")
    policy = policy_from_state(certificate["policy"])
    m = len(model_names)
    columns = policy.models_used()
    if any(not 0 <= c < m for c in columns):
        raise ValueError(f"the policy calls columns {columns}; the artifact has {m} models.")
    kind = state.get("answer_kind")
    if is_free_text(kind):
        try:
            agreement_function(kind)
        except ImportError as error:
            raise ValueError(str(error)) from None
    summary = {key: certificate.get(key) for key in CERTIFICATE_FIELDS}
    summary["reference"] = state.get("reference")
    summary["description"] = state.get("description") or policy.describe(tuple(model_names))
    return ServedPolicy(policy, summary, state.get("answer_kind"))
