"""The live terminal view: hosts ranked by predicted breach, the scripted incidents, where to look.

:func:`render` is a pure function from a :class:`Frame` (what the demo read after one cycle)
to text, so the same frame can be drawn on a terminal (cleared and redrawn every cycle, with
colour) or printed into a log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from demo.report import Prediction, Tracker, clock, duration
from forecaster.contract.config import HORIZON_LABELS

RESET, BOLD, DIM, RED, YELLOW, GREEN = "\x1b[0m", "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[33m", "\x1b[32m"
CLEAR = "\x1b[H\x1b[2J"


@dataclass
class Frame:
    now: float
    cycle: int
    interval: int
    hosts: int
    scenario: str
    model: dict[str, Any]
    predictions: dict[tuple[str, str], Prediction]
    thresholds: dict[tuple[str, str], float]
    current: dict[tuple[str, str], float]
    tracker: Tracker
    alerts: list[dict[str, str]] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    remaining: float | None = None  # seconds left with --for
    breaches: int = 0  # entries of the forecaster's /api/v1/breaches


def rank(predictions: dict[tuple[str, str], Prediction]) -> list[tuple[tuple[str, str], Prediction]]:
    """Warned series first: the soonest predicted crossing (p50 path, else p90), then the shortest
    horizon whose breach probability reaches the model's cut-off; then the highest probability."""
    order = {label: n for n, label in enumerate(HORIZON_LABELS)}

    def key(item: tuple[tuple[str, str], Prediction]) -> tuple[bool, float, int, float, str, str]:
        (instance, signal), p = item
        etas = [e for e in (p.eta_p50, p.eta_p90) if e is not None]
        return (not p.warned, min(etas) if etas else math.inf, order.get(p.warn_horizon or "", 99),
                -max(p.probability.values(), default=0.0), instance, signal)

    return sorted(predictions.items(), key=key)


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{RESET}" if color and style else text


def _prob(p: Prediction, label: str) -> str:
    v = p.probability.get(label)
    return "-" if v is None else f"{v:.2f}"


def model_line(model: dict[str, Any]) -> str:
    if not model:
        return "model: (unknown)"
    if model.get("source") == "fallback":
        return f"model: FALLBACK (seasonal naive, no incident predictions): {model.get('fallback_reason')}"
    return f"model: {model.get('scope', 'global')} version {model.get('version')} (trained {model.get('trained_at')})"


