"""``tft-demo plot``: one host's forecast against what happened, as a PNG (matplotlib).

What is drawn, over the last ``hours`` and up to 8 h ahead:

* the signal as it happened (the forecaster's own PromQL, from Prometheus);
* for each horizon (30m ... 8h), the p50 forecast made that long earlier (``tft_forecast_p50
  {horizon=h}`` shifted forward by ``h``, as the Grafana drill-down shows it), and the p10-p90
  band of the 1 h horizon: where these lines leave the actual, the forecast was off;
* the latest full forecast path (p50 with its p10-p90 band) from the forecaster's API, or from
  the ``forecasts.json`` the demo saved at its last cycle;
* the signal's threshold and the ground-truth breach windows of the simulator's incidents;
* below, the breach probability per horizon over time, with the model's warning cut-offs.

Data comes from a running Prometheus (``--prometheus.url``, or the demo's while it runs). After
the demo has stopped, a temporary Prometheus is started on the demo's TSDB (``<work dir>/
prometheus/data``) for the queries and stopped again.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HORIZON_COLORS = {"30m": "tab:purple", "1h": "tab:blue", "2h": "tab:green", "4h": "tab:orange", "8h": "goldenrod"}


class PlotError(Exception):
    """Nothing to plot, or no Prometheus to read from; one line for the user."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _signals(work_dir: Path) -> tuple[Any, ...]:
    from forecaster.contract.config import DEFAULT_SIGNALS, ConfigError, load_config

    path = work_dir / "forecaster.yml"
    if path.exists():
        try:
            return load_config(path).signals
        except ConfigError:
            pass
    return DEFAULT_SIGNALS


def _client(url: str) -> Any:
    from forecaster.contract.config import PrometheusSection
    from forecaster.contract.prometheus import PrometheusClient

    return PrometheusClient(PrometheusSection(url=url, timeout_seconds=30, retries=1))


@contextlib.contextmanager
def _prometheus(url: str | None, state: dict[str, Any], work_dir: Path) -> Iterator[tuple[Any, float]]:
    """A Prometheus client and the time the data ends at: the given URL, the demo's, or a temporary one."""
    if url is not None:
        with _client(url) as client:
            if not client.ready():
                raise PlotError(f"Prometheus at {url} does not answer")
            yield client, time.time()
        return
    demo_url = (state.get("urls") or {}).get("prometheus")
    if state.get("running") and demo_url:
        with _client(demo_url) as client:
            if client.ready():
                yield client, time.time()
                return
    data = work_dir / "prometheus" / "data"
    if not data.is_dir():
        raise PlotError(f"no demo data in {work_dir} (run tft-demo first, or give --prometheus.url)")
    with _temporary_prometheus(data, work_dir) as client:
        yield client, float(state.get("updated") or time.time())


