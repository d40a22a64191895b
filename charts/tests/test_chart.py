"""The Helm chart (charts/bulkhead) and its installer (packaging/install.sh),
tested offline. Run by scripts/test-charts, which installs the pinned tools
(scripts/chart-tools) and runs this file with their Python; it prints one
line per test and closes with "charts: N passed, N failed, N skipped".

Environment: HELM (the helm binary), BULKHEAD_BIN_DIR (bulkhead,
bulkhead-monitor and bulkhead-oci), K8S_VERSIONS (comma-separated versions
to validate the manifests against). Arguments: substrings selecting tests.
"""

import copy
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback

import kubernetes_validate
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(REPO, "charts", "bulkhead")
TESTS = os.path.join(REPO, "charts", "tests")
INSTALL = os.path.join(REPO, "packaging", "install.sh")
UNIT = os.path.join(REPO, "packaging", "bulkhead.service")
HELM = os.environ.get("HELM", "helm")
BIN_DIR = os.path.abspath(os.environ.get("BULKHEAD_BIN_DIR", os.path.join(REPO, "target", "debug")))
BULKHEAD = os.path.join(BIN_DIR, "bulkhead")
K8S_VERSIONS = os.environ.get("K8S_VERSIONS", "1.26.0,1.34.0").split(",")
BINARIES = ["bulkhead", "bulkhead-monitor", "bulkhead-oci"]
NAMESPACE = "kube-system"
RELEASE = "bk"


class Skip(Exception):
    pass


# --- helpers -----------------------------------------------------------------


