"""The loss a route's monitor watches, from feedback on one logged decision.

On a calibrated-set route it is the served loss of the decision's abstention mode
(:func:`misrouting_loss`); on a certified-policy route, the certified objective's loss
of the served answer (:func:`policy_feedback_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from racer.losses import served_losses
from racer.policies.losses import answer_losses
from racer.serve.decision_log import DecisionRecord
from racer.serve.errors import GatewayError, truncate
from racer.serve.route import Route
from racer.serve.schemas import FeedbackRequest
from racer.serve.served_policy import ServedPolicy


def feedback_loss(route: Route, decision: DecisionRecord, feedback: FeedbackRequest) -> float:
    """The loss the route's monitor watches (see the module docstring).

    Raises
    ------
    GatewayError
        400 for feedback that names unknown models or contradicts itself.
    """
    loss = misrouting_loss(decision, feedback, route.model_names)  # validates the feedback
    if route.policy is None:
        return loss
    return policy_feedback_loss(route.policy, decision, feedback, route.model_names)


def misrouting_loss(
    decision: DecisionRecord, feedback: FeedbackRequest, model_names: Sequence[str]
) -> float:
    """The served loss of the decision's mode (:func:`racer.losses.served_losses`).

    With ``models_correct``: the loss of the stored decision (its column 0 and set)
    against those labels, a model left out counted as unknown (worst case). With
    ``correct`` alone: 0 when the answer (or the abstention / refusal) was right and 1
    otherwise, an upper bound of the loss, exact for a strict abstention ("abstaining
    was right" is "no model was good").

    Raises
    ------
    GatewayError
        400 for model names the route does not have, or ``correct`` contradicting
        ``models_correct`` on the model whose answer was returned.
    """
    if feedback.models_correct is None:
        return 0.0 if feedback.correct else 1.0
    unknown = sorted(set(feedback.models_correct) - set(model_names))
    if unknown:
        shown = [truncate(name) for name in unknown[:5]]
        raise GatewayError(
            400,
            f"models_correct names {len(unknown)} unknown model(s) {shown}; the route has "
            f"{list(model_names)}.",
            "invalid_request_error",
            "unknown_model",
        )
    chosen_ok = feedback.models_correct.get(decision.chosen or "")
    if feedback.correct is not None and chosen_ok is not None and chosen_ok != feedback.correct:
        raise GatewayError(
            400,
            f"correct = {feedback.correct} contradicts models_correct[{decision.chosen!r}] = "
            f"{chosen_ok} (the model whose answer was returned).",
            "invalid_request_error",
            "contradictory_feedback",
        )
    quality = feedback.label_row(model_names)
    row = np.zeros((1, len(model_names) + 1), dtype=bool)
    invoked = set(decision.invoked)
    row[0, 1:] = [m in invoked for m in model_names]
    mode = decision.mode or "off"
    row[0, 0] = (
        bool(decision.abstain_flag)
        if decision.abstain_flag is not None
        else (decision.abstained and mode == "strict")
    )
    return float(served_losses(mode, row, quality, binary=True)[0])


def policy_feedback_loss(
    served: ServedPolicy,
    decision: DecisionRecord,
    feedback: FeedbackRequest,
    model_names: Sequence[str],
) -> float:
    """The certified objective's loss of one served answer, from feedback.

    ``models_correct`` gives the labels (a model left out is unknown); ``correct`` is the
    label of the model whose answer was returned. Unknowns count at their worst
    completion (:func:`racer.policies.losses.answer_losses`), so the monitor watches an
    upper bound of the loss that was certified.
    """
    names = list(model_names)
    quality = feedback.label_row(names)
    served_column = names.index(decision.chosen) if decision.chosen in names else -1
    if served_column >= 0 and feedback.correct is not None:
        quality[0, served_column] = float(feedback.correct)
    invoked = np.array([[name in set(decision.invoked) for name in names]])
    reference = served.certificate.get("reference")
    reference_column = names.index(reference) if reference in names else None
    objective = served.certificate["objective"]
    losses = answer_losses(objective, np.array([served_column]), invoked, quality, reference_column)
    return float(losses[0])
