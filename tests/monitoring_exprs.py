"""Extract every PromQL expression from the dashboards and rule files, and the metric names in them.

Shared by the static checks (tests/test_grafana.py) and the live run against a real
Prometheus (tests/test_promql_live.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
RULES = ROOT / "prometheus" / "rules"
GRAFANA_RULES = PROVISIONING / "alerting" / "tft-alert-rules.yml"
EXPR_DATASOURCE = "__expr__"


@dataclass(frozen=True)
class Expr:
    where: str  # human-readable origin, for failure messages
    expr: str
    instant: bool = False  # the panel asks for an instant query


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<sel>.+?)\s*,\s*(?P<label>[a-zA-Z_]\w*)\s*\)\s*$")


def variable_selector(query: str) -> str | None:
    """The series selector of a ``label_values(selector, label)`` variable query."""
    m = _LABEL_VALUES.match(query)
    return m.group("sel") if m else None


def dashboard_exprs(name: str, dash: dict[str, Any]) -> list[Expr]:
    out: list[Expr] = []
    for p in iter_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append(Expr(f"{name} panel {p['id']} {p['title']!r} {t['refId']}", t["expr"],
                                bool(t.get("instant"))))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            sel = variable_selector(q)
            assert sel is not None, f"{name} variable {v['name']}: only label_values(selector, label) is used"
            out.append(Expr(f"{name} variable {v['name']}", sel, True))
    return out


def all_dashboard_exprs() -> list[Expr]:
    return [e for name, dash in load_dashboards().items() for e in dashboard_exprs(name, dash)]


def annotation_exprs() -> list[Expr]:
    """The PromQL annotations of every dashboard (events: they return series only while one happens)."""
    return [Expr(f"{name} annotation {a['name']!r}", a["expr"])
            for name, dash in load_dashboards().items()
            for a in dash.get("annotations", {}).get("list", []) if "expr" in a]


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.rules.yml"))


def prometheus_rules() -> list[dict[str, Any]]:
    rules = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                rules.append({**rule, "_file": path.name, "_group": group["name"]})
    return rules


def prometheus_rule_exprs() -> list[Expr]:
    return [Expr(f"{r['_file']} {r.get('alert') or r.get('record')}", r["expr"], True) for r in prometheus_rules()]


def grafana_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(GRAFANA_RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def grafana_rule_exprs() -> list[Expr]:
    out = []
    for rule in grafana_rules():
        for d in rule["data"]:
            if d["datasourceUid"] != EXPR_DATASOURCE:
                out.append(Expr(f"grafana rule {rule['title']} {d['refId']}", d["model"]["expr"], True))
    return out


def recorded_names() -> set[str]:
    return {r["record"] for r in prometheus_rules() if "record" in r}


# ---- substitution of Grafana variables ------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$var``/``${var}`` (including ``$__rate_interval`` and friends) from ``values``."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no test value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(repl, expr)


def grafana_variables(expr: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _VAR.finditer(expr)}


# ---- metric names in an expression ----------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MODIFIER = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\w)")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a lexer-level approximation, enough for our rules)."""
    text = _VAR.sub("1m", expr)
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _MODIFIER.sub(" ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    names = set()
    for m in _IDENT.finditer(text):
        name = m.group(1)
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue
        if re.fullmatch(r"\d*[eE]\d+", name):
            continue
        names.add(name)
    return names
