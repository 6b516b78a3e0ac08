"""Offline validation of the deployment files (part of `make test`).

  docker-compose.yml       the Compose Specification JSON schema (vendored:
                           deploy/schemas/compose_spec.json) + the contract:
                           SPEC §8 ports, /healthz checks, depends_on
                           conditions, env names from the services' config
                           tables, the topics and partitions of stack.sh
  Dockerfile               bookworm stages, the -dev packages of deps.sh,
                           runtime packages for every library build/bin links,
                           non-root user; .dockerignore
  k8s/base, overlays/local rendered (a small kustomize: resources, namespace,
                           replicas, strategic-merge and JSON 6902 patches;
                           cross-checked with `kubectl kustomize` when kubectl
                           is installed), every object validated against the
                           OpenAPI schemas of Kubernetes 1.30
                           (kubernetes-validate, strict) or, for Strimzi and
                           KEDA custom resources, against the JSON schemas in
                           deploy/schemas/ written from their docs; then the
                           contract: probes /readyz + /healthz on the SPEC
                           ports, requests/limits, Services, PDBs, one
                           autoscaling/v2 HPA per service with maxReplicas <=
                           the 12 partitions of clickstream.raw for consumers,
                           references (ConfigMap, Secret keys, PVC, $(VAR)),
                           replication <= brokers
  k8s/optional (KEDA)      schema + targets, consumer groups, partitions
  Prometheus               prometheus.yml targets = compose services; alert
                           rules: structure, a PromQL parser, every metric
                           exported, label names/values seen on /metrics,
                           rate() only on counters, runbook links resolve;
                           `promtool check rules` too when a promtool is at
                           hand (PATH or .cache/bin)
  Grafana                  provisioning vs compose; dashboard JSON: every
                           query parses and uses exported metrics, required
                           topics covered

Exported metric names come from the five binaries started against the test
stack (fixture `stack`) and scraped; a service that cannot start falls back to
the names its C source registers (tests/artifacts/deploy-metric-sources.json
says which). Each validator also gets deliberately broken copies, which it
must reject.

    STACK_ENV=.run/dep-dev/stack.env .cache/venv/bin/python -m pytest tests/integration/test_deploy.py

Validators (each returns a list of errors; empty means valid):

  compose_errors(doc, known_env)          docker-compose.yml
  dockerfile_errors(text, ...)            Dockerfile (+ .dockerignore)
  kustomize_build(dir)                    renders a kustomization (resources,
                                          namespace, replicas, patches)
  k8s_schema_errors(objs)                 OpenAPI schemas of Kubernetes K8S_VERSION
                                          (kubernetes-validate) / CR JSON schemas
  k8s_contract_errors(objs, known_env)    probes, ports, HPAs vs partitions, refs
  keda_errors(objs, base_objs)            k8s/optional/keda-scaledobject.yaml
  parse_promql(expr)                      a PromQL parser (enough to find every
                                          selector, function and range)
  rules_errors(doc, exported)             Prometheus alert rules
  prometheus_config_errors(doc, compose)  scrape targets vs compose services
  dashboard_errors(doc, exported, ds_uid) Grafana dashboard JSON
"""
import copy
import functools
import json
import os
import re
import shutil
import subprocess

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMAS = os.path.join(ROOT, "deploy", "schemas")

# The Kubernetes version whose OpenAPI schemas the manifests are checked
# against (kubernetes-validate bundles 1.25 ... 1.37). Also in docs/operations.md.
K8S_VERSION = "1.30"

# SPEC §8: binary -> admin/HTTP port, and the env variable that sets it.
SERVICES = {
    "ingest-gateway": {"port": 8080, "port_env": "GATEWAY_PORT", "consumer": False},
    "sessionizer": {"port": 9102, "port_env": "ADMIN_PORT", "consumer": True},
    "aggregator": {"port": 9103, "port_env": "AGGREGATOR_ADMIN_PORT", "consumer": True},
    "lake-writer": {"port": 9104, "port_env": "LAKE_ADMIN_PORT", "consumer": True},
    "dashboard-ws": {"port": 3000, "port_env": "DASHBOARD_PORT", "consumer": False},
}
SPEC_TOPICS = ["clickstream.raw", "clickstream.sessions", "clickstream.metrics", "clickstream.late"]
# env names a manifest may define besides a service's own settings
HELPER_ENV = {"POD_NAME", "POD_NAMESPACE"}


# --------------------------------------------------------------- helpers
def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def stack_partitions():
    """Partition counts of the SPEC topics as scripts/stack.sh creates them."""
    text = open(os.path.join(ROOT, "scripts", "stack.sh")).read()
    out = {}
    for var, topic in [("RAW", "clickstream.raw"), ("SESSIONS", "clickstream.sessions"),
                       ("METRICS", "clickstream.metrics"), ("LATE", "clickstream.late")]:
        m = re.search(r"^%s_PARTITIONS=\$\{%s_PARTITIONS:-(\d+)\}" % (var, var), text, re.M)
        assert m, f"scripts/stack.sh: no default for {var}_PARTITIONS"
        out[topic] = int(m.group(1))
    return out


def kafka_version():
    m = re.search(r"^KAFKA_VERSION=(\S+)", open(os.path.join(ROOT, "scripts", "lib.sh")).read(), re.M)
    return m.group(1)


def deps_apt_packages():
    text = open(os.path.join(ROOT, "scripts", "deps.sh")).read()
    m = re.search(r"APT_PACKAGES=\((.*?)\)", text, re.S)
    return m.group(1).split()


def known_env_from_help(binary):
    """Env variable names a binary reads, from its --help (None if absent)."""
    path = os.path.join(os.environ.get("BIN_DIR", os.path.join(ROOT, "build", "bin")), binary)
    if not os.access(path, os.X_OK):
        return None
    try:
        out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = set(re.findall(r"^  ([A-Z][A-Z0-9_]+)\s*$", out.stdout + out.stderr, re.M))
    return names or None


def known_env_from_source(binary):
    """Env variable names from services/<binary>/*_config.c (fallback)."""
    d = os.path.join(ROOT, "services", binary)
    names = set()
    for fn in os.listdir(d):
        if not fn.endswith("_config.c"):
            continue
        text = open(os.path.join(d, fn)).read()
        names |= set(re.findall(r"[E{]\(?\s*CM_CFG_\w+,\s*\"([A-Z][A-Z0-9_]+)\"", text))
        for prefix in re.findall(r"CM_CONFIG_COMMON_ENTRIES\([^,]+,[^,]+,\s*\"([A-Z_]*)\"", text):
            names |= {prefix + "LOG_LEVEL", prefix + "ADMIN_ADDR", prefix + "ADMIN_PORT"}
        for prefix in re.findall(r"CM_CONFIG_LOG_LEVEL_ENTRY\([^,]+,[^,]+,\s*\"([A-Z_]*)\"", text):
            names.add(prefix + "LOG_LEVEL")
    return names


def known_env(binaries=SERVICES):
    """{binary: set of env names}: from --help when built, else the source."""
    out = {}
    for b in binaries:
        out[b] = known_env_from_help(b) or known_env_from_source(b)
    return out


def env_name_errors(where, names, allowed):
    errs = []
    for n in names:
        if n in allowed or n in HELPER_ENV or n.startswith("RDKAFKA_"):
            continue
        errs.append(f"{where}: unknown environment variable {n} (not in the service's configuration table)")
    return errs


# --------------------------------------------------------------- Compose
def _go_duration(value):
    return isinstance(value, str) and re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", value) is not None


