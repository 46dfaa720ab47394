"""Offline builders for OCI image layouts used by the real-client tests.

An OCI image layout is a directory with `oci-layout`, `index.json` and content-addressed
`blobs/sha256/<hex>` files. `skopeo copy oci:DIR:TAG docker://...` pushes such a layout.

Every layer is a tar of files with random content, gzip-compressed, so each test run produces
digests no client has seen before: skopeo/podman/buildah keep a blob-info cache
(/var/lib/containers/cache) and skip uploads of digests they believe a registry already has.
Layers are gzip-compressed (`application/vnd.oci.image.layer.v1.tar+gzip`) because a client pushing
an uncompressed layer to a registry compresses it first, which would change the manifest digest; with
gzip layers skopeo pushes the manifest byte for byte, so digests can be compared exactly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field

OCI_LAYOUT_VERSION = "1.0.0"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_tar(total_bytes: int, files: int = 3, prefix: str = "data") -> bytes:
    """An uncompressed tar holding `files` regular files of random content, `total_bytes` in all."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(prefix)
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        d.mtime = 1_700_000_000
        tar.addfile(d)
        per_file = max(1, total_bytes // max(1, files))
        for i in range(files):
            content = os.urandom(per_file)
            info = tarfile.TarInfo(f"{prefix}/file-{i}-{os.urandom(4).hex()}.bin")
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@dataclass
class Layer:
    """A compressed layer blob and the digest of its uncompressed tar (its diff_id)."""

    blob: bytes
    diff_id: str

    @property
    def digest(self) -> str:
        return sha256_digest(self.blob)


def random_layer(total_bytes: int, files: int = 3) -> Layer:
    """A gzip-compressed random tar layer."""
    tar = random_tar(total_bytes, files, prefix="layer-" + os.urandom(4).hex())
    return Layer(blob=gzip.compress(tar, compresslevel=1, mtime=0), diff_id=sha256_digest(tar))


@dataclass
class Image:
    """One platform-specific image as written into a layout."""

    manifest: bytes
    config: bytes
    layers: list[Layer]
    architecture: str
    os: str = "linux"

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    def descriptor(self) -> dict:
        return {
            "mediaType": MT_OCI_MANIFEST,
            "digest": self.digest,
            "size": len(self.manifest),
            "platform": {"architecture": self.architecture, "os": self.os},
        }

    def blob_digests(self) -> set[str]:
        """Every blob the image references, the manifest included."""
        return {self.digest, sha256_digest(self.config)} | {layer.digest for layer in self.layers}


@dataclass
class Layout:
    """An OCI image layout directory and what was written into it."""

    path: str
    tag: str
    top_digest: str = ""  # digest of what `tag` points to (a manifest or an index)
    top_bytes: bytes = b""
    images: list[Image] = field(default_factory=list)

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.path}:{self.tag}"

    def blob_digests(self) -> set[str]:
        out = {self.top_digest}
        for image in self.images:
            out |= image.blob_digests()
        return out


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def write_blob(layout_dir: str, data: bytes) -> str:
    """Store `data` under blobs/sha256/ and return its digest."""
    digest = sha256_digest(data)
    blob_dir = os.path.join(layout_dir, "blobs", "sha256")
    os.makedirs(blob_dir, exist_ok=True)
    with open(os.path.join(blob_dir, digest.split(":", 1)[1]), "wb") as f:
        f.write(data)
    return digest


def build_image(layout_dir: str, architecture: str = "amd64", layer_sizes=(64 * 1024, 128 * 1024),
                config_extra: dict | None = None, history: list[str] | None = None) -> Image:
    """Write random layers, a config and a manifest into `layout_dir`; return the image. `config_extra` adds to
    (or replaces keys of) the config's `config` object (Entrypoint, ExposedPorts, Labels...); `history` gives one
    `created_by` per layer."""
    layers = [random_layer(size, files=2 if size < 1 << 20 else 4) for size in layer_sizes]
    for layer in layers:
        write_blob(layout_dir, layer.blob)
    runtime = {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
        "Labels": {"pier.test.nonce": os.urandom(8).hex()},
    }
    runtime.update(config_extra or {})
    commands = history or ["pier imagegen"] * len(layers)
    config = _canonical(
        {
            "created": "2024-01-01T00:00:00Z",
            "architecture": architecture,
            "os": "linux",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": command} for command in commands],
        }
    )
    config_digest = write_blob(layout_dir, config)
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": MT_OCI_LAYER_GZIP, "digest": layer.digest, "size": len(layer.blob)}
                for layer in layers
            ],
            "annotations": {"org.opencontainers.image.title": "pier client test " + architecture},
        }
    )
    write_blob(layout_dir, manifest)
    return Image(manifest=manifest, config=config, layers=layers, architecture=architecture)


def _write_layout_files(layout_dir: str, top_descriptor: dict, tag: str) -> None:
    with open(os.path.join(layout_dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": OCI_LAYOUT_VERSION}, f)
    entry = dict(top_descriptor)
    entry.pop("platform", None)
    entry["annotations"] = {REF_NAME_ANNOTATION: tag}
    with open(os.path.join(layout_dir, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [entry]}, f)


def make_single_arch(layout_dir: str, tag: str = "latest", layer_sizes=(64 * 1024, 128 * 1024),
                     architecture: str = "amd64", **config) -> Layout:
    """A layout whose `tag` names one linux/`architecture` image (`config`: see `build_image`)."""
    os.makedirs(layout_dir, exist_ok=True)
    image = build_image(layout_dir, architecture, layer_sizes, **config)
    _write_layout_files(layout_dir, image.descriptor(), tag)
    return Layout(path=layout_dir, tag=tag, top_digest=image.digest, top_bytes=image.manifest, images=[image])


def make_multi_arch(layout_dir: str, tag: str = "latest", architectures=("amd64", "arm64"),
                    layer_sizes=(48 * 1024, 96 * 1024)) -> Layout:
    """A layout whose `tag` names an image index over one image per architecture."""
    os.makedirs(layout_dir, exist_ok=True)
    images = [build_image(layout_dir, arch, layer_sizes) for arch in architectures]
    index = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [image.descriptor() for image in images],
        }
    )
    digest = write_blob(layout_dir, index)
    _write_layout_files(layout_dir, {"mediaType": MT_OCI_INDEX, "digest": digest, "size": len(index)}, tag)
    return Layout(path=layout_dir, tag=tag, top_digest=digest, top_bytes=index, images=images)


def layout_blobs(layout_dir: str) -> dict[str, bytes]:
    """Every blob in a layout, by digest, checking that each file's content matches its name."""
    out = {}
    blob_dir = os.path.join(layout_dir, "blobs", "sha256")
    for name in os.listdir(blob_dir):
        with open(os.path.join(blob_dir, name), "rb") as f:
            data = f.read()
        digest = "sha256:" + name
        assert sha256_digest(data) == digest, f"blob {name} in {layout_dir} does not match its digest"
        out[digest] = data
    return out


def layout_index(layout_dir: str) -> dict:
    with open(os.path.join(layout_dir, "index.json")) as f:
        return json.load(f)
