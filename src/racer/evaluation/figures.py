"""The report's figures (matplotlib, Agg backend, PNG).

matplotlib is the optional extra ``plots`` (``pip install "racer-routing[plots]"``); it is
imported only when a figure is drawn. Without it, :func:`write_figures` raises
:class:`PlotsUnavailableError`, which callers turn into a report without figures and a
note saying how to install the extra.

Readability rules the figures follow (checked by eye on the demo and on real tasks):
legends sit below the axes, never over data; text labels of points are placed where they
overlap no other label and no marker (greedy search over candidate offsets); lines of
methods with equal values are spread sideways a little, with distinct markers and dash
patterns, so none hides another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from racer.evaluation.report import CALIBRATED_RULES, monte_carlo_limit
from racer.evaluation.run import Evaluation

MARKERS = "osD^v<>ph*Xd"
DASHES = ("-", "--", "-.", ":")
PLOTS_HINT = (
    'Figures need matplotlib, the optional extra "plots": '
    'python3 -m pip install "racer-routing[plots]" (from a checkout: pip install ".[plots]").'
)


class PlotsUnavailableError(ImportError):
    """matplotlib is not installed; the message says how to install it."""


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or :class:`PlotsUnavailableError`."""
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailableError(PLOTS_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plots_available() -> bool:
    """Whether the figures can be drawn (matplotlib importable)."""
    try:
        _pyplot()
    except PlotsUnavailableError:
        return False
    return True


def _colors() -> tuple:
    return _pyplot().get_cmap("tab20").colors[::2] + _pyplot().get_cmap("tab20").colors[1::2]


def _series(evaluation: Evaluation, names: list[str], key: str) -> dict[str, np.ndarray]:
    alphas = evaluation.settings.alphas
    return {
        name: np.array([evaluation.record(name, a)[key] for a in alphas], dtype=float)
        for name in names
    }


def _calibrated_names(evaluation: Evaluation, with_oracle: bool = True) -> list[str]:
    """RACER's bounds on its first family, its other families with the first bound,
    and the calibrated baselines."""
    settings = evaluation.settings
    names = []
    for record in evaluation.records:
        if record["group"] == "racer":
            if record["family"] != settings.families[0] and record["bound"] != settings.bounds[0]:
                continue
        elif record["rule"] not in CALIBRATED_RULES and not (
            with_oracle and record["group"] == "oracle"
        ):
            continue
        names.append(record["method"])
    return list(dict.fromkeys(names))


def _style(evaluation: Evaluation, name: str) -> dict[str, Any]:
    """The same colour, marker and dash pattern for a method in every figure."""
    names = _calibrated_names(evaluation)
    index = names.index(name) if name in names else len(names)
    colors = _colors()
    return {
        "color": colors[index % len(colors)],
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": DASHES[0] if name.startswith("RACER") else DASHES[1 + index % 3],
    }


def _dodge(alphas: tuple[float, ...], count: int) -> np.ndarray:
    """Sideways offsets (in alpha units) that keep ``count`` equal lines apart."""
    values = np.sort(np.asarray(alphas, dtype=float))
    gap = np.diff(values).min() if values.size > 1 else max(values[0], 0.01)
    width = 0.4 * gap
    return (np.arange(count) - (count - 1) / 2) * (width / max(count - 1, 1))


def _plot_lines(axis: Any, evaluation: Evaluation, series: dict[str, np.ndarray]) -> None:
    alphas = np.asarray(evaluation.settings.alphas, dtype=float)
    offsets = _dodge(evaluation.settings.alphas, len(series))
    for offset, (name, values) in zip(offsets, series.items(), strict=True):
        axis.plot(
            alphas + offset,
            values,
            markersize=6,
            lw=1.6,
            alpha=0.9,
            label=name,
            **_style(evaluation, name),
        )


def _caption(evaluation: Evaluation) -> str:
    settings = evaluation.settings
    other = [f for f in settings.families if f != settings.families[0]]
    text = "Points of equal value are spread sideways a little so that no line hides another."
    if other and len(settings.bounds) > 1:
        text += (
            f" RACER's {', '.join(other)} famil{'ies' if len(other) > 1 else 'y'} shown with "
            f"the {settings.bounds[0]} bound only (results.json has every bound)."
        )
    return text


def risk_figure(evaluation: Evaluation, path: Path) -> Path:
    """Test risk against alpha (with y = x) and the violation rate against alpha."""
    plt = _pyplot()
    alphas = evaluation.settings.alphas
    names = _calibrated_names(evaluation, with_oracle=False)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 7))
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
    return _finish(
        figure,
        handles,
        labels,
        f"{evaluation.task}: does the guarantee hold?",
        _caption(evaluation),
        path,
    )