def compose_schema_errors(doc):
    import jsonschema
    with open(os.path.join(SCHEMAS, "compose_spec.json")) as f:
        schema = json.load(f)
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("duration")(_go_duration)
    v = jsonschema.Draft201909Validator(schema, format_checker=checker)
    return [f"compose schema: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(v.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def _env_dict(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return env


def compose_errors(doc, known):
    """Schema + the contract: SPEC ports, /healthz checks, depends_on, env names, topics."""
    errs = compose_schema_errors(doc)
    if errs:
        return errs
    services = doc.get("services", {})
    for required in ["kafka", "kafka-init", "redis", "prometheus", "grafana", "kafka-exporter", "loadgen",
                     *SERVICES]:
        if required not in services:
            errs.append(f"compose: service {required} missing")
    kafka = services.get("kafka", {})
    if kafka.get("image") != f"apache/kafka:{kafka_version()}":
        errs.append(f"compose: kafka must run apache/kafka:{kafka_version()} (scripts/lib.sh), not {kafka.get('image')}")
    if _env_dict(kafka).get("KAFKA_PROCESS_ROLES") != "broker,controller":
        errs.append("compose: kafka must be a single KRaft node (KAFKA_PROCESS_ROLES=broker,controller)")
    declared_volumes = set((doc.get("volumes") or {}).keys())
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        if isinstance(deps, list):
            errs.append(f"compose: {name}: depends_on must give a condition for each dependency")
            deps = {d: {} for d in deps}
        for dep, cond in deps.items():
            if dep not in services:
                errs.append(f"compose: {name} depends on unknown service {dep}")
                continue
            c = (cond or {}).get("condition")
            if c == "service_healthy" and "healthcheck" not in services[dep]:
                errs.append(f"compose: {name} waits for {dep} to be healthy but {dep} has no healthcheck")
            if c == "service_completed_successfully" and services[dep].get("restart") in ("always", "unless-stopped"):
                errs.append(f"compose: {name} waits for {dep} to complete but {dep} is restarted forever")
        for vol in svc.get("volumes", []) or []:
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source")
            if src and (src.startswith(".") or src.startswith("/")):
                if not os.path.exists(os.path.join(ROOT, src)):
                    errs.append(f"compose: {name}: bind mount source {src} does not exist")
            elif src and src not in declared_volumes:
                errs.append(f"compose: {name}: volume {src} is not declared under volumes:")
    for binary, spec in SERVICES.items():
        svc = services.get(binary)
        if not svc:
            continue
        cmd = svc.get("command")
        cmd0 = cmd[0] if isinstance(cmd, list) and cmd else (cmd.split()[0] if isinstance(cmd, str) else None)
        if cmd0 != binary:
            errs.append(f"compose: {binary}: command must start the binary {binary}, not {cmd0}")
        port = spec["port"]
        if f"{port}:{port}" not in [str(p) for p in svc.get("ports", [])]:
            errs.append(f"compose: {binary}: port {port}:{port} (SPEC §8) not published")
        env = _env_dict(svc)
        errs += env_name_errors(f"compose: {binary}", env, known.get(binary, set()))
        if str(env.get(spec["port_env"], port)) != str(port):
            errs.append(f"compose: {binary}: {spec['port_env']}={env.get(spec['port_env'])} but SPEC §8 says {port}")
        hc = svc.get("healthcheck", {})
        test = " ".join(hc.get("test", [])) if isinstance(hc.get("test"), list) else str(hc.get("test", ""))
        if f":{port}/healthz" not in test:
            errs.append(f"compose: {binary}: healthcheck must GET /healthz on port {port} (has: {test!r})")
        if svc.get("image") != services.get("kafka-init", {}).get("image"):
            errs.append(f"compose: {binary}: must run the project image like kafka-init")
        deps = svc.get("depends_on") or {}
        if binary != "dashboard-ws" and (deps.get("kafka-init") or {}).get("condition") != "service_completed_successfully":
            errs.append(f"compose: {binary}: must wait for kafka-init (service_completed_successfully)")
        if binary in ("aggregator", "dashboard-ws") and (deps.get("redis") or {}).get("condition") != "service_healthy":
            errs.append(f"compose: {binary}: must wait for redis to be healthy")
    init = services.get("kafka-init", {})
    script = " ".join(init.get("command", [])) if isinstance(init.get("command"), list) else str(init.get("command", ""))
    created = dict(re.findall(r"(clickstream\.[a-z.]+):(\d+)", script))
    for topic, parts in stack_partitions().items():
        if created.get(topic) != str(parts):
            errs.append(f"compose: kafka-init must create {topic} with {parts} partitions (scripts/stack.sh), has {created.get(topic)}")
    lg = services.get("loadgen", {})
    if "load" not in (lg.get("profiles") or []):
        errs.append("compose: loadgen must be behind the 'load' profile")
    if "3001:3000" not in [str(p) for p in services.get("grafana", {}).get("ports", [])]:
        errs.append("compose: grafana must be on host port 3001")
    return errs


# --------------------------------------------------------------- Dockerfile
def _dockerfile_stages(text):
    """[(from_image, alias, [instructions])]; line continuations joined, ARGs substituted."""
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        lines.append(cur + s)
        cur = ""
    args, stages = {}, []
    for ln in lines:
        inst, _, rest = ln.partition(" ")
        inst = inst.upper()
        if inst == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
            continue
        if inst == "FROM":
            rest = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), rest)
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--")]
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append((parts[0], alias, []))
            continue
        if stages:
            stages[-1][2].append((inst, rest))
    return stages


def _apt_installed(instructions):
    pkgs = set()
    for inst, rest in instructions:
        if inst != "RUN":
            continue
        for m in re.finditer(r"apt-get\s+install\s+(.*?)(?:&&|;|$)", rest):
            pkgs |= {w for w in m.group(1).split() if not w.startswith("-")}
    return pkgs


@functools.lru_cache(maxsize=None)
def binary_packages(bin_dir):
    """Debian packages of the shared libraries build/bin/* link directly
    (readelf -d NEEDED -> dpkg -S), or None when the tools or binaries are missing."""
    if not (shutil.which("readelf") and shutil.which("dpkg") and os.path.isdir(bin_dir)):
        return None
    sonames = set()
    for fn in os.listdir(bin_dir):
        out = subprocess.run(["readelf", "-d", os.path.join(bin_dir, fn)], capture_output=True, text=True)
        sonames |= set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout))
    # a sanitizer build (make asan) links its runtimes; the image has none
    sonames = {so for so in sonames if not re.match(r"lib(a|ub|l|t|hwa)san\.", so)}
    if not sonames:
        return None
    out = subprocess.run(["dpkg", "-S", *("*/" + so for so in sorted(sonames))], capture_output=True, text=True)
    pkgs = dict.fromkeys(sonames)
    for line in out.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        so = os.path.basename(path.strip())
        if so in pkgs and pkgs[so] is None:
            pkgs[so] = pkg.split(":")[0]
    return pkgs


# in debian:bookworm-slim already (essential / required by apt)
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


def dockerfile_errors(text, lib_packages=None, dockerignore=None):
    errs = []
    stages = _dockerfile_stages(text)
    if len(stages) < 2:
        return ["Dockerfile: must be multi-stage (build + runtime)"]
    build, runtime = stages[0], stages[-1]
    for img, _, _ in stages:
        if not re.fullmatch(r"debian:bookworm(-slim)?", img):
            errs.append(f"Dockerfile: stage FROM {img}: must be debian:bookworm")
    if not build[1]:
        errs.append("Dockerfile: the build stage needs a name (FROM ... AS build)")
    want_dev = {p for p in deps_apt_packages()
                if p.endswith("-dev") and p != "libcmocka-dev"} | {"build-essential", "pkg-config"}
    have_build = _apt_installed(build[2])
    for p in sorted(want_dev - have_build):
        errs.append(f"Dockerfile: build stage does not install {p} (scripts/deps.sh)")
    if not any(i == "RUN" and re.search(r"\bmake\b.*\ball\b", r) for i, r in build[2]):
        errs.append("Dockerfile: build stage does not run `make all`")
    have_rt = _apt_installed(runtime[2])
    for p in sorted(have_rt):
        if p.endswith("-dev") or p in ("build-essential", "gcc", "make"):
            errs.append(f"Dockerfile: runtime stage installs build package {p}")
    if lib_packages:
        for so, pkg in sorted(lib_packages.items()):
            if pkg and pkg not in have_rt and pkg not in BASE_IMAGE_PACKAGES:
                errs.append(f"Dockerfile: runtime stage lacks {pkg} (provides {so}, linked by build/bin)")
    users = [r.split(":")[0].strip() for i, r in runtime[2] if i == "USER"]
    if not users or users[-1] in ("root", "0"):
        errs.append("Dockerfile: runtime stage must switch to a non-root USER")
    if not any(i == "COPY" and re.search(r"--from=" + re.escape(build[1] or "0") + r"\b", r) and "build/bin" in r
               for i, r in runtime[2]):
        errs.append("Dockerfile: runtime stage must COPY --from=<build> the build/bin binaries")
    if dockerignore is not None:
        entries = {ln.strip().rstrip("/") for ln in dockerignore.splitlines() if ln.strip() and not ln.startswith("#")}
        for must in (".git", ".cache", ".run", "build"):
            if must not in entries:
                errs.append(f".dockerignore: must exclude {must}")
    return errs


# --------------------------------------------------------------- kustomize
class KustomizeError(Exception):
    pass


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "patches", "replicas"}


def _group(api_version):
    return api_version.split("/")[0] if "/" in api_version else ""


def _select(objs, target):
    out = []
    for o in objs:
        if "kind" in target and o.get("kind") != target["kind"]:
            continue
        if "group" in target and _group(o.get("apiVersion", "")) != target["group"]:
            continue
        if "version" in target and o.get("apiVersion", "").split("/")[-1] != target["version"]:
            continue
        if "name" in target and not re.fullmatch(target["name"], o["metadata"]["name"]):
            continue
        if "namespace" in target and o["metadata"].get("namespace") != target["namespace"]:
            continue
        out.append(o)
    return out


def _ptr(path):
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _json6902(obj, ops):
    for op in ops:
        parts = _ptr(op["path"])
        parent = obj
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        kind = op["op"]
        if kind in ("replace", "test", "remove") and isinstance(parent, dict) and last not in parent:
            raise KustomizeError(f"json patch {kind} {op['path']}: no such path")
        if kind == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "replace":
            if isinstance(parent, list):
                parent[int(last)] = copy.deepcopy(op["value"])
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent[last]
            if cur != op["value"]:
                raise KustomizeError(f"json patch test {op['path']} failed")
        else:
            raise KustomizeError(f"json patch op {kind} not supported")


def _merge_key(key, items):
    """Strategic-merge list key of the Kubernetes types we patch (None: replace)."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if key == "ports":
        return ("containerPort", "protocol") if "containerPort" in items[0] else ("port", "protocol")
    if key in ("containers", "initContainers", "env", "volumes", "imagePullSecrets"):
        return ("name",)
    if key == "volumeMounts":
        return ("mountPath",)
    return None


def _smp(base, patch):
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            _smp(base[k], v)
        elif isinstance(v, list) and isinstance(base.get(k), list) and _merge_key(k, base[k] + v):
            mk = _merge_key(k, base[k] + v)
            for item in v:
                ident = tuple(item.get(x) for x in mk)
                match = [b for b in base[k] if tuple(b.get(x) for x in mk) == ident]
                if match:
                    _smp(match[0], item)
                else:
                    base[k].append(copy.deepcopy(item))
        else:
            base[k] = copy.deepcopy(v)


def kustomize_build(directory):
    """Renders a kustomization the way `kustomize build` does for the features
    this repository uses; anything else is an error rather than ignored."""
    kpath = os.path.join(directory, "kustomization.yaml")
    if not os.path.exists(kpath):
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    k = load_yaml(kpath)
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{kpath}: unsupported fields {sorted(unknown)}")
    objs = []
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(directory, r))
        if os.path.isdir(p):
            objs += kustomize_build(p)
        elif os.path.isfile(p):
            for d in load_yaml_docs(p):
                if not isinstance(d, dict) or "kind" not in d or "metadata" not in d:
                    raise KustomizeError(f"{p}: a document without kind/metadata")
                objs.append(d)
        else:
            raise KustomizeError(f"{kpath}: resource {r} does not exist")
    for patch in k.get("patches", []):
        if "path" in patch:
            text = open(os.path.join(directory, patch["path"])).read()
        else:
            text = patch["patch"]
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        if len(docs) == 1 and isinstance(docs[0], list):
            targets = _select(objs, patch.get("target") or {})
            if not targets or not patch.get("target"):
                raise KustomizeError(f"{kpath}: json patch matches nothing: {patch.get('target')}")
            for t in targets:
                _json6902(t, docs[0])
            continue
        for d in docs:
            target = patch.get("target") or {"kind": d["kind"], "name": re.escape(d["metadata"]["name"]),
                                             "group": _group(d.get("apiVersion", ""))}
            targets = _select(objs, target)
            if not targets:
                raise KustomizeError(f"{kpath}: patch for {d['kind']}/{d['metadata']['name']} matches nothing")
            for t in targets:
                body = {kk: vv for kk, vv in d.items() if kk not in ("apiVersion", "kind")}
                body["metadata"] = {kk: vv for kk, vv in d["metadata"].items() if kk not in ("name", "namespace")}
                if not body["metadata"]:
                    del body["metadata"]
                _smp(t, body)
    for rep in k.get("replicas", []):
        hits = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "ReplicaSet")
                and o["metadata"]["name"] == rep["name"]]
        if not hits:
            raise KustomizeError(f"{kpath}: replicas for unknown workload {rep['name']}")
        for o in hits:
            o["spec"]["replicas"] = rep["count"]
    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
    return objs


def kubectl_kustomize(directory):
    """The same rendering by the real kustomize in kubectl, or None."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    try:
        out = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {directory}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


