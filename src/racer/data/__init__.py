"""Loading routing data: one RoutingDataset, one module per on-disk format."""

from racer.data.dataset import RoutingDataset

__all__ = ["RoutingDataset"]
