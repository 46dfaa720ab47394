"""skopeo against Pier: push OCI layouts, read manifests back byte for byte, pull, mount, delete, list."""

from __future__ import annotations

import json

import pytest

from imagegen import (
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    layout_blobs,
    layout_index,
    make_multi_arch,
    make_single_arch,
    sha256_digest,
)

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def raw_manifest(clients, repo: str, ref: str) -> bytes:
    return clients.skopeo("inspect", "--raw", "--tls-verify=false", clients.docker_ref(repo, ref)).stdout


def push(clients, layout, repo: str, tag: str, *extra: str) -> None:
    clients.skopeo("copy", "--dest-tls-verify=false", *extra, layout.oci_ref, clients.docker_ref(repo, tag))


def pull_layout(clients, repo: str, ref: str, out_name: str, tag: str = "pulled", *extra: str) -> str:
    out = str(clients.tmp / out_name)
    clients.skopeo("copy", "--src-tls-verify=false", *extra, clients.docker_ref(repo, ref), f"oci:{out}:{tag}")
    return out


def assert_same_blobs(expected: dict[str, bytes], actual: dict[str, bytes]) -> None:
    missing = sorted(set(expected) - set(actual))
    assert not missing, f"blobs missing after the round trip: {missing}"
    for digest, data in expected.items():
        assert actual[digest] == data, f"blob {digest} differs after the round trip"


def test_single_arch_push_inspect_pull(clients, repo):
    layout = make_single_arch(str(clients.tmp / "src"), "v1", layer_sizes=(64 * 1024, 6 * 1024 * 1024 + 12345))
    name = repo("single")
    push(clients, layout, name, "v1")

    raw = raw_manifest(clients, name, "v1")
    assert sha256_digest(raw) == layout.top_digest, "manifest by tag differs from the pushed bytes"
    assert raw == layout.top_bytes
    assert raw_manifest(clients, name, layout.top_digest) == layout.top_bytes, "manifest by digest differs"

    info = json.loads(clients.skopeo("inspect", "--tls-verify=false", clients.docker_ref(name, "v1")).stdout)
    assert info["Digest"] == layout.top_digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Layers"] == [layer.digest for layer in layout.images[0].layers]

    out = pull_layout(clients, name, "v1", "out")
    assert_same_blobs(layout_blobs(layout.path), layout_blobs(out))
    [entry] = layout_index(out)["manifests"]
    assert entry["digest"] == layout.top_digest
    assert entry["mediaType"] == MT_OCI_MANIFEST


def test_multi_arch_push_all_inspect_pull(clients, repo):
    layout = make_multi_arch(str(clients.tmp / "src"), "multi")
    name = repo("multi")
    push(clients, layout, name, "multi", "--all")

    raw = raw_manifest(clients, name, "multi")
    assert sha256_digest(raw) == layout.top_digest, "index by tag differs from the pushed bytes"
    index = json.loads(raw)
    assert index["mediaType"] == MT_OCI_INDEX
    assert [m["digest"] for m in index["manifests"]] == [i.digest for i in layout.images]
    for image in layout.images:
        assert raw_manifest(clients, name, image.digest) == image.manifest, f"{image.architecture} manifest differs"

    out = pull_layout(clients, name, "multi", "out-all", "pulled", "--all")
    assert_same_blobs(layout_blobs(layout.path), layout_blobs(out))
    assert layout_index(out)["manifests"][0]["digest"] == layout.top_digest

    # Choosing one platform from the index: skopeo resolves the index, then fetches the arm64 manifest.
    arm = next(i for i in layout.images if i.architecture == "arm64")
    out_arm = pull_layout(clients, name, "multi", "out-arm64", "arm", "--override-arch", "arm64")
    assert layout_index(out_arm)["manifests"][0]["digest"] == arm.digest
    assert arm.blob_digests() <= set(layout_blobs(out_arm))


def test_copy_across_repositories_mounts(clients, repo):
    layout = make_single_arch(str(clients.tmp / "src"), "1")
    a, b = repo("a"), repo("b")
    push(clients, layout, a, "1")
    # skopeo's blob-info cache now knows the blobs live in `a`, so this copy tries POST ?mount=&from=a.
    clients.skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                   clients.docker_ref(a, "1"), clients.docker_ref(b, "1"))
    assert raw_manifest(clients, b, "1") == layout.top_bytes
    out = pull_layout(clients, b, "1", "out-b")
    assert_same_blobs(layout_blobs(layout.path), layout_blobs(out))


def test_copy_multi_arch_across_repositories(clients, repo):
    layout = make_multi_arch(str(clients.tmp / "src"), "1")
    a, b = repo("a"), repo("b")
    push(clients, layout, a, "1", "--all")
    clients.skopeo("copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
                   clients.docker_ref(a, "1"), clients.docker_ref(b, "2"))
    assert raw_manifest(clients, b, "2") == layout.top_bytes
    for image in layout.images:
        assert raw_manifest(clients, b, image.digest) == image.manifest


