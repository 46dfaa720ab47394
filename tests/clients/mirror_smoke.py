#!/usr/bin/env python3
"""Pull-through smoke for targets the Rust and pytest suites cannot start themselves (wrangler dev, wasmtime serve):
push an image to UPSTREAM over HTTP, pull it through MIRROR (which must mirror UPSTREAM, every name or under PREFIX)
twice, checking every digest, and check that a push to the mirrored name is refused. (That cached pulls do not reach
the upstream is checked where the test can count the upstream's requests: tests/http_mirror.rs.)

usage: tests/clients/mirror_smoke.py UPSTREAM_URL MIRROR_URL [PREFIX]
"""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.error
import urllib.request


def call(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def main() -> None:
    upstream, mirror = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")
    prefix = (sys.argv[3].strip("/") + "/") if len(sys.argv) > 3 and sys.argv[3] else ""
    repo = f"smoke/app{hashlib.sha256(mirror.encode()).hexdigest()[:6]}"
    blobs = [json.dumps({"os": "linux", "smoke": mirror}).encode(), bytes(range(256)) * 4000]
    descs = []
    for b in blobs:
        d = "sha256:" + hashlib.sha256(b).hexdigest()
        status, _, body = call("POST", f"{upstream}/v2/{repo}/blobs/uploads/?digest={d}", b, {"Content-Type": "application/octet-stream"})
        assert status == 201, f"push to the upstream: {status} {body[:200]!r}"
        descs.append({"mediaType": "application/octet-stream", "digest": d, "size": len(b)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": descs[0], "layers": descs[1:]}).encode()
    mt = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    status, _, body = call("PUT", f"{upstream}/v2/{repo}/manifests/v1", manifest, mt)
    assert status == 201, f"manifest push to the upstream: {status} {body[:200]!r}"
    for attempt in ("first", "cached"):
        status, headers, body = call("GET", f"{mirror}/v2/{prefix}{repo}/manifests/v1", headers={"Accept": mt["Content-Type"]})
        assert status == 200 and body == manifest, f"{attempt} manifest pull through the mirror: {status} {body[:300]!r}"
        for b, d in zip(blobs, descs):
            status, _, got = call("GET", f"{mirror}/v2/{prefix}{repo}/blobs/{d['digest']}")
            assert status == 200 and hashlib.sha256(got).hexdigest() == d["digest"][7:], f"{attempt} blob pull: {status}"
    status, _, _ = call("POST", f"{mirror}/v2/{prefix}{repo}/blobs/uploads/", b"")
    assert status == 405, f"a push to a mirrored name answered {status}"
    print(f"    mirror smoke: {repo} pulled through {mirror} twice, digests intact; pushes refused")


if __name__ == "__main__":
    main()
