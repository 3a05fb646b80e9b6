"""deploy/kubernetes/: the kustomize base and the demo overlay, rendered with ``kubectl kustomize``
and checked offline (no cluster): every built-in object against the Kubernetes API schemas that
kubernetes-validate bundles (strict: an unknown field is an error), the Prometheus Operator objects
against the required fields and types of their CRDs, and what the deployment promises: hardened
pods, probes, resources, the trainer's schedule, the scrape job the alert rules select, rules equal
to prometheus/rules/ and every dashboard for Grafana's sidecar.

Each check is a function returning the problems it finds, so the tests at the end can prove that
removing a probe, a label or a security setting from the rendered objects is caught.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from forecaster.contract.config import parse_config
from monitoring.files import KUBERNETES_RULE_LABELS, with_datasource
from monitoring.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl")
#: The oldest Kubernetes version the objects are validated against: the first in which everything
#: they use is GA (CronJob.spec.timeZone since 1.27, Job.spec.podFailurePolicy since 1.31). They are
#: also validated against the newest version the installed kubernetes-validate bundles.
K8S_VERSION = "1.31"
MONITORING_GROUP = "monitoring.coreos.com"
#: The limit of ``kubectl apply``'s last-applied-configuration annotation (client-side apply).
ANNOTATION_LIMIT = 262144

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (needed for kubectl kustomize)")


def render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S)


@pytest.fixture(scope="module")
def demo() -> list[dict[str, Any]]:
    return render(K8S / "overlays" / "demo")


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield f"CronJob/{o['metadata']['name']}", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


_UNITS = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "1", "1536Mi", "2Gi") as a number (cores or bytes)."""
    m = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi|Ti)?", str(text))
    assert m, f"not a quantity: {text!r}"
    return float(m.group(1)) * _UNITS[m.group(2) or ""]


# --- schemas of the Prometheus Operator objects (kubernetes-validate has none for CRDs) ------------------------

_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                         r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {"type": "object", "properties": {"matchLabels": _STRING_MAP, "matchExpressions": {"type": "array"}},
                   "additionalProperties": False}
_METADATA = {"type": "object", "required": ["name"],
             "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"},
                            "labels": _STRING_MAP, "annotations": _STRING_MAP}}
_RELABEL = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"}, "targetLabel": {"type": "string"}, "regex": {"type": "string"},
        "modulus": {"type": "integer"}, "replacement": {"type": "string"},
        "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap",
                            "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase",
                            "uppercase", "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
    },
}
_ENDPOINT = {
    "type": "object", "required": ["port"], "additionalProperties": False,
    "properties": {
        "port": {"type": "string", "minLength": 1}, "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https"]},
        "params": {"type": "object"}, "interval": _DURATION, "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"}, "honorTimestamps": {"type": "boolean"},
        "trackTimestampsStaleness": {"type": "boolean"}, "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL}, "tlsConfig": {"type": "object"},
        "bearerTokenFile": {"type": "string"}, "bearerTokenSecret": {"type": "object"},
        "authorization": {"type": "object"}, "basicAuth": {"type": "object"}, "oauth2": {"type": "object"},
        "proxyUrl": {"type": "string"}, "noProxy": {"type": "string"}, "proxyFromEnvironment": {"type": "boolean"},
        "proxyConnectHeader": {"type": "object"}, "followRedirects": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"}, "filterRunning": {"type": "boolean"},
    },
}
_RULE = {
    "type": "object", "required": ["expr"], "additionalProperties": False,
    "oneOf": [{"required": ["record"], "not": {"required": ["alert"]}},
              {"required": ["alert"], "not": {"required": ["record"]}}],
    "properties": {
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"}, "alert": {"type": "string"},
        "expr": {"type": ["string", "integer"], "minLength": 1}, "for": _DURATION, "keep_firing_for": _DURATION,
        "labels": _STRING_MAP, "annotations": _STRING_MAP,
    },
}
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"}, "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT}, "selector": _LABEL_SELECTOR,
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "sampleLimit": {"type": "integer", "minimum": 0}, "targetLimit": {"type": "integer", "minimum": 0},
                "scrapeProtocols": {"type": "array"}, "labelLimit": {"type": "integer"},
                "labelNameLengthLimit": {"type": "integer"}, "labelValueLengthLimit": {"type": "integer"},
                "keepDroppedTargets": {"type": "integer"}, "attachMetadata": {"type": "object"},
                "scrapeClass": {"type": "string", "minLength": 1}, "bodySizeLimit": {"type": "string"},
            }}},
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["groups"], "additionalProperties": False,
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                "properties": {"name": {"type": "string", "minLength": 1}, "interval": _DURATION,
                               "query_offset": _DURATION, "limit": {"type": "integer"}, "labels": _STRING_MAP,
                               "partial_response_strategy": {"type": "string"},
                               "rules": {"type": "array", "minItems": 1, "items": _RULE}}}}}}},
    },
    ("monitoring.coreos.com/v1alpha1", "ScrapeConfig"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object",
            "properties": {
                "jobName": {"type": "string", "minLength": 1},
                "httpSDConfigs": {"type": "array", "items": {
                    "type": "object", "required": ["url"],
                    "properties": {"url": {"type": "string", "pattern": "^http(s)?://.+$"},
                                   "refreshInterval": _DURATION}}},
                "staticConfigs": {"type": "array", "items": {
                    "type": "object", "required": ["targets"],
                    "properties": {"targets": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                                   "labels": _STRING_MAP}}},
                "metricsPath": {"type": "string", "minLength": 1}, "scrapeInterval": _DURATION,
                "scrapeTimeout": _DURATION, "honorLabels": {"type": "boolean"},
                "relabelings": {"type": "array", "minItems": 1, "items": _RELABEL},
                "metricRelabelings": {"type": "array", "minItems": 1, "items": _RELABEL},
                "scheme": {"enum": ["HTTP", "HTTPS"]},
            }}},
    },
}


