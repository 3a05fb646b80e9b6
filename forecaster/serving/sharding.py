"""Which replica forecasts which host: the same hash Prometheus's ``hashmod`` relabel action uses.

Prometheus computes ``hashmod`` as the md5 of the source label value, takes the last 8 bytes as a
big-endian uint64 and reduces it modulo N. Using exactly that here means a fleet can be split
the same way for scraping and for forecasting, and an operator can check an assignment with a
relabel rule instead of trusting our code. With ``prometheus.cluster_labels`` the hashed value is the
host's labels joined as ``hashmod`` joins ``source_labels: [instance, <cluster labels>]`` (``;``), see
:meth:`forecaster.contract.hosts.HostIdentity.hash_source`, so hosts of one name in two clusters are
assigned independently.
"""

from __future__ import annotations

import hashlib


def shard_of(instance: str, count: int) -> int:
    """The shard (``0 .. count-1``) of an ``instance`` label value (or of a host's joined labels)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    digest = hashlib.md5(instance.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % count


def in_shard(instance: str, count: int, index: int) -> bool:
    """True when this replica (``index`` of ``count``) owns ``instance``; one shard owns all."""
    return count <= 1 or shard_of(instance, count) == index
