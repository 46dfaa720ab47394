"""Notifications with real clients: a webhook receiver in this process (a small http.server on a free loopback port)
and a Pier server of its own configured to deliver to it, signed. skopeo pushes, podman pulls and pushes the image to
another repository (mounting its blobs), skopeo deletes; the receiver checks every delivery's X-Pier-Signature and
the events per repository, in order. The receiver answers 500 to its first deliveries: the events still arrive."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import socket
import threading
import time

import pytest

from conftest import _make_client_home, _make_clients, _pier_server
from imagegen import make_single_arch, sha256_digest

SECRET = "clients-notify-secret-0123456789"
FAIL_FIRST = 2


class Receiver:
    """Records deliveries: (status answered, signature valid, events)."""

    def __init__(self, fail_first: int):
        self.fail_first = fail_first
        self.deliveries: list[tuple[int, bool, list]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                signed = hmac.compare_digest(self.headers.get("X-Pier-Signature", ""), expected)
                ok_type = self.headers.get("Content-Type") == "application/vnd.docker.distribution.events.v1+json"
                with receiver.lock:
                    status = 500 if len(receiver.deliveries) < receiver.fail_first else 200
                    receiver.deliveries.append((status, signed and ok_type, json.loads(body)["events"]))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        with self.lock:
            return [e for status, _, events in self.deliveries if status == 200 for e in events]

    def wait(self, what: str, pred, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if pred(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver never got {what}; it has {summary(events)}")
            time.sleep(0.1)


def summary(events: list[dict]) -> list[str]:
    return [f"{e['action']} {e['target']['repository']} {e['target'].get('digest')}" for e in events]


def of(events: list[dict], repo: str) -> list[tuple[str, str]]:
    return [(e["action"], e["target"].get("digest", "")) for e in events if e["target"]["repository"] == repo]


@pytest.fixture
def notified(request):
    """A receiver and a Pier server delivering to it (its own, also when PIER_TEST_URL names another)."""
    if os.environ.get("PIER_TEST_URL"):
        pytest.skip("notification client tests start their own server")
    receiver = Receiver(FAIL_FIRST)
    endpoints = [{"name": "clients", "url": receiver.url, "threshold": 2, "backoff": "200ms", "timeout": "3s"}]
    env = {"REGISTRY_NOTIFICATIONS_ENDPOINTS": json.dumps(endpoints), "PIER_NOTIFICATIONS_SECRET": SECRET}
    with _pier_server(env, prefix="pier-clients-notify-") as reg, _make_client_home(reg) as home, \
            _make_clients(reg, home) as clients:
        yield receiver, clients
    receiver.server.shutdown()


def test_skopeo_and_podman_events_arrive_signed_in_order(notified, repo):
    receiver, clients = notified
    layout = make_single_arch(str(clients.tmp / "src"), "v1")
    image = layout.images[0]
    src, dst = repo("src"), repo("dst")
    clients.skopeo("copy", "--dest-tls-verify=false", layout.oci_ref, clients.docker_ref(src, "v1"))
    clients.podman("pull", "--tls-verify=false", clients.ref(src, "v1"))
    clients.podman("push", "--tls-verify=false", clients.ref(src, "v1"), clients.docker_ref(dst, "copied"))
    clients.skopeo("delete", "--tls-verify=false", clients.docker_ref(src, "v1"))

    blobs = {sha256_digest(image.config)} | {layer.digest for layer in image.layers}
    # skopeo's push: every blob, then the manifest (tagged v1); podman's pull: the manifest, then blobs it lacks;
    # skopeo's delete resolves the tag, then deletes the manifest by digest.
    events = receiver.wait("the source repository's delete", lambda ev: ("delete", layout.top_digest) in of(ev, src))
    got = of(events, src)
    manifest_push = got.index(("push", layout.top_digest))
    assert {d for a, d in got[:manifest_push] if a == "push"} == blobs, summary(events)
    push_event = next(e for e in events if e["action"] == "push" and e["target"].get("digest") == layout.top_digest)
    assert push_event["target"]["tag"] == "v1"
    assert push_event["target"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert push_event["request"]["useragent"].startswith("skopeo"), push_event["request"]
    pulls = [d for a, d in got[manifest_push:] if a == "pull"]
    assert layout.top_digest in pulls, got
    assert got[-1] == ("delete", layout.top_digest), got

    # podman's push to the other repository: its blobs (mounted or uploaded) before its manifest.
    events = receiver.wait("podman's manifest push", lambda ev: any(a == "push" and d.startswith("sha256:") and
                                                                     e_is_manifest(ev, dst, d) for a, d in of(ev, dst)))
    got = of(events, dst)
    manifest_at = next(i for i, (a, d) in enumerate(got) if a == "push" and e_is_manifest(events, dst, d))
    assert len([1 for a, _ in got[:manifest_at] if a in ("push", "mount")]) >= len(blobs), got
    with receiver.lock:
        assert sum(1 for s, _, _ in receiver.deliveries if s == 500) == FAIL_FIRST
        assert all(ok for _, ok, _ in receiver.deliveries), "a delivery had a bad signature or content type"
    ids = [e["id"] for e in receiver.events()]
    assert len(ids) == len(set(ids)), "an event was delivered twice"


def e_is_manifest(events: list[dict], repo: str, digest: str) -> bool:
    return any(e["target"]["repository"] == repo and e["target"].get("digest") == digest and e["action"] == "push"
               and "manifest" in e["target"].get("mediaType", "") for e in events)
