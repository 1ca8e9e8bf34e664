"""The report's figures (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from racer.evaluation.report import CALIBRATED_RULES, monte_carlo_limit  # noqa: E402
from racer.evaluation.run import Evaluation  # noqa: E402

MARKERS = "osD^v<>ph*"
COLORS = plt.get_cmap("tab10").colors


def _series(evaluation: Evaluation, names: list[str], key: str) -> dict[str, np.ndarray]:
    alphas = evaluation.settings.alphas
    return {
        name: np.array([evaluation.record(name, a)[key] for a in alphas], dtype=float)
        for name in names
    }


def _calibrated_names(evaluation: Evaluation, with_oracle: bool = True) -> list[str]:
    """RACER's bounds on the threshold family, its other families with the first bound,
    and the calibrated baselines."""
    bounds = evaluation.settings.bounds
    names = []
    for record in evaluation.records:
        if record["group"] == "racer":
            if record["family"] != "threshold" and record["bound"] != bounds[0]:
                continue
        elif record["rule"] not in CALIBRATED_RULES and not (
            with_oracle and record["group"] == "oracle"
        ):
            continue
        names.append(record["method"])
    return list(dict.fromkeys(names))


def _style(evaluation: Evaluation, name: str) -> tuple[tuple[float, ...], str]:
    """The same colour and marker for a method in every figure."""
    index = _calibrated_names(evaluation).index(name)
    return COLORS[index % len(COLORS)], MARKERS[index % len(MARKERS)]


def _plot_lines(axis: plt.Axes, evaluation: Evaluation, series: dict[str, np.ndarray]) -> None:
    for name, values in series.items():
        color, marker = _style(evaluation, name)
        style = "-" if name.startswith("RACER") else "--"
        axis.plot(evaluation.settings.alphas, values, style, marker=marker, color=color, label=name)


def _legend_below(figure: plt.Figure, axis: plt.Axes) -> None:
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)


def risk_figure(evaluation: Evaluation, path: Path) -> Path:
    """Test risk against alpha (with y = x) and the violation rate against alpha."""
    alphas = evaluation.settings.alphas
    names = _calibrated_names(evaluation, with_oracle=False)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 6))
    _plot_lines(left, evaluation, _series(evaluation, names, "risk"))
    span = [0, max(alphas) * 1.1]
    left.plot(span, span, color="black", lw=1, label="risk = alpha")
    left.set(
        xlabel="target risk alpha",
        ylabel="mean misrouting risk on test splits",
        title="Test risk against the target (means over random splits)",
    )
    _plot_lines(right, evaluation, _series(evaluation, names, "violation_rate"))
    delta = evaluation.settings.delta
    limit = monte_carlo_limit(delta, evaluation.plan.n_trials)
    right.axhline(delta, color="dimgrey", lw=1.5, ls="-.", label=f"delta = {delta:g}")
    right.axhline(limit, color="grey", lw=1, ls=":", label=f"delta + 3 SE = {limit:.3f}")
    right.set(
        xlabel="target risk alpha",
        ylabel="share of validity trials with true risk > alpha",
        title="Violation rate (RACER must stay below delta)",
        ylim=(-0.02, 1.02),
    )
    for axis in (left, right):
        axis.grid(alpha=0.3)
    handles, labels = right.get_legend_handles_labels()
    handles.insert(len(names), left.get_lines()[-1])
    labels.insert(len(names), "risk = alpha")
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.suptitle(f"{evaluation.task}: does the guarantee hold?")
    return _save(figure, path, bottom=0.14)


def size_figure(evaluation: Evaluation, path: Path) -> Path:
    """Mean set size and abstention rate against alpha."""
    names = _calibrated_names(evaluation)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 6))
    _plot_lines(left, evaluation, _series(evaluation, names, "mean_set_size"))
    left.set(
        xlabel="target risk alpha",
        ylabel="mean set size (models invoked per query)",
        title="Set size",
    )
    _plot_lines(right, evaluation, _series(evaluation, names, "abstention_rate"))
    right.set(
        xlabel="target risk alpha",
        ylabel="abstention rate (share of queries)",
        title="Abstention",
    )
    for axis in (left, right):
        axis.grid(alpha=0.3)
    _legend_below(figure, left)
    figure.suptitle(f"{evaluation.task}: how much each guarantee costs in set size")
    return _save(figure, path, bottom=0.12)


def pareto_front(costs: np.ndarray, accuracies: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both cost (lower) and accuracy."""
    order = np.lexsort((-accuracies, costs))
    front, best = [], -np.inf
    for index in order:
        if accuracies[index] > best:
            front.append(index)
            best = accuracies[index]
    return np.array(front, dtype=int)