# --------------------------------------------------------------- Kubernetes schemas
CR_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): "strimzi-kafka.schema.json",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "strimzi-kafkanodepool.schema.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "strimzi-kafkatopic.schema.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.schema.json",
}


def _obj_name(o):
    return f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}"


@functools.lru_cache(maxsize=None)
def _cr_validator(filename):
    import jsonschema
    with open(os.path.join(SCHEMAS, filename)) as f:
        schema = json.load(f)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@functools.lru_cache(maxsize=None)
def _k8s_validator(api_version, kind, version):
    """kubernetes_validate.validate() without re-reading its schema files for
    every object: same files (v<version>-local-strict), same validator class."""
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource
    want = utils.major_minor(version)
    have = [v for v in utils.all_versions() if utils.major_minor(v) <= want]
    if not have or utils.major_minor(have[-1]) != want:
        raise LookupError(f"kubernetes-validate has no schemas for Kubernetes {want}")
    schema_dir = f"v{have[-1]}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{api}.json", want)
    except FileNotFoundError:
        return None
    defs = utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", want)
    registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(defs) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def k8s_schema_errors(objs, version=K8S_VERSION):
    errs = []
    for o in objs:
        key = (o.get("apiVersion"), o.get("kind"))
        if key in CR_SCHEMAS:
            v = _cr_validator(CR_SCHEMAS[key])
        elif not all(isinstance(x, str) for x in key):
            errs.append(f"{_obj_name(o)}: apiVersion and kind must be strings")
            continue
        else:
            v = _k8s_validator(key[0], key[1], version)
            if v is None:
                errs.append(f"{_obj_name(o)}: no schema for {key[1]} {key[0]} in Kubernetes {version}")
                continue
        for e in v.iter_errors(o):
            errs.append(f"{_obj_name(o)}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
    return errs


# --------------------------------------------------------------- Kubernetes contract
def _by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o.get("kind") == kind}


def _pod_templates(objs):
    out = {}
    for o in objs:
        if o.get("kind") in ("Deployment", "StatefulSet"):
            out[(o["kind"], o["metadata"]["name"])] = o
    return out


def _selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def k8s_contract_errors(objs, known, partitions=None):
    errs = []
    partitions = partitions or stack_partitions()
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    for n in set(names):
        if names.count(n) > 1:
            errs.append(f"k8s: duplicate object {n}")
    nss = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    for o in objs:
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") not in nss:
            errs.append(f"k8s: {_obj_name(o)} is not in a namespace the manifests create ({sorted(nss)})")
    cms, secrets = _by_kind(objs, "ConfigMap"), _by_kind(objs, "Secret")
    pvcs, services = _by_kind(objs, "PersistentVolumeClaim"), _by_kind(objs, "Service")
    hpas, pdbs = list(_by_kind(objs, "HorizontalPodAutoscaler").values()), list(_by_kind(objs, "PodDisruptionBudget").values())
    workloads = _pod_templates(objs)
    all_known = set().union(*known.values()) if known else set()
    for cm in cms.values():
        errs += env_name_errors(f"k8s: ConfigMap/{cm['metadata']['name']}", cm.get("data", {}), all_known)

    # Kafka (Strimzi): topics of SPEC §2 with stack.sh's partitions, replication <= brokers
    kafkas = _by_kind(objs, "Kafka")
    pools = list(_by_kind(objs, "KafkaNodePool").values())
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in _by_kind(objs, "KafkaTopic").values()}
    brokers = sum(p["spec"].get("replicas", 0) for p in pools if "broker" in p["spec"].get("roles", []))
    if len(kafkas) != 1:
        errs.append(f"k8s: want exactly one Strimzi Kafka, found {len(kafkas)}")
    kafka_name = next(iter(kafkas), None)
    for p in pools:
        if p["metadata"].get("labels", {}).get("strimzi.io/cluster") != kafka_name:
            errs.append(f"k8s: KafkaNodePool/{p['metadata']['name']} does not belong to Kafka {kafka_name}")
    if kafka_name:
        cfg = kafkas[kafka_name]["spec"]["kafka"].get("config", {})
        for key in ("default.replication.factor", "offsets.topic.replication.factor",
                    "transaction.state.log.replication.factor", "min.insync.replicas",
                    "transaction.state.log.min.isr"):
            if int(cfg.get(key, 1)) > brokers:
                errs.append(f"k8s: Kafka {key}={cfg.get(key)} but only {brokers} broker(s)")
    for name, t in topics.items():
        if t["metadata"].get("labels", {}).get("strimzi.io/cluster") != kafka_name:
            errs.append(f"k8s: KafkaTopic {name} does not belong to Kafka {kafka_name}")
        if isinstance(t["spec"].get("replicas"), int) and t["spec"]["replicas"] > brokers:
            errs.append(f"k8s: KafkaTopic {name}: replicas {t['spec']['replicas']} > {brokers} broker(s)")
        isr = (t["spec"].get("config") or {}).get("min.insync.replicas")
        if isr is not None and isinstance(t["spec"].get("replicas"), int) and int(isr) > t["spec"]["replicas"]:
            errs.append(f"k8s: KafkaTopic {name}: min.insync.replicas {isr} > replicas {t['spec']['replicas']}")
    for topic, parts in partitions.items():
        if topic not in topics:
            errs.append(f"k8s: no KafkaTopic for {topic}")
        elif topics[topic]["spec"].get("partitions") != parts:
            errs.append(f"k8s: KafkaTopic {topic} has {topics[topic]['spec'].get('partitions')} partitions, "
                        f"scripts/stack.sh {parts}")
    raw_parts = topics.get("clickstream.raw", {}).get("spec", {}).get("partitions")
    if not isinstance(raw_parts, int):
        raw_parts = partitions["clickstream.raw"]

    for cm in cms.values():
        bs = cm.get("data", {}).get("KAFKA_BOOTSTRAP")
        if bs and kafka_name and bs != f"{kafka_name}-kafka-bootstrap:9092":
            errs.append(f"k8s: KAFKA_BOOTSTRAP={bs}, but the Strimzi bootstrap service is {kafka_name}-kafka-bootstrap:9092")
        rh = cm.get("data", {}).get("REDIS_HOST")
        if rh and rh not in services:
            errs.append(f"k8s: REDIS_HOST={rh} is not a Service")

    for binary, spec in SERVICES.items():
        wl = [w for (kind, n), w in workloads.items() if n == binary]
        if len(wl) != 1:
            errs.append(f"k8s: want one Deployment or StatefulSet {binary}, found {len(wl)}")
            continue
        w = wl[0]
        where = f"k8s: {w['kind']}/{binary}"
        tpl = w["spec"]["template"]
        labels = tpl["metadata"].get("labels", {})
        if not _selects(w["spec"]["selector"].get("matchLabels", {}), labels):
            errs.append(f"{where}: selector does not match its pod labels")
        pod = tpl["spec"]
        cs = [c for c in pod["containers"] if (c.get("command") or c.get("args") or [None])[0] == binary]
        if len(cs) != 1:
            errs.append(f"{where}: no container whose command is {binary}")
            continue
        c = cs[0]
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if spec["port"] not in ports.values():
            errs.append(f"{where}: container port {spec['port']} (SPEC §8) missing")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            hg = (c.get(probe) or {}).get("httpGet")
            if not hg or hg.get("path") != path:
                errs.append(f"{where}: {probe} must GET {path}")
                continue
            port = ports.get(hg["port"], hg["port"])
            if port != spec["port"]:
                errs.append(f"{where}: {probe} port {hg['port']} is not {spec['port']}")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(part, {}):
                    errs.append(f"{where}: resources.{part}.{r} missing")
        defined = []
        for e in c.get("env", []):
            for ref in re.findall(r"\$\((\w+)\)", e.get("value", "") or ""):
                if ref not in defined:
                    errs.append(f"{where}: env {e['name']} refers to $({ref}) which is not defined before it")
            defined.append(e["name"])
            skr = (e.get("valueFrom") or {}).get("secretKeyRef")
            if skr and (skr["name"] not in secrets or skr["key"] not in
                        {**secrets[skr["name"]].get("stringData", {}), **secrets[skr["name"]].get("data", {})}):
                errs.append(f"{where}: env {e['name']} refers to missing secret key {skr['name']}/{skr['key']}")
            ckr = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ckr and ckr["name"] not in cms:
                errs.append(f"{where}: env {e['name']} refers to missing ConfigMap {ckr['name']}")
        errs += env_name_errors(where, [e["name"] for e in c.get("env", [])], known.get(binary, set()))
        env_port = {e["name"]: e.get("value") for e in c.get("env", [])}.get(spec["port_env"])
        if env_port is not None and str(env_port) != str(spec["port"]):
            errs.append(f"{where}: {spec['port_env']}={env_port} but SPEC §8 says {spec['port']}")
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef and ef["configMapRef"]["name"] not in cms:
                errs.append(f"{where}: envFrom ConfigMap {ef['configMapRef']['name']} does not exist")
            if "secretRef" in ef and ef["secretRef"]["name"] not in secrets:
                errs.append(f"{where}: envFrom Secret {ef['secretRef']['name']} does not exist")
        for v in pod.get("volumes", []):
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in pvcs:
                errs.append(f"{where}: volume {v['name']} claims missing PVC {claim}")
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        for m in mounts - {v["name"] for v in pod.get("volumes", [])}:
            errs.append(f"{where}: volumeMount {m} has no volume")
        if w["kind"] == "StatefulSet":
            svc = services.get(w["spec"].get("serviceName"))
            if not svc or svc["spec"].get("clusterIP") != "None":
                errs.append(f"{where}: serviceName must name a headless Service")
        # Service, PDB, HPA
        svcs = [s for s in services.values() if _selects(s["spec"].get("selector", {}), labels)]
        if not any(p.get("port") == spec["port"] for s in svcs for p in s["spec"].get("ports", [])):
            errs.append(f"{where}: no Service exposes port {spec['port']} of its pods")
        for s in svcs:
            for p in s["spec"].get("ports", []):
                tp = p.get("targetPort", p.get("port"))
                if isinstance(tp, str) and tp not in ports:
                    errs.append(f"k8s: Service/{s['metadata']['name']}: targetPort {tp} is not a port name of {binary}")
        if not any(_selects(p["spec"].get("selector", {}).get("matchLabels", {}), labels) for p in pdbs):
            errs.append(f"{where}: no PodDisruptionBudget selects its pods")
        hs = [h for h in hpas if h["spec"]["scaleTargetRef"].get("name") == binary
              and h["spec"]["scaleTargetRef"].get("kind") == w["kind"]]
        if len(hs) != 1:
            errs.append(f"{where}: want one HorizontalPodAutoscaler targeting it, found {len(hs)}")
            continue
        h = hs[0]
        if h["apiVersion"] != "autoscaling/v2":
            errs.append(f"k8s: HPA/{binary}: must be autoscaling/v2")
        if not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in h["spec"].get("metrics", [])):
            errs.append(f"k8s: HPA/{binary}: must scale on CPU")
        lo, hi = h["spec"].get("minReplicas", 1), h["spec"]["maxReplicas"]
        if isinstance(lo, int) and isinstance(hi, int):
            if lo > hi:
                errs.append(f"k8s: HPA/{binary}: minReplicas {lo} > maxReplicas {hi}")
            if spec["consumer"] and hi > raw_parts:
                errs.append(f"k8s: HPA/{binary}: maxReplicas {hi} > {raw_parts} partitions of clickstream.raw "
                            f"(extra consumers would sit idle)")
            reps = w["spec"].get("replicas", 1)
            if isinstance(reps, int) and not lo <= reps <= hi:
                errs.append(f"k8s: {w['kind']}/{binary}: replicas {reps} outside the HPA range {lo}..{hi}")
    return errs


