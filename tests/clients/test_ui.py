"""The web UI in a real browser: images pushed with skopeo (single- and multi-arch) and a referrer attached with
oras, then tests/ui/browse.mjs (npm playwright-core driving Debian's Chromium) opens `/`, searches, opens a
repository, a tag, an index and a referrer, copies a pull command, deletes a tag and checks the `/v2/` API agrees;
on the access-control registry it logs in, checks that a user without delete rights sees no delete button and that
forged POSTs without the CSRF token are refused.

Screenshots go to $PIER_UI_SCREENSHOTS when set (docs/screenshots holds the committed ones), else to the test's
temporary directory. Skipped when Chromium or node_modules/playwright-core is missing (scripts/setup installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import oras.client
import oras.oci
import oras.provider
import pytest

from conftest import AUTH_USERS, REPO_ROOT
from imagegen import make_multi_arch, make_single_arch

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIGNATURE_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
CHROMIUM = os.environ.get("PIER_CHROMIUM", "/usr/bin/chromium")
SCRIPT = REPO_ROOT / "tests" / "ui" / "browse.mjs"
BROWSER_TIMEOUT_S = 180


def _need_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/setup installs Debian's chromium)")
    if not (REPO_ROOT / "node_modules" / "playwright-core").is_dir() or shutil.which("node") is None:
        pytest.skip("node_modules/playwright-core missing (scripts/setup runs npm ci)")


def run_browser(spec: dict, tmp: Path) -> None:
    """Run browse.mjs with `spec`; fail with its output when a check fails."""
    spec = {**spec, "screenshots": os.environ.get("PIER_UI_SCREENSHOTS") or str(tmp / "screenshots")}
    path = tmp / f"ui-{spec['mode']}.json"
    path.write_text(json.dumps(spec))
    cp = subprocess.run(["node", str(SCRIPT), str(path)], capture_output=True, timeout=BROWSER_TIMEOUT_S, cwd=REPO_ROOT)
    out = cp.stdout.decode(errors="replace") + cp.stderr.decode(errors="replace")
    print(out)
    assert cp.returncode == 0, f"browser checks failed:\n{out[-6000:]}"


class PierOras(oras.client.OrasClient):
    """OrasClient without the SDK's sleep-and-retry on errors."""

    def do_request(self, *args, **kwargs):
        return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)


def demo_image(clients, name: str, tag: str) -> str:
    """Push a single-arch image whose config has what the manifest page shows; return its digest."""
    layout = make_single_arch(
        str(clients.tmp / "single"), tag, layer_sizes=(96 * 1024, 320 * 1024),
        config_extra={
            "Entrypoint": ["/usr/local/bin/pier-demo"],
            "Cmd": ["--listen", ":8080"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "APP_MODE=production"],
            "ExposedPorts": {"8080/tcp": {}},
            "WorkingDir": "/srv",
            "Labels": {"org.opencontainers.image.source": "https://example.com/pier-demo",
                       "org.opencontainers.image.version": "1.4.2"},
        },
        history=["ADD rootfs.tar.gz /", "COPY pier-demo /usr/local/bin/"],
    )
    clients.skopeo("copy", "--dest-tls-verify=false", layout.oci_ref, clients.docker_ref(name, tag))
    return layout.top_digest


def attach_signature(clients, registry, name: str, subject: str, subject_size: int) -> str:
    """Attach a signature-like referrer to `subject` with oras (cosign's tag scheme); return its digest."""
    client = PierOras(hostname=registry.host, insecure=True)
    d = clients.tmp / "sig"
    d.mkdir()
    (d / "signature.json").write_text(json.dumps({"critical": {"image": {"docker-manifest-digest": subject}}}))
    config = d / "config.json"
    config.write_text("{}")
    resp = client.push(
        target=f"{name}:{subject.replace(':', '-')}.sig",
        files=[str(d / "signature.json")],
        disable_path_validation=True,
        quiet=True,
        manifest_config=f"{config}:{SIGNATURE_TYPE}",
        subject=oras.oci.Subject(mediaType=MT_OCI_MANIFEST, digest=subject, size=subject_size),
    )
    assert resp.status_code == 201, resp.text[:300]
    return resp.headers["Docker-Content-Digest"]


def test_ui_browse_search_copy_delete(clients, registry, repo):
    _need_browser()
    single, multi = repo("web-app"), repo("multi-platform")
    digest = demo_image(clients, single, "1.4.2")
    size = len(clients.skopeo("inspect", "--raw", "--tls-verify=false", clients.docker_ref(single, digest)).stdout)
    layout = make_multi_arch(str(clients.tmp / "multi"), "latest", architectures=("amd64", "arm64"))
    clients.skopeo("copy", "--all", "--dest-tls-verify=false", layout.oci_ref, clients.docker_ref(multi, "latest"))
    signature = attach_signature(clients, registry, single, digest, size)
    run_browser(
        {
            "mode": "open",
            "url": registry.url,
            "host": registry.host,
            "single": {"repo": single, "tag": "1.4.2", "digest": digest},
            "multi": {"repo": multi, "tag": "latest", "digest": layout.top_digest,
                      "children": [image.digest for image in layout.images]},
            "referrer": {"digest": signature, "artifactType": SIGNATURE_TYPE},
            # The run's id (in both names), and a substring only the multi-arch repository's name has.
            "run": multi.rsplit("-", 1)[1],
            "search": multi.rsplit("/", 1)[1],
        },
        clients.tmp,
    )


def test_ui_login_rights_and_csrf(auth_clients, auth_registry, repo):
    _need_browser()
    c = auth_clients
    private, public = repo("private"), "clients/public/" + repo("shared").split("/", 1)[1].replace("/", "-")
    alice = f"alice:{AUTH_USERS['alice']}"
    for name in (private, public):
        layout = make_single_arch(str(c.tmp / name.replace("/", "_")), "v1", layer_sizes=(8 * 1024,))
        c.skopeo("copy", "--dest-tls-verify=false", "--dest-creds", alice, layout.oci_ref, c.docker_ref(name, "v1"))
    run_browser(
        {
            "mode": "auth",
            "url": auth_registry.url,
            "repo": private,
            "tag": "v1",
            "publicRepo": public,
            "run": private.rsplit("-", 1)[1],
            "users": {"alice": AUTH_USERS["alice"], "reader": AUTH_USERS["reader"]},
        },
        c.tmp,
    )
