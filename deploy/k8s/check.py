"""The offline checks behind deploy/validate (no cluster, no container engine, no network).

    check.py k8s RENDERED.yaml FAREGATE_BIN     one rendered overlay: schemas and invariants
    check.py compose CONFIG.yaml FAREGATE_BIN    `docker-compose config` output: mounts and env
    check.py observability ROOT RENDERED.sql     dashboard, alerts and runbooks against the code

Built-in Kubernetes kinds are validated strictly (unknown fields are errors) against the schemas
bundled with kubernetes-validate, for the oldest and newest Kubernetes versions we support.
kubernetes-validate knows no CRDs, so the CRD kinds Faregate ships (KEDA ScaledObject and
TriggerAuthentication, Prometheus Operator ServiceMonitor and PrometheusRule) are checked
against the partial schemas below: the fields Faregate uses, their types and the required ones,
with unknown fields refused. Any other kind fails. Every failure names the file and resource.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import jsonschema
import kubernetes_validate.utils as kv
import yaml

K8S_VERSIONS = ["1.30.0", "1.37.0"]
FAILURES = []


def fail(where, message):
    FAILURES.append(f"{where}: {message}")


def obj(properties, required=(), extra=False):
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": extra}


STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJ = {"type": "object"}
DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
METADATA = obj({"name": STR, "namespace": STR, "labels": STR_MAP, "annotations": STR_MAP}, ["name"])
LABEL_SELECTOR = obj({"matchLabels": STR_MAP, "matchExpressions": {"type": "array"}})


def crd(spec):
    return obj({"apiVersion": STR, "kind": STR, "metadata": METADATA, "spec": spec}, ["apiVersion", "kind", "metadata", "spec"])


CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): crd(obj({
        "scaleTargetRef": obj({"apiVersion": STR, "kind": STR, "name": STR, "envSourceContainerName": STR}, ["name"]),
        "pollingInterval": INT, "cooldownPeriod": INT, "initialCooldownPeriod": INT, "idleReplicaCount": INT,
        "minReplicaCount": INT, "maxReplicaCount": INT,
        "fallback": obj({"failureThreshold": INT, "replicas": INT, "behavior": STR}, ["failureThreshold", "replicas"]),
        "advanced": obj({
            "restoreToOriginalReplicaCount": BOOL,
            "horizontalPodAutoscalerConfig": obj({"name": STR, "behavior": ANY_OBJ}),
            "scalingModifiers": ANY_OBJ,
        }),
        "triggers": {"type": "array", "minItems": 1, "items": obj({
            "type": STR, "name": STR, "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
            "useCachedMetrics": BOOL,
            # KEDA reads trigger metadata as strings only: a bare number here is refused by it.
            "metadata": STR_MAP,
            "authenticationRef": obj({"name": STR, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}}, ["name"]),
        }, ["type", "metadata"])},
    }, ["scaleTargetRef", "triggers"])),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): crd(obj({
        "secretTargetRef": {"type": "array", "items": obj({"parameter": STR, "name": STR, "key": STR}, ["parameter", "name", "key"])},
        "configMapTargetRef": {"type": "array", "items": obj({"parameter": STR, "name": STR, "key": STR}, ["parameter", "name", "key"])},
        "env": {"type": "array", "items": obj({"parameter": STR, "name": STR, "containerName": STR}, ["parameter", "name"])},
        "podIdentity": ANY_OBJ, "hashiCorpVault": ANY_OBJ, "azureKeyVault": ANY_OBJ,
        "awsSecretManager": ANY_OBJ, "gcpSecretManager": ANY_OBJ, "boundServiceAccountToken": {"type": "array"},
    })),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): crd(obj({
        "selector": LABEL_SELECTOR,
        "namespaceSelector": obj({"any": BOOL, "matchNames": {"type": "array", "items": STR}}),
        "jobLabel": STR, "targetLabels": {"type": "array", "items": STR}, "podTargetLabels": {"type": "array", "items": STR},
        "sampleLimit": INT, "attachMetadata": ANY_OBJ,
        "endpoints": {"type": "array", "minItems": 1, "items": obj({
            "port": STR, "targetPort": {"type": ["string", "integer"]}, "path": STR, "scheme": {"enum": ["http", "https"]},
            "interval": DURATION, "scrapeTimeout": DURATION, "honorLabels": BOOL, "honorTimestamps": BOOL,
            "params": ANY_OBJ, "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
            "tlsConfig": ANY_OBJ, "authorization": ANY_OBJ, "basicAuth": ANY_OBJ, "oauth2": ANY_OBJ,
            "bearerTokenSecret": ANY_OBJ, "followRedirects": BOOL, "enableHttp2": BOOL, "filterRunning": BOOL,
            "proxyUrl": STR,
        })},
    }, ["selector", "endpoints"])),
    ("monitoring.coreos.com/v1", "PrometheusRule"): crd(obj({
        "groups": {"type": "array", "minItems": 1, "items": obj({
            "name": STR, "interval": DURATION, "limit": INT, "partial_response_strategy": STR, "labels": STR_MAP,
            "rules": {"type": "array", "minItems": 1, "items": obj({
                "alert": STR, "record": STR, "expr": {"type": ["string", "integer"]}, "for": DURATION,
                "keep_firing_for": DURATION, "labels": STR_MAP, "annotations": STR_MAP,
            }, ["expr"])},
        }, ["name", "rules"])},
    }, ["groups"])),
}


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def is_faregate_image(image):
    return str(image).split("/")[-1].split(":")[0] == "faregate"


def run_faregate(binary, args, env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FAREGATE")}
    clean.update(env)
    return subprocess.run([binary, *args], env=clean, capture_output=True, text=True)


def config_check(binary, where, env, toml_text=None):
    """`faregate config check` with this environment (and TOML): the shipped settings must load."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["config", "check"]
        if toml_text is not None:
            path = os.path.join(tmp, "faregate.toml")
            with open(path, "w") as f:
                f.write(toml_text)
            args = ["--config", path, *args]
        result = run_faregate(binary, args, env)
        if result.returncode != 0:
            fail(where, f"faregate config check refused the configuration: {(result.stderr or result.stdout).strip()}")
        return result


