"""deploy/k8s: every manifest validates against the Kubernetes schemas, and the manifests keep the promises
of docs/kubernetes.md (security context, probes, roles, settings names, autoscaling bounds)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipeline import topics
from pipeline.rules import load_rules
from pipeline.settings import ROLES, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOC = ROOT / "docs" / "kubernetes.md"

# Validated with the schemas bundled in kubernetes-validate: the oldest release the manifests claim to
# support (docs/kubernetes.md) and a recent one.
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")

# Settings being added to pipeline/settings.py while the manifests name them already. A name here is
# accepted only while it is not yet a Settings field; once it is, the check against Settings.model_fields
# applies to it as to every other name.
PENDING_SETTINGS: frozenset[str] = frozenset()
# The topics the scorer role consumes jobs from: autoscaling must watch the lag of each.
SCORER_JOB_TOPICS = [topics.JOBS, topics.SESSION_JOBS]

# In deploy/k8s but deliberately not in kustomization.yaml (optional/ is left out as a whole).
NOT_KUSTOMIZED = {"kustomization.yaml", "secret.example.yaml"}
# The one Secret whose keys are not EVALSTREAM_* settings: LLM providers' keys, read by litellm.
PROVIDER_SECRET = "evalstream-llm"
DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
UID = 10001
DATA_DIR, TMP_DIR, RULES_DIR = "/var/lib/evalstream", "/tmp", "/etc/evalstream"


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


MANIFEST_FILES = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
CORE_FILES = [p for p in MANIFEST_FILES if p.parent == K8S]  # optional/ holds CRDs' objects
DOCS = {p: _load(p) for p in MANIFEST_FILES}
ALL = [doc for p in CORE_FILES for doc in DOCS[p]]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in ALL if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in ALL if d["kind"] == kind]


WORKLOADS = _of_kind("Deployment") + _of_kind("Job")
DEPLOYMENTS = {d["metadata"]["name"]: d for d in _of_kind("Deployment")}
SETTINGS_MAP = _one("ConfigMap", "evalstream-settings")["data"]
SECRETS = {d["metadata"]["name"]: d for d in _of_kind("Secret")}
HPA = _one("HorizontalPodAutoscaler", "evalstream-scorer")
KEDA = DOCS[K8S / "optional" / "keda-scaledobject.yaml"][0]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _ids(workloads: list[dict[str, Any]]) -> list[str]:
    return [f"{w['kind']}/{w['metadata']['name']}" for w in workloads]


def _option(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _topic_partitions() -> int:
    (container,) = _pod(_one("Job", "evalstream-topics-init"))["containers"]
    assert container["args"][:2] == ["topics", "init"]
    return int(_option(container["args"], "--partitions"))


def _quantity(value: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, value
    return float(match[1]) * units.get(match[2], 1)


# --- schemas -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_strictly(path: Path, version: str) -> None:
    assert DOCS[path], f"{path} holds no document"
    for doc in DOCS[path]:
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Guards the test above: a misspelled field must fail, not be ignored."""
    deployment = yaml.safe_load((K8S / "deployment-scorer.yaml").read_text())
    _pod(deployment)["containers"][0]["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


# Written from the KEDA ScaledObject CRD (keda.sh/v1alpha1, scaledobject-spec): required fields, types,
# and no unknown keys in the parts this repository writes.
_INT = {"type": "integer", "minimum": 0}
_POLICIES = {"type": "object", "additionalProperties": False, "properties": {
    "stabilizationWindowSeconds": _INT, "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
    "policies": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["type", "value", "periodSeconds"], "additionalProperties": False,
        "properties": {"type": {"enum": ["Pods", "Percent"]}, "value": _INT, "periodSeconds": _INT}}}}}
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                  "name": {"type": "string"},
                                                  "envSourceContainerName": {"type": "string"}}},
                "pollingInterval": _INT, "cooldownPeriod": _INT, "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT, "minReplicaCount": _INT, "maxReplicaCount": _INT,
                "fallback": {"type": "object", "required": ["failureThreshold", "replicas"]},
                "advanced": {"type": "object", "additionalProperties": False, "properties": {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False, "properties": {
                        "name": {"type": "string"},
                        "behavior": {"type": "object", "additionalProperties": False,
                                     "properties": {"scaleUp": _POLICIES, "scaleDown": _POLICIES}}}}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                    "properties": {
                        "type": {"type": "string"}, "name": {"type": "string"},
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        "authenticationRef": {"type": "object", "required": ["name"]}}}},
            },
        },
    },
}
KAFKA_TRIGGER_REQUIRED = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"}