def schema_problems(objs: list[dict[str, Any]], version: str = K8S_VERSION) -> list[str]:
    """Every object against its schema: Kubernetes' own (strict) or the CRD schemas above."""
    import kubernetes_validate

    problems = []
    for o in objs:
        what = f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"
        try:
            if o["apiVersion"].split("/")[0] == MONITORING_GROUP:
                schema = CRD_SCHEMAS.get((o["apiVersion"], o["kind"]))
                if schema is None:
                    problems.append(f"{what}: no schema for {o['apiVersion']} {o['kind']} in this test")
                    continue
                jsonschema.validate(o, schema)
            else:
                kubernetes_validate.validate(o, version, strict=True)
        except jsonschema.ValidationError as exc:  # kubernetes_validate.ValidationError is one too
            problems.append(f"{what}: {'.'.join(map(str, exc.absolute_path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{what}: {exc.message}")
    return problems


# --- the deployment's promises ---------------------------------------------------------------------------------

def image_uid() -> int:
    m = re.search(r"useradd\b[^\n]*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert m, "Dockerfile: no useradd --uid"
    return int(m.group(1))


def hardening_problems(objs: list[dict[str, Any]]) -> list[str]:
    """Non-root as the image's user, no privilege, read-only root, seccomp, resources, probes on servers."""
    uid, problems = image_uid(), []
    for what, spec in pod_specs(objs):
        pod = spec.get("securityContext", {})
        if pod.get("runAsNonRoot") is not True or pod.get("runAsUser") != uid:
            problems.append(f"{what}: not runAsNonRoot as the image's uid {uid}")
        if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{what}: no RuntimeDefault seccomp profile")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{what}: mounts a service account token it does not need")
        emptydirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in containers(spec):
            where, sc = f"{what} container {c['name']}", c.get("securityContext", {})
            if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
                problems.append(f"{where}: may run as root")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities not dropped (drop: [ALL])")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            res = c.get("resources", {})
            for kind in ("cpu", "memory"):
                req, lim = res.get("requests", {}).get(kind), res.get("limits", {}).get(kind)
                if req is None or lim is None:
                    problems.append(f"{where}: no {kind} request and limit")
                elif quantity(req) > quantity(lim):
                    problems.append(f"{where}: {kind} request {req} above its limit {lim}")
            server = c in spec["containers"] and c.get("ports")
            if server and ("livenessProbe" not in c or "readinessProbe" not in c):
                problems.append(f"{where}: serves HTTP without liveness and readiness probes")
            # A read-only root needs a writable /tmp (Python's tempfile, library caches under HOME=/tmp).
            if c in spec["containers"] and not any(m["mountPath"] == "/tmp" and m["name"] in emptydirs
                                                   for m in c.get("volumeMounts", [])):
                problems.append(f"{where}: no emptyDir on /tmp")
    return problems