def test_docker_v2s2_format(clients, repo):
    layout = make_single_arch(str(clients.tmp / "src"), "v2s2")
    name = repo("v2s2")
    push(clients, layout, name, "v2s2", "--format", "v2s2")

    raw = raw_manifest(clients, name, "v2s2")
    manifest = json.loads(raw)
    assert manifest["mediaType"] == MT_DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == MT_DOCKER_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [MT_DOCKER_LAYER] * len(layout.images[0].layers)
    assert [layer["digest"] for layer in manifest["layers"]] == [layer.digest for layer in layout.images[0].layers]
    digest = sha256_digest(raw)
    assert raw_manifest(clients, name, digest) == raw, "Docker manifest by digest differs from by tag"

    info = json.loads(clients.skopeo("inspect", "--tls-verify=false", clients.docker_ref(name, "v2s2")).stdout)
    assert info["Digest"] == digest

    out = pull_layout(clients, name, "v2s2", "out")
    pulled = layout_blobs(out)
    for layer in layout.images[0].layers:
        assert pulled[layer.digest] == layer.blob


def test_docker_v2s2_manifest_list(clients, repo):
    """`--all --format v2s2` turns the OCI index into a Docker manifest list of Docker manifests."""
    layout = make_multi_arch(str(clients.tmp / "src"), "list")
    name = repo("v2s2-list")
    push(clients, layout, name, "list", "--all", "--format", "v2s2")

    raw = raw_manifest(clients, name, "list")
    index = json.loads(raw)
    assert index["mediaType"] == MT_DOCKER_MANIFEST_LIST
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    for entry in index["manifests"]:
        assert entry["mediaType"] == MT_DOCKER_MANIFEST
        child = raw_manifest(clients, name, entry["digest"])
        assert sha256_digest(child) == entry["digest"] and len(child) == entry["size"]
        assert json.loads(child)["mediaType"] == MT_DOCKER_MANIFEST
    assert raw_manifest(clients, name, sha256_digest(raw)) == raw

    out = pull_layout(clients, name, "list", "out", "pulled", "--all")
    pulled = layout_blobs(out)
    for image in layout.images:
        for layer in image.layers:
            assert pulled[layer.digest] == layer.blob


def test_delete_then_inspect_fails(clients, repo):
    layout = make_single_arch(str(clients.tmp / "src"), "gone")
    name = repo("del")
    push(clients, layout, name, "gone")
    push(clients, layout, name, "other")  # a second tag on the same manifest: deletion by digest removes both
    assert raw_manifest(clients, name, "gone") == layout.top_bytes

    clients.skopeo("delete", "--tls-verify=false", clients.docker_ref(name, "gone"))

    for ref in ("gone", "other", layout.top_digest):
        cp = clients.skopeo("inspect", "--raw", "--tls-verify=false", clients.docker_ref(name, ref), check=False)
        assert cp.returncode != 0, f"inspect {ref} still succeeds after delete: {cp.stdout[:200]!r}"
        err = cp.stderr.decode(errors="replace").lower()
        assert "manifest unknown" in err or "not found" in err, f"unexpected error for {ref}: {err}"


def test_list_tags(clients, repo):
    layout = make_single_arch(str(clients.tmp / "src"), "t")
    name = repo("tags")
    tags = ["1.0", "1.1", "latest", "v2-rc.1"]
    for tag in tags:
        push(clients, layout, name, tag)
    listing = json.loads(clients.skopeo("list-tags", "--tls-verify=false", f"docker://{clients.registry.host}/{name}").stdout)
    assert listing["Repository"].endswith(name)
    assert sorted(listing["Tags"]) == sorted(tags)


def test_list_tags_unknown_repository_fails(clients, repo):
    cp = clients.skopeo("list-tags", "--tls-verify=false", f"docker://{clients.registry.host}/{repo('never')}",
                        check=False)
    assert cp.returncode != 0
    assert "name unknown" in cp.stderr.decode(errors="replace").lower() or "not found" in cp.stderr.decode(
        errors="replace").lower()


@pytest.mark.parametrize("ref", ["no-such-tag", "sha256:" + "0" * 64])
def test_inspect_unknown_manifest_fails(clients, repo, ref):
    layout = make_single_arch(str(clients.tmp / "src"), "x", layer_sizes=(1024,))
    name = repo("unknown")
    push(clients, layout, name, "x")
    cp = clients.skopeo("inspect", "--raw", "--tls-verify=false", clients.docker_ref(name, ref), check=False)
    assert cp.returncode != 0
    assert "manifest unknown" in cp.stderr.decode(errors="replace").lower()