def test_keda_scaled_object_is_well_formed() -> None:
    assert len(DOCS[K8S / "optional" / "keda-scaledobject.yaml"]) == 1
    jsonschema.validate(KEDA, SCALED_OBJECT_SCHEMA)
    spec = KEDA["spec"]
    assert spec["scaleTargetRef"]["name"] == "evalstream-scorer" in DEPLOYMENTS
    assert [t["metadata"]["topic"] for t in spec["triggers"]] == SCORER_JOB_TOPICS
    for trigger in spec["triggers"]:
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert KAFKA_TRIGGER_REQUIRED <= meta.keys()
        assert meta["consumerGroup"] == SETTINGS_MAP["EVALSTREAM_APP_ID"] == DEFAULTS["app_id"]
        assert meta["bootstrapServers"] == SETTINGS_MAP["EVALSTREAM_KAFKA_BOOTSTRAP"]
        assert int(meta["lagThreshold"]) > 0
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= _topic_partitions()


# --- layout --------------------------------------------------------------------------------------------

def test_kustomization_lists_exactly_the_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    present = {p.name for p in K8S.glob("*.yaml")} - NOT_KUSTOMIZED
    assert set(resources) == present
    assert kustomization["namespace"] == "evalstream"
    assert {i["name"] for i in kustomization["images"]} == {c["image"] for w in WORKLOADS
                                                           for c in _pod(w)["containers"]}


def test_everything_lives_in_the_evalstream_namespace() -> None:
    for path, docs in DOCS.items():
        for doc in docs:
            if doc["kind"] == "Namespace":
                assert doc["metadata"]["name"] == "evalstream"
                assert doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
            else:
                assert doc["metadata"].get("namespace") == "evalstream", f"{path.name}: {doc['kind']}"


# --- pods ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids(WORKLOADS))
def test_pods_run_restricted(workload: dict[str, Any]) -> None:
    pod = _pod(workload)
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # Service env vars named EVALSTREAM_* would become settings
    pod_sc = pod.get("securityContext", {})
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod.get("initContainers", []) + pod["containers"]:
        sc = {**pod_sc, **container.get("securityContext", {})}
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == UID
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        assert not sc.get("privileged")
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        for writable in (DATA_DIR, TMP_DIR):  # Faust's data dir (EVALSTREAM_DATA_DIR), HOME, temp files
            assert "emptyDir" in volumes[mounts[writable]["name"]], writable
            assert not mounts[writable].get("readOnly")
        for path, mount in mounts.items():
            if "emptyDir" not in volumes[mount["name"]]:
                assert mount.get("readOnly") is True, path


@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids(WORKLOADS))
def test_containers_have_requests_and_limits(workload: dict[str, Any]) -> None:
    for container in _pod(workload)["containers"]:
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request, limit = resources["requests"][resource], resources["limits"][resource]
            assert 0 < _quantity(request) <= _quantity(limit), (resource, request, limit)


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployments_probe_and_expose_metrics(name: str) -> None:
    port = int(SETTINGS_MAP["EVALSTREAM_METRICS_PORT"])
    assert SETTINGS_MAP["EVALSTREAM_METRICS_HOST"] == "0.0.0.0"  # the kubelet and Prometheus come from outside
    template = DEPLOYMENTS[name]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    (container,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/metrics" and get["port"] in ("metrics", port), probe
    # Kafka group joins take seconds: liveness must not kill a pod that is still joining.
    liveness = container["livenessProbe"]
    grace = liveness.get("initialDelaySeconds", 0) + liveness.get("periodSeconds", 10) * liveness.get(
        "failureThreshold", 3)
    assert grace >= 60 or "startupProbe" in container


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployments_mount_the_rules_read_only(name: str) -> None:
    pod = _pod(DEPLOYMENTS[name])
    (container,) = pod["containers"]
    rules = _option(container["args"], "--rules")
    assert rules == f"{RULES_DIR}/rules.yaml"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == RULES_DIR)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "evalstream-rules"