def size_figure(evaluation: Evaluation, path: Path) -> Path:
    """Mean set size and abstention rate against alpha."""
    plt = _pyplot()
    names = _calibrated_names(evaluation)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 7))
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
    handles, labels = left.get_legend_handles_labels()
    title = f"{evaluation.task}: how much each guarantee costs in set size"
    return _finish(figure, handles, labels, title, _caption(evaluation), path)


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


#: Candidate label offsets in points (dx, dy), nearest first.
_OFFSETS = [
    (dx * r, dy * r)
    for r in (1, 2, 3.2, 4.5)
    for dx, dy in ((5, 3), (5, -10), (-5, 3), (-5, -10), (0, 7), (0, -14), (9, -3), (-9, -3))
]


def place_labels(axis: Any, items: list[tuple[float, float, str, Any]]) -> list[Any]:
    """Annotate points so that no label overlaps another label or a marker.

    Greedy: each label tries offsets around its point, nearest first, and keeps the
    first whose box overlaps nothing placed so far (nor any marker, nor the axes'
    border); failing that, the offset with the least overlap. Call it after the axes'
    limits and the figure's layout are final: boxes are measured in display space.

    Parameters
    ----------
    axis : matplotlib.axes.Axes
    items : list of (x, y, text, color)

    Returns
    -------
    list of matplotlib.text.Annotation
    """
    from matplotlib.transforms import Bbox

    figure = axis.figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    frame = axis.get_window_extent(renderer)
    radius = 4 * figure.dpi / 72
    taken = []
    for x, y, _, _ in items:
        if np.isfinite(x) and np.isfinite(y):
            px, py = axis.transData.transform((x, y))
            taken.append(Bbox([[px - radius, py - radius], [px + radius, py + radius]]))

    def clash(box: Any) -> float:
        area = 0.0
        for other in taken:
            both = Bbox.intersection(box, other)
            if both is not None:
                area += both.width * both.height
        inside = Bbox.intersection(box, frame)
        outside = box.width * box.height - (0 if inside is None else inside.width * inside.height)
        return area + 10 * outside

    placed = []
    for x, y, text, color in items:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        best = None
        for dx, dy in _OFFSETS:
            label = axis.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                fontsize=7,
                color=color,
            )
            box = label.get_window_extent(renderer).padded(1)
            score = clash(box)
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, label, box)
            else:
                label.remove()
            if score == 0:
                break
        assert best is not None  # _OFFSETS is not empty
        score, label, box = best
        offset = label.xyann
        if abs(offset[0]) > 9 or abs(offset[1]) > 14:  # far from its point: draw a leader
            label.remove()
            label = axis.annotate(
                text,
                (x, y),
                xytext=offset,
                textcoords="offset points",
                ha=label.get_ha(),
                fontsize=7,
                color=color,
                arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6, "alpha": 0.7},
            )
        taken.append(box)
        placed.append(label)
    return placed


@dataclass(frozen=True)
class PolicyPoints:
    """The certified policy on the accuracy-cost plane, per alpha, with what it is held
    against: the reference model, and the hindsight frontier (for each alpha the cheapest
    policy of the family whose risk on the test pool is <= alpha: chosen on the test data,
    so not certified; NaN where none meets alpha)."""

    alphas: np.ndarray
    costs: np.ndarray
    accuracies: np.ndarray
    hindsight_costs: np.ndarray
    hindsight_accuracies: np.ndarray
    reference: str
    reference_cost: float
    reference_accuracy: float
    objective: str