def keda_errors(objs, base_objs):
    errs = k8s_schema_errors(objs)
    workloads = _pod_templates(base_objs)
    topics = {t["spec"].get("topicName"): t["spec"]["partitions"] for t in base_objs if t["kind"] == "KafkaTopic"}
    cm = next((o for o in base_objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "clickstream-config"), {})
    data = cm.get("data", {})
    groups = {"sessionizer": data.get("SESSIONIZER_GROUP_ID"), "aggregator": data.get("AGGREGATOR_GROUP_ID"),
              "lake-writer": data.get("LAKE_GROUP_ID")}
    kafka = next((o["metadata"]["name"] for o in base_objs if o["kind"] == "Kafka"), None)
    for o in objs:
        if o.get("kind") != "ScaledObject" or errs:
            continue
        ref = o["spec"]["scaleTargetRef"]
        name = ref["name"]
        if (ref.get("kind", "Deployment"), name) not in workloads:
            errs.append(f"keda: {name}: no {ref.get('kind', 'Deployment')} {name} in k8s/base")
        for t in o["spec"]["triggers"]:
            if t["type"] != "kafka":
                continue
            md = t["metadata"]
            if groups.get(name) and md["consumerGroup"] != groups[name]:
                errs.append(f"keda: {name}: consumerGroup {md['consumerGroup']} is not the service's group {groups[name]}")
            if kafka and not md["bootstrapServers"].startswith(f"{kafka}-kafka-bootstrap"):
                errs.append(f"keda: {name}: bootstrapServers is not the Strimzi bootstrap service")
            parts = topics.get(md.get("topic"))
            if parts is None:
                errs.append(f"keda: {name}: topic {md.get('topic')} is not a KafkaTopic of k8s/base")
            elif o["spec"].get("maxReplicaCount", 100) > parts:
                errs.append(f"keda: {name}: maxReplicaCount {o['spec'].get('maxReplicaCount')} > {parts} partitions")
    return errs


# --------------------------------------------------------------- PromQL
class PromQLError(Exception):
    pass


AGG_OPS = {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "group", "topk", "bottomk",
           "quantile", "count_values", "limitk", "limit_ratio"}
AGG_WITH_PARAM = {"topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio"}
RANGE_FUNCS = {"rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "changes", "resets",
               "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
               "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
               "present_over_time", "absent_over_time", "holt_winters", "double_exponential_smoothing"}
