"""Garbage collection on every target, driven through the admin endpoint a scheduler calls (`POST /admin/gc`), on a
registry of its own (`gc_registry`: a cycle reads the whole registry).

Images that share layers are pushed with skopeo (the second repository gets its blobs by cross-repository mount),
some are deleted, and collection cycles run with no grace period. Afterwards the deleted image's own blobs are gone
(from the storage itself where the test can see it: the native server's filesystem root), the shared ones stay, and
the remaining image pulls back byte-identical with skopeo. A second test pushes, HEAD-skips, mounts, moves tags and
deletes while a thread keeps collecting in small slices; every tag that answered 201 and was not deleted pulls intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

from imagegen import layout_blobs, make_single_arch, sha256_digest


def call(registry, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    req = urllib.request.Request(registry.url + path, data=body if method in ("POST", "PUT", "PATCH") else None,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def collect(registry, cycles: int, calls: int = 200) -> list[dict]:
    """Run collection slices until `cycles` cycles have finished; their reports."""
    reports = []
    for _ in range(10_000):
        status, _, body = call(registry, "POST", f"/admin/gc?calls={calls}&grace=0")
        assert status == 200, f"POST /admin/gc: {status} {body[:300]!r}"
        answer = json.loads(body)
        if answer["cycle_done"]:
            reports.append(answer["report"])
            if len(reports) == cycles:
                return reports
    raise AssertionError("collection did not finish")


def stored_blob_files(registry) -> set[str] | None:
    """Digests of the blob objects in the storage itself: the native server's root, or the directory the test
    harness names in PIER_TEST_BLOB_DIR (s3s-fs keeps a bucket as a directory); None when the test cannot see it."""
    if registry.root is not None:
        d = Path(registry.root) / "objects" / "blobs" / "sha256"
    elif os.environ.get("PIER_TEST_BLOB_DIR"):
        d = Path(os.environ["PIER_TEST_BLOB_DIR"])
    else:
        return None
    if not d.exists():
        return set()
    return {f"sha256:{p.name}" for p in d.iterdir() if re.fullmatch(r"[0-9a-f]{64}", p.name)}


def test_gc_shared_layers(gc_clients, gc_registry, repo):
    clients, registry = gc_clients, gc_registry
    a = make_single_arch(str(clients.tmp / "a"), "v1", layer_sizes=(32 * 1024, 48 * 1024))
    b = make_single_arch(str(clients.tmp / "b"), "v1", layer_sizes=(16 * 1024,))
    first, second = repo("a"), repo("b")
    clients.skopeo("copy", "--dest-tls-verify=false", a.oci_ref, clients.docker_ref(first, "a"))
    clients.skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                   clients.docker_ref(first, "a"), clients.docker_ref(second, "a"))
    clients.skopeo("copy", "--dest-tls-verify=false", b.oci_ref, clients.docker_ref(first, "b"))
    blobs_a = set(layout_blobs(a.path)) - {a.top_digest}
    blobs_b = set(layout_blobs(b.path)) - {b.top_digest}
    for digest in (a.top_digest, b.top_digest):
        status, _, body = call(registry, "DELETE", f"/v2/{first}/manifests/{digest}")
        assert status == 202, body

    # Mark, unlink, delete: three cycles (one more finishes a cycle some other run left in progress).
    reports = collect(registry, 4)
    assert sum(r["blobs_deleted"] for r in reports) >= len(blobs_b), reports

    for digest in blobs_a | blobs_b:
        status, _, _ = call(registry, "HEAD", f"/v2/{first}/blobs/{digest}")
        assert status == 404, f"{digest} still linked in {first}"
    for digest in blobs_a:
        status, _, _ = call(registry, "HEAD", f"/v2/{second}/blobs/{digest}")
        assert status == 200, f"{digest} (still referenced from {second}) was collected"
    stored = stored_blob_files(registry)
    if stored is not None:
        assert not (blobs_b & stored), "the deleted image's own blobs are still stored"
        assert blobs_a <= stored, "a blob still referenced elsewhere was removed from storage"

    out = str(clients.tmp / "pulled")
    clients.skopeo("copy", "--src-tls-verify=false", clients.docker_ref(second, "a"), f"oci:{out}:pulled")
    pulled = layout_blobs(out)
    for digest, data in layout_blobs(a.path).items():
        assert pulled.get(digest) == data, f"{digest} differs after collection"

    status, _, body = call(registry, "GET", "/admin/gc")
    assert status == 200 and json.loads(body)["last"]["cycle"] >= reports[-1]["cycle"]
    status, _, body = call(registry, "GET", "/admin/du")
    assert status == 200
    usage = json.loads(body)
    line = next(r for r in usage["repositories"] if r["name"] == second)
    assert line["blobs"] == len(blobs_a)


def _blob(registry, name: str, data: bytes) -> bool:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, _, _ = call(registry, "HEAD", f"/v2/{name}/blobs/{digest}")
    if status == 200:
        return True
    status, _, _ = call(registry, "POST", f"/v2/{name}/blobs/uploads/?digest={digest}", data,
                        {"Content-Type": "application/octet-stream"})
    return status == 201


def _manifest(blobs: list[bytes]) -> bytes:
    d = lambda b: {"mediaType": "application/octet-stream", "digest": "sha256:" + hashlib.sha256(b).hexdigest(), "size": len(b)}
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": d(blobs[0]), "layers": [d(b) for b in blobs[1:]]}).encode()


def test_gc_during_pushes(gc_registry, repo):
    registry = gc_registry
    rng = random.Random(7)
    names = [repo(f"r{i}") for i in range(3)]
    pool = [f"shared layer {i} ".encode() * 300 for i in range(5)]
    expected: dict[tuple[str, str], list[bytes]] = {}
    stop = threading.Event()
    failures: list[str] = []

    def collector():
        while not stop.is_set():
            status, _, body = call(registry, "POST", "/admin/gc?calls=16&grace=0")
            if status != 200:
                failures.append(f"POST /admin/gc: {status} {body[:200]!r}")
                return

    thread = threading.Thread(target=collector, daemon=True)
    thread.start()
    try:
        for step in range(40):
            name, tag = rng.choice(names), f"t{rng.randrange(3)}"
            action = rng.randrange(10)
            if action < 6:
                blobs = [f"config {step}".encode()] + rng.sample(pool, 2)
                if rng.random() < 0.5:
                    # Mount from another repository when it has the layer (a 202 falls back to the upload below).
                    other = rng.choice([n for n in names if n != name])
                    for layer in blobs[1:]:
                        digest = "sha256:" + hashlib.sha256(layer).hexdigest()
                        call(registry, "POST", f"/v2/{name}/blobs/uploads/?mount={digest}&from={other}")
                if not all(_blob(registry, name, b) for b in blobs):
                    continue
                status, _, body = call(registry, "PUT", f"/v2/{name}/manifests/{tag}", _manifest(blobs),
                                       {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
                assert status in (201, 400), f"manifest PUT: {status} {body[:300]!r}"
                if status == 201:
                    expected[(name, tag)] = blobs
                else:
                    assert b"MANIFEST_BLOB_UNKNOWN" in body, body
            elif action < 8:
                status, _, _ = call(registry, "DELETE", f"/v2/{name}/manifests/{tag}")
                if status == 202:
                    expected.pop((name, tag), None)
            else:
                status, headers, _ = call(registry, "HEAD", f"/v2/{name}/manifests/{tag}")
                digest = {k.lower(): v for k, v in headers.items()}.get("docker-content-digest")
                if status == 200 and digest:
                    if call(registry, "DELETE", f"/v2/{name}/manifests/{digest}")[0] == 202:
                        for key in [k for k, v in expected.items()
                                    if k[0] == name and sha256_digest(_manifest(v)) == digest]:
                            expected.pop(key)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not failures, failures
    collect(registry, 4, calls=500)
    for (name, tag), blobs in expected.items():
        status, _, _ = call(registry, "GET", f"/v2/{name}/manifests/{tag}")
        assert status == 200, f"{name}:{tag} answered 201 and was not deleted, but is gone"
        for b in blobs:
            digest = "sha256:" + hashlib.sha256(b).hexdigest()
            status, _, data = call(registry, "GET", f"/v2/{name}/blobs/{digest}")
            assert status == 200 and data == b, f"{name}:{tag}: blob {digest} does not pull intact ({status})"