def policy_points(certified: list[dict] | None, task: str | None = None) -> PolicyPoints | None:
    """The points the accuracy-cost figure draws for the certified policy.

    Parameters
    ----------
    certified : list of dict, optional
        The ``certified`` records (:func:`racer.evaluation.certified_trials.certified_records`):
        mean cost and accuracy of the certified policy over the validity trials, on the
        whole test pool, and the ``hindsight_best`` policy.
    task : str, optional
        Only records of this task, or without a task (the evaluation's own data), are
        drawn: the demo's story tasks are other data than its set-level evaluation.

    Returns
    -------
    PolicyPoints or None
        None when no record is about the evaluation's data.
    """
    records = [r for r in certified or [] if r.get("task") in (None, task)]
    if not records:
        return None
    nan = float("nan")
    hindsight = [r.get("hindsight_best") or {} for r in records]
    return PolicyPoints(
        alphas=np.array([r["alpha"] for r in records], dtype=float),
        costs=np.array([r["mean_cost"] for r in records], dtype=float),
        accuracies=np.array([r["accuracy"] for r in records], dtype=float),
        hindsight_costs=np.array([h.get("mean_cost", nan) for h in hindsight], dtype=float),
        hindsight_accuracies=np.array([h.get("accuracy", nan) for h in hindsight], dtype=float),
        reference=records[0]["reference"],
        reference_cost=float(records[0]["reference_cost"]),
        reference_accuracy=float(records[0]["reference_accuracy"]),
        objective=records[0]["objective"],
    )


def _draw_policy(axis: Any, points: PolicyPoints, scale: float = 1.0) -> tuple[list, list]:
    """The certified policy per alpha, the hindsight frontier and the reference (costs
    divided by ``scale``); coincident policy points share one label."""
    axis.plot(
        points.hindsight_costs / scale,
        points.hindsight_accuracies,
        color="dimgrey",
        ls=":",
        lw=1.4,
        marker="P",
        markersize=8,
        markerfacecolor="none",
        label="hindsight: cheapest policy meeting alpha on the test pool (not certified)",
        zorder=5,
    )
    axis.plot(
        points.costs / scale,
        points.accuracies,
        color="black",
        lw=2,
        marker="*",
        markersize=17,
        markerfacecolor="gold",
        markeredgecolor="black",
        label=f"certified policy (--objective {points.objective}), per alpha",
        zorder=6,
    )
    axis.scatter(
        [points.reference_cost / scale],
        [points.reference_accuracy],
        s=260,
        facecolors="none",
        edgecolors="black",
        linewidths=1.8,
        label=f"reference: {points.reference.split('/')[-1]}",
        zorder=6,
    )
    alphas: dict[tuple[float, float], list[str]] = {}
    for alpha, x, y in zip(points.alphas, points.costs / scale, points.accuracies, strict=True):
        alphas.setdefault((float(x), float(y)), []).append(f"{alpha:g}")
    labels = [(x, y, f"policy a={', '.join(a)}", "black") for (x, y), a in alphas.items()]
    crowded = [*alphas, (points.reference_cost / scale, points.reference_accuracy)]
    return labels, crowded


