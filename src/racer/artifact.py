"""Saving and loading a fitted base router with its RACER calibration, without pickle.

An artifact is one directory:

- ``racer_artifact.json``: format version, model names in column order, alpha, delta,
  bound, calibration size, a sha256 of the calibration data, the JSON part of every
  fitted state, the sha256 of each array file, and a sha256 of the metadata itself;
- ``router.npz``, ``racer.npz`` and optionally ``abstention.npz`` and
  ``group_classifier.npz``: the numpy arrays of those states, read back with
  ``allow_pickle=False``.

A RACER calibrated per group (``RACER.fit(..., groups=)``) records where the group of a
query comes from under ``"groups"`` in the metadata: the data column that named the
groups, and whether a :class:`~racer.routers.group_classifier.GroupClassifier` (trained on
the training split) predicts them. Format version 2 adds it; version 1 artifacts load
unchanged (marginal calibration, no group source).

Loading refuses, with an :class:`ArtifactError` that says why, an unknown format
version, edited metadata, an array file whose sha256 differs from the recorded one,
and model names other than those asked for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from racer.data.dataset import RoutingDataset
from racer.estimator import RACER
from racer.routers import AbstentionHead, BaseRouter, router_from_state
from racer.routers.group_classifier import GroupClassifier

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "ArtifactError",
    "RouterArtifact",
    "calibration_sha256",
    "load_artifact",
    "save_artifact",
]

FORMAT_NAME = "racer-artifact"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
METADATA_FILE = "racer_artifact.json"
ARRAY_TAG = "__array__"


class ArtifactError(ValueError):
    """An artifact cannot be saved or loaded as asked (version, names, integrity)."""


def calibration_sha256(queries: Sequence[str], labels: Any) -> str:
    """A sha256 of calibration queries and labels, to tell which data calibrated a router.

    Parameters
    ----------
    queries : sequence of str
        Calibration queries, in order.
    labels : array-like of shape (n, M)
        Their labels (NaN allowed).

    Returns
    -------
    str
        Hex digest; it changes when any query, label, or the order changes.
    """
    label_matrix = np.ascontiguousarray(labels, dtype=np.float64)
    digest = hashlib.sha256(repr(label_matrix.shape).encode())
    for text in queries:
        digest.update(text.encode("utf-8") + b"\0")
    digest.update(label_matrix.tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metadata_sha256(metadata: dict[str, Any]) -> str:
    body = {key: value for key, value in metadata.items() if key != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _split_arrays(value: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    """The JSON part of a state; its numpy arrays go to ``arrays``, replaced by a tag."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise ArtifactError(
                f"{where} is an object array, which cannot be saved without pickle; "
                "convert it to numbers or fixed-width strings."
            )
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {ARRAY_TAG: key}
    if isinstance(value, dict):
        return {str(k): _split_arrays(v, arrays, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split_arrays(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise ArtifactError(
        f"{where} holds a {type(value).__name__}, which an artifact cannot store "
        "(JSON values and numeric numpy arrays only)."
    )


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _join_arrays(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {ARRAY_TAG}:
            return arrays[value[ARRAY_TAG]]
        return {k: _join_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays) for v in value]
    return value


@dataclass(frozen=True)
class RouterArtifact:
    """A loaded artifact: the base router, its RACER calibration, and the metadata.

    Attributes
    ----------
    router : BaseRouter
        The fitted base router.
    racer : RACER
        The fitted calibration.
    abstention : AbstentionHead or None
        The learned abstain score, when RACER uses ``abstain_score="given"``.
    metadata : dict
        The JSON metadata (see the module docstring).
    group_classifier : GroupClassifier or None
        Predicts each query's group, when the calibration's groups came from one.
    """

    router: BaseRouter
    racer: RACER
    abstention: AbstentionHead | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    group_classifier: GroupClassifier | None = None

    @property
    def group_column(self) -> str | None:
        """The data column that named the groups of a per-group calibration (else None)."""
        return (self.metadata.get("groups") or {}).get("column")

    def groups_of(self, queries: Sequence[str], groups: Sequence[Any] | None = None) -> Any:
        """Each query's group for a per-group calibration (None for a marginal one).

        ``groups`` given by the caller win; otherwise the group classifier predicts them.

        Raises
        ------
        ValueError
            A per-group calibration without a classifier and no ``groups`` given.
        """
        if self.racer.groups_ is None:
            return None
        if groups is not None:
            return np.asarray([str(g) for g in groups])
        if self.group_classifier is not None:
            return self.group_classifier.predict(queries)
        raise ValueError(
            f"This artifact was calibrated per group (groups from the column "
            f"{self.group_column!r}: {sorted(self.racer.groups_)}) and has no group "
            "classifier; give each query's group."
        )

    @property
    def policy(self) -> dict[str, Any] | None:
        """The certified answer-level policy and its certificate, when one was saved."""
        return self.metadata.get("policy")

    @property
    def model_names(self) -> list[str]:
        """The candidate models, in column order."""
        return list(self.router.model_names_)

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray:
        """The base router's scores, shape (n, M)."""
        return self.router.predict_proba(queries)

    def predict_sets(
        self,
        queries: Sequence[str],
        *,
        include_abstain: bool = False,
        scores: np.ndarray | None = None,
        groups: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """The calibrated set of every query: bool (n, M), or (n, M + 1) with abstain first.

        ``scores`` are the router's scores of ``queries`` when the caller already has
        them (:meth:`predict_proba`), so they are not computed twice. ``groups``: each
        query's group, for a per-group calibration (:meth:`groups_of`).
        """
        abstain_scores = None
        if self.abstention is not None:
            abstain_scores = self.abstention.abstain_score(queries)
        return self.racer.predict(
            self.predict_proba(queries) if scores is None else scores,
            include_abstain=include_abstain,
            abstain_scores=abstain_scores,
            groups=self.groups_of(queries, groups),
        )


def _calibration_hash(calibration: Any) -> str | None:
    if calibration is None:
        return None
    if isinstance(calibration, RoutingDataset):
        return calibration_sha256(list(calibration.queries), calibration.labels)
    queries, labels = calibration
    return calibration_sha256(list(queries), labels)


def _check_pair(router: BaseRouter, racer: RACER, abstention: AbstentionHead | None) -> None:
    names = list(router.model_names_)
    if racer.model_names_ is not None and list(racer.model_names_) != names:
        raise ArtifactError(
            f"The router scores models {names} but RACER was calibrated on "
            f"{list(racer.model_names_)}; calibrate on this router's scores, in its order."
        )
    if racer.n_models_ != len(names):
        raise ArtifactError(
            f"The router scores {len(names)} models but RACER was calibrated on {racer.n_models_}."
        )
    if (racer.abstain_score == "given") != (abstention is not None):
        raise ArtifactError(
            "Pass abstention= (an AbstentionHead) exactly when RACER uses "
            f"abstain_score='given'; this RACER uses {racer.abstain_score!r}."
        )


def save_artifact(
    directory: str | Path,
    router: BaseRouter,
    racer: RACER,
    *,
    abstention: AbstentionHead | None = None,
    calibration: RoutingDataset | tuple[Sequence[str], Any] | None = None,
    overwrite: bool = False,
    policy: dict[str, Any] | None = None,
    group_column: str | None = None,
    group_classifier: GroupClassifier | None = None,
) -> Path:
    """Save a fitted base router and its fitted RACER as one artifact directory.

    Parameters
    ----------
    directory : str or pathlib.Path
        Where to write (created if needed).
    router : BaseRouter
        The fitted base router (an external router over a callable cannot be saved).
    racer : RACER
        Calibrated on ``router``'s scores.
    abstention : AbstentionHead, optional
        Required when ``racer.abstain_score == "given"``.
    calibration : RoutingDataset or (queries, labels), optional
        The calibration data; only its sha256 is stored.
    overwrite : bool, default=False
        Replace an existing artifact in ``directory``.
    policy : dict, optional
        A certified answer-level policy (:func:`racer.evaluation.certified.policy_state`,
        JSON only), stored under ``"policy"`` in the metadata and covered by its sha256.
    group_column : str, optional
        For a RACER calibrated per group: the data column that named the groups.
    group_classifier : GroupClassifier, optional
        For a RACER calibrated per group on a classifier's predicted groups: that
        classifier (trained on the training split), saved as JSON and arrays.

    Returns
    -------
    pathlib.Path
        The artifact directory.

    Examples
    --------
    >>> save_artifact("artifacts/mmlu", router, racer, calibration=cal)  # doctest: +SKIP
    >>> load_artifact("artifacts/mmlu").predict_sets(["What is 2 + 2?"])  # doctest: +SKIP
    """
    from racer.version import __version__

    _check_pair(router, racer, abstention)
    if (group_column is not None or group_classifier is not None) and racer.groups_ is None:
        raise ArtifactError(
            "group_column= and group_classifier= describe a per-group calibration, but this "
            "RACER was calibrated marginally; fit it with groups= or leave them out."
        )
    directory = Path(directory)
    if (directory / METADATA_FILE).exists() and not overwrite:
        raise FileExistsError(
            f"{directory} already holds an artifact; pass overwrite=True to replace it."
        )
    states = {"router": router.get_state(), "racer": racer.get_state()}
    if abstention is not None:
        states["abstention"] = abstention.get_state()
    if group_classifier is not None:
        states["group_classifier"] = group_classifier.get_state()
    directory.mkdir(parents=True, exist_ok=True)
    json_states, files = {}, {}
    for part, state in states.items():
        arrays: dict[str, np.ndarray] = {}
        json_states[part] = _split_arrays(state, arrays, part)
        filename = f"{part}.npz"
        np.savez(directory / filename, **arrays)
        files[filename] = _file_sha256(directory / filename)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "racer_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model_names": list(router.model_names_),
        "router": router.name,
        "alpha": racer.alpha,
        "delta": racer.delta,
        "bound": racer.bound_,
        "guarantee": racer.guarantee,
        "abstain_score": racer.abstain_score,
        "abstention": racer.abstention_mode_,
        "threshold": racer.threshold_,
        "abstain_threshold": racer.abstain_threshold_,
        "n_calibration": racer.n_calibration_,
        "calibration_sha256": _calibration_hash(calibration),
        "files": files,
        "states": json_states,
    }
    if policy is not None:
        metadata["policy"] = policy
    if racer.groups_ is not None:
        metadata["groups"] = {
            "column": group_column,
            "classifier": group_classifier is not None,
            "names": sorted(racer.groups_),
        }
    metadata = json.loads(json.dumps(metadata, default=_json_scalar))
    metadata["metadata_sha256"] = _metadata_sha256(metadata)
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return directory


def _read_metadata(directory: Path) -> dict[str, Any]:
    path = directory / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(f"No artifact at {directory}: {METADATA_FILE} is missing.")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(
            f"{path} is not valid JSON ({error}); the artifact is damaged."
        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path} is not a RACER artifact (no 'format': {FORMAT_NAME!r}).")
    version = metadata.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ArtifactError(
            f"Artifact format version {version!r} at {directory} is not supported: this "
            f"racer reads versions {READABLE_VERSIONS}. Re-save the artifact with this racer "
            "version, or install the racer version that wrote it."
        )
    if metadata.get("metadata_sha256") != _metadata_sha256(metadata):
        raise ArtifactError(
            f"{path} fails its sha256 check: the metadata was edited or corrupted after "
            "saving; refusing to load it. Re-save the artifact."
        )
    return metadata


def _read_arrays(directory: Path, filename: str, expected_sha256: str) -> dict[str, np.ndarray]:
    path = directory / filename
    if not path.is_file():
        raise ArtifactError(f"Artifact file {filename} is missing from {directory}.")
    actual = _file_sha256(path)
    if actual != expected_sha256:
        raise ArtifactError(
            f"Artifact file {filename} fails its sha256 check (expected {expected_sha256[:12]}.., "
            f"got {actual[:12]}..): it was modified or corrupted after saving; refusing to "
            "load it."
        )
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def load_artifact(
    directory: str | Path, *, model_names: Sequence[str] | None = None
) -> RouterArtifact:
    """Load an artifact saved by :func:`save_artifact`, verifying it first.

    Parameters
    ----------
    directory : str or pathlib.Path
        The artifact directory.
    model_names : sequence of str, optional
        The models, in order, that the caller will route between; an artifact for other
        models (or another order) is refused.

    Returns
    -------
    RouterArtifact

    Raises
    ------
    ArtifactError
        Unknown format version, edited metadata, a tampered array file, or other model
        names than asked for.
    """
    directory = Path(directory)
    metadata = _read_metadata(directory)
    saved_names = list(metadata["model_names"])
    if model_names is not None and list(model_names) != saved_names:
        raise ArtifactError(
            f"The artifact at {directory} routes between {saved_names}, but "
            f"{list(model_names)} was asked for. Model names and their order must match; "
            "re-fit and re-calibrate for these models."
        )
    parts = {}
    for part, json_state in metadata["states"].items():
        filename = f"{part}.npz"
        arrays = _read_arrays(directory, filename, metadata["files"].get(filename, ""))
        parts[part] = _join_arrays(json_state, arrays)
    router = router_from_state(parts["router"])
    racer = RACER.from_state(parts["racer"])
    abstention = AbstentionHead.from_state(parts["abstention"]) if "abstention" in parts else None
    group_classifier = (
        GroupClassifier.from_state(parts["group_classifier"])
        if "group_classifier" in parts
        else None
    )
    if list(router.model_names_) != saved_names:
        raise ArtifactError(
            f"The saved router scores {router.model_names_}, not {saved_names} as the "
            "metadata says; the artifact is inconsistent."
        )
    return RouterArtifact(
        router=router,
        racer=racer,
        abstention=abstention,
        metadata=metadata,
        group_classifier=group_classifier,
    )
