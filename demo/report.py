"""Incidents against warnings: which scripted incident the forecasts predicted, and how far ahead.

A *warning* is the forecaster predicting a breach of one series (instance, signal) in one
cycle, read from its JSON API: a breach probability at or above the model's own cut-off for
that horizon (``calibration.breach.cutoffs`` in ``model.json``), or a p50 or p90 forecast path
that crosses the threshold within the 8 h horizon (``tft_breach_eta_seconds``). Each warning is
attributed to the next incident of that series (breach starting within 8 h, not yet over);
a warning with no such incident is a false alarm.

The **lead time** of an incident is its ground-truth breach start minus the first cycle that
warned. A run can *judge* an incident only if it was forecasting at the incident's deadline
(breach start minus the required lead): an incident whose deadline fell before the first
cycle is "too close to the start", one whose deadline is after the last cycle is "not yet
due" (unless it was already warned in time, which passes). This module is pure: no HTTP, no
clock, so the demo, its tests and a CI summary all judge the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forecaster.contract.config import HORIZON_LABELS

#: A warning must come at least this long before the breach for the run to pass.
MIN_LEAD_SECONDS = 1800.0
#: The longest horizon the forecaster predicts; a warning further ahead cannot be about an incident.
MAX_HORIZON_SECONDS = 8 * 3600.0

PASS, FAIL, TOO_EARLY, NOT_YET_DUE = "pass", "fail", "too close to the start", "not yet due"


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def clock(t: float | None, seconds: bool = True) -> str:
    """``HH:MM:SS`` in UTC (the simulator's ground truth is UTC); ``HH:MM`` to the nearest minute."""
    if t is None or not math.isfinite(t):
        return "-"
    if not seconds:
        return datetime.fromtimestamp(round(t / 60) * 60, UTC).strftime("%H:%M")
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def duration(seconds: float | None) -> str:
    """``47m``, ``1h05m``, ``35s``, ``-3m``: short and exact enough for a terminal."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 60:
        return f"{sign}{s:.0f}s"
    minutes = round(s / 60)
    if minutes < 60:
        return f"{sign}{minutes}m"
    return f"{sign}{minutes // 60}h{minutes % 60:02d}m"


@dataclass(frozen=True)
class Incident:
    """Ground truth of one incident (from the simulator), times in unix seconds."""

    instance: str
    signal: str
    kind: str
    scripted: bool
    breach_start: float
    breach_end: float | None
    ramp_start: float

    @property
    def key(self) -> tuple[str, str, float]:
        return self.instance, self.signal, self.breach_start

    @property
    def name(self) -> str:
        return f"{self.instance} {self.kind} ({self.signal})"

    @classmethod
    def from_record(cls, record: Any) -> Incident | None:
        """From an :class:`exporter.incidents.IncidentRecord`; None when it never breached."""
        if record.breach_start is None:
            return None
        return cls(record.instance, record.signal, record.kind, bool(record.scripted), float(record.breach_start),
                   None if record.breach_end is None else float(record.breach_end), float(record.ramp_start))


@dataclass(frozen=True)
class Prediction:
    """What one cycle said about one series."""

    made_at: float
    eta_p50: float | None
    eta_p90: float | None
    probability: dict[str, float]
    model: str
    reasons: tuple[str, ...]
    #: The shortest horizon whose breach probability reaches the model's cut-off, if any.
    warn_horizon: str | None = None

    @property
    def warned(self) -> bool:
        return bool(self.reasons)

    @property
    def breach_at(self) -> float | None:
        """When the breach is predicted: the p50 path's crossing, else the p90 path's."""
        eta = self.eta_p50 if self.eta_p50 is not None else self.eta_p90
        return None if eta is None else self.made_at + eta

    @property
    def breach_path(self) -> str:
        return "p50" if self.eta_p50 is not None else ("p90" if self.eta_p90 is not None else "")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def prediction(series: dict[str, Any], cutoffs: dict[str, float]) -> Prediction:
    """A :class:`Prediction` from one series of ``/api/v1/forecasts``, with why it warns (if it does)."""
    made_at = parse_iso(series.get("made_at")) or 0.0
    eta = series.get("breach_eta_seconds") or {}
    p50, p90 = _number(eta.get("p50")), _number(eta.get("p90"))
    probs = {k: v for k, v in ((k, _number(v)) for k, v in (series.get("breach_probability") or {}).items())
             if v is not None}
    reasons = []
    warn_horizon = None
    for label, p in probs.items():  # the API lists horizons shortest first
        cut = cutoffs.get(label)
        if cut is not None and p >= cut:
            reasons.append(f"P({label}) {p:.2f} >= {cut:.2f}")
            warn_horizon = warn_horizon or label
    if p50 is not None:
        reasons.insert(0, f"p50 path crosses in {duration(p50)}")
    elif p90 is not None:
        reasons.append(f"p90 path crosses in {duration(p90)}")
    return Prediction(made_at, p50, p90, probs, str(series.get("model", "")), tuple(reasons), warn_horizon)


@dataclass
class Outcome:
    """The verdict on one incident at the end of a run."""

    incident: Incident
    verdict: str
    first: Prediction | None
    last: Prediction | None
    first_warning: Prediction | None

    @property
    def lead(self) -> float | None:
        if self.first_warning is None:
            return None
        return self.incident.breach_start - self.first_warning.made_at

    def to_json(self) -> dict[str, Any]:
        inc = self.incident

        def pred(p: Prediction | None) -> dict[str, Any] | None:
            if p is None:
                return None
            return {"made_at": p.made_at, "breach_at": p.breach_at, "path": p.breach_path or None,
                    "eta_p50": p.eta_p50, "eta_p90": p.eta_p90, "probability": p.probability, "model": p.model,
                    "reasons": list(p.reasons)}

        return {"instance": inc.instance, "signal": inc.signal, "kind": inc.kind, "scripted": inc.scripted,
                "breach_start": inc.breach_start, "breach_end": inc.breach_end, "verdict": self.verdict,
                "lead_seconds": self.lead, "first_cycle": pred(self.first), "last_cycle": pred(self.last),
                "first_warning": pred(self.first_warning)}


@dataclass
class Tracker:
    """Follows every cycle's forecasts and remembers, per incident, the first and last word on it."""

    incidents: list[Incident]
    cutoffs: dict[str, float] = field(default_factory=dict)
    min_lead: float = MIN_LEAD_SECONDS
    cycles: list[float] = field(default_factory=list)
    first: dict[tuple, Prediction] = field(default_factory=dict)
    last: dict[tuple, Prediction] = field(default_factory=dict)
    first_warning: dict[tuple, Prediction] = field(default_factory=dict)
    #: (instance, signal) -> cycles in which it warned with no incident ahead of it.
    false_alarms: dict[tuple[str, str], int] = field(default_factory=dict)

    def target(self, instance: str, signal: str, t: float) -> Incident | None:
        """The incident a forecast of this series made at ``t`` is about: the next one within 8 h."""
        best = None
        for inc in self.incidents:
            if inc.instance != instance or inc.signal != signal:
                continue
            over = inc.breach_end is not None and t >= inc.breach_end
            if over or t < inc.breach_start - MAX_HORIZON_SECONDS:
                continue
            if best is None or inc.breach_start < best.breach_start:
                best = inc
        return best

    def observe(self, forecasts: list[dict[str, Any]]) -> dict[tuple[str, str], Prediction]:
        """Take one cycle's ``/api/v1/forecasts`` series; returns the predictions by (instance, signal)."""
        out: dict[tuple[str, str], Prediction] = {}
        made = []
        for series in forecasts:
            p = prediction(series, self.cutoffs)
            key = (str(series["instance"]), str(series["signal"]))
            out[key] = p
            made.append(p.made_at)
            inc = self.target(key[0], key[1], p.made_at)
            if inc is None:
                if p.warned:
                    self.false_alarms[key] = self.false_alarms.get(key, 0) + 1
                continue
            self.first.setdefault(inc.key, p)
            self.last[inc.key] = p
            if p.warned:
                self.first_warning.setdefault(inc.key, p)
        if made:
            self.cycles.append(max(made))
        return out

    def outcome(self, inc: Incident) -> Outcome:
        first_cycle = self.cycles[0] if self.cycles else math.inf
        last_cycle = self.cycles[-1] if self.cycles else -math.inf
        deadline = inc.breach_start - self.min_lead
        warning = self.first_warning.get(inc.key)
        if warning is not None and warning.made_at <= deadline:
            verdict = PASS
        elif deadline < first_cycle:
            verdict = TOO_EARLY
        elif deadline > last_cycle:
            verdict = NOT_YET_DUE
        else:
            verdict = FAIL
        return Outcome(inc, verdict, self.first.get(inc.key), self.last.get(inc.key), warning)

    def outcomes(self, scripted_only: bool = False) -> list[Outcome]:
        """Scripted incidents always; others only if the run judged them or warned of them."""
        out = []
        for inc in sorted(self.incidents, key=lambda i: (i.breach_start, i.instance)):
            o = self.outcome(inc)
            if inc.scripted or (not scripted_only and (o.verdict in (PASS, FAIL) or o.first_warning is not None)):
                out.append(o)
        return out

    def passed(self) -> bool:
        return all(o.verdict != FAIL for o in self.outcomes())


def summary_lines(tracker: Tracker, *, now: float | None = None) -> list[str]:
    """The plain-text summary: one block per incident, then the verdict line."""
    lines: list[str] = []
    cycles = tracker.cycles
    if cycles:
        lines.append(f"{len(cycles)} forecast cycles from {clock(cycles[0])} to {clock(cycles[-1])} UTC "
                     f"({duration(cycles[-1] - cycles[0])}); a warning must come "
                     f"{duration(tracker.min_lead)} before the breach.")
    else:
        lines.append("no forecast cycle completed.")
    outcomes = tracker.outcomes()
    if not outcomes:
        lines.append("no incident in this run's window.")
    for o in outcomes:
        inc = o.incident
        due = f" (in {duration(inc.breach_start - now)})" if now is not None and inc.breach_start > now else ""
        tag = "scripted" if inc.scripted else "unscripted"
        lines.append(f"- {inc.name}, {tag}: breach starts {clock(inc.breach_start)} UTC{due}")
        for label, p in (("first cycle", o.first), ("last cycle", o.last)):
            if p is None:
                lines.append(f"    {label}: not forecast")
            elif p.breach_at is None and p.warn_horizon is not None:
                by = p.made_at + HORIZON_LABELS.get(p.warn_horizon, 0)
                lines.append(f"    {label} ({clock(p.made_at)}): breach likely within {p.warn_horizon}, by "
                             f"{clock(by, False)} (P {p.probability[p.warn_horizon]:.2f}; no forecast path crosses)")
            elif p.breach_at is None:
                lines.append(f"    {label} ({clock(p.made_at)}): no breach predicted within 8h")
            else:
                lines.append(f"    {label} ({clock(p.made_at)}): breach predicted at {clock(p.breach_at, False)} "
                             f"({p.breach_path} path, {_off(p.breach_at - inc.breach_start)})")
        if o.first_warning is not None:
            w = o.first_warning
            lines.append(f"    first warning {clock(w.made_at)}: {w.reasons[0]}; lead time {duration(o.lead)}"
                         + (f" [{w.model} model]" if w.model != "global" else ""))
        else:
            lines.append("    no warning")
        lines.append(f"    verdict: {_verdict_text(o, tracker.min_lead)}")
    if tracker.false_alarms:
        names = sorted(tracker.false_alarms, key=lambda k: -tracker.false_alarms[k])
        shown = ", ".join(f"{i}/{s}" for i, s in names[:6]) + (" ..." if len(names) > 6 else "")
        lines.append(f"warnings with no incident ahead: {len(names)} series ({shown})")
    judged = [o for o in outcomes if o.verdict in (PASS, FAIL)]
    failed = [o for o in outcomes if o.verdict == FAIL]
    rest = len(outcomes) - len(judged)
    if failed:
        lines.append(f"RESULT: FAIL - {len(failed)} of {len(judged)} judged incidents not predicted "
                     f"{duration(tracker.min_lead)} ahead.")
    else:
        lines.append(f"RESULT: PASS - {len(judged)} judged incident(s) predicted at least "
                     f"{duration(tracker.min_lead)} ahead" + (f"; {rest} not judged by this run" if rest else "")
                     + ".")
    return lines


def _off(delta: float) -> str:
    if abs(delta) < 60:
        return "on time"
    return f"{duration(abs(delta))} {'late' if delta > 0 else 'early'}"


def _verdict_text(o: Outcome, min_lead: float) -> str:
    if o.verdict == PASS:
        return f"PASS (warned {duration(o.lead)} ahead)"
    if o.verdict == FAIL:
        return f"FAIL ({'no warning' if o.lead is None else f'warned only {duration(o.lead)} ahead'} " \
               f"by the {duration(min_lead)} mark)"
    if o.verdict == TOO_EARLY:
        return f"not judged: its breach came less than {duration(min_lead)} after the first forecast"
    return f"not yet due: the run ended before the {duration(min_lead)} mark"


def cutoffs_from_model_json(meta: dict[str, Any]) -> dict[str, float]:
    """The per-horizon warning cut-offs a model chose on its validation slice."""
    breach = (meta.get("calibration") or {}).get("breach") or {}
    return {str(k): float(v) for k, v in (breach.get("cutoffs") or {}).items()}