def test_the_rules_config_map_loads(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(_one("ConfigMap", "evalstream-rules")["data"]["rules.yaml"])
    ruleset = load_rules(path)
    assert ruleset.active and ruleset.alerts


def _roles_and_sink(deployment: dict[str, Any]) -> tuple[frozenset[str], bool]:
    (container,) = _pod(deployment)["containers"]
    args, env = container["args"], {e["name"]: e.get("value") for e in container.get("env", [])}
    assert args[0] == "worker"
    roles = _option(args, "--roles")
    if roles is None:
        roles = env["EVALSTREAM_ROLES"]  # the default (every role) would be a silent surprise: be explicit
    assert ("--sink" in args) != ("--no-sink" in args), "say --sink or --no-sink"
    return frozenset(r for r in roles.split(",") if r), "--sink" in args


def test_each_role_and_the_sink_run_in_exactly_one_deployment() -> None:
    layout = {name: _roles_and_sink(d) for name, d in DEPLOYMENTS.items()}
    assert layout == {
        "evalstream-front": (frozenset({"assembler", "router", "alerter"}), False),
        "evalstream-scorer": (frozenset({"scorer"}), False),
        "evalstream-sink": (frozenset(), True),
    }
    assert set(ROLES) == set().union(*(roles for roles, _ in layout.values()))


def test_grace_periods_and_replicas() -> None:
    assert _pod(DEPLOYMENTS["evalstream-sink"])["terminationGracePeriodSeconds"] == 90
    assert DEPLOYMENTS["evalstream-sink"]["spec"]["replicas"] == 1
    for deployment in DEPLOYMENTS.values():
        assert _pod(deployment)["terminationGracePeriodSeconds"] >= DEFAULTS["scorer_timeout_s"]
    # The HPA owns the scorers' count: a spec.replicas would be re-applied over its choice.
    assert "replicas" not in DEPLOYMENTS["evalstream-scorer"]["spec"]
    assert HPA["spec"]["minReplicas"] == 2


def test_selectors_match_their_pods() -> None:
    for deployment in DEPLOYMENTS.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for pdb in _of_kind("PodDisruptionBudget"):
        matched = [n for n, d in DEPLOYMENTS.items()
                   if pdb["spec"]["selector"]["matchLabels"].items()
                   <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matched == [pdb["metadata"]["name"]]
    assert "evalstream-scorer" in {p["metadata"]["name"] for p in _of_kind("PodDisruptionBudget")}


# --- settings and secrets -------------------------------------------------------------------------------

def _env_refs(workload: dict[str, Any]) -> list[tuple[str, str, bool]]:
    refs = []
    for container in _pod(workload)["containers"]:
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    refs.append((kind, source[key]["name"], bool(source[key].get("optional"))))
    return refs


def _known(name: str) -> bool:
    field = name.removeprefix("EVALSTREAM_")
    return field.lower() in Settings.model_fields or field in PENDING_SETTINGS


def test_every_env_var_set_is_a_setting() -> None:
    names: list[tuple[str, str]] = [(n, "ConfigMap evalstream-settings") for n in SETTINGS_MAP]
    for workload in WORKLOADS:
        for container in _pod(workload)["containers"]:
            names += [(e["name"], workload["metadata"]["name"]) for e in container.get("env", [])]
    for secret in SECRETS.values():
        assert "data" not in secret  # stringData only: placeholders stay readable
        if secret["metadata"]["name"] != PROVIDER_SECRET:
            names += [(n, f"Secret {secret['metadata']['name']}") for n in secret["stringData"]]
    unknown = [(n, where) for n, where in names if not (n.startswith("EVALSTREAM_") and _known(n))]
    assert not unknown, f"not Settings fields: {unknown}"


def test_every_env_var_mentioned_is_a_setting() -> None:
    """Commented-out examples in the manifests and names in docs/kubernetes.md too."""
    for path in [*MANIFEST_FILES, K8S / "kustomization.yaml", DOC]:
        for name in re.findall(r"EVALSTREAM_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
            assert _known(name), f"{path.relative_to(ROOT)}: {name}"


def test_secret_example_holds_only_placeholders() -> None:
    text = (K8S / "secret.example.yaml").read_text()
    assert "Never commit" in text
    assert SECRETS, "secret.example.yaml defines the Secrets"
    for secret in SECRETS.values():
        assert secret["stringData"]
        for key, value in secret["stringData"].items():
            assert "CHANGEME" in value, f"{secret['metadata']['name']}.{key} is not a placeholder"
            assert not re.search(r"xox[abp]-[0-9]|sk-[A-Za-z0-9]{8}", value), key


def test_referenced_config_maps_and_secrets_exist() -> None:
    config_maps = {d["metadata"]["name"] for d in _of_kind("ConfigMap")}
    for workload in WORKLOADS:
        for kind, name, optional in _env_refs(workload):
            assert name in (config_maps if kind == "ConfigMap" else SECRETS), f"{kind}/{name}"
            if kind == "ConfigMap":
                assert not optional
    # Without its DSN the sink would silently fall back to chDB inside an emptyDir.
    assert ("Secret", "evalstream-clickhouse", False) in _env_refs(DEPLOYMENTS["evalstream-sink"])
    for name in ("evalstream-front", "evalstream-scorer"):
        assert "evalstream-clickhouse" not in {n for _, n, _ in _env_refs(DEPLOYMENTS[name])}


@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids(WORKLOADS))
def test_settings_load_from_the_pod_environment(workload: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                ) -> None:
    for name in list(os.environ):
        if name.startswith("EVALSTREAM_"):
            monkeypatch.delenv(name)
    config_maps = {d["metadata"]["name"]: d["data"] for d in _of_kind("ConfigMap")}
    for kind, name, _ in _env_refs(workload):
        values = config_maps[name] if kind == "ConfigMap" else SECRETS[name]["stringData"]
        for key, value in values.items():
            monkeypatch.setenv(key, value)
    for container in _pod(workload)["containers"]:
        for env in container.get("env", []):
            monkeypatch.setenv(env["name"], env["value"])
    settings = Settings()
    assert str(settings.data_dir) == DATA_DIR
    assert settings.topic_partitions == _topic_partitions()


# --- topics and autoscaling ---------------------------------------------------------------------------------

def test_topic_settings_agree_with_the_init_job() -> None:
    (container,) = _pod(_one("Job", "evalstream-topics-init"))["containers"]
    assert int(SETTINGS_MAP["EVALSTREAM_TOPIC_PARTITIONS"]) == _topic_partitions()
    assert SETTINGS_MAP["EVALSTREAM_TOPIC_REPLICATION_FACTOR"] == _option(container["args"], "--replication-factor")


def test_scorer_autoscaling_stays_within_the_jobs_partitions() -> None:
    spec = HPA["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "evalstream-scorer"}
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"] <= _topic_partitions()
    assert [m["external"]["metric"]["selector"]["matchLabels"] for m in spec["metrics"]] == [
        {"group": SETTINGS_MAP["EVALSTREAM_APP_ID"], "topic": topic} for topic in SCORER_JOB_TOPICS]
    for metric in spec["metrics"]:
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] == "evalstream_consumer_lag_records"
        assert metric["external"]["target"]["type"] == "AverageValue"
    # One pod at a time down: each step is a consumer-group rebalance.
    assert spec["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
