#!/usr/bin/env python3
"""Fill a registry for the garbage-collection benchmark (scripts/bench gc): N images in R repositories, each a unique
config and two layers from a shared pool, pushed over HTTP; then every other image deleted by digest.

usage: benches/gc.py BASE_URL [--images N] [--repositories R]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import urllib.parse


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repositories", type=int, default=10)
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def req(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}

    def blob(repo: str, data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if req("HEAD", f"/v2/{repo}/blobs/{digest}")[0] != 200:
            status, _ = req("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data)
            assert status == 201, status
        return {"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}

    pool = [f"layer {i} ".encode() * 2000 for i in range(50)]
    deleted = 0
    for i in range(args.images):
        repo = f"bench/gc{i % args.repositories}"
        config = blob(repo, json.dumps({"image": i}).encode())
        layers = [blob(repo, pool[(i * 7) % 50]), blob(repo, pool[(i * 13 + 1) % 50])]
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": config, "layers": layers}).encode()
        status, headers = req("PUT", f"/v2/{repo}/manifests/v{i}", manifest,
                              {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert status == 201, status
        if i % 2 == 0:
            status, _ = req("DELETE", f"/v2/{repo}/manifests/{headers['docker-content-digest']}")
            assert status == 202, status
            deleted += 1
    print(f"    pushed {args.images} images into {args.repositories} repositories, deleted {deleted}")


if __name__ == "__main__":
    main()