def _draw_cost(
    axis: Any, evaluation: Evaluation, policy: PolicyPoints | None = None
) -> tuple[list, list]:
    """Draw RACER's lines, the fixed sets, the single models, the certified policy (when
    there is one) and the frontier on ``axis``.

    Returns the label items ``(x, y, text, color)`` and the ``(x, y)`` points of RACER,
    the router's fixed sets and the policy (the crowded region the zoom panel shows).
    """
    settings = evaluation.settings
    alphas = settings.alphas
    all_costs: list[float] = []
    all_accuracy: list[float] = []
    labels: list[tuple[float, float, str, Any]] = []
    crowded: list[tuple[float, float]] = []
    if policy is not None:
        labels, crowded = _draw_policy(axis, policy)
        all_costs, all_accuracy = list(policy.costs), list(policy.accuracies)
    racer = [
        r["method"]
        for r in evaluation.records
        if r["group"] == "racer" and r["bound"] == settings.bounds[0] and r["alpha"] == alphas[0]
    ]
    for name in racer:
        style = _style(evaluation, name)
        costs = np.array([evaluation.record(name, a)["mean_cost"] for a in alphas], dtype=float)
        accuracy = np.array([evaluation.record(name, a)["accuracy"] for a in alphas], dtype=float)
        axis.plot(costs, accuracy, label=name, markersize=6, zorder=4, **style)
        labels += [
            (x, y, f"a={alpha:g}", style["color"])
            for alpha, x, y in zip(alphas, costs, accuracy, strict=True)
        ]
        crowded += list(zip(costs, accuracy, strict=True))
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
            s=22 if single else 28,
            zorder=3,
        )
        labels.append((x, y, name.removeprefix("model: ").split("/")[-1], "black"))
        if not single:
            crowded.append((x, y))
    axis.scatter([], [], color="black", marker="s", label="fixed sets of the base router")
    axis.scatter([], [], color="tab:grey", label="single models")
    point_costs = np.array(all_costs + list(costs))
    point_accuracy = np.array(all_accuracy + list(accuracy))
    keep = np.isfinite(point_costs) & np.isfinite(point_accuracy)
    front = pareto_front(point_costs[keep], point_accuracy[keep])
    axis.plot(
        point_costs[keep][front],
        point_accuracy[keep][front],
        color="tab:green",
        lw=8,
        alpha=0.3,
        solid_capstyle="round",
        marker="o",
        markersize=12,
        label="frontier (no point is cheaper and more accurate)",
        zorder=1,
    )
    if evaluation.cost_unit == "USD":
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.2g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
    axis.grid(alpha=0.3)
    return labels, [p for p in crowded if np.isfinite(p[0]) and np.isfinite(p[1])]


