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
