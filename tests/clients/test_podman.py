"""podman (and buildah) against Pier: pull what skopeo pushed, push new images, pull them back.

podman and buildah run rootful with private vfs storage per test (`--root/--runroot` in the test's
temp dir), `--cgroup-manager=cgroupfs --events-backend=file` so they need no systemd, and
`--tls-verify=false`. podman pushes a blob as POST, one PATCH with `Transfer-Encoding: chunked` (no
Content-Length), then PUT `?digest=` with an empty body.
"""

from __future__ import annotations

import json

from imagegen import layout_blobs, make_multi_arch, make_single_arch, random_tar, sha256_digest


def raw_manifest(clients, repo: str, ref: str) -> bytes:
    return clients.skopeo("inspect", "--raw", "--tls-verify=false", clients.docker_ref(repo, ref)).stdout


def inspect_digest(clients, ref: str, storage: str = "default") -> str:
    out = clients.podman("image", "inspect", "--format", "{{.Digest}}", ref, storage=storage).stdout
    return out.decode().strip()


def import_random_image(clients, local_name: str, size: int = 256 * 1024, storage: str = "default") -> None:
    """A brand-new local image (random tar → one layer) that no blob-info cache has seen."""
    tar_path = clients.tmp / f"{local_name.replace('/', '_').replace(':', '_')}.tar"
    tar_path.write_bytes(random_tar(size, files=3, prefix="podman"))
    clients.podman("import", "--change", "CMD=/bin/sh", str(tar_path), local_name, storage=storage)


def test_podman_pull_image_pushed_by_skopeo(clients, repo):
    layout = make_single_arch(str(clients.tmp / "src"), "v1")
    name = repo("from-skopeo")
    clients.skopeo("copy", "--dest-tls-verify=false", layout.oci_ref, clients.docker_ref(name, "v1"))

    ref = clients.ref(name, "v1")
    clients.podman("pull", "--tls-verify=false", ref)
    assert inspect_digest(clients, ref) == layout.top_digest
    image_id = clients.podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.decode().strip()
    assert "sha256:" + image_id == sha256_digest(layout.images[0].config), "image ID is not the config digest"

    # Pull by digest too (GET /v2/<name>/manifests/sha256:...).
    clients.podman("pull", "--tls-verify=false", clients.ref(name, layout.top_digest), storage="by-digest")
    assert inspect_digest(clients, clients.ref(name, layout.top_digest), storage="by-digest") == layout.top_digest


def test_podman_pull_multi_arch(clients, repo):
    layout = make_multi_arch(str(clients.tmp / "src"), "m")
    name = repo("multi")
    clients.skopeo("copy", "--all", "--dest-tls-verify=false", layout.oci_ref, clients.docker_ref(name, "m"))
    arm = next(i for i in layout.images if i.architecture == "arm64")
    ref = clients.ref(name, "m")
    clients.podman("pull", "--tls-verify=false", "--arch", "arm64", ref)
    info = json.loads(clients.podman("image", "inspect", ref).stdout)[0]
    assert info["Architecture"] == "arm64"
    # podman records the digest it pulled by (the index) and the platform manifest it chose.
    assert info["Digest"] == layout.top_digest
    repo_digests = {d.split("@", 1)[1] for d in info.get("RepoDigests", [])}
    assert {layout.top_digest, arm.digest} <= repo_digests
    image_id = "sha256:" + info["Id"]
    assert image_id == sha256_digest(arm.config), "podman did not pick the arm64 image"


def test_podman_push_new_image_and_pull_back(clients, repo):
    # 6 MiB of random data: one PATCH with Transfer-Encoding: chunked well past a 5 MiB multipart part.
    import_random_image(clients, "localhost/pier-new:1", size=6 * 1024 * 1024 + 4321)
    name = repo("pushed")
    digest_file = clients.tmp / "digest"
    clients.podman("push", "--tls-verify=false", "--digestfile", str(digest_file),
                   "localhost/pier-new:1", clients.docker_ref(name, "1"))
    pushed_digest = digest_file.read_text().strip()
    assert pushed_digest.startswith("sha256:")

    raw = raw_manifest(clients, name, "1")
    assert sha256_digest(raw) == pushed_digest, "registry serves different manifest bytes than podman pushed"

    ref = clients.ref(name, "1")
    clients.podman("pull", "--tls-verify=false", ref, storage="fresh")
    assert inspect_digest(clients, ref, storage="fresh") == pushed_digest

    # The pulled layer must be the very bytes podman uploaded (round trip through the registry).
    out = clients.tmp / "out"
    clients.skopeo("copy", "--src-tls-verify=false", clients.docker_ref(name, "1"), f"oci:{out}:x")
    blobs = layout_blobs(str(out))
    manifest = json.loads(raw)
    for layer in manifest["layers"]:
        assert layer["digest"] in blobs and len(blobs[layer["digest"]]) == layer["size"]


def test_podman_push_pulled_image_to_new_repo(clients, repo):
    """A pulled image pushed elsewhere on the same registry: podman mounts or re-uploads the blobs."""
    layout = make_single_arch(str(clients.tmp / "src"), "v1")
    src, dst = repo("src"), repo("dst")
    clients.skopeo("copy", "--dest-tls-verify=false", layout.oci_ref, clients.docker_ref(src, "v1"))
    clients.podman("pull", "--tls-verify=false", clients.ref(src, "v1"))
    digest_file = clients.tmp / "digest"
    clients.podman("push", "--tls-verify=false", "--digestfile", str(digest_file),
                   clients.ref(src, "v1"), clients.docker_ref(dst, "copied"))
    pushed = digest_file.read_text().strip()
    assert sha256_digest(raw_manifest(clients, dst, "copied")) == pushed

    clients.podman("pull", "--tls-verify=false", clients.ref(dst, "copied"), storage="fresh")
    assert inspect_digest(clients, clients.ref(dst, "copied"), storage="fresh") == pushed


def test_buildah_push_and_pull(clients, repo):
    tar_path = clients.tmp / "b.tar"
    tar_path.write_bytes(random_tar(200 * 1024, files=2, prefix="buildah"))
    ctr = clients.buildah("from", "scratch").stdout.decode().strip()
    clients.buildah("add", ctr, str(tar_path), "/")
    clients.buildah("config", "--cmd", "/bin/true", ctr)
    clients.buildah("commit", ctr, "localhost/pier-buildah:1")
    name = repo("buildah")
    digest_file = clients.tmp / "digest"
    clients.buildah("push", "--tls-verify=false", "--digestfile", str(digest_file),
                    "localhost/pier-buildah:1", clients.docker_ref(name, "1"))
    pushed = digest_file.read_text().strip()
    assert sha256_digest(raw_manifest(clients, name, "1")) == pushed

    clients.buildah("pull", "--tls-verify=false", clients.ref(name, "1"), storage="fresh")
    out = clients.buildah("images", "--digests", "--format", "{{.Digest}}", storage="fresh").stdout.decode()
    assert pushed in out