def faregate_config_show(binary, toml_text, env):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "faregate.toml")
        with open(path, "w") as f:
            f.write(toml_text)
        result = run_faregate(binary, ["--config", path, "config", "show"], env)
    return tomllib.loads(result.stdout) if result.returncode == 0 else None


def check_k8s(path, binary):
    docs = load_all(path)
    name_of = lambda d: f"{path}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append(doc)
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            for error in jsonschema.Draft7Validator(CRD_SCHEMAS[key]).iter_errors(doc):
                fail(name_of(doc), f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}")
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.SchemaNotFoundError:
                fail(name_of(doc), f"unknown kind {key[1]} ({key[0]}): neither a Kubernetes {version} kind nor a CRD with a schema in deploy/k8s/check.py")
                break
            except kv.ValidationError as error:
                location = ".".join(map(str, error.path)) or "(top)"
                fail(name_of(doc), f"Kubernetes {version} schema: {location}: {error.message}")
                break

    # Invariants of every workload: requests, probes, a PDB, non-root.
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    pdbs = by_kind.get("PodDisruptionBudget", [])
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        for c in pod.get("containers", []):
            where = f"{name_of(w)} container {c['name']}"
            if not c.get("resources", {}).get("requests"):
                fail(where, "has no resource requests")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    fail(where, f"has no {probe}")
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            fail(name_of(w), "does not set securityContext.runAsNonRoot")
        if labels.get("app.kubernetes.io/part-of") == "faregate" and w["metadata"]["name"].startswith("faregate-"):
            if not any(set(p["spec"]["selector"].get("matchLabels", {}).items()) <= set(labels.items()) for p in pdbs):
                fail(name_of(w), "no PodDisruptionBudget selects its pods")

    # The configuration must load in the real binary, with the env of each container.
    configs = [c for c in by_kind.get("ConfigMap", []) if c["metadata"]["name"].startswith("faregate-config")]
    if len(configs) != 1 or "faregate.toml" not in configs[0].get("data", {}):
        fail(path, "expected one faregate-config ConfigMap with faregate.toml")
        return
    toml_text = configs[0]["data"]["faregate.toml"]
    settings = None
    for w in workloads + by_kind.get("Job", []):
        pod = w["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            if not is_faregate_image(c.get("image", "")):
                continue
            env = {}
            for e in c.get("env", []):
                if e["name"] == "FAREGATE_CONFIG":
                    continue
                # Values from the downward API or a Secret: any placeholder of the right shape.
                env[e["name"]] = e.get("value", "pod-0" if "fieldRef" in e.get("valueFrom", {}) else "secret-placeholder")
            config_check(binary, f"{name_of(w)} container {c['name']}", env, toml_text)
            if settings is None:
                settings = faregate_config_show(binary, toml_text, env)
    if settings is None:
        fail(path, "faregate config show failed on the ConfigMap's faregate.toml")
        return
    partitions = settings["kafka"]["topics"]["partitions"]
    usage_topic = settings["kafka"]["topics"]["usage"]
    group = settings["processor"]["group_id"]
    # Autoscalers never exceed the partitions (idle consumers), and KEDA watches the right group.
    for so in by_kind.get("ScaledObject", []):
        if so["spec"].get("maxReplicaCount", 100) > partitions:
            fail(name_of(so), f"maxReplicaCount {so['spec']['maxReplicaCount']} exceeds the {partitions} partitions of {usage_topic}")
        for t in so["spec"]["triggers"]:
            if t["type"] == "kafka":
                md = t["metadata"]
                if md.get("topic") != usage_topic or md.get("consumerGroup") != group:
                    fail(name_of(so), f"kafka trigger watches {md.get('consumerGroup')}/{md.get('topic')}, the processor is {group}/{usage_topic}")
                if md.get("bootstrapServers") != settings["kafka"]["brokers"]:
                    fail(name_of(so), f"bootstrapServers {md.get('bootstrapServers')} differ from kafka.brokers {settings['kafka']['brokers']}")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        if hpa["spec"]["scaleTargetRef"]["name"] == "faregate-processor" and hpa["spec"]["maxReplicas"] > partitions:
            fail(name_of(hpa), f"maxReplicas {hpa['spec']['maxReplicas']} exceeds the {partitions} partitions of {usage_topic}")
    # Alerts shipped for Kubernetes are the compose ones.
    compose_rules = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "compose", "prometheus", "alerts.yml")))
    for rule in by_kind.get("PrometheusRule", []):
        if rule["spec"]["groups"] != compose_rules["groups"]:
            fail(name_of(rule), "groups differ from deploy/compose/prometheus/alerts.yml (keep them identical)")


