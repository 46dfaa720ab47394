"""ORAS (Python SDK) against Pier: artifacts pushed monolithically and in PATCH chunks, pulled back;
tag listing with Link pagination, tag deletion, and a referrer pushed with a `subject`.

The SDK's `do_request` retries any 500 answer five times with sleeps of 3-29 s; the client here calls
the undecorated method instead so a server error fails at once. Every request/response the SDK makes
is recorded and printed (pytest shows it for a failing test).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from pathlib import Path

import oras.client
import oras.oci
import oras.provider
import pytest

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
TITLE = "org.opencontainers.image.title"


class PierOras(oras.client.OrasClient):
    """OrasClient without the SDK's sleep-and-retry on errors."""

    def do_request(self, *args, **kwargs):
        return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)


@pytest.fixture
def orc(registry):
    client = PierOras(hostname=registry.host, insecure=True)
    exchanges: list[str] = []

    def record(response, *args, **kwargs):
        req = response.request
        interesting = {k: v for k, v in response.headers.items()
                       if k.lower() in ("location", "range", "docker-content-digest", "content-length",
                                        "content-type", "oci-subject", "link", "docker-upload-uuid",
                                        "oci-filters-applied")}
        sent = {k: v for k, v in req.headers.items()
                if k.lower() in ("content-range", "content-length", "content-type", "accept", "transfer-encoding")}
        body = ""
        if response.status_code >= 400 and not response.raw.closed:
            try:
                body = " body=" + response.text[:300]
            except Exception:  # noqa: BLE001
                pass
        exchanges.append(f"{req.method} {req.url} {sent} -> {response.status_code} {interesting}{body}")

    client.session.hooks["response"].append(record)
    # The SDK sets no timeouts; a server that never answers must fail the test, not hang the suite.
    request = client.session.request
    client.session.request = lambda *a, **kw: request(*a, **{"timeout": 60, **kw})
    client.exchanges = exchanges
    yield client
    print("\n--- HTTP exchanges made by the oras SDK ---")
    print("\n".join(exchanges[-80:]))


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def write_files(dir_: Path, sizes: dict[str, int]) -> dict[str, Path]:
    dir_.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, size in sizes.items():
        p = dir_ / name
        p.write_bytes(os.urandom(size))
        out[name] = p
    return out


def push_and_pull(orc, clients, target: str, files: dict[str, Path], **push_kw) -> dict:
    """Push `files` as one artifact to `target`, pull it into a fresh dir, compare bytes; return the manifest."""
    resp = orc.push(target=target, files=[str(p) for p in files.values()], disable_path_validation=True,
                    quiet=True, **push_kw)
    assert resp.status_code == 201, f"manifest PUT answered {resp.status_code}: {resp.text[:300]}"
    pushed_digest = resp.headers.get("Docker-Content-Digest")

    outdir = clients.tmp / ("pulled-" + os.urandom(4).hex())
    pulled = orc.pull(target=target, outdir=str(outdir))
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for name, src in files.items():
        got = outdir / name
        assert got.read_bytes() == src.read_bytes(), f"{name} differs after push/pull"

    manifest = orc.get_manifest(target)
    assert sorted(layer["annotations"][TITLE] for layer in manifest["layers"]) == sorted(files)
    for layer in manifest["layers"]:
        src = files[layer["annotations"][TITLE]]
        assert layer["digest"] == sha256_file(src) and layer["size"] == src.stat().st_size

    raw = orc.do_request(f"http://{orc.hostname}/v2/{target.split(':')[0]}/manifests/{target.split(':')[1]}",
                         "GET", headers={"Accept": MT_OCI_MANIFEST})
    assert raw.status_code == 200
    digest = "sha256:" + hashlib.sha256(raw.content).hexdigest()
    assert raw.headers.get("Docker-Content-Digest") == digest
    if pushed_digest is not None:
        assert pushed_digest == digest, "Docker-Content-Digest of the PUT differs from the stored manifest"
    return manifest


def test_oras_push_pull_monolithic(orc, clients, repo):
    files = write_files(clients.tmp / "in", {"hello.txt": 37, "data.bin": 300_000, "one-byte": 1})
    push_and_pull(orc, clients, f"{repo('mono')}:v1", files)