def run(cmd, check=True, env=None, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def value_sets():
    """(name, values file or None) for the defaults and every file in tests/values/."""
    sets = [("default", None)]
    for f in sorted(glob.glob(os.path.join(TESTS, "values", "*.yaml"))):
        sets.append((os.path.basename(f)[:-5], f))
    return sets


def values_args(values):
    return ["-f", values] if values else []


def load_values(values):
    """The values helm would use: values.yaml merged with the file (maps merge, the rest replaces)."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        base = yaml.safe_load(f)

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v
        return a

    if values:
        with open(values) as f:
            merge(base, yaml.safe_load(f) or {})
    return base


_rendered = {}


def render(values, extra=()):
    key = (values, tuple(extra))
    if key not in _rendered:
        out = run([HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", K8S_VERSIONS[-1]]
                  + values_args(values) + list(extra)).stdout
        _rendered[key] = [d for d in yaml.safe_load_all(out) if d]
    return copy.deepcopy(_rendered[key])


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s rendered"
    return found[0]


def config_toml(docs):
    return one(docs, "ConfigMap")["data"]["config.toml"]


def flatten(table, prefix=""):
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def daemon_default():
    return tomllib.loads(run([BULKHEAD, "config", "default"]).stdout)


def container(ds):
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return c


def arg(c, name):
    for a in c["args"]:
        if a == name or a.startswith(name + "="):
            return a.partition("=")[2] if "=" in a else True
    return None


# --- the chart: lint, render, validate ---------------------------------------

TESTS_LIST = []


def test(fn):
    TESTS_LIST.append((fn.__name__, fn))
    return fn


def per_value_set(fn):
    for name, values in value_sets():
        def bound(values=values, fn=fn):
            return fn(values)
        TESTS_LIST.append((f"{fn.__name__}[{name}]", bound))
    return fn


@per_value_set
def lint_strict(values):
    p = run([HELM, "lint", "--strict", CHART] + values_args(values), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 chart(s) failed" in p.stdout, p.stdout


@per_value_set
def manifests_validate_against_kubernetes_schemas(values):
    docs = render(values)
    kinds = sorted(d["kind"] for d in docs)
    assert "DaemonSet" in kinds and "ConfigMap" in kinds, kinds
    for version in K8S_VERSIONS:
        out = run([HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", version]
                  + values_args(values)).stdout
        for d in [d for d in yaml.safe_load_all(out) if d]:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                raise AssertionError(f"{d['kind']}/{d['metadata']['name']} against {version}: {path}: {e.message}")


@test
def strict_validation_rejects_unknown_fields():
    """The validation above would notice a misspelt field (kubernetes-validate strict mode)."""
    ds = one(render(None), "DaemonSet")
    ds["spec"]["template"]["spec"]["hostPid"] = True
    try:
        kubernetes_validate.validate(ds, K8S_VERSIONS[-1], strict=True)
    except kubernetes_validate.ValidationError as e:
        assert "hostPid" in e.message, e.message
    else:
        raise AssertionError("a DaemonSet with spec.template.spec.hostPid validated")


@per_value_set
def rendered_config_is_accepted_by_bulkhead(values):
    docs = render(values)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.toml")
        with open(path, "w") as f:
            f.write(config_toml(docs))
        p = run([BULKHEAD, "config", "check", path], check=False)
        assert p.returncode == 0, p.stdout + p.stderr


@per_value_set
def rendered_config_mirrors_the_values(values):
    """Every config value reaches config.toml under its own key; network.mode decides pod_cidr and cni_conf_dir."""
    v = load_values(values)["config"]
    got = flatten(tomllib.loads(config_toml(render(values))))
    mode = v["network"]["mode"]
    want = flatten({k: x for k, x in v.items()})
    del want["network.mode"]
    registries = want.pop("image.registries")
    got_registries = got.pop("image.registries", [])
    for r in registries:
        r.setdefault("mirrors", [])
        r.setdefault("skip_verify", False)
        if not r.get("ca_file"):
            r.pop("ca_file", None)
    assert got_registries == registries, (got_registries, registries)
    if mode == "native":
        want["network.cni_conf_dir"] = "/etc/bulkhead/native-mode-no-cni"
    else:
        want["network.pod_cidr"] = ""
    # The credentials the installer writes are the ones the daemon reads.
    secret = load_values(values).get("registryCredentials", {}).get("existingSecret")
    want["image.auth_file"] = "/etc/bulkhead/auth.json" if secret else ""
    assert got == want, {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}


@test
def chart_config_has_every_daemon_key():
    """values.yaml's config mirrors `bulkhead config default`: the same keys, no more, no fewer
    (image.auth_file is the chart's to set, from registryCredentials)."""
    daemon = set(flatten(daemon_default())) - {"image.auth_file"}
    chart = set(flatten(load_values(None)["config"])) - {"network.mode"}
    assert daemon == chart, f"only the daemon: {sorted(daemon - chart)}; only the chart: {sorted(chart - daemon)}"


@test
def default_config_is_the_daemons_but_for_the_charts_choices():
    got = flatten(tomllib.loads(config_toml(render(None))))
    want = flatten(daemon_default())
    # The chart's deliberate differences: cgroupfs (kubelet's cgroupDriver must
    # match; auto means systemd on these systemd nodes, and that driver is not
    # built), and native mode ignoring /etc/cni/net.d.
    want["runtime.cgroup_driver"] = "cgroupfs"
    want["network.cni_conf_dir"] = "/etc/bulkhead/native-mode-no-cni"
    assert got == want, {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}


@test
def schema_is_draft_07_and_closed():
    with open(os.path.join(CHART, "values.schema.json")) as f:
        schema = json.load(f)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    open_objects = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema, "")
    assert not open_objects, f"objects with properties that allow others: {open_objects}"
    # Every value in values.yaml is described by the schema.
    missing = []

    def covered(values, node, path):
        for k, v in values.items():
            sub = node.get("properties", {}).get(k)
            if sub is None:
                missing.append(f"{path}.{k}")
            elif isinstance(v, dict) and "properties" in sub:
                covered(v, sub, f"{path}.{k}")

    covered(load_values(None), schema, "")
    assert not missing, missing


@test
def chart_versions_follow_the_workspace():
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    with open(os.path.join(REPO, "Cargo.toml"), "rb") as f:
        workspace = tomllib.load(f)["workspace"]["package"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == workspace, (chart["appVersion"], workspace)
    assert run([BULKHEAD, "--version"]).stdout.strip() == f"bulkhead {workspace}"


# --- the chart: what the DaemonSet does --------------------------------------


@test
def daemonset_defaults():
    docs = render(None)
    ds = one(docs, "DaemonSet")
    spec = ds["spec"]
    pod = spec["template"]["spec"]
    c = container(ds)
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["hostPID"] is True
    assert pod["hostNetwork"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["privileged"] is True
    assert c["image"] == "localhost/bulkhead-installer:0.1.0"
    assert c["command"] == ["/opt/bulkhead/install.sh"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    # The node's directories, through hostPath, where install.sh --root=/host writes.
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    root = arg(c, "--root")
    assert root == "/host"
    for path in ["/usr/local/bin", "/etc/bulkhead", "/etc/systemd/system"]:
        names = [n for n, p in host_paths.items() if p == path]
        assert len(names) == 1, f"hostPath {path}: {names}"
        assert mounts[names[0]] == root + path, (path, mounts[names[0]])
    # The state dir (and so the socket's) is not mounted: its pods' mounts would be copied into the pod.
    assert not [p for p in host_paths.values() if p.startswith("/run")], host_paths
    assert arg(c, "--host-root") == "/proc/1/root"
    assert arg(c, "--systemd") == "nsenter"
    assert arg(c, "--socket") == "/run/bulkhead/bulkhead.sock"
    assert arg(c, "--expect-version") == "0.1.0"
    assert arg(c, "--no-auth") is True and arg(c, "--auth") is None
    assert arg(c, "--stay") is True
    # The config the installer reads is the ConfigMap's.
    cm = one(docs, "ConfigMap")
    (vol,) = [v for v in pod["volumes"] if "configMap" in v]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    assert arg(c, "--config") == mounts[vol["name"]] + "/config.toml"
    # A changed config rolls the pods.
    want = hashlib.sha256(cm["data"]["config.toml"].rstrip("\n").encode()).hexdigest()
    assert ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == want
    # Ready when installed and the CRI socket answers, as the node sees it.
    probe = c["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["/bin/sh", "-c"], probe
    assert "/opt/bulkhead/install.sh --probe '/proc/1/root/run/bulkhead/bulkhead.sock'" in probe[2], probe
    assert arg(c, "--status-file") in probe[2], probe
    # Nodes labelled bulkhead/install=false (being rolled back) get no installer.
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "bulkhead/install", "operator": "NotIn", "values": ["false"]}]}]
    sa = one(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


@test
def daemonset_with_credentials_and_cni():
    values = os.path.join(TESTS, "values", "cni-registries.yaml")
    docs = render(values)
    ds = one(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    (secret,) = [v for v in pod["volumes"] if "secret" in v]
    assert secret["secret"]["secretName"] == "node-registry-credentials"
    assert secret["secret"]["items"] == [{"key": ".dockerconfigjson", "path": "auth.json"}]
    mount = [m for m in c["volumeMounts"] if m["name"] == secret["name"]][0]
    assert mount["readOnly"] is True
    assert arg(c, "--auth") == mount["mountPath"] + "/auth.json"
    assert arg(c, "--no-auth") is None
    assert pod["imagePullSecrets"] == [{"name": "installer-pull"}]
    assert pod["serviceAccountName"] == "node-installers"
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    assert "priorityClassName" not in pod
    assert c["image"] == "registry.internal:5000/platform/bulkhead-installer:0.1.0-build.7"
    assert c["imagePullPolicy"] == "Always"
    assert len(pod["tolerations"]) == 2
    toml = tomllib.loads(config_toml(docs))
    assert toml["network"]["pod_cidr"] == "" and toml["network"]["cni_conf_dir"] == "/etc/cni/net.d"
    assert toml["image"]["registries"][0]["mirrors"][0] == "https://mirror.internal:5000"


@test
def daemonset_with_digest_percentage_and_own_affinity():
    values = os.path.join(TESTS, "values", "native-dualstack.yaml")
    ds = one(render(values), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert c["image"].endswith("@sha256:" + "1" * 64)
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"
    assert ds["spec"]["minReadySeconds"] == 30
    assert arg(c, "--socket") == "/run/bulkhead-cri/cri.sock"
    assert arg(c, "--wait") == "300"
    assert "/proc/1/root/run/bulkhead-cri/cri.sock" in c["readinessProbe"]["exec"]["command"][2]
    # The opt-out is added to each of the operator's terms (terms are ORed).
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2
    for t in terms:
        assert t["matchExpressions"][-1] == {"key": "bulkhead/install", "operator": "NotIn", "values": ["false"]}
    assert terms[0]["matchExpressions"][0]["key"] == "kubernetes.io/arch"
    assert ds["spec"]["template"]["metadata"]["labels"]["tier"] == "node"
    assert ds["spec"]["template"]["metadata"]["annotations"]["example.com/owner"] == "platform"


@test
def daemonset_on_delete():
    ds = one(render(os.path.join(TESTS, "values", "ondelete.yaml")), "DaemonSet")
    assert ds["spec"]["updateStrategy"] == {"type": "OnDelete"}


@test
def daemonset_remove_action():
    docs = render(os.path.join(TESTS, "values", "remove.yaml"))
    ds = one(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert arg(c, "--remove") is True
    assert arg(c, "--config") is None and arg(c, "--auth") is None
    assert not [v for v in pod["volumes"] if "configMap" in v or "secret" in v]
    # Removal runs on opted-out nodes too.
    assert "affinity" not in pod
    assert "removed" in c["readinessProbe"]["exec"]["command"][2]


def notes(values=None, extra=()):
    """NOTES.txt as helm renders it (helm template leaves it out: render it through tpl in a copy of the chart)."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = os.path.join(tmp, "bulkhead")
        shutil.copytree(CHART, chart)
        shutil.copy(os.path.join(chart, "templates", "NOTES.txt"), os.path.join(chart, "notes-under-test.txt"))
        with open(os.path.join(chart, "templates", "zz-notes-under-test.yaml"), "w") as f:
            f.write('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n'
                    '  notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n')
        out = run([HELM, "template", RELEASE, chart, "--namespace", NAMESPACE,
                   "--show-only", "templates/zz-notes-under-test.yaml"] + values_args(values) + list(extra)).stdout
        return yaml.safe_load(out)["data"]["notes"]


@test
def notes_tell_how_to_switch_and_roll_back():
    text = notes()
    for want in [
        "containerRuntimeEndpoint: unix:///run/bulkhead/bulkhead.sock",
        "imageServiceEndpoint: unix:///run/bulkhead/bulkhead.sock",
        "cgroupDriver: cgroupfs",
        "kubectl drain <node>",
        "systemctl start kubelet",
        "crictl --runtime-endpoint unix:///run/containerd/containerd.sock rmp -fa",
        "kubectl label node <node> bulkhead/install=false",
        "crictl --runtime-endpoint unix:///run/bulkhead/bulkhead.sock rmp -fa",
        "systemctl disable --now bulkhead",
        "--set action=remove",
        "helm uninstall bk -n kube-system",
        "image.repository",
    ]:
        assert want in text, f"NOTES lacks {want!r}:\n{text}"
    other = notes(os.path.join(TESTS, "values", "native-dualstack.yaml"))
    assert "containerRuntimeEndpoint: unix:///run/bulkhead-cri/cri.sock" in other
    assert "image.repository is" not in other
    creds = notes(os.path.join(TESTS, "values", "cni-registries.yaml"))
    assert "which bulkhead reads (image.auth_file)" in creds
    removing = notes(os.path.join(TESTS, "values", "remove.yaml"))
    assert "REMOVED" in removing and "containerRuntimeEndpoint" not in removing


def bad_value_files():
    return sorted(glob.glob(os.path.join(TESTS, "bad-values", "*.yaml")))


def bad_values_test(path):
    def check():
        with open(path) as f:
            first = f.readline()
        m = re.match(r"# expect: (\S+)( \(template\))?$", first)
        assert m, f"{path}: the first line must be '# expect: <field>' or '# expect: <field> (template)'"
        field = m.group(1)
        commands = [["template", RELEASE, CHART]]
        # A check of the templates' own (fail) is refused by helm template and
        # install; helm lint only reports it, as INFO (lint mode makes fail non-fatal).
        if not m.group(2):
            commands.append(["lint", "--strict", CHART])
        for cmd in commands:
            p = run([HELM] + cmd + ["-f", path], check=False)
            out = p.stdout + p.stderr
            assert p.returncode != 0, f"helm {cmd[0]} accepted {os.path.basename(path)}:\n{out[:400]}"
            assert field in out, f"helm {cmd[0]} refused {os.path.basename(path)} without naming {field}:\n{out}"
    return check


for _path in bad_value_files():
    TESTS_LIST.append((f"bad_values_rejected[{os.path.basename(_path)[:-5]}]", bad_values_test(_path)))


@test
def containerfile_matches_the_chart():
    """The image has what the DaemonSet runs: install.sh and the files at --source."""
    with open(os.path.join(REPO, "packaging", "Containerfile")) as f:
        text = f.read()
    assert re.search(r"^FROM docker\.io/library/debian:12-slim$", text, re.M), "base image"
    copies = re.findall(r"^COPY (.+) (\S+)$", text, re.M)
    assert copies, "no COPY"
    copied = {}
    for sources, dest in copies:
        for s in sources.split():
            copied[s] = dest.rstrip("/")
    ds = one(render(None), "DaemonSet")
    c = container(ds)
    source = arg(c, "--source")
    for f in BINARIES + ["bulkhead.service", "install.sh"]:
        assert copied.get(f) == source, (f, copied.get(f), source)
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    assert entry == c["command"], (entry, c["command"])
    # packaging/build-image stages exactly what the Containerfile copies, with modes.
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, BULKHEAD_BIN_DIR=BIN_DIR)
        run([os.path.join(REPO, "packaging", "build-image"), "--stage", tmp], env=env)
        for f in copied:
            p = os.path.join(tmp, f)
            assert os.path.isfile(p), f"{f} not staged"
            want = 0o644 if f == "bulkhead.service" else 0o755
            assert os.stat(p).st_mode & 0o777 == want, (f, oct(os.stat(p).st_mode))


# --- the installer script ----------------------------------------------------


class Node:
    """A temporary directory standing in for a node: the installer's sources, a root, a config."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="bulkhead-charts-")
        self.src = os.path.join(self.tmp, "src")
        self.root = os.path.join(self.tmp, "root")
        os.mkdir(self.src)
        for b in BINARIES:
            shutil.copy2(os.path.join(BIN_DIR, b), os.path.join(self.src, b))
        shutil.copy2(UNIT, os.path.join(self.src, "bulkhead.service"))
        self.config = os.path.join(self.tmp, "config.toml")
        with open(self.config, "w") as f:
            f.write(config_toml(render(None)))
        self.auth = os.path.join(self.tmp, "auth.json")
        with open(self.auth, "w") as f:
            f.write('{"auths":{"registry.internal":{"auth":"dXNlcjpwYXNz"}}}\n')

    def install(self, *extra, check=True, env=None):
        cmd = [INSTALL, "--source", self.src, "--config", self.config, "--root", self.root] + list(extra)
        p = run(cmd, check=False, env=env)
        if check:
            assert p.returncode == 0, p.stdout + p.stderr
        return p

    def path(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def snapshot(self):
        """path -> (inode, mtime_ns, mode, size) of everything under the root."""
        out = {}
        for d, dirs, files in os.walk(self.root):
            for n in dirs + files:
                p = os.path.join(d, n)
                st = os.lstat(p)
                out[os.path.relpath(p, self.root)] = (st.st_ino, st.st_mtime_ns, st.st_mode, st.st_size)
        return out

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def node_test(fn):
    def wrapped():
        node = Node()
        try:
            fn(node)
        finally:
            node.close()
    TESTS_LIST.append((fn.__name__, wrapped))
    return fn


def result_line(p):
    lines = [l for l in p.stdout.splitlines() if l.startswith("bulkhead-install: result: ")]
    assert len(lines) == 1, p.stdout
    return lines[0][len("bulkhead-install: result: "):]


EXPECTED = {
    "usr/local/bin/bulkhead": 0o755,
    "usr/local/bin/bulkhead-monitor": 0o755,
    "usr/local/bin/bulkhead-oci": 0o755,
    "etc/bulkhead/config.toml": 0o644,
    "etc/systemd/system/bulkhead.service": 0o644,
    "etc/bulkhead/auth.json": 0o600,
}


@node_test
def install_writes_the_files_with_their_modes(node):
    status = os.path.join(node.tmp, "status")
    p = node.install("--auth", node.auth, "--expect-version", "0.1.0", "--status-file", status)
    assert result_line(p).startswith("changed: "), p.stdout
    assert "systemd: skipped" in p.stdout, p.stdout
    sources = {
        "usr/local/bin/bulkhead": os.path.join(node.src, "bulkhead"),
        "usr/local/bin/bulkhead-monitor": os.path.join(node.src, "bulkhead-monitor"),
        "usr/local/bin/bulkhead-oci": os.path.join(node.src, "bulkhead-oci"),
        "etc/bulkhead/config.toml": node.config,
        "etc/systemd/system/bulkhead.service": UNIT,
        "etc/bulkhead/auth.json": node.auth,
    }
    for rel, mode in EXPECTED.items():
        st = os.lstat(node.path(rel))
        assert st.st_mode & 0o7777 == mode and (st.st_mode & 0o170000) == 0o100000, (rel, oct(st.st_mode))
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (0, 0), rel
        with open(node.path(rel), "rb") as a, open(sources[rel], "rb") as b:
            assert a.read() == b.read(), f"{rel} differs from its source"
    for d in ["usr", "usr/local", "usr/local/bin", "etc", "etc/bulkhead", "etc/systemd", "etc/systemd/system"]:
        assert os.stat(node.path(d)).st_mode & 0o7777 == 0o755, d
    # Nothing else: no temporary files left.
    files = {r for r, s in node.snapshot().items() if not (s[2] & 0o040000)}
    assert files == set(EXPECTED), files ^ set(EXPECTED)
    with open(status) as f:
        assert f.read() == "installed 0.1.0\n"


@node_test
def second_install_changes_nothing(node):
    node.install("--auth", node.auth)
    before = node.snapshot()
    time.sleep(0.05)
    p = node.install("--auth", node.auth)
    assert result_line(p) == "unchanged", p.stdout
    assert node.snapshot() == before, "a second run touched files"
    for rel in EXPECTED:
        assert f"/{rel}: unchanged" in p.stdout, p.stdout


@node_test
def changed_config_is_replaced_atomically(node):
    node.install()
    before = node.snapshot()
    with open(node.config, "a") as f:
        f.write("# changed\n")
    time.sleep(0.05)
    p = node.install()
    assert result_line(p) == "changed: /etc/bulkhead/config.toml", p.stdout
    after = node.snapshot()
    rel = "etc/bulkhead/config.toml"
    # A new inode: written beside it and renamed over it, never rewritten in place.
    assert after[rel][0] != before[rel][0], "config.toml was rewritten in place"
    with open(node.path(rel)) as f:
        assert f.read().endswith("# changed\n")
    for other in set(before) - {rel, "etc/bulkhead"}:
        assert after.get(other) == before[other], f"{other} changed too"
    assert set(after) == set(before), set(after) ^ set(before)


@node_test
def modes_and_leftovers_are_repaired(node):
    node.install()
    os.chmod(node.path("usr/local/bin/bulkhead-oci"), 0o700)
    stale = node.path("etc/bulkhead/.config.toml.bulkhead-install.99999")
    with open(stale, "w") as f:
        f.write("torn")
    p = node.install()
    assert result_line(p) == "changed: /usr/local/bin/bulkhead-oci", p.stdout
    assert os.stat(node.path("usr/local/bin/bulkhead-oci")).st_mode & 0o7777 == 0o755
    assert not os.path.exists(stale)


@node_test
def refused_config_changes_nothing(node):
    node.install()
    before = node.snapshot()
    with open(node.config) as f:
        text = f.read()
    with open(node.config, "w") as f:
        f.write(text.replace('level = "info"', 'level = "loud"'))
    p = node.install(check=False)
    assert p.returncode != 0
    assert "key `log.level`" in p.stderr and "nothing was changed" in p.stderr, p.stderr
    assert node.snapshot() == before


@node_test
def wrong_version_is_refused(node):
    p = node.install("--expect-version", "9.9.9", check=False)
    assert p.returncode != 0 and "not the expected 9.9.9" in p.stderr, p.stderr
    assert not os.path.exists(node.root)


@node_test
def credentials_are_installed_and_removed(node):
    node.install("--auth", node.auth)
    assert os.stat(node.path("etc/bulkhead/auth.json")).st_mode & 0o7777 == 0o600
    p = node.install()  # neither --auth nor --no-auth: left alone
    assert result_line(p) == "unchanged"
    assert os.path.exists(node.path("etc/bulkhead/auth.json"))
    p = node.install("--no-auth")
    assert result_line(p) == "changed: /etc/bulkhead/auth.json", p.stdout
    assert not os.path.exists(node.path("etc/bulkhead/auth.json"))
    assert result_line(node.install("--no-auth")) == "unchanged"


# A fake systemd: systemctl records its calls and keeps is-enabled/is-active state in files.
FAKE_SYSTEMCTL = """#!/bin/sh
state=%(state)s
echo "$*" >>"$state/calls"
while [ $# -gt 0 ]; do case $1 in --*) shift ;; *) break ;; esac; done
case $1 in
  is-enabled) [ -e "$state/enabled" ] ;;
  is-active) [ -e "$state/active" ] ;;
  enable) touch "$state/enabled" ;;
  disable) rm -f "$state/enabled" "$state/active" ;;
  start|restart) [ ! -e "$state/fail-start" ] || exit 1; touch "$state/active" ;;
  daemon-reload|status) ;;
  *) echo "fake systemctl: $*" >&2; exit 1 ;;
esac
"""


class FakeCri:
    """A unix socket server that answers the HTTP/2 preface with a SETTINGS frame, as tonic does (or not, when bad)."""

    def __init__(self, path, good=True):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.good = good
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(33)
                    conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" if self.good else b"HTTP/1.1 400 Bad Request\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.sock.close()


def fake_systemd(node):
    state = os.path.join(node.tmp, "systemd")
    os.mkdir(state)
    path = os.path.join(node.tmp, "systemctl")
    with open(path, "w") as f:
        f.write(FAKE_SYSTEMCTL % {"state": state})
    os.chmod(path, 0o755)
    return dict(os.environ, BULKHEAD_SYSTEMCTL=path), state


def calls(state):
    path = os.path.join(state, "calls")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().splitlines()
    os.remove(path)
    return lines


@node_test
def systemd_restarts_only_when_something_changed(node):
    env, state = fake_systemd(node)
    cri = FakeCri(node.path("run/bulkhead/bulkhead.sock"))
    try:
        p = node.install("--systemd", "host", "--wait", "5", env=env)
        assert calls(state) == ["daemon-reload", "--quiet is-enabled bulkhead.service",
                                "--quiet enable bulkhead.service", "restart bulkhead.service"], p.stdout
        assert "/run/bulkhead/bulkhead.sock answers" in p.stdout, p.stdout
        p = node.install("--systemd", "host", "--wait", "5", env=env)
        assert result_line(p) == "unchanged"
        assert calls(state) == ["--quiet is-enabled bulkhead.service", "--quiet is-active bulkhead.service"], p.stdout
        with open(node.config, "a") as f:
            f.write("# changed\n")
        node.install("--systemd", "host", "--wait", "5", env=env)
        assert calls(state) == ["--quiet is-enabled bulkhead.service", "restart bulkhead.service"]
        # Unchanged but stopped (a first run that failed after writing): started.
        os.remove(os.path.join(state, "active"))
        p = node.install("--systemd", "host", "--wait", "5", env=env)
        assert result_line(p) == "unchanged"
        assert calls(state) == ["--quiet is-enabled bulkhead.service", "--quiet is-active bulkhead.service",
                                "start bulkhead.service"], p.stdout
    finally:
        cri.close()


@node_test
def nsenter_mode_checks_binaries_and_socket_as_the_node_sees_them(node):
    """As in the DaemonSet: the binaries run in PID 1's mount namespace, the socket probed through /proc/1/root.

    This process stands in for PID 1 (which a sandbox may not let us enter)."""
    if os.geteuid() != 0 or not shutil.which("nsenter"):
        raise Skip("needs root and nsenter")
    pid = str(os.getpid())
    env, state = fake_systemd(node)
    sock = node.path("run/bulkhead/bulkhead.sock")
    cri = FakeCri(sock)
    ns = ["--systemd", "nsenter", "--nsenter-target", pid, "--host-root", f"/proc/{pid}/root", "--socket", sock]
    try:
        p = node.install(*ns, "--wait", "5", env=env)
        assert f"{sock} answers" in p.stdout, p.stdout
        assert "restart bulkhead.service" in calls(state)
    finally:
        cri.close()
    # A binary that does not run on the node stops the install before anything changes.
    before = node.snapshot()
    with open(os.path.join(node.src, "bulkhead-oci"), "w") as f:
        f.write("#!/nonexistent/interpreter\n")
    p = node.install(*ns, env=env, check=False)
    assert p.returncode != 0 and "bulkhead-oci does not run on this node" in p.stderr, p.stdout + p.stderr
    assert node.snapshot() == before
    assert calls(state) == []


@node_test
def a_socket_that_does_not_answer_fails_the_install(node):
    env, state = fake_systemd(node)
    p = node.install("--systemd", "host", "--wait", "1", env=env, check=False)
    assert p.returncode != 0 and "does not answer" in p.stderr, p.stdout + p.stderr
    assert "--no-pager status bulkhead.service" in calls(state)
    cri = FakeCri(node.path("run/bulkhead/bulkhead.sock"), good=False)
    try:
        p = node.install("--systemd", "host", "--wait", "1", env=env, check=False)
        assert p.returncode != 0 and "does not answer" in p.stderr, p.stdout + p.stderr
    finally:
        cri.close()


@node_test
def a_failed_restart_fails_the_install(node):
    env, state = fake_systemd(node)
    open(os.path.join(state, "fail-start"), "w").close()
    p = node.install("--systemd", "host", "--wait", "1", env=env, check=False)
    assert p.returncode != 0 and "systemctl restart bulkhead.service failed" in p.stderr, p.stdout + p.stderr
    assert calls(state)[-1] == "--no-pager status bulkhead.service"


@node_test
def probe_tells_http2_from_anything_else(node):
    path = os.path.join(node.tmp, "s.sock")
    assert run([INSTALL, "--probe", path], check=False).returncode == 1
    bad = FakeCri(path, good=False)
    try:
        assert run([INSTALL, "--probe", path], check=False).returncode == 1
    finally:
        bad.close()
        os.remove(path)
    good = FakeCri(path)
    try:
        assert run([INSTALL, "--probe", path], check=False).returncode == 0
    finally:
        good.close()


@test
def probe_answers_for_the_real_daemon():
    """install.sh --probe against a real bulkhead in a private root, state and socket (root only)."""
    if os.geteuid() != 0:
        raise Skip("the daemon needs root")
    tmp = tempfile.mkdtemp(prefix="bulkhead-charts-daemon-")
    bridge = "bhc" + "".join(random.choice("abcdefghijklmnop0123456789") for _ in range(8))
    config = os.path.join(tmp, "config.toml")
    socket_path = os.path.join(tmp, "run", "cri.sock")
    with open(config, "w") as f:
        f.write(f'root = "{tmp}/root"\nstate = "{tmp}/state"\nsocket = "{socket_path}"\n'
                f'[runtime]\ncgroup_driver = "cgroupfs"\n'
                f'[network]\npod_cidr = "10.199.0.0/24"\nbridge = "{bridge}"\ncni_conf_dir = "{tmp}/net.d"\n')
    log = open(os.path.join(tmp, "daemon.log"), "w+")
    daemon = subprocess.Popen([BULKHEAD, "--config", config], stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while run([INSTALL, "--probe", socket_path], check=False).returncode != 0:
            if daemon.poll() is not None or time.time() > deadline:
                log.seek(0)
                raise AssertionError(f"the daemon's socket never answered:\n{log.read()}")
            time.sleep(0.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        subprocess.run(["nft", "delete", "table", "inet", bridge], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    assert daemon.returncode == 0, daemon.returncode


def fake_proc(node, pid, cmdline, files=None):
    """A /proc with one kubelet of this command line; files are written under its root."""
    proc = os.path.join(node.tmp, "proc")
    d = os.path.join(proc, str(pid))
    os.makedirs(os.path.join(d, "root"))
    os.makedirs(os.path.join(d, "cwd"), exist_ok=True)
    with open(os.path.join(d, "comm"), "w") as f:
        f.write("kubelet\n")
    with open(os.path.join(d, "cmdline"), "w") as f:
        f.write("\0".join(cmdline) + "\0")
    for rel, text in (files or {}).items():
        path = os.path.join(d, "root", rel.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return proc


@node_test
def remove_refuses_while_kubelet_or_pods_use_bulkhead(node):
    node.install("--auth", node.auth)
    before = node.snapshot()
    sock = "/run/bulkhead/bulkhead.sock"
    # kubelet's flag names the socket.
    proc = fake_proc(node, 100, ["/usr/bin/kubelet", f"--container-runtime-endpoint=unix://{sock}"])
    p = run([INSTALL, "--remove", "--root", node.root, "--proc", proc], check=False)
    assert p.returncode != 0 and "kubelet (pid 100) has" in p.stderr, p.stdout + p.stderr
    assert node.snapshot() == before
    shutil.rmtree(proc)
    # kubelet's config file does.
    proc = fake_proc(node, 200, ["/usr/bin/kubelet", "--config", "/var/lib/kubelet/config.yaml"],
                     {"/var/lib/kubelet/config.yaml": f"containerRuntimeEndpoint: unix://{sock}\n"})
    p = run([INSTALL, "--remove", "--root", node.root, "--proc", proc], check=False)
    assert p.returncode != 0 and "reads /var/lib/kubelet/config.yaml" in p.stderr, p.stdout + p.stderr
    shutil.rmtree(proc)
    # kubelet uses another runtime; but bulkhead still holds a pod.
    proc = fake_proc(node, 300, ["/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"],
                     {"/var/lib/kubelet/config.yaml": "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n"})
    os.makedirs(node.path("run/bulkhead/pods/0123abcd"))
    p = run([INSTALL, "--remove", "--root", node.root, "--proc", proc], check=False)
    assert p.returncode != 0 and "still holds 1 pod(s)" in p.stderr, p.stdout + p.stderr
    assert {k: v for k, v in node.snapshot().items() if not k.startswith("run")} == before


@node_test
def remove_deletes_what_install_wrote(node):
    env, state = fake_systemd(node)
    cri = FakeCri(node.path("run/bulkhead/bulkhead.sock"))
    try:
        node.install("--auth", node.auth, "--systemd", "host", "--wait", "5", env=env)
    finally:
        cri.close()
    calls(state)
    os.makedirs(node.path("var/lib/bulkhead/images"))
    proc = os.path.join(node.tmp, "proc")
    os.mkdir(proc)
    status = os.path.join(node.tmp, "status")
    p = run([INSTALL, "--remove", "--root", node.root, "--proc", proc, "--systemd", "host", "--status-file", status],
            env=env)
    assert calls(state) == ["--quiet disable --now bulkhead.service", "daemon-reload"], p.stdout
    for rel in EXPECTED:
        assert not os.path.exists(node.path(rel)), rel
    assert not os.path.exists(node.path("etc/bulkhead"))
    assert os.path.isdir(node.path("var/lib/bulkhead/images")), "the durable state must stay"
    assert os.path.isdir(node.path("etc/systemd/system")) and os.path.isdir(node.path("usr/local/bin"))
    with open(status) as f:
        assert f.read() == "removed\n"
    p = run([INSTALL, "--remove", "--root", node.root, "--proc", proc])
    assert result_line(p) == "unchanged", p.stdout


@node_test
def stay_sleeps_until_sigterm(node):
    proc = subprocess.Popen([INSTALL, "--source", node.src, "--config", node.config, "--root", node.root, "--stay"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not os.path.exists(node.path("etc/systemd/system/bulkhead.service")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.5)
    assert proc.poll() is None, "it did not stay"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, (proc.returncode, out, err)
    assert "staying until stopped" in out, out


@test
def install_script_is_posix_sh():
    """install.sh runs under dash (Debian's /bin/sh) and passes its syntax check."""
    with open(INSTALL) as f:
        assert f.readline().strip() == "#!/bin/sh"
    run(["dash", "-n", INSTALL])
    if shutil.which("shellcheck"):
        run(["shellcheck", "-s", "sh", INSTALL])


# --- runner --------------------------------------------------------------------


def main():
    selected = [(n, fn) for n, fn in TESTS_LIST if not sys.argv[1:] or any(a in n for a in sys.argv[1:])]
    passed = failed = skipped = 0
    for name, fn in selected:
        start = time.time()
        try:
            fn()
        except Skip as e:
            skipped += 1
            print(f"skip {name}: {e}", flush=True)
        except Exception as e:  # noqa: BLE001: a test's failure, reported
            failed += 1
            detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc()
            print(f"FAIL {name}: {detail}", flush=True)
        else:
            passed += 1
            print(f"ok   {name} ({time.time() - start:.1f}s)", flush=True)
    print(f"charts: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or not selected else 0


if __name__ == "__main__":
    sys.exit(main())
