"""The pull-through cache with real clients: an upstream Pier holds an image under `library/`, a second Pier mirrors
it under the `docker.io` prefix, and clients pull through the mirror — skopeo directly from the mirror's name, and
podman as a configured `[[registry.mirror]]` for `docker.io`, so `docker.io/library/<name>` goes through Pier (the
machine has no route to Docker Hub: only the mirror can answer). Digests must be intact, and a second pull must not
reach the upstream (its request log is counted).

Starts its own servers, so it is skipped when PIER_TEST_URL names an external one.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import _pier_server
from imagegen import layout_blobs, make_single_arch


def upstream_pulls(reg) -> int:
    time.sleep(0.3)  # the server's request log is written by the time the answer arrives; the file may lag a little
    text = reg.log_path.read_text(errors="replace") if reg.log_path else ""
    return sum(1 for line in text.splitlines() if '"GET ' in line)


@pytest.fixture
def upstream_and_mirror():
    if os.environ.get("PIER_TEST_URL"):
        pytest.skip("starts its own upstream and mirror servers")
    with _pier_server(prefix="pier-clients-upstream-") as upstream:
        upstreams = json.dumps([{"prefix": "docker.io", "url": upstream.url}])
        with _pier_server({"PIER_PROXY_UPSTREAMS": upstreams}, prefix="pier-clients-mirror-") as mirror:
            yield upstream, mirror


def test_pull_through_the_mirror_with_skopeo_and_podman(clients, upstream_and_mirror):
    upstream, mirror = upstream_and_mirror
    layout = make_single_arch(str(clients.tmp / "src"), "v1", layer_sizes=(64 * 1024, 300 * 1024))
    clients.skopeo("copy", "--dest-tls-verify=false", layout.oci_ref, f"docker://{upstream.host}/library/mirrored:v1")

    # skopeo straight from the mirror's name for it.
    out = str(clients.tmp / "via-skopeo")
    clients.skopeo("copy", "--src-tls-verify=false", f"docker://{mirror.host}/docker.io/library/mirrored:v1", f"oci:{out}:v1")
    pulled = layout_blobs(out)
    for digest, data in layout_blobs(layout.path).items():
        assert pulled.get(digest) == data, f"{digest} differs through the mirror"
    before = upstream_pulls(upstream)
    assert before > 0, "the first pull should have reached the upstream"

    # podman with the mirror configured for docker.io: the short name goes through Pier, from the cache.
    conf = clients.tmp / "mirror-registries.conf"
    conf.write_text(
        'unqualified-search-registries = ["docker.io"]\n'
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
        f'[[registry.mirror]]\nlocation = "{mirror.host}/docker.io"\ninsecure = true\n'
    )
    env = dict(clients.env, CONTAINERS_REGISTRIES_CONF=str(conf))
    saved, clients.env = clients.env, env
    try:
        clients.podman("pull", "docker.io/library/mirrored:v1")
        inspected = json.loads(clients.podman("image", "inspect", "docker.io/library/mirrored:v1").stdout)
    finally:
        clients.env = saved
    assert inspected[0]["Digest"] == layout.top_digest
    assert upstream_pulls(upstream) == before, "a cached pull reached the upstream"

    # Pushing to a mirrored name is refused.
    cp = clients.skopeo("copy", "--dest-tls-verify=false", layout.oci_ref,
                        f"docker://{mirror.host}/docker.io/library/mirrored:v2", check=False)
    assert cp.returncode != 0


@pytest.fixture
def reference_registry(tmp_path):
    """Debian's docker-registry (distribution 2.8.2, installed by scripts/setup) on a free port."""
    import shutil
    import socket
    import subprocess

    from conftest import _stop, _wait_ready

    if os.environ.get("PIER_TEST_URL"):
        pytest.skip("starts its own servers")
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (scripts/setup installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: "
        f"{tmp_path / 'data'}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(tmp_path / "registry.log", "ab")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        _wait_ready(f"http://127.0.0.1:{port}")
        yield f"127.0.0.1:{port}", proc
    finally:
        _stop(proc)
        log.close()


def test_mirror_of_the_reference_registry_keeps_serving_when_it_stops(clients, reference_registry):
    upstream_host, upstream_proc = reference_registry
    layout = make_single_arch(str(clients.tmp / "src"), "v1", layer_sizes=(32 * 1024, 200 * 1024))
    clients.skopeo("copy", "--dest-tls-verify=false", layout.oci_ref, f"docker://{upstream_host}/team/app:v1")
    with _pier_server({"REGISTRY_PROXY_REMOTEURL": f"http://{upstream_host}", "PIER_PROXY_TAG_TTL": "0"},
                      prefix="pier-clients-mirror-") as mirror:
        for name in ("first", "cached"):
            out = str(clients.tmp / name)
            clients.skopeo("copy", "--src-tls-verify=false", f"docker://{mirror.host}/team/app:v1", f"oci:{out}:v1")
            pulled = layout_blobs(out)
            for digest, data in layout_blobs(layout.path).items():
                assert pulled.get(digest) == data, f"{name} pull: {digest} differs through the mirror"
            if name == "first":
                # The upstream goes away: what is cached keeps being served (the tag stale).
                from conftest import _stop
                _stop(upstream_proc)