def render(frame: Frame, width: int = 120, height: int = 40, color: bool = False) -> str:
    lines: list[str] = []
    left = f"   {duration(frame.remaining)} left" if frame.remaining is not None else ""
    lines.append(_paint(f"tft-demo: {frame.hosts} simulated hosts ({frame.scenario})   {clock(frame.now)} UTC   "
                        f"cycle {frame.cycle}, every {frame.interval}s{left}", BOLD, color))
    lines.append(model_line(frame.model))
    lines.append("")
    scripted = {(o.incident.instance, o.incident.signal): o for o in frame.tracker.outcomes()}
    ranked = rank(frame.predictions)
    incident_rows = len(scripted) + 3
    room = max(5, height - 16 - incident_rows)
    header = f"{'HOST':<12} {'SIGNAL':<11} {'NOW':>6} {'LIMIT':>6} {'ETA p50':>8} {'ETA p90':>8} " \
             f"{'P(1h)':>6} {'P(8h)':>6}  {'BREACH AT':>9}  {'WARNING':<22} NOTE"
    lines.append(_paint(header, BOLD, color))
    quiet = 0
    for n, ((instance, signal), p) in enumerate(ranked):
        predicted = p.eta_p50 is not None or p.eta_p90 is not None or p.warned
        if n >= room or (not predicted and n >= 5):
            quiet += 1
            continue
        now = frame.current.get((instance, signal))
        limit = frame.thresholds.get((instance, signal))
        note = ""
        outcome = scripted.get((instance, signal))
        if outcome is not None:
            inc = outcome.incident
            note = f"{inc.kind} {'since' if inc.breach_start <= frame.now else 'at'} {clock(inc.breach_start, False)}"
        elif p.warned:
            note = "(no scripted incident)"
        eta = p.eta_p50 if p.eta_p50 is not None else p.eta_p90
        soon = (eta is not None and eta <= 3600) or p.warn_horizon in ("30m", "1h")
        style = RED if soon else (YELLOW if predicted else "")
        at = clock(p.breach_at, False)
        if p.breach_at is None and p.warn_horizon is not None:  # likely within the horizon: by then
            at = "by " + clock(p.made_at + HORIZON_LABELS[p.warn_horizon], False)
        row = f"{instance:<12} {signal:<11} {_num(now):>6} {_num(limit):>6} {duration(p.eta_p50):>8} " \
              f"{duration(p.eta_p90):>8} {_prob(p, '1h'):>6} {_prob(p, '8h'):>6}  {at:>9}  " \
              f"{_short(p.reasons[0]) if p.reasons else '':<22} {note}"
        lines.append(_paint(row[:width], style, color))
    if quiet:
        lines.append(_paint(f"... {quiet} more series with no breach predicted within 8h", DIM, color))
    lines.append("")
    lines.append(_paint("Scripted incidents (ground truth) and the first warning:", BOLD, color))
    if not scripted:
        lines.append("  none in this scenario")
    for outcome in frame.tracker.outcomes():
        inc = outcome.incident
        until = inc.breach_start - frame.now
        when = f"in {duration(until)}" if until > 0 else "in breach now" if (
            inc.breach_end is None or frame.now < inc.breach_end) else "over"
        if outcome.first_warning is not None:
            w = outcome.first_warning
            warned = f"first warning {clock(w.made_at)}, {duration(outcome.lead)} ahead ({w.reasons[0]})"
            style = GREEN if (outcome.lead or 0) >= frame.tracker.min_lead else YELLOW
        else:
            warned, style = "no warning yet", (RED if until < frame.tracker.min_lead else "")
        lines.append(_paint(f"  {inc.name:<34} breach {clock(inc.breach_start)} ({when}): {warned}"[:width],
                            style, color))
    firing = sorted({f"{a.get('alertname')} {a.get('instance')}/{a.get('signal')}" for a in frame.alerts})
    lines.append("")
    lines.append("Prometheus alerts firing: " + (", ".join(firing) if firing else "none")[: width - 26])
    if frame.urls:
        lines.append("")
        lines.append(f"Prometheus  {frame.urls.get('prometheus', '')}/alerts   graph: "
                     f"{frame.urls.get('prometheus', '')}/graph?g0.expr=tft_forecast_p50")
        lines.append(f"Forecaster  {frame.urls.get('forecaster', '')}/api/v1/breaches   "
                     f"Simulator  {frame.urls.get('exporter', '')}/incidents")
        if frame.urls.get("grafana"):
            lines.append(f"Grafana     {frame.urls['grafana']}")
    lines.append(_paint("Ctrl-C stops everything the demo started.", DIM, color))
    return "\n".join(lines)


def _short(reason: str) -> str:
    return reason.replace(" path crosses in ", " path ").replace(" >= ", ">=")


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}"


def cycle_line(frame: Frame) -> str:
    """One line per cycle for logs and ``--for`` runs."""
    warned = [(k, p) for k, p in rank(frame.predictions) if p.warned]
    shown = ", ".join(f"{i}/{s} {p.reasons[0]}" for (i, s), p in warned[:3])
    more = f" (+{len(warned) - 3} more)" if len(warned) > 3 else ""
    return (f"{clock(frame.now)} cycle {frame.cycle}: {len(frame.predictions)} series forecast, "
            f"{frame.breaches} predicted breach(es), {len(warned)} warning(s)"
            f"{': ' + shown + more if warned else ''}")
