"""Slices of traffic on the command line: ``--group-by`` and its options.

Parsing only; the per-group certificates are :class:`racer.RACER`'s (``groups=``), the
group classifier is :class:`racer.routers.group_classifier.GroupClassifier`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from racer.cli.common import UserError

#: Names that ``--group-by`` reads from the data's source column.
SOURCE_COLUMNS = ("eval_name", "source")

GroupByOption = Annotated[
    str | None,
    typer.Option(
        "--group-by",
        help="Certify each slice of traffic on its own (per-group risk control): the data's "
        "source column, eval_name (RouterBench) or source (tables; the file stem when "
        "several files are pooled). Reports show the per-group risk either way.",
    ),
]
GroupClassifierOption = Annotated[
    bool,
    typer.Option(
        "--group-classifier",
        help="With --group-by: the slices are the groups a TF-IDF classifier, trained on the "
        "training split's --group-by column only, predicts for each query (at calibration "
        "and at serving), so traffic need not carry its group.",
    ),
]
GroupGuaranteeOption = Annotated[
    str,
    typer.Option(
        "--group-guarantee",
        help="each: every group's risk <= alpha with probability 1 - delta; all: every "
        "group at once (delta split over the groups).",
    ),
]
SmallGroupsOption = Annotated[
    str,
    typer.Option(
        "--small-groups",
        help="raise: refuse groups too small to certify, naming them; pool: certify them "
        "together as one pooled group, which also serves groups unseen at calibration.",
    ),
]


def check_group_options(
    group_by: str | None, classifier: bool, guarantee: str, small_groups: str
) -> None:
    """Refuse unknown values and ``--group-classifier`` without ``--group-by``, early."""
    from racer.groups import GROUP_GUARANTEES, SMALL_GROUP_CHOICES

    if guarantee not in GROUP_GUARANTEES:
        raise UserError(
            f"--group-guarantee takes one of {list(GROUP_GUARANTEES)}; got {guarantee!r}."
        )
    if small_groups not in SMALL_GROUP_CHOICES:
        raise UserError(
            f"--small-groups takes one of {list(SMALL_GROUP_CHOICES)}; got {small_groups!r}."
        )
    if classifier and group_by is None:
        raise UserError(
            "--group-classifier learns the groups of --group-by COLUMN; give --group-by too."
        )
    if group_by is not None and group_by not in SOURCE_COLUMNS:
        raise UserError(
            f"--group-by reads the data's source column: {' or '.join(SOURCE_COLUMNS)} "
            f"(RouterBench's eval_name, a table's source column); got {group_by!r}. For a "
            "table, name its group column source."
        )


def data_groups(dataset: Any) -> Any:
    """Each query's group from the data's source column, as strings."""
    return dataset.sources.astype(str)


def fit_group_classifier(train: Any) -> Any:
    """A group classifier trained on the training split's groups only."""
    from racer.routers.group_classifier import GroupClassifier

    try:
        return GroupClassifier().fit(list(train.queries), data_groups(train))
    except ValueError as error:
        raise UserError(f"--group-classifier: {error}") from None


def check_routable_without_groups(artifact: Path) -> None:
    """Refuse to route plain queries with an artifact calibrated per group that has no
    group classifier: its queries' groups are unknown here."""
    import json

    from racer.artifact import METADATA_FILE

    path = artifact / METADATA_FILE
    if not path.is_file():
        return  # the artifact check reports it
    groups = json.loads(path.read_text(encoding="utf-8")).get("groups")
    if groups and not groups.get("classifier"):
        raise UserError(
            f"The artifact {str(artifact)!r} is certified per group {groups.get('names')} "
            f"(groups from {groups.get('column')!r}) and has no group classifier, so queries "
            "without their group cannot be routed here. Serve it with racer serve (requests "
            "name their group in metadata.racer_group), or calibrate with --group-classifier."
        )


def check_group_paths(group_by: str | None, paths: list[Path] | None, option: str) -> None:
    """Refuse ``--group-by eval_name`` over several files or a folder: pooled files get
    their file stem as source (racer.data.load_dataset), so the groups would be files."""
    if group_by != "eval_name" or not paths:
        return
    if len(paths) > 1 or any(path.is_dir() for path in paths):
        raise UserError(
            f"--group-by eval_name reads one file's eval_name column, but {option} gives "
            "several files (or a folder), whose rows get their file stem as source when "
            "pooled. Concatenate them into one CSV, or pass --group-by source to group by "
            "file."
        )