def http_probe(c: dict[str, Any], probe: str) -> tuple[str, Any] | None:
    get = c.get(probe, {}).get("httpGet")
    return (get["path"], get["port"]) if get else None


def forecaster_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems = []
    dep = one(objs, "Deployment", "tft-forecaster")
    spec = dep["spec"]["template"]["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == "forecaster"]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http-metrics") != 8921:
        problems.append("forecaster: no container port http-metrics 8921")
    if http_probe(c, "livenessProbe") != ("/-/healthy", "http-metrics"):
        problems.append("forecaster: liveness probe is not GET /-/healthy")
    if http_probe(c, "readinessProbe") != ("/-/ready", "http-metrics"):
        problems.append("forecaster: readiness probe is not GET /-/ready")
    if dep["spec"].get("replicas") != 1 or dep["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.append("forecaster: not one replica replaced with Recreate (ReadWriteOnce registry)")
    # BENCHMARKS.md: 1,101 MB peak RSS for 1,000 hosts x 4 signals, the size the defaults are for.
    if quantity(c["resources"]["requests"]["memory"]) < 1101 * 10**6:
        problems.append("forecaster: memory request below the measured 1.1 GB for 1,000 hosts x 4 signals")
    svc = one(objs, "Service", "tft-forecaster")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    if not svc["spec"]["selector"].items() <= pod_labels.items():
        problems.append("forecaster Service: selector does not match the pods")
    if {(p["name"], p["port"]) for p in svc["spec"]["ports"]} != {("http-metrics", 8921)}:
        problems.append("forecaster Service: not port 8921 named http-metrics")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    config = parse_config(config_file(objs, spec, mounts), "config.yml")
    registry = mounts.get(str(config.forecaster.registry_dir))
    if registry is None or registry.get("readOnly") is not True:
        problems.append("forecaster: forecaster.registry_dir is not the registry volume, mounted read-only")
    return problems


def config_file(objs: list[dict[str, Any]], spec: dict[str, Any], mounts: dict[str, Any]) -> dict[str, Any]:
    """The config file a pod reads (--config.file /etc/tft-monitor/config.yml), from its ConfigMap."""
    volume = next(v for v in spec["volumes"] if v["name"] == mounts["/etc/tft-monitor"]["name"])
    return yaml.safe_load(one(objs, "ConfigMap", volume["configMap"]["name"])["data"]["config.yml"])


def env_values(objs: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    values = {}
    for e in c.get("env", []):
        if "value" in e:
            values[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["configMapKeyRef"]
            values[e["name"]] = one(objs, "ConfigMap", ref["name"])["data"][ref["key"]]
    return values


def trainer_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems = []
    cron = one(objs, "CronJob", "tft-trainer")
    if cron["spec"].get("concurrencyPolicy") != "Forbid":
        problems.append("trainer: concurrencyPolicy is not Forbid")
    docs_cron = re.search(r"^(\S+ \S+ \S+ \S+ \S+) cd /opt/tft-monitor && tft-trainer",
                          (ROOT / "docs" / "OPERATIONS.md").read_text(), re.M)
    if not docs_cron or cron["spec"]["schedule"] != docs_cron.group(1):
        problems.append("trainer: schedule differs from the crontab line of docs/OPERATIONS.md")
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if not isinstance(cron["spec"].get(key), int):
            problems.append(f"trainer: no {key}")
    job = cron["spec"]["jobTemplate"]["spec"]
    if not isinstance(job.get("backoffLimit"), int) or not isinstance(job.get("activeDeadlineSeconds"), int):
        problems.append("trainer: no backoffLimit or activeDeadlineSeconds")
    spec = job["template"]["spec"]
    (c,) = spec["containers"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    emptydirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    config = parse_config(config_file(objs, spec, mounts), "config.yml")
    registry = mounts.get(str(config.trainer.registry_dir))
    if registry is None or registry.get("readOnly"):
        problems.append("trainer: trainer.registry_dir (promoted models, trainer_metrics.prom) is not writable")
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v}
    fspec = one(objs, "Deployment", "tft-forecaster")["spec"]["template"]["spec"]
    fclaims = {v["persistentVolumeClaim"]["claimName"] for v in fspec["volumes"] if "persistentVolumeClaim" in v}
    claim = claims.get(registry["name"]) if registry else None
    if claim is None or claim not in fclaims:
        problems.append("trainer: the registry is not the claim the forecaster reads")
    elif "ReadWriteMany" not in one(objs, "PersistentVolumeClaim", claim)["spec"]["accessModes"]:
        affinity = spec.get("affinity", {}).get("podAffinity", {})
        terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        flabels = one(objs, "Deployment", "tft-forecaster")["spec"]["template"]["metadata"]["labels"]
        if not any(t["topologyKey"] == "kubernetes.io/hostname"
                   and t["labelSelector"]["matchLabels"].items() <= flabels.items() for t in terms):
            problems.append("trainer: a ReadWriteOnce registry without affinity to the forecaster's node")
    # The work directory (runs/train: checkpoints, Lightning's logs) is relative to workingDir.
    work = mounts.get(c.get("workingDir", ""))
    if work is None or work["name"] not in emptydirs:
        problems.append("trainer: workingDir is not a writable emptyDir")
    return problems


def selected_service(objs: list[dict[str, Any]], sm: dict[str, Any]) -> dict[str, Any] | None:
    services = [s for s in find(objs, "Service")
                if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
    return services[0] if len(services) == 1 else None


def job_label(objs: list[dict[str, Any]], sm: dict[str, Any]) -> str | None:
    """The `job` label a ServiceMonitor gives its targets: the jobLabel's value on the Service, else its name."""
    svc = selected_service(objs, sm)
    if svc is None:
        return None
    return svc["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""), svc["metadata"]["name"])


def monitoring_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems = []
    sm = one(objs, "ServiceMonitor", "tft-forecaster")
    svc = selected_service(objs, sm)
    if svc is None or svc["spec"]["selector"] != one(objs, "Deployment", "tft-forecaster")["spec"]["selector"][
            "matchLabels"]:
        return ["ServiceMonitor tft-forecaster: does not select the forecaster's Service (exactly one)"]
    ports = {p["name"] for p in svc["spec"]["ports"]}
    endpoints = sm["spec"]["endpoints"]
    if not endpoints or any(e["port"] not in ports for e in endpoints):
        problems.append("ServiceMonitor tft-forecaster: an endpoint names no port of the Service")
    if not all(e.get("honorLabels") is True for e in endpoints):
        problems.append("ServiceMonitor tft-forecaster: honorLabels is not true (forecasts would lose `instance`)")
    wanted = re.fullmatch(r'job="([^"]+)"', SETTINGS.forecaster_selector)
    assert wanted, SETTINGS.forecaster_selector
    if job_label(objs, sm) != wanted.group(1):
        problems.append(f"ServiceMonitor tft-forecaster: job label is not {wanted.group(1)} (forecaster_selector)")
    release = KUBERNETES_RULE_LABELS["release"]
    for o in objs:
        labels = o["metadata"].get("labels", {})
        if o["apiVersion"].split("/")[0] == MONITORING_GROUP and labels.get("release") != release:
            problems.append(f"{o['kind']}/{o['metadata']['name']}: no release={release} label for the selectors")
    return problems


def rule_groups() -> list[dict[str, Any]]:
    """The groups of the committed prometheus/rules/*.rules.yml, in the generator's order."""
    names = ("tft-signals", "tft-accuracy", "tft-alerts")
    return [g for n in names
            for g in yaml.safe_load((ROOT / "prometheus" / "rules" / f"{n}.rules.yml").read_text())["groups"]]


def dashboard_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems = []
    sidecar = [o for o in find(objs, "ConfigMap") if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    deployed: dict[str, Any] = {}
    for cm in sidecar:
        for text in cm["data"].values():
            dash = json.loads(text)
            deployed[dash["uid"]] = dash
        if len(json.dumps(cm)) >= ANNOTATION_LIMIT:
            problems.append(f"ConfigMap/{cm['metadata']['name']}: too large for kubectl apply's annotation")
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        if dash["uid"] not in deployed:
            problems.append(f"dashboard {dash['uid']}: in no ConfigMap labelled grafana_dashboard=1")
        elif deployed[dash["uid"]] != with_datasource(dash, SETTINGS.kubernetes_datasource_uid):
            problems.append(f"dashboard {dash['uid']}: differs from grafana/dashboards/{path.name}")
    return problems


# --- tests -----------------------------------------------------------------------------------------------------

def test_every_object_validates_offline(base: list[dict[str, Any]], demo: list[dict[str, Any]]) -> None:
    assert {o["kind"] for o in base} == {"Namespace", "ConfigMap", "Service", "PersistentVolumeClaim", "Deployment",
                                          "CronJob", "ServiceMonitor", "PrometheusRule"}
    import kubernetes_validate

    for version in (K8S_VERSION, kubernetes_validate.latest_version()):
        assert schema_problems(base, version) == []
        assert schema_problems(demo, version) == []


def test_the_validators_reject_mistakes(base: list[dict[str, Any]]) -> None:
    """The validation is not vacuous: a misspelt field, a wrong type, a rule without expr all fail."""
    objs = copy.deepcopy(base)
    one(objs, "Deployment", "tft-forecaster")["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    one(objs, "CronJob", "tft-trainer")["spec"]["concurrencyPolicy"] = 1
    one(objs, "ServiceMonitor", "tft-forecaster")["spec"]["endpoints"][0]["honorLabels"] = "true"
    del one(objs, "PrometheusRule", "tft-monitor")["spec"]["groups"][0]["rules"][0]["expr"]
    problems = schema_problems(objs)
    assert len(problems) == 4, problems


def test_pods_are_hardened(base: list[dict[str, Any]], demo: list[dict[str, Any]]) -> None:
    assert len(list(pod_specs(demo))) == 3
    (ns,) = find(base, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert hardening_problems(base) == []
    assert hardening_problems(demo) == []


def test_forecaster(base: list[dict[str, Any]]) -> None:
    assert forecaster_problems(base) == []


def test_trainer(base: list[dict[str, Any]]) -> None:
    assert trainer_problems(base) == []


def test_commands_parse(base: list[dict[str, Any]]) -> None:
    """The containers' command lines are accepted by the commands' own parsers, with every $(VAR) defined."""
    from forecaster.cli import _parser as forecaster_parser
    from trainer.cli import _parser as trainer_parser

    spec = one(base, "Deployment", "tft-forecaster")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = env_values(base, c)
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["args"]]
    parsed = forecaster_parser().parse_args(args)
    assert parsed.prometheus_url == env["PROMETHEUS_URL"].strip() and str(parsed.config_file).endswith("config.yml")
    (t,) = one(base, "CronJob", "tft-trainer")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert t["command"] == ["/bin/sh", "-c"]
    (line,) = [ln for ln in t["args"][0].splitlines() if ln.startswith("tft-trainer ")]
    argv = shlex.split(line.removesuffix("&").replace("$PROMETHEUS_URL", env_values(base, t)["PROMETHEUS_URL"]))[1:]
    parsed = trainer_parser().parse_args(argv)
    assert parsed.prometheus_url == env["PROMETHEUS_URL"]
    assert re.match(r"^https?://[^\s/]+", env["PROMETHEUS_URL"])


def test_images_are_the_projects(base: list[dict[str, Any]], demo: list[dict[str, Any]]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image = compose["x-tft-image"]["image"]
    for what, spec in pod_specs(demo):
        assert {c["image"] for c in containers(spec)} == {image}, what


def test_scrape_and_rules_for_the_prometheus_operator(base: list[dict[str, Any]], demo: list[dict[str, Any]]) -> None:
    assert monitoring_problems(base) == []
    assert monitoring_problems(demo) == []


def test_prometheus_rule_holds_the_generated_rule_files(base: list[dict[str, Any]]) -> None:
    (rule,) = find(base, "PrometheusRule")
    assert rule["metadata"]["labels"].items() >= KUBERNETES_RULE_LABELS.items()
    assert rule["spec"]["groups"] == rule_groups()


def test_dashboards_for_the_grafana_sidecar(base: list[dict[str, Any]]) -> None:
    assert dashboard_problems(base) == []
    names = [o["metadata"]["name"] for o in find(base, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]
    assert sorted(names) == ["tft-dashboard-fleet", "tft-dashboard-health", "tft-dashboard-host"]  # no name hash


def test_demo_scrapes_the_simulator_like_prometheus_yml(demo: list[dict[str, Any]]) -> None:
    svc = one(demo, "Service", "tft-exporter")
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {("http-metrics", 8920)}
    address = f"tft-exporter.{svc['metadata']['namespace']}.svc:8920"
    sc = one(demo, "ScrapeConfig", "tft-simulator")["spec"]
    assert [h["url"] for h in sc["httpSDConfigs"]] == [f"http://{address}/sd"]
    (job,) = [j for j in yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
              if j["job_name"] == "tft-simulator"]
    assert sc["metricsPath"] == job["metrics_path"]
    expected = [{k: v for k, v in (("sourceLabels", r.get("source_labels")), ("targetLabel", r.get("target_label")),
                                    ("replacement", r.get("replacement"))) if v is not None}
                for r in job["relabel_configs"]]
    expected[-1]["replacement"] = address  # exporter:8920 in docker-compose
    assert sc["relabelings"][:len(expected)] == expected
    sm = one(demo, "ServiceMonitor", "tft-exporter")
    assert job_label(demo, sm) == "tft-exporter"
    (c,) = one(demo, "Deployment", "tft-exporter")["spec"]["template"]["spec"]["containers"]
    assert http_probe(c, "readinessProbe") == ("/-/ready", "http-metrics")
    base_names = {(o["kind"], o["metadata"]["name"]) for o in render(K8S)}
    assert base_names < {(o["kind"], o["metadata"]["name"]) for o in demo}


# Removing what a check guards must make it fail (the checks above are not vacuous).
BREAKS = [
    ("readiness probe", forecaster_problems,
     lambda o: one(o, "Deployment", "tft-forecaster")["spec"]["template"]["spec"]["containers"][0].pop(
         "readinessProbe")),
    ("liveness probe", hardening_problems,
     lambda o: one(o, "Deployment", "tft-forecaster")["spec"]["template"]["spec"]["containers"][0].pop(
         "livenessProbe")),
    ("runAsNonRoot", hardening_problems,
     lambda o: one(o, "CronJob", "tft-trainer")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
         "securityContext"].pop("runAsNonRoot")),
    ("readOnlyRootFilesystem", hardening_problems,
     lambda o: one(o, "Deployment", "tft-forecaster")["spec"]["template"]["spec"]["initContainers"][0][
         "securityContext"].update(readOnlyRootFilesystem=False)),
    ("allowPrivilegeEscalation", hardening_problems,
     lambda o: one(o, "CronJob", "tft-trainer")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][
         0]["securityContext"].pop("allowPrivilegeEscalation")),
    ("memory limit", hardening_problems,
     lambda o: one(o, "Deployment", "tft-forecaster")["spec"]["template"]["spec"]["containers"][0]["resources"][
         "limits"].pop("memory")),
    ("concurrencyPolicy", trainer_problems,
     lambda o: one(o, "CronJob", "tft-trainer")["spec"].update(concurrencyPolicy="Allow")),
    ("trainer affinity", trainer_problems,
     lambda o: one(o, "CronJob", "tft-trainer")["spec"]["jobTemplate"]["spec"]["template"]["spec"].pop("affinity")),
    ("honorLabels", monitoring_problems,
     lambda o: one(o, "ServiceMonitor", "tft-forecaster")["spec"]["endpoints"][0].pop("honorLabels")),
    ("jobLabel, under a name prefix", monitoring_problems,
     lambda o: (one(o, "ServiceMonitor", "tft-forecaster")["spec"].pop("jobLabel"),
                one(o, "Service", "tft-forecaster")["metadata"].update(name="prod-tft-forecaster"))),
    ("release label", monitoring_problems,
     lambda o: one(o, "PrometheusRule", "tft-monitor")["metadata"]["labels"].pop("release")),
    ("grafana_dashboard label", dashboard_problems,
     lambda o: one(o, "ConfigMap", "tft-dashboard-host")["metadata"]["labels"].pop("grafana_dashboard")),
]


@pytest.mark.parametrize(("what", "check", "breaks"), BREAKS, ids=[b[0] for b in BREAKS])
def test_a_removed_guarantee_is_caught(base: list[dict[str, Any]], what: str, check: Any, breaks: Any) -> None:
    objs = copy.deepcopy(base)
    assert check(objs) == []
    breaks(objs)
    assert check(objs), f"removing the {what} went unnoticed"
