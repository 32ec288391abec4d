"""A small Kubernetes API server for tests: pods and namespaces, list and
watch, spoken the way the real one does (resourceVersion, chunked watch
streams, bookmarks, 410 Gone, dropped connections), so that the real
`kubernetes` client library is what the tests exercise."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def pod(name: str, namespace: str = "default", node: str = "node1", ips: tuple[str, ...] = (), phase: str = "Running", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())}
    if "annotations" in extra:
        meta["annotations"] = extra.pop("annotations")
    status: dict[str, Any] = {"phase": phase}
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    spec = {"nodeName": node, "containers": [{"name": "c", "image": "x"}], **extra.pop("spec", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": str(uuid.uuid4())}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


class FakeKube:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.rv = 100
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"pods": {}, "namespaces": {}}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.expired_below = 0  # watches from an older resourceVersion get 410
        self.generation = 0  # bumped by expire_history: open watches end
        self.drop_watches = 0  # the next N watches are cut after one event
        self.silent_watches = 0  # the next N watches send headers, then nothing at all
        self.failures: list[tuple[str, int, str]] = []  # (resource, code, reason): answer the next requests with a Status
        self.bookmark_interval = 0.3
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- test side ------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKube:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _key(self, obj: dict[str, Any]) -> str:
        m = obj["metadata"]
        return f"{m.get('namespace', '')}/{m['name']}"

    def put(self, resource: str, obj: dict[str, Any]) -> int:
        with self.lock:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            kind = "MODIFIED" if self._key(obj) in self.objects[resource] else "ADDED"
            self.objects[resource][self._key(obj)] = obj
            self.events.append((self.rv, resource, kind, json.loads(json.dumps(obj))))
            self.lock.notify_all()
            return self.rv

    def delete(self, resource: str, obj: dict[str, Any]) -> int:
        with self.lock:
            self.rv += 1
            gone = self.objects[resource].pop(self._key(obj))
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, resource, "DELETED", gone))
            self.lock.notify_all()
            return self.rv

    def expire_history(self) -> None:
        """Compaction: every watch from an older resourceVersion gets 410."""
        with self.lock:
            self.rv += 1
            self.expired_below = self.rv
            self.generation += 1
            self.lock.notify_all()

    def kubeconfig(self, path: str) -> str:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": "test-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
            "current-context": "fake",
        }
        with open(path, "w") as f:
            json.dump(cfg, f)  # JSON is YAML
        return path

    def watches(self, resource: str) -> list[dict[str, str]]:
        return [q for r, q in self.requests if r == resource and q.get("watch") == "true"]

    def lists(self, resource: str) -> list[dict[str, str]]:
        return [q for r, q in self.requests if r == resource and q.get("watch") != "true"]

    # --- server side ------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                resource = {"/api/v1/pods": "pods", "/api/v1/namespaces": "namespaces"}.get(url.path)
                with fake.lock:
                    fake.requests.append((resource or url.path, query))
                if resource is None:
                    self._json(404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": url.path})
                    return
                with fake.lock:
                    failure = next((f for f in fake.failures if f[0] == resource), None)
                    if failure:
                        fake.failures.remove(failure)
                if failure:
                    _, code, reason = failure
                    self._json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": f"{reason} (test)"})
                    return
                node = query.get("fieldSelector", "").removeprefix("spec.nodeName=") or None
                if query.get("watch") == "true":
                    self._watch(resource, node, query)
                else:
                    self._list(resource, node)

            def _match(self, resource: str, node: str | None, obj: dict[str, Any]) -> bool:
                return resource != "pods" or node is None or obj["spec"].get("nodeName") == node

            def _json(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _list(self, resource: str, node: str | None) -> None:
                with fake.lock:
                    items = [o for o in fake.objects[resource].values() if self._match(resource, node, o)]
                    rv = fake.rv
                kind = "PodList" if resource == "pods" else "NamespaceList"
                self._json(200, {"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": str(rv)}, "items": items})

            def _chunk(self, event: dict[str, Any]) -> None:
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, resource: str, node: str | None, query: dict[str, str]) -> None:
                since = int(query.get("resourceVersion") or 0)
                deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
                bookmarks = query.get("allowWatchBookmarks") == "true"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                with fake.lock:
                    drop = fake.drop_watches > 0
                    if drop:
                        fake.drop_watches -= 1
                    silent = fake.silent_watches > 0
                    if silent:
                        fake.silent_watches -= 1
                    expired = since < fake.expired_below
                    generation = fake.generation
                try:
                    if silent:  # a stuck proxy: the stream stays open, no bytes, no bookmarks
                        time.sleep(max(0.0, deadline - time.monotonic()))
                        return
                    if expired:
                        self._chunk(
                            {
                                "type": "ERROR",
                                "object": {
                                    "kind": "Status",
                                    "apiVersion": "v1",
                                    "status": "Failure",
                                    "code": 410,
                                    "reason": "Expired",
                                    "message": f"too old resource version: {since}",
                                },
                            }
                        )
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    sent = since
                    next_bookmark = time.monotonic() + fake.bookmark_interval
                    while time.monotonic() < deadline and fake.generation == generation:
                        with fake.lock:
                            # Read both at once: a bookmark may only claim what
                            # `pending` holds (reading rv after the wait below
                            # skipped events that arrived during it).
                            current = fake.rv
                            pending = [e for e in fake.events if e[0] > sent and e[1] == resource]
                            if not pending:
                                fake.lock.wait(0.05)
                        for rv, _, kind, obj in pending:
                            sent = rv
                            if self._match(resource, node, obj):
                                self._chunk({"type": kind, "object": obj})
                                if drop:
                                    self.connection.shutdown(2)  # cut mid-stream, no final chunk
                                    return
                        if bookmarks and time.monotonic() >= next_bookmark:
                            kind = "Pod" if resource == "pods" else "Namespace"
                            self._chunk({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(current)}}})
                            sent = max(sent, current)
                            next_bookmark = time.monotonic() + fake.bookmark_interval
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError, OSError):
                    return

        return Handler
