"""Pod IPs of this node from the Kubernetes API, with each pod's opt-out.

The only module that imports the ``kubernetes`` client. It follows the
list-then-watch protocol exactly, for pods (field selector spec.nodeName) and
for namespaces (their opt-out label):

- list, remember the list's resourceVersion;
- watch from it with bookmarks; every event (bookmarks included) advances the
  resourceVersion;
- the server ends a watch after ``timeout_seconds``: watch again from the last
  resourceVersion; a silent stream hits the client read timeout: same;
- 410 Gone (the resourceVersion is too old): list again;
- any other error: back off (capped, jittered) and watch again.

Pods that are not Running, are deleted, or use the host network contribute
nothing; a pod whose annotation, or whose namespace's label, says
``accel.dev/enabled: "false"`` contributes its IPs with policy OPT_OUT.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.watch import Watch

from ..abi import POLICY_ACCELERATE, POLICY_OPT_OUT
from .table import normalise, usable

OPT_OUT_KEY = "accel.dev/enabled"
OPT_OUT_VALUES = ("false", "no", "off", "0")
# What to do about the API errors a misconfigured agent gets.
API_ERROR_FIXES = {
    401: "the service account token was refused",
    403: "RBAC: apply manifests/clusterrole.yaml (get, list, watch on pods and namespaces)",
}


def make_api_client(kubeconfig: str | None) -> client.ApiClient:
    """In-cluster config when ``kubeconfig`` is None, else that file."""
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


def in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _opted_out(meta_map: dict[str, str] | None) -> bool:
    return (meta_map or {}).get(OPT_OUT_KEY, "").strip().lower() in OPT_OUT_VALUES


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    ips: tuple[str, ...]
    opted_out: bool

    @staticmethod
    def from_raw(obj: dict[str, Any]) -> PodInfo | None:
        """None when the pod contributes no endpoint."""
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        if spec.get("hostNetwork") or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            return None
        ips = [p.get("ip") for p in status.get("podIPs") or [] if p.get("ip")]
        if not ips and status.get("podIP"):
            ips = [status["podIP"]]
        ips = [normalise(ip) for ip in ips if usable(ip)]
        if not ips:
            return None
        return PodInfo(meta.get("namespace", ""), meta.get("name", ""), tuple(sorted(ips)), _opted_out(meta.get("annotations")))


class KubeState:
    """What the API said, and the endpoint policies that follow. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pods: dict[str, PodInfo] = {}  # by uid
        self.ns_opted_out: dict[str, bool] = {}
        self.last_event = 0.0

    def replace_pods(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self.pods = {}
            for obj in items:
                self._apply_pod("ADDED", obj)
            self.last_event = time.time()

    def pod_event(self, kind: str, obj: dict[str, Any]) -> PodInfo | None:
        with self._lock:
            self.last_event = time.time()
            return self._apply_pod(kind, obj)

    def _apply_pod(self, kind: str, obj: dict[str, Any]) -> PodInfo | None:
        uid = (obj.get("metadata") or {}).get("uid") or json.dumps(obj.get("metadata"), sort_keys=True)
        info = None if kind == "DELETED" else PodInfo.from_raw(obj)
        if info is None:
            self.pods.pop(uid, None)
        else:
            self.pods[uid] = info
        return info

    def replace_namespaces(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self.ns_opted_out = {}
            for obj in items:
                self._apply_ns("ADDED", obj)

    def namespace_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self._lock:
            self.last_event = time.time()
            self._apply_ns(kind, obj)

    def _apply_ns(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if kind == "DELETED":
            self.ns_opted_out.pop(meta.get("name", ""), None)
        else:
            self.ns_opted_out[meta.get("name", "")] = _opted_out(meta.get("labels"))

    def policies(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for pod in self.pods.values():
                opted = pod.opted_out or self.ns_opted_out.get(pod.namespace, False)
                for ip in pod.ips:
                    # Two pods claiming one IP (a stale entry): opt-out wins.
                    if opted or out.get(ip) == POLICY_OPT_OUT:
                        out[ip] = POLICY_OPT_OUT
                    else:
                        out[ip] = POLICY_ACCELERATE
            return out


class ListWatch:
    """One resource's list-then-watch loop, in its own thread."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        log: Any,
        stop: threading.Event,
        watch_timeout: int = 300,
        read_timeout: float = 330.0,
        **selectors: Any,
    ) -> None:
        self.kind, self.list_fn, self.on_list, self.on_event = kind, list_fn, on_list, on_event
        self.log, self.stop = log, stop
        self.watch_timeout, self.read_timeout = watch_timeout, read_timeout
        self.selectors = selectors
        self.listed = threading.Event()
        self.restarts = 0
        self.relists = 0
        self.resource_version: str | None = None
        self._watch: Watch | None = None

    def _list(self) -> None:
        resp = self.list_fn(_preload_content=False, _request_timeout=(10, 60), **self.selectors)
        data = json.loads(resp.data)
        self.resource_version = (data.get("metadata") or {}).get("resourceVersion")
        self.on_list(data.get("items") or [])
        self.log.info("listed", kind=self.kind, items=len(data.get("items") or []), resource_version=self.resource_version)
        self.listed.set()

    def run(self) -> None:
        backoff = 0.5
        need_list = True
        while not self.stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                self._watch_once()
                backoff = 0.5
            except ApiException as exc:
                if exc.status == 410:
                    self.log.info("watch expired (410 Gone); listing again", kind=self.kind)
                    self.relists += 1
                    need_list = True
                    continue
                fix = API_ERROR_FIXES.get(exc.status)
                self._pause("api error", backoff, status=exc.status, reason=exc.reason, **({"fix": fix} if fix else {}))
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # connection reset, read timeout, bad JSON
                self._pause("watch connection lost", backoff, error=f"{type(exc).__name__}: {exc}"[:300])
                backoff = min(backoff * 2, 30.0)

    def _pause(self, what: str, backoff: float, **kw: Any) -> None:
        self.restarts += 1
        self.log.warning(what + "; retrying", kind=self.kind, retry_in=round(backoff, 2), **kw)
        self.stop.wait(backoff * (0.5 + random.random()))

    def _watch_once(self) -> None:
        w = Watch()
        self._watch = w
        for event in w.stream(
            self.list_fn,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _request_timeout=(10, self.read_timeout),
            **self.selectors,
        ):
            kind = event.get("type")
            obj = event.get("raw_object") or {}
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = rv
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.on_event(kind, obj)
            if self.stop.is_set():
                w.stop()
                break

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()


class KubeEndpoints:
    """Pods of one node and namespaces, watched in two threads; ``changed``
    is set (and ``notify`` called) whenever the policies may have changed."""

    def __init__(
        self, api: client.ApiClient, node_name: str, log: Any, notify: Callable[[], None], watch_timeout: int = 300, read_timeout: float | None = None
    ) -> None:
        # A stream silent for longer than the server's own timeout plus slack
        # is dead (a stuck proxy): give up on it and watch again.
        read_timeout = read_timeout if read_timeout is not None else watch_timeout + 30.0
        self.state = KubeState()
        self.log = log
        self.notify = notify
        self.stop = threading.Event()
        core = client.CoreV1Api(api)
        self.pods = ListWatch(
            "pods",
            core.list_pod_for_all_namespaces,
            self._pods_listed,
            self._pod_event,
            log,
            self.stop,
            watch_timeout,
            read_timeout,
            field_selector=f"spec.nodeName={node_name}",
        )
        self.namespaces = ListWatch("namespaces", core.list_namespace, self._ns_listed, self._ns_event, log, self.stop, watch_timeout, read_timeout)
        self.threads = [threading.Thread(target=lw.run, name=f"watch-{lw.kind}", daemon=True) for lw in (self.namespaces, self.pods)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def ready(self) -> bool:
        return self.pods.listed.is_set() and self.namespaces.listed.is_set()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready() and time.monotonic() < deadline and not self.stop.is_set():
            time.sleep(0.05)
        return self.ready()

    def restarts(self) -> int:
        return self.pods.restarts + self.namespaces.restarts + self.pods.relists + self.namespaces.relists

    def _pods_listed(self, items: list[dict[str, Any]]) -> None:
        self.state.replace_pods(items)
        self.notify()

    def _pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        info = self.state.pod_event(kind, obj)
        self.log.bind(pod=f"{meta.get('namespace')}/{meta.get('name')}").info(
            "pod event", type=kind, ips=list(info.ips) if info else [], opted_out=bool(info and info.opted_out)
        )
        self.notify()

    def _ns_listed(self, items: list[dict[str, Any]]) -> None:
        self.state.replace_namespaces(items)
        self.notify()

    def _ns_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.state.namespace_event(kind, obj)
        self.log.bind(namespace=(obj.get("metadata") or {}).get("name")).info("namespace event", type=kind)
        self.notify()

    def close(self) -> None:
        self.stop.set()
        self.pods.close()
        self.namespaces.close()
