"""AZ-NAS (CVPR 2024): training-free architecture search from four zero-cost proxies and a log-rank aggregation."""

from az_nas.aggregate import aggregate
from az_nas.proxies.az import score_network

__all__ = ["aggregate", "score_network"]
