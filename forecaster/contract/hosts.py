"""Which host a series belongs to: the one place that turns a series' labels into a host key and back.

A host is its ``instance`` label plus the configured identity labels (``prometheus.cluster_labels``,
e.g. ``[cluster]``). Without identity labels, as with one Prometheus, the key is the ``instance``
value itself, so single-cluster users see exactly the keys (per-host model names, JSON API, shard
assignment) they always had. With them, two hosts called ``web-01`` in clusters ``a`` and ``b`` are two
keys, ``{instance="web-01",cluster="a"}`` and ``{instance="web-01",cluster="b"}``: the label set as
PromQL writes it, readable in logs and unambiguous to parse back whatever the values hold.

The panel (rows), the sharding hash, the exported series and the JSON API all go through
:class:`HostIdentity`, so a host can never be keyed one way when read and another way when written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

INSTANCE = "instance"
#: Labels an identity label may not be called: ``instance`` is always part of the key; the others are
#: labels the forecaster's own series carry (``job`` is set by the scrape that selects them), so an
#: identity label of that name would overwrite one of them.
RESERVED_LABELS = frozenset({INSTANCE, "job", "signal", "horizon", "path", "model", "version", "scope", "le",
                             "quantile"})
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: The separator Prometheus's ``hashmod`` relabel action joins several source labels with (its default).
HASHMOD_SEPARATOR = ";"
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|\})')
_UNESCAPE = re.compile(r"\\(.)")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def check_label_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` if they can be identity labels, else ``ValueError`` naming the first bad one (for the config)."""
    for name in names:
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"{name!r} is not a Prometheus label name")
        if name in RESERVED_LABELS:
            raise ValueError(f"{name!r} cannot be an identity label: the forecaster's own series use it")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate label(s): {', '.join(dupes)}")
    return names


@dataclass(frozen=True)
class HostIdentity:
    """The labels that name a host besides ``instance``, in their configured order."""

    labels: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every label of the key, ``instance`` first: the ``by (...)`` of a per-host aggregation."""
        return (INSTANCE, *self.labels)

    def key(self, labels: Mapping[str, str]) -> str | None:
        """The host key of a series' labels; None without an ``instance`` (such a series names no host).

        A missing identity label counts as empty, as it does in PromQL, where ``{cluster=""}`` and no
        ``cluster`` label are the same series.
        """
        instance = labels.get(INSTANCE)
        if not instance:
            return None
        if not self.labels:
            return instance
        return "{" + ",".join(f'{n}="{_escape(labels.get(n) or "")}"' for n in self.names) + "}"

    def host_labels(self, key: str) -> dict[str, str]:
        """The labels a key stands for, ``instance`` first then the identity labels in order (empty ones too).

        Raises ``ValueError`` for a string that is not a key of this identity.
        """
        if not self.labels:
            return {INSTANCE: key}
        out: dict[str, str] = {}
        pos = 1
        if not key.startswith("{"):
            raise ValueError(f"not a host key of {self.names}: {key!r}")
        while pos < len(key):
            m = _PAIR.match(key, pos)
            if m is None:
                break
            out[m.group(1)] = _unescape(m.group(2))
            pos = m.end()
            if m.group(3) == "}":
                break
        if pos != len(key) or tuple(out) != self.names:
            raise ValueError(f"not a host key of {self.names}: {key!r}")
        return out

    def instance(self, key: str) -> str:
        """The ``instance`` label of a key."""
        return self.host_labels(key)[INSTANCE]

    def hash_source(self, key: str) -> str:
        """What the sharding hash reads: the key's label values joined as ``hashmod`` joins
        ``source_labels: [instance, <identity labels>]``, so Prometheus can split the same way."""
        return HASHMOD_SEPARATOR.join(self.host_labels(key).values())


#: One Prometheus: hosts are their ``instance`` label alone.
INSTANCE_ONLY = HostIdentity()