def _zoom_box(points: list, log_x: bool) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits around ``points`` with a margin (multiplicative on a log axis)."""
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    if log_x:
        low, high = np.log10(xs.min()), np.log10(xs.max())
        pad = max(0.12 * (high - low), 0.03)
        x_limits = (10 ** (low - pad), 10 ** (high + pad))
    else:
        pad = max(0.12 * (xs.max() - xs.min()), 0.05)
        x_limits = (xs.min() - pad, xs.max() + pad)
    pad = max(0.15 * (ys.max() - ys.min()), 0.01)
    return x_limits, (ys.min() - pad, ys.max() + pad)


def cost_figure(
    evaluation: Evaluation, path: Path, certified: list[dict] | None = None
) -> Path:
    """Accuracy against mean cost: the certified policy per alpha with its reference and
    the hindsight frontier (with ``certified`` records of this data), RACER's families
    across alphas, the baselines, the single models, and the frontier of all of them; on
    the right, a zoom on the region of the policy, RACER and the router's fixed sets,
    where most points crowd."""
    plt = _pyplot()
    alphas = evaluation.settings.alphas
    unit = evaluation.cost_unit
    policy = policy_points(certified, evaluation.task)
    figure, (whole, zoom) = plt.subplots(1, 2, figsize=(15, 8))
    labels, crowded = _draw_cost(whole, evaluation, policy)
    _draw_cost(zoom, evaluation, policy)
    whole.margins(0.1)
    xlabel = f"mean cost per query ({unit}" + (", log scale)" if unit == "USD" else ")")
    whole.set(
        xlabel=xlabel,
        ylabel=f"accuracy ({evaluation.aggregator} aggregator; abstention = not correct)",
        title="every method",
    )
    zoom.set(
        xlabel=xlabel,
        title="zoom on "
        + ("the certified policy, " if policy is not None else "")
        + "RACER and the base router's fixed sets",
    )
    figure.suptitle(
        f"{evaluation.task}: accuracy against cost ("
        + (f"certified policy against {policy.reference}; " if policy is not None else "")
        + "RACER sets at alpha = "
        + ", ".join(f"{a:g}" for a in alphas)
        + ")"
    )
    handles, names = whole.get_legend_handles_labels()
    note = "Up and left is better. Labels a=... give the target risk alpha."
    if policy is not None:
        note += (
            " The policy's accuracy is the answer it serves, measured on the whole test pool "
            "over the validity trials."
        )
    _layout(figure, handles, names, note, ncol=3)
    figure.subplots_adjust(wspace=0.15)
    if crowded:
        x_limits, y_limits = _zoom_box(crowded, unit == "USD")
        zoom.set(xlim=x_limits, ylim=y_limits)
        whole.indicate_inset(
            (x_limits[0], y_limits[0], x_limits[1] - x_limits[0], y_limits[1] - y_limits[0]),
            edgecolor="dimgrey",
        )
        inside = [
            item
            for item in labels
            if x_limits[0] <= item[0] <= x_limits[1] and y_limits[0] <= item[1] <= y_limits[1]
        ]
        place_labels(zoom, inside)
        # The whole view names only what the zoom does not show.
        place_labels(whole, [item for item in labels if item not in inside])
    else:
        place_labels(whole, labels)
    return _save(figure, path)


def policy_figure(certified: list[dict], path: Path, task: str | None = None) -> Path | None:
    """One panel per task of ``certified`` records other than ``task`` (the demo's
    stories): the certified policy per alpha, its reference and the hindsight frontier.

    Returns None when every record is about ``task`` (the accuracy-cost figure draws
    those).
    """
    others = [r["task"] for r in certified if r.get("task") and r["task"] != task]
    stories = [(name, policy_points(certified, name)) for name in dict.fromkeys(others)]
    if not stories:
        return None
    from matplotlib.ticker import PercentFormatter

    plt = _pyplot()
    count = len(stories)
    figure, axes = plt.subplots(1, count, figsize=(4.6 * count + 1, 6.5), squeeze=False)
    placed = []
    for axis, (name, points) in zip(axes[0], stories, strict=True):
        assert points is not None  # each name has records
        labels, crowded = _draw_policy(axis, points, scale=points.reference_cost / 100)
        accuracies = [y for _, y in crowded]
        pad = max(0.2 * (max(accuracies) - min(accuracies)), 0.01)
        axis.set(
            title=name,
            xlabel="mean cost per query, % of the reference's",
            xlim=(0, 115),
            ylim=(min(accuracies) - pad, max(accuracies) + pad),
        )
        axis.xaxis.set_major_formatter(PercentFormatter())
        axis.grid(alpha=0.3)
        placed.append((axis, labels))
    axes[0][0].set_ylabel("accuracy of the answer served")
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.suptitle("Certified answer-level policies against the reference, per task")
    note = (
        "Up and left is better. A star inside the ring: nothing cheaper than the reference "
        "was certified, so the reference itself is served."
    )
    _layout(figure, handles, names, note, ncol=3)
    for axis, labels in placed:
        place_labels(axis, labels)
    return _save(figure, path)


def _layout(figure: Any, handles: list, labels: list[str], note: str, ncol: int = 3) -> None:
    """Fixed margins with the legend and a note below the axes, never over the data."""
    rows = -(-len(labels) // ncol)
    legend_height = 0.03 + 0.028 * rows
    figure.subplots_adjust(left=0.08, right=0.98, top=0.92, bottom=0.1 + legend_height)
    figure.legend(
        handles,
        labels,
        loc="lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.03),
    )
    figure.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=8, color="dimgrey")


def _finish(
    figure: Any, handles: list, labels: list[str], title: str, note: str, path: Path
) -> Path:
    figure.suptitle(title)
    _layout(figure, handles, labels, note)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_figures(
    evaluation: Evaluation, out_dir: Path, certified: list[dict] | None = None
) -> list[Path]:
    """Draw every figure into ``out_dir``; returns their paths.

    ``certified`` records of the evaluation's data put the certified policy on the
    accuracy-cost figure; records of other tasks (the demo's stories) get a figure of
    their own, ``certified_policies.png``.

    Raises
    ------
    PlotsUnavailableError
        When matplotlib is not installed (the message says how to install it).
    """
    _pyplot()
    figures = [
        risk_figure(evaluation, out_dir / "risk_vs_alpha.png"),
        size_figure(evaluation, out_dir / "set_size_vs_alpha.png"),
        cost_figure(evaluation, out_dir / "accuracy_vs_cost.png", certified),
    ]
    stories = policy_figure(certified or [], out_dir / "certified_policies.png", evaluation.task)
    return figures + ([stories] if stories is not None else [])