def check_compose(path, binary):
    config = yaml.safe_load(open(path))
    for name, service in config.get("services", {}).items():
        for volume in service.get("volumes", []):
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
            kind = volume.get("type") if isinstance(volume, dict) else ("bind" if source.startswith(("/", ".")) else "volume")
            if kind == "bind" and not os.path.exists(source):
                fail(f"{path}: service {name}", f"bind-mounts {source}, which does not exist")
        if is_faregate_image(service.get("image", "")):
            env = service.get("environment") or {}
            if isinstance(env, list):
                env = dict(item.split("=", 1) for item in env)
            env = {k: str(v) for k, v in env.items() if k.startswith("FAREGATE")}
            config_check(binary, f"{path}: service {name}", env)


def check_observability(root, rendered_sql):
    sql = open(rendered_sql).read()
    objects = set(re.findall(r"CREATE\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW)\s+IF\s+NOT\s+EXISTS\s+(\w+)", sql, re.I))
    code = ""
    for base, _, files in os.walk(os.path.join(root, "services")):
        for f in files:
            if f.endswith(".rs"):
                code += open(os.path.join(base, f)).read()
    known_metrics = set(re.findall(r'(?:counter|gauge|histogram)!\(\s*"(faregate_\w+)"', code))

    def check_promql(where, expr):
        for metric in re.findall(r"\b(faregate_[a-z0-9_]+)", expr):
            if metric not in known_metrics:
                fail(where, f"metric {metric} is not emitted by any service (known: {', '.join(sorted(known_metrics))})")

    dash_path = os.path.join(root, "deploy/compose/grafana/dashboards/faregate.json")
    try:
        dashboard = json.load(open(dash_path))
    except json.JSONDecodeError as error:
        fail(dash_path, f"not valid JSON: {error}")
        dashboard = {"panels": []}
    provisioned = yaml.safe_load(open(os.path.join(root, "deploy/compose/grafana/provisioning/datasources/faregate.yml")))
    uids = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    panels = 0
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            continue
        panels += 1
        where = f"{dash_path}: panel {panel.get('title')!r}"
        for target in panel.get("targets", []):
            uid = target.get("datasource", {}).get("uid")
            if uid not in uids:
                fail(where, f"data source uid {uid!r} is not provisioned (have {sorted(uids)})")
                continue
            if uids[uid] == "grafana-clickhouse-datasource":
                raw = target.get("rawSql", "")
                names = re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)", raw, re.I)
                if not names:
                    fail(where, "ClickHouse query reads no table")
                for name in names:
                    if name.split(".")[-1] not in objects:
                        fail(where, f"reads {name}, which no migration in schemas/clickhouse creates")
            else:
                check_promql(where, target.get("expr", ""))
    if panels == 0:
        fail(dash_path, "has no panels")

    alerts = yaml.safe_load(open(os.path.join(root, "deploy/compose/prometheus/alerts.yml")))
    runbook = open(os.path.join(root, "docs/operations.md")).read()
    headings = {h.strip().lower() for h in re.findall(r"^#{2,4}\s+(.+)$", runbook, re.M)}
    for group in alerts["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert", rule.get("record"))
            check_promql(f"alert {name}", str(rule["expr"]))
            if "alert" in rule:
                if name.lower() not in headings:
                    fail(f"alert {name}", "has no runbook: add a '### " + name + "' section to docs/operations.md")
                anchor = rule.get("annotations", {}).get("runbook", "")
                if anchor != f"docs/operations.md#{name.lower()}":
                    fail(f"alert {name}", f"annotation runbook should be docs/operations.md#{name.lower()}, is {anchor!r}")


def main():
    mode, *args = sys.argv[1:]
    if mode == "k8s":
        check_k8s(*args)
    elif mode == "compose":
        check_compose(*args)
    elif mode == "observability":
        check_observability(*args)
    else:
        sys.exit(f"unknown mode {mode}")
    for failure in FAILURES:
        print(f"FAIL {failure}", file=sys.stderr)
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
