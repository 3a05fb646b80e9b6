"""Building blocks whose values AND exact integrals have closed forms.

Every simulated rate (CPU busy share, I/O wait share, network utilisation, extra disk writes)
is a sum of the three kinds of term defined here, so a counter is simply the integral of its
rate: it can be computed at any time ``t`` in O(1), without stepping through history, and a
backfilled past and the live present agree to the last bit.

* :class:`SinSum` - a constant plus sinusoids (daily and weekly cycles, slow "noise").
* :class:`GridNoise` - piecewise-linear noise on a fixed 60 s grid, hashed from a key and the
  grid index; each one-hour block has a zero integral, so its contribution to a counter is
  only the partial integral inside the current block.
* :class:`Segment` - a linear weight ``w(t)`` on ``[start, end)`` times a :class:`SinSum`;
  incidents are built from these (ramps, plateaus, recoveries).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

_MASK64 = (1 << 64) - 1


def stable_hash(*parts: object) -> int:
    """A 64-bit hash that, unlike ``hash()``, is the same in every process and Python version."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded from ``parts``; the simulation's only source of randomness."""
    return np.random.default_rng(stable_hash(*parts))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finaliser: turns consecutive integers into independent bits."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def hashed_uniform(key: int, index: np.ndarray) -> np.ndarray:
    """Uniform numbers in [-1, 1) that depend only on ``key`` and each integer ``index``."""
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(idx * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key & _MASK64))
    return (mixed >> np.uint64(11)).astype(np.float64) * (2.0 / 2.0**53) - 1.0


def _as_array(t: float | np.ndarray) -> np.ndarray:
    return np.atleast_1d(np.asarray(t, dtype=np.float64))


@dataclass(frozen=True)
class SinSum:
    """``c + sum_k a_k sin(w_k t + p_k)`` with ``t`` in unix seconds."""

    c: float = 0.0
    a: np.ndarray = field(default_factory=lambda: np.zeros(0))
    w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    p: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @staticmethod
    def const(c: float) -> SinSum:
        return SinSum(float(c))

    @staticmethod
    def of(c: float, terms: Iterable[tuple[float, float, float]]) -> SinSum:
        """Build from ``(amplitude, period_seconds, phase)`` triples."""
        rows = [(a, 2 * np.pi / period, phase) for a, period, phase in terms]
        if not rows:
            return SinSum(float(c))
        a, w, p = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
        return SinSum(float(c), a, w, p)

    @staticmethod
    def cosine_peak(amplitude: float, period: float, peak_at: float) -> tuple[float, float, float]:
        """A term ``amplitude * cos(2 pi (t - peak_at) / period)`` as an ``of`` triple."""
        return (amplitude, period, np.pi / 2 - 2 * np.pi * peak_at / period)

    @property
    def spread(self) -> float:
        """Largest possible distance from ``c``: the sum of the absolute amplitudes."""
        return float(np.abs(self.a).sum())

    def bounds(self) -> tuple[float, float]:
        return self.c - self.spread, self.c + self.spread

    def scaled(self, factor: float) -> SinSum:
        return SinSum(self.c * factor, self.a * factor, self.w, self.p)

    def __add__(self, other: SinSum) -> SinSum:
        return SinSum(self.c + other.c, np.concatenate([self.a, other.a]),
                      np.concatenate([self.w, other.w]), np.concatenate([self.p, other.p]))

    def __sub__(self, other: SinSum) -> SinSum:
        return self + other.scaled(-1.0)

    def fit_within(self, lo: float, hi: float) -> SinSum:
        """Shrink the oscillation (and move ``c``) so the whole range lies in ``[lo, hi]``.

        Bounds then hold by construction, without clipping, which would break the closed-form
        integral.
        """
        c = min(max(self.c, lo), hi)
        room = min(c - lo, hi - c)
        spread = self.spread
        factor = 1.0 if spread <= room or spread == 0 else room / spread
        return SinSum(c, self.a * factor, self.w, self.p)

    def __call__(self, t: float | np.ndarray) -> np.ndarray:
        t = _as_array(t)
        if self.a.size == 0:
            return np.full(t.shape, self.c)
        return self.c + np.sin(np.multiply.outer(t, self.w) + self.p) @ self.a

    def integral(self, t0: float | np.ndarray, t1: float | np.ndarray) -> np.ndarray:
        """Exact ``integral_{t0}^{t1}``."""
        t0, t1 = _as_array(t0), _as_array(t1)
        out = self.c * (t1 - t0)
        if self.a.size:
            coef = self.a / self.w
            out = out + (np.cos(np.multiply.outer(t0, self.w) + self.p)
                         - np.cos(np.multiply.outer(t1, self.w) + self.p)) @ coef
        return out


