"""Loading routing data: one RoutingDataset, one module per on-disk format."""

from racer.data.dataset import RoutingDataset
from racer.data.generic import (
    DuplicateQueriesWarning,
    MissingLabelsWarning,
    load_table,
    merge_duplicate_ids,
)
from racer.data.load import concat_datasets, detect_format, load_dataset
from racer.data.routellm import load_routellm
from racer.data.routerbench import load_routerbench
from racer.data.routerdc import load_routerdc
from racer.data.split import (
    calibration_test_split,
    query_groups,
    split_dataset,
    train_test_split,
)

__all__ = [
    "DuplicateQueriesWarning",
    "MissingLabelsWarning",
    "RoutingDataset",
    "calibration_test_split",
    "concat_datasets",
    "detect_format",
    "load_dataset",
    "load_routellm",
    "load_routerbench",
    "load_routerdc",
    "load_table",
    "merge_duplicate_ids",
    "query_groups",
    "split_dataset",
    "train_test_split",
]