def _points(evaluation: Evaluation, names: list[str], alpha: float) -> tuple[np.ndarray, ...]:
    records = [evaluation.record(name, alpha) for name in names]
    return (
        np.array([r["mean_cost"] for r in records], dtype=float),
        np.array([r["accuracy"] for r in records], dtype=float),
    )


def cost_figure(evaluation: Evaluation, path: Path) -> Path:
    """Accuracy against mean cost: RACER's families across alphas, the baselines, the
    single models, and the frontier of all of them."""
    settings = evaluation.settings
    alphas = settings.alphas
    unit = evaluation.cost_unit
    figure, axis = plt.subplots(figsize=(10, 6.5))
    all_costs, all_accuracy = [], []
    racer = [
        r["method"]
        for r in evaluation.records
        if r["group"] == "racer" and r["bound"] == settings.bounds[0] and r["alpha"] == alphas[0]
    ]
    for name in racer:
        color, marker = _style(evaluation, name)
        costs = np.array([evaluation.record(name, a)["mean_cost"] for a in alphas], dtype=float)
        accuracy = np.array([evaluation.record(name, a)["accuracy"] for a in alphas], dtype=float)
        axis.plot(costs, accuracy, "-", marker=marker, color=color, label=name)
        for alpha, x, y in zip(alphas, costs, accuracy, strict=True):
            axis.annotate(
                f"a={alpha:g}",
                (x, y),
                fontsize=7,
                xytext=(4, -9),
                textcoords="offset points",
                color=color,
            )
        all_costs += list(costs)
        all_accuracy += list(accuracy)
    fixed = [
        r["method"]
        for r in evaluation.records
        if r["rule"] == "fixed" and r["alpha"] == alphas[0] and r["method"] != "best single model"
    ]
    costs, accuracy = _points(evaluation, fixed, alphas[0])
    for name, x, y in zip(fixed, costs, accuracy, strict=True):
        single = name.startswith("model: ")
        axis.scatter(
            x,
            y,
            color="tab:grey" if single else "black",
            marker="o" if single else "s",
            s=28,
            zorder=3,
        )
        # Single models to the right of their point, the router's fixed sets to the left.
        axis.annotate(
            name.removeprefix("model: ").split("/")[-1],
            (x, y),
            fontsize=7,
            xytext=(4, 3) if single else (-4, -10),
            ha="left" if single else "right",
            textcoords="offset points",
        )
    axis.scatter([], [], color="black", marker="s", label="fixed sets of the base router")
    axis.scatter([], [], color="tab:grey", label="single models")
    all_costs = np.array(all_costs + list(costs))
    all_accuracy = np.array(all_accuracy + list(accuracy))
    keep = np.isfinite(all_costs) & np.isfinite(all_accuracy)
    front = pareto_front(all_costs[keep], all_accuracy[keep])
    axis.plot(
        all_costs[keep][front],
        all_accuracy[keep][front],
        color="tab:green",
        lw=6,
        alpha=0.25,
        label="frontier (no point is cheaper and more accurate)",
    )
    if unit == "USD":
        axis.set_xscale("log")
    axis.set(
        xlabel=f"mean cost per query ({unit}" + (", log scale)" if unit == "USD" else ")"),
        ylabel=f"accuracy ({evaluation.aggregator} aggregator; abstention = not correct)",
        title=f"{evaluation.task}: accuracy against cost (RACER at alpha = "
        + ", ".join(f"{a:g}" for a in alphas)
        + ")",
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path, bottom: float | None = None) -> Path:
    figure.tight_layout(rect=(0, bottom or 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_figures(evaluation: Evaluation, out_dir: Path) -> list[Path]:
    """Draw every figure into ``out_dir``; returns their paths."""
    return [
        risk_figure(evaluation, out_dir / "risk_vs_alpha.png"),
        size_figure(evaluation, out_dir / "set_size_vs_alpha.png"),
        cost_figure(evaluation, out_dir / "accuracy_vs_cost.png"),
    ]
