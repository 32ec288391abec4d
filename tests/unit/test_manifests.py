"""Every manifest validates offline against the Kubernetes schemas, the
kustomization lists them all, and the DaemonSet keeps the promises the README
makes (capabilities one by one, probes, downward-API node name)."""

from __future__ import annotations

import os

import kubernetes_validate
import pytest
import yaml

MANIFESTS = os.path.join(os.path.dirname(__file__), "..", "..", "manifests")
K8S_VERSION = "1.37.0"


def load(name: str) -> list[dict]:
    with open(os.path.join(MANIFESTS, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kustomization() -> dict:
    return load("kustomization.yaml")[0]


def test_kustomization_lists_every_manifest():
    files = {f for f in os.listdir(MANIFESTS) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"}
    assert set(kustomization()["resources"]) == files


@pytest.mark.parametrize("name", kustomization()["resources"])
def test_manifest_validates_strictly(name):
    for doc in load(name):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_caught():
    bad = load("daemonset.yaml")[0]
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "nine"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_rbac_is_read_only_on_pods_and_namespaces():
    (role,) = load("clusterrole.yaml")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}]


def test_daemonset_shape():
    (ds,) = load("daemonset.yaml")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert "privileged" not in sc
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) <= {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE"}
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in c["env"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/sys/fs/bpf", "/host/sys/fs/cgroup", "/lib/modules", "/usr/src"} <= mounts
    assert pod["terminationGracePeriodSeconds"] >= 10


def test_every_configmap_setting_is_read_by_accel_run():
    """A misspelt key would be ignored silently by the agent."""
    from accel.cli import run

    (cm,) = load("configmap.yaml")
    envvars = {p.envvar for p in run.params if isinstance(getattr(p, "envvar", None), str)}
    assert set(cm["data"]) <= envvars, set(cm["data"]) - envvars
    (ds,) = load("daemonset.yaml")
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert {"configMapRef": {"name": cm["metadata"]["name"]}} in c["envFrom"]