@contextlib.contextmanager
def _temporary_prometheus(data: Path, work_dir: Path) -> Iterator[Any]:
    from demo.pipeline import Child, free_port

    binary = shutil.which("prometheus")
    if binary is None:
        raise PlotError("the demo has stopped and prometheus is not installed to read its data")
    port = free_port()
    config = work_dir / "prometheus" / "plot.yml"
    config.write_text("global: {}\n")
    child = Child("prometheus-plot", [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
                                      "--storage.tsdb.retention.time=400d", f"--web.listen-address=127.0.0.1:{port}",
                                      "--log.level=warn"], work_dir / "logs" / "prometheus-plot.log").start()
    try:
        with _client(f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while not client.ready():
                if not child.alive() or time.monotonic() > deadline:
                    raise PlotError(f"could not start Prometheus on {data}: {child.tail(2)}")
                time.sleep(0.2)
            yield client
    finally:
        child.stop()


def _latest_curve(instance: str, signal: str, forecaster_url: str | None, state: dict[str, Any],
                  work_dir: Path) -> dict[str, Any] | None:
    """The newest full forecast path: from the forecaster's API if it answers, else the demo's last save."""
    import requests

    urls = [forecaster_url] if forecaster_url else []
    if state.get("running") and (state.get("urls") or {}).get("forecaster"):
        urls.append(state["urls"]["forecaster"])
    for url in urls:
        try:
            resp = requests.get(f"{url}/api/v1/forecasts", params={"instance": instance, "signal": signal}, timeout=5)
            series = resp.json()["data"]["series"]
            if series:
                return series[0]
        except (requests.RequestException, ValueError, KeyError):
            continue
    saved = _read_json(work_dir / "forecasts.json").get("series") or []
    for series in saved:
        if series.get("instance") == instance and series.get("signal") == signal:
            return series
    return None


def plot(instance: str, signal: str, out: Path | None, *, work_dir: Path = Path("runs/demo"),
         prometheus_url: str | None = None, forecaster_url: str | None = None, hours: float = 12.0) -> Path:
    """Render the PNG; returns its path. Raises :class:`PlotError` when there is nothing to draw."""
    if not 0 < hours <= 24 * 90:
        raise PlotError(f"--hours must be in (0, 2160], got {hours:g}")
    from forecaster.contract.config import HORIZON_LABELS
    from forecaster.contract.prometheus import PrometheusError

    work_dir = Path(work_dir)
    state = _read_json(work_dir / "state.json")
    signals = {s.name: s for s in _signals(work_dir)}
    if signal not in signals:
        raise PlotError(f"unknown signal {signal!r} (choose one of {', '.join(signals)})")
    sig = signals[signal]
    out = Path(out) if out is not None else Path(f"{instance}-{signal}.png")
    labels = f'instance="{instance}",signal="{signal}"'
    try:
        with _prometheus(prometheus_url, state, work_dir) as (client, end):
            start = end - hours * 3600
            step = max(60.0, math.ceil(hours * 3600 / 720 / 60) * 60)
            actual = [s for s in client.query_range(sig.query, start, end, step)
                      if s.labels.get("instance") == instance]
            if not actual:
                hosts = sorted({s.labels.get("instance", "?") for s in client.query_range(sig.query, end - 3600,
                                                                                           end, 300)})
                raise PlotError(f"no {signal} data for {instance} (hosts with data: {', '.join(hosts) or 'none'})")
            bands: dict[str, dict[str, Any]] = {}
            for q in ("p10", "p50", "p90"):
                for s in client.query_range(f"tft_forecast_{q}{{{labels}}}", start, end, step):
                    h = s.labels.get("horizon")
                    if h in HORIZON_LABELS:
                        bands.setdefault(h, {})[q] = s
            probability = {s.labels.get("horizon", ""): s for s in client.query_range(
                f"tft_breach_probability{{{labels}}}", start, end, step) if s.labels.get("horizon") in HORIZON_LABELS}
    except PrometheusError as exc:
        raise PlotError(f"Prometheus: {exc}") from exc
    latest = _latest_curve(instance, signal, forecaster_url, state, work_dir)
    incidents = [i for i in (_read_json(work_dir / "incidents.json").get("incidents") or [])
                 if i.get("instance") == instance and i.get("signal") == signal]
    _draw(out, instance, signal, sig, actual[0], bands, latest, incidents, start, end, state, probability,
          _cutoffs(state))
    return out


def _cutoffs(state: dict[str, Any]) -> dict[str, float]:
    from demo.report import cutoffs_from_model_json

    path = (state.get("model") or {}).get("path")
    return cutoffs_from_model_json(_read_json(Path(path) / "model.json")) if path else {}


def _dates(seconds: np.ndarray) -> np.ndarray:
    return np.asarray(seconds, dtype="float64").astype("datetime64[s]")


def _draw(out: Path, instance: str, signal: str, sig: Any, actual: Any, bands: dict[str, dict[str, Any]],
          latest: dict[str, Any] | None, incidents: list[dict[str, Any]], start: float, end: float,
          state: dict[str, Any], probability: dict[str, Any], cutoffs: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from forecaster.contract.config import HORIZON_LABELS

    fig, (ax, pax) = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    right = end + 8 * 3600
    for inc in incidents:
        b0, b1 = inc.get("breach_start"), inc.get("breach_end")
        if b0 is None or b0 > right or (b1 is not None and b1 < start):
            continue
        ax.axvspan(_dates(np.array([max(b0, start)]))[0], _dates(np.array([min(b1 or right, right)]))[0],
                   color="red", alpha=0.12, label=f"breach, ground truth ({inc.get('kind')})")
        if start <= inc.get("ramp_start", -math.inf) <= right:
            ax.axvline(_dates(np.array([inc["ramp_start"]]))[0], color="red", ls=":", lw=1,
                       label="incident ramp starts")
    ax.plot(_dates(actual.timestamps), actual.values, color="black", lw=1.8, label="actual (what happened)")
    for h, seconds in HORIZON_LABELS.items():
        series = bands.get(h, {})
        p50 = series.get("p50")
        if p50 is not None:
            ax.plot(_dates(p50.timestamps + seconds), p50.values, color=HORIZON_COLORS[h], lw=1, alpha=0.9,
                    marker="o" if len(p50) < 30 else None, ms=2, label=f"p50 forecast made {h} earlier")
        if h == "1h" and "p10" in series and "p90" in series and len(series["p10"]) == len(series["p90"]):
            ax.fill_between(_dates(series["p10"].timestamps + seconds), series["p10"].values, series["p90"].values,
                            color=HORIZON_COLORS[h], alpha=0.12, label="p10-p90 band, 1h ahead")
    threshold = sig.threshold
    if latest is not None and latest.get("p50"):
        origin = float(latest.get("origin_unix") or 0.0)
        step = float(latest.get("step_seconds") or 300)
        n = len(latest["p50"])
        times = _dates(origin + step * np.arange(1, n + 1))
        p50 = np.array([np.nan if v is None else v for v in latest["p50"]], dtype=float)
        p10 = np.array([np.nan if v is None else v for v in latest.get("p10") or [None] * n], dtype=float)
        p90 = np.array([np.nan if v is None else v for v in latest.get("p90") or [None] * n], dtype=float)
        made = str(latest.get("made_at", ""))[11:16]
        ax.fill_between(times, p10, p90, color="tab:cyan", alpha=0.25, label=f"latest forecast p10-p90 ({made} UTC)")
        ax.plot(times, p50, color="tab:cyan", lw=2.2, ls="--", label="latest forecast p50")
        if latest.get("threshold") is not None:
            threshold = latest["threshold"]
    ax.axhline(threshold, color="red", ls="--", lw=1.2, label=f"threshold {threshold:g}")
    ax.axvline(_dates(np.array([end]))[0], color="grey", lw=1, label="now" if state.get("running") else "end of data")
    if sig.min is not None and sig.max is not None:
        ax.set_ylim(sig.min, sig.max * 1.02)
    ax.set_xlim(_dates(np.array([start]))[0], _dates(np.array([right]))[0])
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    for h in HORIZON_LABELS:
        series = probability.get(h)
        if series is None:
            continue
        pax.plot(_dates(series.timestamps), series.values, color=HORIZON_COLORS[h], lw=1.2,
                 marker="o" if len(series) < 30 else None, ms=2, label=f"P(breach within {h})")
        if h in cutoffs:
            pax.axhline(cutoffs[h], color=HORIZON_COLORS[h], ls=":", lw=1)
    pax.axvline(_dates(np.array([end]))[0], color="grey", lw=1)
    pax.set_ylim(0, 1.02)
    pax.set_ylabel("breach probability")
    pax.grid(alpha=0.3)
    if probability:
        pax.legend(loc="upper left", fontsize=7, ncol=5, framealpha=0.85,
                   title="dotted: the model's warning cut-off per horizon" if cutoffs else None, title_fontsize=7)
    pax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    pax.set_xlabel("time (UTC)")
    ax.set_ylabel(f"{signal} ({sig.unit})")
    model = (state.get("model") or {}).get("version")
    ax.set_title(f"{instance} {signal}: forecast against what happened" + (f"  (model {model})" if model else ""))
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=7, ncol=2, framealpha=0.85)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