def weighted_integral(q: SinSum, start: float, w0: float, slope: float, x: np.ndarray) -> np.ndarray:
    """Exact ``integral_0^x (w0 + slope * s) * q(start + s) ds`` for each ``x >= 0``.

    Integration by parts of a linear function times a sinusoid; this is what lets incidents
    (linear ramps that blend a signal towards a target) keep counters exact.
    """
    x = _as_array(x)
    out = q.c * (w0 * x + slope * x * x / 2.0)
    if q.a.size:
        th0 = q.w * start + q.p
        thx = th0 + np.multiply.outer(x, q.w)
        cos0, sin0 = np.cos(th0), np.sin(th0)
        cosx, sinx = np.cos(thx), np.sin(thx)
        term = w0 * (cos0 - cosx) / q.w
        if slope != 0.0:
            term = term + slope * (-(x[:, None] * cosx) / q.w + (sinx - sin0) / (q.w * q.w))
        out = out + term @ q.a
    return out


@dataclass(frozen=True)
class Segment:
    """``w(t) * q(t)`` on ``[start, end)``, where ``w`` goes linearly from ``w0`` to ``w1``."""

    start: float
    end: float
    w0: float
    w1: float
    q: SinSum

    @property
    def slope(self) -> float:
        span = self.end - self.start
        return (self.w1 - self.w0) / span if span > 0 else 0.0

    def value(self, t: np.ndarray) -> np.ndarray:
        """Contribution at each ``t`` (zero outside the segment)."""
        t = _as_array(t)
        out = np.zeros(t.shape)
        inside = np.nonzero((t >= self.start) & (t < self.end))[0]
        if inside.size:
            ti = t[inside]
            out[inside] = (self.w0 + self.slope * (ti - self.start)) * self.q(ti)
        return out

    def integral_to(self, t: np.ndarray) -> np.ndarray:
        """``integral_{start}^{clip(t, start, end)}``: zero before, the total after."""
        t = _as_array(t)
        x = np.clip(t, self.start, self.end) - self.start
        return weighted_integral(self.q, self.start, self.w0, self.slope, x)

    @property
    def total(self) -> float:
        return float(weighted_integral(self.q, self.start, self.w0, self.slope,
                                       np.array([self.end - self.start]))[0])


class GridNoise:
    """Piecewise-linear noise on a ``step``-second grid, in blocks of ``block`` steps.

    Node values are hashed from ``(key, grid index)``; the first node of every block is 0 and
    the interior nodes are shifted to mean zero, so every whole block integrates to exactly 0.
    The integral from any origin to ``t`` is therefore just the partial integral inside the
    block of ``t`` minus the one inside the block of the origin: O(1) at any time.
    The amplitude never exceeds ``2 * sigma``.
    """

    def __init__(self, key: int, sigma: float, step: float = 60.0, block: int = 60) -> None:
        self.key = key
        self.sigma = float(sigma)
        self.step = float(step)
        self.block = int(block)

    @property
    def bound(self) -> float:
        return 2.0 * self.sigma

    def _nodes(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Node values ``(nb, block+1)`` and cumulative trapezoid integrals for these blocks."""
        b = self.block
        idx = blocks[:, None] * b + np.arange(1, b)[None, :]
        interior = hashed_uniform(self.key, idx) * self.sigma
        interior -= interior.mean(axis=1, keepdims=True)
        nodes = np.zeros((blocks.size, b + 1))
        nodes[:, 1:b] = interior
        cum = np.zeros_like(nodes)
        cum[:, 1:] = np.cumsum((nodes[:, 1:] + nodes[:, :-1]) * (self.step / 2.0), axis=1)
        return nodes, cum

    def _locate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        g = t / self.step
        j = np.floor(g)
        frac = g - j
        j = j.astype(np.int64)
        blk = np.floor_divide(j, self.block)
        uniq, inv = np.unique(blk, return_inverse=True)
        nodes, cum = self._nodes(uniq)
        return nodes, cum, inv, j - blk * self.block, frac

    def __call__(self, t: float | np.ndarray) -> np.ndarray:
        t = _as_array(t)
        if self.sigma == 0.0:
            return np.zeros(t.shape)
        nodes, _, inv, i, f = self._locate(t)
        v0, v1 = nodes[inv, i], nodes[inv, i + 1]
        return v0 + (v1 - v0) * f

    def partial_integral(self, t: float | np.ndarray) -> np.ndarray:
        """Integral from the start of ``t``'s block to ``t``."""
        t = _as_array(t)
        if self.sigma == 0.0:
            return np.zeros(t.shape)
        nodes, cum, inv, i, f = self._locate(t)
        v0, v1 = nodes[inv, i], nodes[inv, i + 1]
        return cum[inv, i] + self.step * (f * v0 + f * f / 2.0 * (v1 - v0))

    def integral(self, t0: float | np.ndarray, t1: float | np.ndarray) -> np.ndarray:
        return self.partial_integral(t1) - self.partial_integral(t0)