@pytest.mark.parametrize(
    "chunk_size,sizes",
    [
        (1024, {"a.bin": 10_000, "exact.bin": 3 * 1024, "small.txt": 100}),
        (64 * 1024, {"big.bin": 6 * 1024 * 1024 + 7}),
    ],
    ids=["1KiB-chunks", "64KiB-chunks-6MiB"],
)
def test_oras_push_pull_chunked(orc, clients, repo, chunk_size, sizes):
    files = write_files(clients.tmp / "in", sizes)
    push_and_pull(orc, clients, f"{repo('chunked')}:v1", files, do_chunked=True, chunk_size=chunk_size)
    patches = [e for e in orc.exchanges if e.startswith("PATCH ")]
    expected = sum(-(-s // chunk_size) for s in sizes.values())
    assert len(patches) == expected, f"expected {expected} PATCH requests, saw {len(patches)}"


def test_oras_empty_file_chunked(orc, clients, repo):
    """An empty blob uploaded as POST then PUT ?digest=sha256:e3b0... with no PATCH at all."""
    files = write_files(clients.tmp / "in", {"empty": 0, "nonempty": 10})
    push_and_pull(orc, clients, f"{repo('empty')}:v1", files, do_chunked=True, chunk_size=1024)


def test_oras_tags_pagination(orc, clients, repo):
    name = repo("tags")
    files = write_files(clients.tmp / "in", {"f": 100})
    tags = ["a", "b", "c", "d", "e"]
    for tag in tags:
        orc.push(target=f"{name}:{tag}", files=[str(files["f"])], disable_path_validation=True, quiet=True)
    assert sorted(orc.get_tags(name)) == tags
    assert len(orc.get_tags(name, N=2)) == 2

    # Follow Link: <...?n=2&last=b>; rel="next" headers page by page with the SDK's paginator.
    seen: list[str] = []
    pages = []

    def collect(response):
        body = response.json()
        pages.append(body.get("tags") or [])
        seen.extend(body.get("tags") or [])
        return True

    orc._do_paginated_request(f"http://{orc.hostname}/v2/{name}/tags/list?n=2", callable=collect)
    assert seen == tags, f"paginated tags {pages} differ from {tags}"
    assert all(len(p) <= 2 for p in pages) and len(pages) >= 3


def test_oras_delete_tag(orc, clients, repo):
    name = repo("delete")
    files = write_files(clients.tmp / "in", {"f": 100})
    for tag in ("a", "b", "c"):
        orc.push(target=f"{name}:{tag}", files=[str(files["f"])], disable_path_validation=True, quiet=True)
    # oras delete: HEAD the tag (Docker-Content-Digest), DELETE the manifest by digest (expects 202).
    assert orc.delete_tag(name, "c") is True
    with pytest.raises(ValueError):
        orc.get_manifest(f"{name}:c")
    # All three tags named the same manifest, so deleting it by digest leaves no tag behind:
    # the tag list is empty (or, for a repository with nothing tagged, NAME_UNKNOWN).
    for tag in ("a", "b"):
        with pytest.raises(ValueError):
            orc.get_manifest(f"{name}:{tag}")
    r = orc.do_request(f"http://{orc.hostname}/v2/{name}/tags/list", "GET")
    if r.status_code == 200:
        assert not r.json().get("tags"), f"tags still listed after their manifest was deleted: {r.text}"
    else:
        assert r.status_code == 404 and "NAME_UNKNOWN" in r.text, f"tags/list answered {r.status_code}: {r.text}"


def test_oras_referrer_with_subject(orc, clients, repo):
    name = repo("refs")
    base_files = write_files(clients.tmp / "base", {"artifact.bin": 2048})
    base_resp = orc.push(target=f"{name}:base", files=[str(base_files["artifact.bin"])],
                         disable_path_validation=True, quiet=True)
    assert base_resp.status_code == 201
    got = orc.do_request(f"http://{orc.hostname}/v2/{name}/manifests/base", "GET",
                         headers={"Accept": MT_OCI_MANIFEST})
    assert got.status_code == 200
    base_digest = "sha256:" + hashlib.sha256(got.content).hexdigest()
    base_size = len(got.content)

    sig_dir = clients.tmp / "sig"
    sig_files = write_files(sig_dir, {"signature.sig": 512})
    config = sig_dir / "config.json"
    config.write_text(json.dumps({"signed": base_digest}))
    artifact_type = "application/vnd.pier.test.signature.v1+json"
    resp = orc.push(
        target=f"{name}:sig",
        files=[str(sig_files["signature.sig"])],
        disable_path_validation=True,
        quiet=True,
        manifest_config=f"{config}:{artifact_type}",
        manifest_annotations={"org.example.signed-by": "pier-tests"},
        subject=oras.oci.Subject(mediaType=MT_OCI_MANIFEST, digest=base_digest, size=base_size),
    )
    assert resp.status_code == 201, resp.text[:300]
    referrer_digest = resp.headers.get("Docker-Content-Digest")
    assert referrer_digest, "manifest PUT did not return Docker-Content-Digest"
    assert resp.headers.get("OCI-Subject") == base_digest, (
        "a registry that processes `subject` must answer the manifest PUT with OCI-Subject "
        f"(got headers {dict(resp.headers)})")

    url = f"http://{orc.hostname}/v2/{name}/referrers/{base_digest}"
    r = orc.do_request(url, "GET")
    assert r.status_code == 200, f"referrers answered {r.status_code}: {r.text[:300]}"
    assert r.headers.get("Content-Type", "").split(";")[0] == MT_OCI_INDEX
    index = r.json()
    assert index.get("schemaVersion") == 2 and index.get("mediaType") == MT_OCI_INDEX
    [entry] = [m for m in index["manifests"] if m["digest"] == referrer_digest]
    assert entry["mediaType"] == MT_OCI_MANIFEST
    assert entry["artifactType"] == artifact_type
    assert entry["annotations"]["org.example.signed-by"] == "pier-tests"

    # Encoded as real clients do: a raw '+' in a query string means a space.
    filtered = orc.do_request(url + "?" + urllib.parse.urlencode({"artifactType": artifact_type}), "GET")
    assert filtered.status_code == 200
    assert referrer_digest in [m["digest"] for m in filtered.json()["manifests"]]
    other = orc.do_request(url + "?artifactType=application/vnd.example.other", "GET")
    assert other.status_code == 200
    if "artifactType" in other.headers.get("OCI-Filters-Applied", ""):
        assert other.json()["manifests"] == []

    # A digest nobody refers to: an empty index, not a 404.
    none = orc.do_request(f"http://{orc.hostname}/v2/{name}/referrers/sha256:{'1' * 64}", "GET")
    assert none.status_code == 200 and none.json()["manifests"] == []