COUNTER_FUNCS = {"rate", "irate", "increase", "resets"}
FUNCS = RANGE_FUNCS | {"abs", "absent", "ceil", "clamp", "clamp_max", "clamp_min", "day_of_month", "day_of_week",
                       "days_in_month", "exp", "floor", "histogram_quantile", "hour", "label_join", "label_replace",
                       "ln", "log10", "log2", "minute", "month", "round", "scalar", "sgn", "sort", "sort_desc",
                       "sqrt", "time", "timestamp", "vector", "year"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "atan2"}
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<dur>(?:\d+(?:ms|s|m|h|d|w|y))+(?![\w.]))
  | (?P<num>(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)(?![\w]))
  | (?P<var>\$\{?\w+\}?)
  | (?P<ident>[a-zA-Z_][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|==|!=|<=|>=|[-+*/%^<>=,(){}\[\]:@])
""", re.X)


def _tokenize(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise PromQLError(f"unexpected character {expr[pos]!r} at {pos}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    out.append(("eof", ""))
    return out


class _Parser:
    """Recursive descent over the PromQL grammar. Collects selectors as
    (name, [(label, op, value)]) and calls as (function, [argument nodes])."""

    BIN_LEVELS = [("or",), ("and", "unless"), ("==", "!=", "<=", "<", ">=", ">"), ("+", "-"),
                  ("*", "/", "%", "atan2")]

    def __init__(self, expr):
        self.toks = _tokenize(expr)
        self.i = 0
        self.selectors = []
        self.calls = []

    def peek(self, k=0):
        return self.toks[self.i + k]

    def take(self, kind=None, value=None):
        t = self.toks[self.i]
        if (kind and t[0] != kind) or (value is not None and t[1] != value):
            raise PromQLError(f"expected {value or kind}, got {t[1] or 'end of expression'!r}")
        self.i += 1
        return t

    def at(self, *values):
        t = self.peek()
        return t[0] in ("op", "ident") and t[1] in values

    def parse(self):
        node = self.expr(0)
        if self.peek()[0] != "eof":
            raise PromQLError(f"unexpected {self.peek()[1]!r} after the expression")
        return node

    def label_list(self):
        self.take("op", "(")
        labels = []
        while not self.at(")"):
            labels.append(self.take("ident")[1])
            if not self.at(")"):
                self.take("op", ",")
        self.take("op", ")")
        return labels

    def expr(self, level):
        if level == len(self.BIN_LEVELS):
            return self.power()
        left = self.expr(level + 1)
        while self.at(*self.BIN_LEVELS[level]):
            op = self.take()[1]
            if self.at("bool"):
                self.take()
            if self.at("on", "ignoring"):
                self.take()
                self.label_list()
                if self.at("group_left", "group_right"):
                    self.take()
                    if self.at("("):
                        self.label_list()
            right = self.expr(level + 1)
            left = ("binop", op, left, right)
        return left

    def power(self):
        left = self.unary()
        if self.at("^"):
            self.take()
            return ("binop", "^", left, self.power())
        return left

    def unary(self):
        if self.at("-", "+"):
            self.take()
            return ("unary", self.unary())
        return self.postfix()

    def duration(self):
        t = self.peek()
        if t[0] in ("dur", "var"):
            self.take()
            return t[1]
        raise PromQLError(f"expected a duration, got {t[1]!r}")

    def postfix(self):
        node = self.primary()
        while True:
            if self.at("["):
                self.take()
                rng = self.duration()
                if self.at(":"):
                    self.take()
                    if not self.at("]"):
                        self.duration()
                    node = ("subquery", node, rng)
                else:
                    if node[0] != "selector":
                        raise PromQLError("a range [..] applies to a selector only")
                    node = ("range", node, rng)
                self.take("op", "]")
            elif self.at("offset"):
                self.take()
                if self.at("-"):
                    self.take()
                self.duration()
            elif self.at("@"):
                self.take()
                self.take()
            else:
                return node

    def matchers(self):
        self.take("op", "{")
        ms = []
        while not self.at("}"):
            label = self.take("ident")[1]
            op = self.take("op")[1]
            if op not in ("=", "!=", "=~", "!~"):
                raise PromQLError(f"bad label matcher operator {op!r}")
            value = self.take("str")[1][1:-1]
            if op in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as e:
                    raise PromQLError(f"bad regex {value!r}: {e}")
            ms.append((label, op, value))
            if not self.at("}"):
                self.take("op", ",")
        self.take("op", "}")
        return ms

    def primary(self):
        kind, val = self.peek()
        if kind in ("num", "str"):
            self.take()
            return ("literal", val)
        if kind == "var":
            self.take()
            return ("literal", val)
        if kind == "op" and val == "(":
            self.take()
            node = self.expr(0)
            self.take("op", ")")
            return ("paren", node)
        if kind == "op" and val == "{":
            sel = ("selector", None, self.matchers())
            self.selectors.append(sel)
            return sel
        if kind != "ident":
            raise PromQLError(f"unexpected {val or 'end of expression'!r}")
        if val in AGG_OPS and (self.peek(1)[1] in ("(", "by", "without")):
            self.take()
            if self.at("by", "without"):
                self.take()
                self.label_list()
            self.take("op", "(")
            args = []
            if val in AGG_WITH_PARAM:
                args.append(self.expr(0))
                self.take("op", ",")
            args.append(self.expr(0))
            self.take("op", ")")
            if self.at("by", "without"):
                self.take()
                self.label_list()
            node = ("agg", val, args)
            return node
        if self.peek(1)[1] == "(":
            if val not in FUNCS:
                raise PromQLError(f"unknown function {val}()")
            self.take()
            self.take("op", "(")
            args = []
            while not self.at(")"):
                args.append(self.expr(0))
                if not self.at(")"):
                    self.take("op", ",")
            self.take("op", ")")
            if val in RANGE_FUNCS:
                if not args or args[0 if val != "quantile_over_time" else -1][0] not in ("range", "subquery"):
                    raise PromQLError(f"{val}() needs a range vector argument (metric[5m])")
            node = ("call", val, args)
            self.calls.append(node)
            return node
        if val in KEYWORDS:
            raise PromQLError(f"unexpected keyword {val!r}")
        self.take()
        ms = self.matchers() if self.at("{") else []
        sel = ("selector", val, ms)
        self.selectors.append(sel)
        return sel


def parse_promql(expr):
    """-> (selectors [(name, matchers)], calls [(func, first selector name or None)]).
    Raises PromQLError on a syntax error."""
    if not isinstance(expr, str) or not expr.strip():
        raise PromQLError("empty expression")
    p = _Parser(expr)
    p.parse()
    calls = []
    for _, fn, args in p.calls:
        sel = None
        if args:
            a = args[0] if fn != "quantile_over_time" else args[-1]
            if a[0] == "range":
                sel = a[1][1]
        calls.append((fn, sel))
    return [(n, ms) for _, n, ms in p.selectors], calls


# Metrics that are not ours: name -> (type, labels).
EXTERNAL_METRICS = {
    "up": ("gauge", {"job", "instance"}),
    # kafka-exporter (danielqsj/kafka_exporter; Strimzi's Kafka Exporter is the same program)
    "kafka_consumergroup_lag": ("gauge", {"consumergroup", "topic", "partition"}),
    "kafka_consumergroup_lag_sum": ("gauge", {"consumergroup", "topic"}),
    "kafka_consumergroup_current_offset": ("gauge", {"consumergroup", "topic", "partition"}),
    "kafka_topic_partition_current_offset": ("gauge", {"topic", "partition"}),
    "kafka_brokers": ("gauge", set()),
}
TARGET_LABELS = {"job", "instance", "__name__"}


def _literal_alternatives(regex):
    if re.fullmatch(r"[\w.:-]+(\|[\w.:-]+)*", regex):
        return regex.split("|")
    return None


def promql_errors(where, expr, exported, jobs):
    """Syntax, metric names (exported or external), label names and values,
    rate()/increase() only on counters."""
    try:
        selectors, calls = parse_promql(expr)
    except PromQLError as e:
        return [f"{where}: PromQL syntax: {e}"]
    errs = []
    if not selectors:
        errs.append(f"{where}: the expression selects no metric")
    for name, matchers in selectors:
        if name is None:
            errs.append(f"{where}: selector without a metric name")
            continue
        if name in EXTERNAL_METRICS:
            labels, values = EXTERNAL_METRICS[name][1], None
        elif name in exported:
            values = exported[name]["labels"]
            # None: known from the C source only, labels unknown
            labels = None if values is None else set(values)
        else:
            errs.append(f"{where}: metric {name} is not exported by any service (nor a known external metric)")
            continue
        for label, op, value in matchers:
            if label == "job":
                alts = _literal_alternatives(value) if op == "=~" else ([value] if op == "=" else None)
                for a in alts or []:
                    if a not in jobs:
                        errs.append(f"{where}: job {a!r} is not a scrape job of prometheus.yml")
                continue
            if label in TARGET_LABELS or labels is None:
                continue
            if label not in labels:
                errs.append(f"{where}: {name} has no label {label!r} (has: {sorted(labels) or 'none'})")
                continue
            if values is None or op not in ("=", "=~"):
                continue
            seen = values.get(label, set())
            alts = [value] if op == "=" else _literal_alternatives(value)
            if alts is not None:
                for a in alts:
                    if a not in seen:
                        errs.append(f"{where}: {name}{{{label}={a!r}}}: no such value (exported: {sorted(seen)})")
            elif not any(re.fullmatch(value, s) for s in seen):
                errs.append(f"{where}: {name}{{{label}=~{value!r}}} matches no exported value")
    for fn, sel in calls:
        if fn in COUNTER_FUNCS and sel:
            t = EXTERNAL_METRICS[sel][0] if sel in EXTERNAL_METRICS else exported.get(sel, {}).get("type")
            if t == "gauge":
                errs.append(f"{where}: {fn}() of gauge {sel}: use delta()/deriv() or the raw value")
    return errs


# --------------------------------------------------------------- Prometheus rules and config
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations", "record"}
PROM_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
SEVERITIES = {"critical", "warning", "info"}


def rules_errors(doc, exported, jobs):
    errs = []
    if not isinstance(doc, dict) or set(doc) != {"groups"} or not isinstance(doc["groups"], list):
        return ["rules: the file must be a mapping with only 'groups' (a list)"]
    seen_groups, seen_alerts = set(), set()
    for gi, g in enumerate(doc["groups"]):
        if not isinstance(g, dict) or not isinstance(g.get("name"), str):
            errs.append(f"rules: group {gi}: needs a name")
            continue
        gname = g["name"]
        if gname in seen_groups:
            errs.append(f"rules: group {gname} defined twice")
        seen_groups.add(gname)
        for k in set(g) - {"name", "interval", "rules", "limit", "query_offset", "labels"}:
            errs.append(f"rules: group {gname}: unknown field {k}")
        if "interval" in g and not PROM_DURATION.fullmatch(str(g["interval"])):
            errs.append(f"rules: group {gname}: bad interval {g['interval']!r}")
        if not isinstance(g.get("rules"), list) or not g["rules"]:
            errs.append(f"rules: group {gname}: needs a non-empty rules list")
            continue
        for ri, r in enumerate(g["rules"]):
            where = f"rules: {gname}[{ri}]"
            if not isinstance(r, dict):
                errs.append(f"{where}: a rule must be a mapping")
                continue
            for k in set(r) - RULE_KEYS:
                errs.append(f"{where}: unknown field {k}")
            if ("alert" in r) == ("record" in r):
                errs.append(f"{where}: exactly one of alert/record")
                continue
            name = r.get("alert") or r.get("record")
            where = f"rules: {gname}/{name}"
            if "alert" in r:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
                    errs.append(f"{where}: bad alert name")
                if name in seen_alerts:
                    errs.append(f"{where}: alert defined twice")
                seen_alerts.add(name)
                labels = r.get("labels") or {}
                if labels.get("severity") not in SEVERITIES:
                    errs.append(f"{where}: labels.severity must be one of {sorted(SEVERITIES)}")
                ann = r.get("annotations") or {}
                for k in ("summary", "description"):
                    if not isinstance(ann.get(k), str) or not ann[k].strip():
                        errs.append(f"{where}: annotations.{k} missing")
                for k, v in {**labels, **ann}.items():
                    if not isinstance(v, str):
                        errs.append(f"{where}: label/annotation {k} must be a string")
                    elif v.count("{{") != v.count("}}"):
                        errs.append(f"{where}: unbalanced template in {k}")
                if "runbook" in ann:
                    errs += runbook_errors(where, ann["runbook"])
            for k in ("for", "keep_firing_for"):
                if k in r and not PROM_DURATION.fullmatch(str(r[k])):
                    errs.append(f"{where}: {k}: {r[k]!r} is not a Prometheus duration")
            errs += promql_errors(where, r.get("expr"), exported, jobs)
    return errs


def github_anchor(heading):
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def runbook_errors(where, ref):
    path, _, anchor = ref.partition("#")
    full = os.path.join(ROOT, path)
    if not os.path.isfile(full):
        return [f"{where}: runbook {path} does not exist"]
    if anchor:
        anchors = {github_anchor(m) for m in re.findall(r"^#+\s+(.*)$", open(full).read(), re.M)}
        if anchor not in anchors:
            return [f"{where}: runbook {path} has no section #{anchor}"]
    return []


def promtool_errors(path):
    """`promtool check rules`, when a promtool binary is at hand (PATH or
    .cache/bin); None when there is none."""
    tool = shutil.which("promtool") or os.path.join(ROOT, ".cache", "bin", "promtool")
    if not os.access(tool, os.X_OK):
        return None
    out = subprocess.run([tool, "check", "rules", path], capture_output=True, text=True, timeout=60)
    return [] if out.returncode == 0 else [f"promtool: {out.stdout}{out.stderr}"]


def prometheus_config_errors(doc, compose):
    errs = []
    services = compose.get("services", {})
    jobs = {}
    for sc in doc.get("scrape_configs", []):
        if sc["job_name"] in jobs:
            errs.append(f"prometheus.yml: job {sc['job_name']} twice")
        jobs[sc["job_name"]] = [t for s in sc.get("static_configs", []) for t in s.get("targets", [])]
        if sc.get("metrics_path", "/metrics") != "/metrics":
            errs.append(f"prometheus.yml: job {sc['job_name']}: metrics_path must be /metrics (SPEC §8)")
    for binary, spec in SERVICES.items():
        if jobs.get(binary) != [f"{binary}:{spec['port']}"]:
            errs.append(f"prometheus.yml: job {binary} must scrape {binary}:{spec['port']} (has {jobs.get(binary)})")
    for job, targets in jobs.items():
        for t in targets:
            host = t.split(":")[0]
            if host != "localhost" and host not in services:
                errs.append(f"prometheus.yml: job {job}: target host {host} is not a compose service")
    rf = doc.get("rule_files", [])
    if "/etc/prometheus/alerts.yml" not in rf:
        errs.append("prometheus.yml: rule_files must load /etc/prometheus/alerts.yml")
    return errs, set(jobs)


# --------------------------------------------------------------- Grafana
GRAFANA_MUST_USE = {
    "throughput per stage": ["gateway_events_accepted_total", "sessionizer_events_in_total",
                             "aggregator_records_in_total", "lake_records_total"],
    "consumer lag": ["kafka_consumergroup_lag"],
    "watermark lag": ["sessionizer_watermark_lag_seconds", "aggregator_watermark_lag_ms"],
    "DLQ / late rate": ["sessionizer_late_total", "aggregator_events_total"],
    "commit latency": ["sessionizer_transaction_commit_seconds_sum", "aggregator_commit_seconds_avg",
                       "lake_commit_seconds_bucket"],
}


def dashboard_errors(doc, exported, jobs, ds_uid):
    errs = []
    if not isinstance(doc, dict):
        return ["dashboard: not a JSON object"]
    for k in ("uid", "title", "panels", "schemaVersion"):
        if k not in doc:
            errs.append(f"dashboard: {k} missing")
    ids, used = set(), set()

    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    for p in walk(doc.get("panels", [])):
        pid = p.get("id")
        where = f"dashboard: panel {pid} {p.get('title')!r}"
        if pid in ids:
            errs.append(f"{where}: duplicate id")
        ids.add(pid)
        gp = p.get("gridPos", {})
        if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")) or gp["x"] + gp["w"] > 24:
            errs.append(f"{where}: bad gridPos {gp}")
        if p.get("type") == "row":
            continue
        ds = p.get("datasource") or {}
        if ds.get("uid") != ds_uid:
            errs.append(f"{where}: datasource uid {ds.get('uid')!r} is not the provisioned {ds_uid!r}")
        targets = p.get("targets") or []
        if not targets:
            errs.append(f"{where}: no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            errs.append(f"{where}: duplicate refId")
        for t in targets:
            if (t.get("datasource") or ds).get("uid") != ds_uid:
                errs.append(f"{where}: query {t.get('refId')}: datasource is not {ds_uid!r}")
            e = promql_errors(f"{where} query {t.get('refId')}", t.get("expr"), exported, jobs)
            errs += e
            if not e:
                used |= {n for n, _ in parse_promql(t["expr"])[0]}
    for topic, names in GRAFANA_MUST_USE.items():
        missing = [n for n in names if n not in used]
        if missing:
            errs.append(f"dashboard: no panel shows {topic} ({', '.join(missing)})")
    return errs


# --------------------------------------------------------------- exported metrics
def parse_exposition(text, into=None):
    """Prometheus text format -> {sample name: {'type': t, 'labels': {label: {values}}}}."""
    out = {} if into is None else into
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, t = line.split(None, 3)
            types[name] = t.strip()
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        if not m:
            raise ValueError(f"bad exposition line: {line!r}")
        name = m.group(1)
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
                family = name[: -len(suffix)]
        t = types.get(family, "untyped")
        if family != name:
            t = "histogram_bucket" if name.endswith("_bucket") else "counter"
        entry = out.setdefault(name, {"type": t, "labels": {}})
        for k, v in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""):
            entry["labels"].setdefault(k, set()).add(v)
    return out


def metrics_from_source(binary):
    """Fallback: metric names a service registers in its C source (and the
    process_* ones of libcommon). Labels unknown (None: not checked)."""
    texts = [open(os.path.join(ROOT, "libcommon", "cm_metrics.c")).read()]
    d = os.path.join(ROOT, "services", binary)
    texts += [open(os.path.join(d, fn)).read() for fn in sorted(os.listdir(d)) if fn.endswith(".c")]
    out = {}
    for kind, name in re.findall(
            r"cm_metrics_(counter|gauge|histogram)(?:_fn|v)?\(\s*[^,()]+,\s*\"([a-z_:][a-z0-9_:]*)\"",
            "\n".join(texts)):
        if kind == "histogram":
            out[name + "_bucket"] = {"type": "histogram_bucket", "labels": None}
            out[name + "_sum"] = {"type": "counter", "labels": None}
            out[name + "_count"] = {"type": "counter", "labels": None}
        else:
            out[name] = {"type": kind, "labels": None}
    return out


# =================================================================== tests
import pytest  # noqa: E402

from conftest import Proc, free_port, http_get  # noqa: E402

COMPOSE = os.path.join(ROOT, "docker-compose.yml")
RULES = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
PROM_CONFIG = os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "dashboards", "clickstream.json")
GRAFANA_DS = os.path.join(ROOT, "deploy", "grafana", "provisioning", "datasources", "prometheus.yml")
GRAFANA_DASH_PROVIDER = os.path.join(ROOT, "deploy", "grafana", "provisioning", "dashboards", "clickstream.yml")
K8S_BASE = os.path.join(ROOT, "k8s", "base")
K8S_LOCAL = os.path.join(ROOT, "k8s", "overlays", "local")
KEDA = os.path.join(ROOT, "k8s", "optional", "keda-scaledobject.yaml")
BIN_DIR = os.environ.get("BIN_DIR", os.path.join(ROOT, "build", "bin"))
# the image is built from the release build, never from build-asan
RELEASE_BIN_DIR = os.path.join(ROOT, "build", "bin")


@pytest.fixture(scope="module")
def known():
    """{binary: env names it reads} (from --help of the built binary, else its config table)."""
    return known_env()


@pytest.fixture(scope="module")
def compose():
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def base_objs():
    return kustomize_build(K8S_BASE)


@pytest.fixture(scope="module")
def jobs(compose):
    return prometheus_config_errors(load_yaml(PROM_CONFIG), compose)[1]


# ------------------------------------------------------------ exported metric names
def _get(url):
    try:
        return http_get(url, timeout=2)
    except OSError:
        return None, None


def _scrape(port):
    code, body = _get(f"http://127.0.0.1:{port}/metrics")
    return body if code == 200 else None


@pytest.fixture(scope="module")
def exported(stack, tmp_path_factory):
    """Metric names the five services really export: each binary is started
    against the test stack on its own topics (nothing shared with other
    tests), one event goes through the gateway, and /metrics is scraped. A
    service that cannot start here falls back to the names registered in its
    C source; which source each service's names came from is written to
    tests/artifacts/deploy-metric-sources.json."""
    import time
    import urllib.request
    u = os.urandom(4).hex()
    t = {k: f"dep.{k}.{u}" for k in ("raw", "ses", "met", "late", "szcl", "agcl", "panes")}
    subprocess.run([os.path.join(BIN_DIR, "cs-admin"), "create-topics", "-b", stack["KAFKA_BOOTSTRAP"],
                    f"{t['raw']}:2", f"{t['ses']}:2", f"{t['met']}:1", f"{t['late']}:1",
                    f"{t['szcl']}:2:compact", f"{t['agcl']}:2:compact", f"{t['panes']}:1"],
                   check=True, timeout=60)
    common = {"KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"], "REDIS_HOST": stack["REDIS_HOST"],
              "REDIS_PORT": stack["REDIS_PORT"], "TOPIC_RAW": t["raw"], "TOPIC_SESSIONS": t["ses"],
              "TOPIC_METRICS": t["met"], "TOPIC_LATE": t["late"]}
    ports = {b: free_port() for b in SERVICES}
    warehouse = str(tmp_path_factory.mktemp("warehouse"))
    envs = {
        "ingest-gateway": {"GATEWAY_PORT": ports["ingest-gateway"], "GATEWAY_ADDR": "127.0.0.1",
                           "GATEWAY_AUTH": "off", "GATEWAY_TOPIC": t["raw"]},
        "sessionizer": {"ADMIN_PORT": ports["sessionizer"], "ADMIN_ADDR": "127.0.0.1",
                        "SESSIONIZER_GROUP_ID": f"dep-sz-{u}", "SESSIONIZER_CHANGELOG_TOPIC": t["szcl"],
                        "SESSIONIZER_TRANSACTIONAL_ID": f"dep-sz-{u}"},
        "aggregator": {"AGGREGATOR_ADMIN_PORT": ports["aggregator"], "AGGREGATOR_ADMIN_ADDR": "127.0.0.1",
                       "AGGREGATOR_GROUP_ID": f"dep-ag-{u}", "AGGREGATOR_INSTANCE_ID": f"dep-{u}",
                       "AGGREGATOR_CHANGELOG_TOPIC": t["agcl"], "AGGREGATOR_PANES_TOPIC": t["panes"],
                       "AGGREGATOR_REDIS_PREFIX": f"dep:{u}"},
        "lake-writer": {"LAKE_ADMIN_PORT": ports["lake-writer"], "LAKE_ADMIN_ADDR": "127.0.0.1",
                        "LAKE_GROUP_ID": f"dep-lw-{u}", "LAKE_INSTANCE_ID": f"dep-lw-{u}",
                        "LAKE_WAREHOUSE": warehouse},
        "dashboard-ws": {"DASHBOARD_PORT": ports["dashboard-ws"], "DASHBOARD_ADDR": "127.0.0.1",
                         "DASHBOARD_REDIS_PREFIX": f"dep:{u}"},
    }
    procs, sources, metrics, texts = {}, {}, {}, {}
    for b in SERVICES:
        if not os.access(os.path.join(BIN_DIR, b), os.X_OK):
            sources[b] = "C source (binary not built)"
            continue
        procs[b] = Proc(b, {**common, **envs[b]})
    try:
        deadline = time.time() + 30
        for b, p in procs.items():
            while time.time() < deadline and p.p.poll() is None and b not in texts:
                body = _scrape(ports[b])
                if body:
                    texts[b] = body
                else:
                    time.sleep(0.1)
        # traffic, so that families created on first use show up too
        gw = ports["ingest-gateway"]
        if "ingest-gateway" in texts:
            while time.time() < deadline and _get(f"http://127.0.0.1:{gw}/readyz")[0] != 200:
                time.sleep(0.1)
            ev = json.dumps({"event_id": f"dep-{u}", "timestamp": int(time.time() * 1000), "user_id": "u1",
                             "event_type": "page_view", "page_url": "https://shop.example.com/"}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{gw}/v1/events", data=ev,
                                         headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=10).read()
            except OSError:
                pass
        if "dashboard-ws" in texts:
            _get(f"http://127.0.0.1:{ports['dashboard-ws']}/api/snapshot")
        time.sleep(1.5)
        for b in procs:
            body = _scrape(ports[b]) if procs[b].p.poll() is None else None
            if body:
                texts[b] = texts.get(b, "") + "\n" + body
    finally:
        for p in procs.values():
            p.kill9()
            p.log.close()
    for b in SERVICES:
        if b in texts:
            parse_exposition(texts[b], metrics)
            sources[b] = "scraped /metrics"
        else:
            if b not in sources:
                sources[b] = f"C source (did not start here: {procs[b].tail(300)!r})"
            for name, v in metrics_from_source(b).items():
                metrics.setdefault(name, v)
    os.makedirs(os.path.join(ROOT, "tests", "artifacts"), exist_ok=True)
    with open(os.path.join(ROOT, "tests", "artifacts", "deploy-metric-sources.json"), "w") as f:
        json.dump({"sources": sources, "names": sorted(metrics)}, f, indent=1)
    return metrics


def test_metric_names_come_from_the_running_services(exported):
    report = json.load(open(os.path.join(ROOT, "tests", "artifacts", "deploy-metric-sources.json")))
    print("metric names per service:", report["sources"])
    prefixes = {"ingest-gateway": "gateway_", "sessionizer": "sessionizer_", "aggregator": "aggregator_",
                "lake-writer": "lake_", "dashboard-ws": "dashboard_"}
    for b, prefix in prefixes.items():
        assert any(n.startswith(prefix) for n in exported), f"no metric of {b}"
    # histograms appear as _bucket/_sum/_count, counters keep their _total
    assert "gateway_request_duration_seconds_bucket" in exported
    assert exported["gateway_events_accepted_total"]["type"] == "counter"


# ------------------------------------------------------------ Compose
def test_compose_is_valid(compose, known):
    assert compose_errors(compose, known) == []


def _mutate(doc, fn):
    d = copy.deepcopy(doc)
    fn(d)
    return d


COMPOSE_BROKEN = {
    "misspelled key": (lambda d: d["services"]["sessionizer"].__setitem__(
        "enviroment", d["services"]["sessionizer"].pop("environment")), "enviroment"),
    "bad depends_on condition": (lambda d: d["services"]["aggregator"]["depends_on"]["redis"].__setitem__(
        "condition", "service_healty"), "service_healty"),
    "bad healthcheck duration": (lambda d: d["services"]["aggregator"]["healthcheck"].__setitem__(
        "interval", "ten seconds"), "interval"),
    "unknown dependency": (lambda d: d["services"]["aggregator"]["depends_on"].__setitem__(
        "zookeeper", {"condition": "service_started"}), "unknown service zookeeper"),
    "wrong SPEC port": (lambda d: d["services"]["lake-writer"].__setitem__("ports", ["9105:9104"]), "9104:9104"),
    "env typo": (lambda d: d["services"]["ingest-gateway"]["environment"].__setitem__(
        "GATEWAY_WRITE_KEY", "x"), "GATEWAY_WRITE_KEY"),
    "healthcheck not /healthz": (lambda d: d["services"]["dashboard-ws"]["healthcheck"].__setitem__(
        "test", ["CMD", "curl", "-f", "http://127.0.0.1:3000/"]), "/healthz"),
    "topic partitions": (lambda d: d["services"]["kafka-init"].__setitem__("command", [
        "/bin/sh", "-ec", "cs-admin create-topics -b kafka:19092 clickstream.raw:6 clickstream.sessions:12 "
        "clickstream.metrics:3 clickstream.late:3"]), "clickstream.raw with 12"),
    "loadgen without profile": (lambda d: d["services"]["loadgen"].pop("profiles"), "profile"),
}


@pytest.mark.parametrize("case", sorted(COMPOSE_BROKEN))
def test_compose_broken_copies_are_rejected(compose, known, case):
    fn, needle = COMPOSE_BROKEN[case]
    errs = compose_errors(_mutate(compose, fn), known)
    assert errs, f"{case}: accepted"
    assert any(needle in e for e in errs), errs


# ------------------------------------------------------------ Dockerfile
def _dockerfile():
    return open(os.path.join(ROOT, "Dockerfile")).read()


def test_dockerfile_is_valid():
    pk = binary_packages(RELEASE_BIN_DIR)
    errs = dockerfile_errors(_dockerfile(), pk, open(os.path.join(ROOT, ".dockerignore")).read())
    assert errs == []


DOCKERFILE_BROKEN = {
    "missing -dev package": (lambda s: s.replace("libhiredis-dev ", ""), "libhiredis-dev"),
    "runs as root": (lambda s: s.replace("USER 10001:10001", "USER root"), "non-root"),
    "missing runtime library": (lambda s: s.replace("librdkafka1 ", ""), "librdkafka1"),
    "not bookworm": (lambda s: s.replace("ARG DEBIAN_RELEASE=bookworm", "ARG DEBIAN_RELEASE=bullseye"), "bookworm"),
    "dev package at run time": (lambda s: s.replace("ca-certificates curl", "ca-certificates curl libssl-dev"),
                                "libssl-dev"),
}


@pytest.mark.parametrize("case", sorted(DOCKERFILE_BROKEN))
def test_dockerfile_broken_copies_are_rejected(case):
    fn, needle = DOCKERFILE_BROKEN[case]
    pk = binary_packages(RELEASE_BIN_DIR)
    if case == "missing runtime library" and not pk:
        pk = {"librdkafka.so.1": "librdkafka1"}
    errs = dockerfile_errors(fn(_dockerfile()), pk)
    assert any(needle in e for e in errs), errs


# ------------------------------------------------------------ Kubernetes
def test_k8s_base_is_valid(base_objs, known):
    kinds = {o["kind"] for o in base_objs}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "PersistentVolumeClaim", "Kafka", "KafkaNodePool", "KafkaTopic"} <= kinds
    assert k8s_schema_errors(base_objs) == []
    assert k8s_contract_errors(base_objs, known) == []


def test_k8s_local_overlay_is_valid(known):
    objs = kustomize_build(K8S_LOCAL)
    assert k8s_schema_errors(objs) == []
    assert k8s_contract_errors(objs, known) == []
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            assert o["spec"]["replicas"] == 1, o["metadata"]["name"]
        if o["kind"] == "KafkaNodePool":
            assert o["spec"]["replicas"] == 1
    svc = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    assert svc["ingest-gateway"]["spec"]["type"] == "NodePort"
    assert svc["dashboard-ws"]["spec"]["type"] == "NodePort"


@pytest.mark.parametrize("directory", [K8S_BASE, K8S_LOCAL], ids=["base", "local"])
def test_k8s_render_matches_kustomize(directory):
    """The Python renderer gives what the real kustomize (kubectl kustomize) gives."""
    real = kubectl_kustomize(directory)
    if real is None:
        pytest.skip("kubectl not available: rendered with the Python resolver only")
    key = lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])  # noqa: E731
    mine = {key(o): o for o in kustomize_build(directory)}
    theirs = {key(o): o for o in real}
    assert sorted(mine) == sorted(theirs)
    for k in mine:
        assert mine[k] == theirs[k], k


def _find(objs, kind, name):
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


K8S_BROKEN = {
    "replicas as a string": (lambda o: _find(o, "StatefulSet", "sessionizer")["spec"].__setitem__("replicas", "two"),
                             "replicas"),
    "unknown field": (lambda o: _find(o, "Deployment", "ingest-gateway")["spec"].__setitem__("replica", 2),
                      "replica"),
    "HPA beyond partitions": (lambda o: _find(o, "HorizontalPodAutoscaler", "aggregator")["spec"].__setitem__(
        "maxReplicas", 24), "partitions"),
    "readiness on /healthz": (lambda o: _find(o, "StatefulSet", "lake-writer")["spec"]["template"]["spec"][
        "containers"][0]["readinessProbe"]["httpGet"].__setitem__("path", "/healthz"), "/readyz"),
    "topic partitions as text": (lambda o: _find(o, "KafkaTopic", "clickstream-raw")["spec"].__setitem__(
        "partitions", "twelve"), "partitions"),
    "topic partitions differ from stack.sh": (lambda o: _find(o, "KafkaTopic", "clickstream-late")[
        "spec"].__setitem__("partitions", 6), "clickstream.late"),
    "Kafka listener port": (lambda o: _find(o, "Kafka", "clickstream")["spec"]["kafka"]["listeners"][0].__setitem__(
        "port", 80), "port"),
    "node pool role": (lambda o: _find(o, "KafkaNodePool", "dual-role")["spec"].__setitem__(
        "roles", ["broker", "zookeeper"]), "roles"),
    "missing secret key": (lambda o: _find(o, "Secret", "clickstream-secrets").__setitem__(
        "stringData", {"OTHER": "x"}), "GATEWAY_WRITE_KEYS"),
    "env typo": (lambda o: _find(o, "ConfigMap", "clickstream-config")["data"].__setitem__(
        "AGGREGATOR_FLUSH_INTERVALL", "1s"), "AGGREGATOR_FLUSH_INTERVALL"),
    "replication above brokers": (lambda o: _find(o, "KafkaNodePool", "dual-role")["spec"].__setitem__(
        "replicas", 1), "broker"),
    "no HPA": (lambda o: o.remove(_find(o, "HorizontalPodAutoscaler", "dashboard-ws")), "HorizontalPodAutoscaler"),
    "memory limit missing": (lambda o: _find(o, "Deployment", "dashboard-ws")["spec"]["template"]["spec"][
        "containers"][0]["resources"].pop("limits"), "limits"),
}


@pytest.mark.parametrize("case", sorted(K8S_BROKEN))
def test_k8s_broken_copies_are_rejected(base_objs, known, case):
    fn, needle = K8S_BROKEN[case]
    objs = copy.deepcopy(base_objs)
    fn(objs)
    errs = k8s_schema_errors(objs) + k8s_contract_errors(objs, known)
    assert errs, f"{case}: accepted"
    assert any(needle in e for e in errs), errs


def test_kustomize_resolver_rejects_what_it_cannot_render(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(KustomizeError):
        kustomize_build(str(tmp_path))
    (tmp_path / "kustomization.yaml").write_text("resources: []\ngenerators: [x]\n")
    with pytest.raises(KustomizeError):
        kustomize_build(str(tmp_path))
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [a.yaml]\npatches:\n  - target: {kind: Secret}\n    patch: '[{op: remove, path: /x}]'\n")
    with pytest.raises(KustomizeError):
        kustomize_build(str(tmp_path))


def test_keda_scaledobjects_are_valid(base_objs):
    objs = load_yaml_docs(KEDA)
    assert {o["metadata"]["name"] for o in objs} == {"sessionizer", "aggregator", "lake-writer"}
    assert keda_errors(objs, base_objs) == []
    base_k = load_yaml(os.path.join(K8S_BASE, "kustomization.yaml"))
    assert not any("optional" in r for r in base_k["resources"]), "KEDA is not part of the base"


KEDA_BROKEN = {
    "numeric lagThreshold": (lambda o: o[0]["spec"]["triggers"][0]["metadata"].__setitem__("lagThreshold", 100),
                             "lagThreshold"),
    "beyond partitions": (lambda o: o[1]["spec"].__setitem__("maxReplicaCount", 24), "partitions"),
    "wrong consumer group": (lambda o: o[0]["spec"]["triggers"][0]["metadata"].__setitem__(
        "consumerGroup", "sessionizer"), "consumerGroup"),
    "unknown scaler key": (lambda o: o[0]["spec"]["triggers"][0]["metadata"].__setitem__("lagTreshold", "5"),
                           "lagTreshold"),
    "unknown target": (lambda o: o[2]["spec"]["scaleTargetRef"].__setitem__("name", "lakewriter"), "lakewriter"),
}


@pytest.mark.parametrize("case", sorted(KEDA_BROKEN))
def test_keda_broken_copies_are_rejected(base_objs, case):
    fn, needle = KEDA_BROKEN[case]
    objs = copy.deepcopy(load_yaml_docs(KEDA))
    fn(objs)
    errs = keda_errors(objs, base_objs)
    assert any(needle in e for e in errs), errs


# ------------------------------------------------------------ Prometheus
def test_prometheus_config_scrapes_every_service(compose):
    errs, jobs_ = prometheus_config_errors(load_yaml(PROM_CONFIG), compose)
    assert errs == []
    assert set(SERVICES) | {"kafka-exporter"} <= jobs_


def test_prometheus_config_broken_copy_is_rejected(compose):
    doc = load_yaml(PROM_CONFIG)
    next(s for s in doc["scrape_configs"] if s["job_name"] == "aggregator")["static_configs"][0]["targets"] = [
        "aggregator:9102"]
    errs, _ = prometheus_config_errors(doc, compose)
    assert any("aggregator:9103" in e for e in errs), errs


def test_alert_rules_are_valid(exported, jobs):
    doc = load_yaml(RULES)
    assert rules_errors(doc, exported, jobs) == []
    alerts = {r["alert"] for g in doc["groups"] for r in g["rules"]}
    for must in ("ClickstreamServiceDown", "ConsumerLagGrowing", "LateEventRateHigh", "TransactionAborts",
                 "RedisDown", "SessionizerWatermarkLagHigh"):
        assert must in alerts
    pt = promtool_errors(RULES)
    if pt is not None:
        assert pt == []


def _rule(doc, name):
    return next(r for g in doc["groups"] for r in g["rules"] if r.get("alert") == name)


RULES_BROKEN = {
    "unknown metric": (lambda d: _rule(d, "RedisDown").__setitem__("expr", "redis_up == 0"), "redis_up"),
    "syntax error": (lambda d: _rule(d, "TransactionAborts").__setitem__(
        "expr", "sum by (job) (increase(sessionizer_transaction_aborts_total[10m]) > 3"), "syntax"),
    "bad for": (lambda d: _rule(d, "ClickstreamServiceDown").__setitem__("for", "1 minute"), "duration"),
    "rate of a gauge": (lambda d: _rule(d, "RedisDown").__setitem__("expr", "rate(aggregator_redis_up[5m]) < 1"),
                        "gauge"),
    "label value that never occurs": (lambda d: _rule(d, "UndecodableRecords").__setitem__(
        "expr", 'rate(aggregator_events_total{result="undecoded"}[5m]) > 0'), "undecoded"),
    "label the metric lacks": (lambda d: _rule(d, "GatewayAnswering503").__setitem__(
        "expr", 'rate(gateway_requests_total{code="503"}[5m]) > 0'), "code"),
    "no severity": (lambda d: _rule(d, "LakeCommitFailures")["labels"].pop("severity"), "severity"),
    "unknown job": (lambda d: _rule(d, "ClickstreamServiceDown").__setitem__(
        "expr", 'up{job=~"gateway|sessionizer"} == 0'), "gateway"),
    "runbook section missing": (lambda d: _rule(d, "RedisDown")["annotations"].__setitem__(
        "runbook", "docs/troubleshooting.md#no-such-section"), "no-such-section"),
    "unknown field": (lambda d: _rule(d, "RedisDown").__setitem__("severity", "critical"), "unknown field"),
}


@pytest.mark.parametrize("case", sorted(RULES_BROKEN))
def test_alert_rules_broken_copies_are_rejected(exported, jobs, case):
    fn, needle = RULES_BROKEN[case]
    doc = copy.deepcopy(load_yaml(RULES))
    fn(doc)
    errs = rules_errors(doc, exported, jobs)
    assert any(needle in e for e in errs), errs


# ------------------------------------------------------------ Grafana
def _ds_uid():
    ds = load_yaml(GRAFANA_DS)["datasources"]
    return next(d["uid"] for d in ds if d["type"] == "prometheus")


def test_grafana_provisioning_matches_compose(compose):
    ds = load_yaml(GRAFANA_DS)
    prom = [d for d in ds["datasources"] if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["services"]["prometheus"]["ports"]
    prov = load_yaml(GRAFANA_DASH_PROVIDER)
    path = prov["providers"][0]["options"]["path"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_grafana_dashboard_is_valid(exported, jobs):
    with open(DASHBOARD) as f:
        doc = json.load(f)
    assert dashboard_errors(doc, exported, jobs, _ds_uid()) == []


def _panel(doc, title_part):
    return next(p for p in doc["panels"] if title_part in p.get("title", ""))


DASHBOARD_BROKEN = {
    "unknown metric": (lambda d: _panel(d, "Watermark lag")["targets"][0].__setitem__(
        "expr", "sessionizer_watermark_lag_ms"), "sessionizer_watermark_lag_ms"),
    "wrong datasource": (lambda d: _panel(d, "Commit latency").__setitem__(
        "datasource", {"type": "prometheus", "uid": "prom"}), "datasource"),
    "no lag panel": (lambda d: d["panels"].remove(_panel(d, "Consumer lag")), "consumer lag"),
    "broken query": (lambda d: _panel(d, "Gateway answers")["targets"][0].__setitem__(
        "expr", "sum by (status (rate(gateway_requests_total[5m]))"), "syntax"),
    "label typo": (lambda d: _panel(d, "Kafka transactions")["targets"][2].__setitem__(
        "expr", "sum by (loop) (rate(aggregator_transactions_total{lop=\"source\"}[5m]))"), "lop"),
}


@pytest.mark.parametrize("case", sorted(DASHBOARD_BROKEN))
def test_grafana_dashboard_broken_copies_are_rejected(exported, jobs, case):
    fn, needle = DASHBOARD_BROKEN[case]
    with open(DASHBOARD) as f:
        doc = json.load(f)
    fn(doc)
    errs = dashboard_errors(doc, exported, jobs, _ds_uid())
    assert any(needle in e for e in errs), errs


# ------------------------------------------------------------ PromQL parser
@pytest.mark.parametrize("expr", [
    "up == 0",
    'sum by (job) (rate(x_total{a="b", c=~"d|e"}[5m])) / clamp_min(sum by (job) (rate(y_total[5m])), 1e-9) > 0.01',
    "histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))",
    "a > 1 and on (job, instance) rate(b_total[5m]) > 0",
    "max_over_time(x[1h:5m]) offset 1d",
    "sum(x) by (a) or -y",
])
def test_promql_parser_accepts(expr):
    parse_promql(expr)


@pytest.mark.parametrize("expr", ["", "rate(x)", "sum(x", "x{a=b}", "nosuchfunc(x)", "x and", "x[5 minutes]",
                                  'x{a=~"("}', "sum by (a (x)", "x ==== 1"])
def test_promql_parser_rejects(expr):
    with pytest.raises(PromQLError):
        parse_promql(expr)
