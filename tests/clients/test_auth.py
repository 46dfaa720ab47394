"""Real clients against Pier with access control on (the `auth_registry` fixture: htpasswd users alice, who may
pull and push under clients/, and reader, who may only pull there; anonymous may pull under clients/public/).

- podman: `podman login` (token flow: 401 challenge → GET /token with Basic → Bearer), push, pull back;
  a wrong password fails the login; the read-only user cannot push.
- skopeo: `--creds`/`--dest-creds` copy (Basic straight to the token endpoint), copy across repositories (mount
  with pull on the source), anonymous inspect of a public repository, refusals without credentials.
- oras (Python SDK): credentials set with `set_basic_auth` (what `OrasClient.login` does before it also asks a
  docker daemon to log in, which these tests do not need). The push uses the SDK's `basic` auth backend (Basic on
  every request, answered through Pier's credential cache); the pull uses its default `token` backend. The SDK's
  token backend keeps the first token it gets and only fetches a new one after a 403, while Pier (like
  distribution) answers a token that lacks a scope its user could have with 401 `insufficient_scope` — so a push
  through the token backend, whose first token is a pull token, does not refresh. Without credentials a push is
  refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import oras.client
import oras.provider
import pytest

from conftest import AUTH_USERS, CommandFailed
from imagegen import layout_blobs, make_single_arch, random_tar, sha256_digest

ALICE = ("alice", AUTH_USERS["alice"])
READER = ("reader", AUTH_USERS["reader"])


def creds(user: tuple[str, str]) -> str:
    return f"{user[0]}:{user[1]}"


def authfile(clients) -> str:
    """A per-test auth file, so one test's login never helps another."""
    return str(clients.tmp / "auth.json")


def podman_login(clients, user: tuple[str, str], check: bool = True):
    return clients.podman("login", "--tls-verify=false", "--authfile", authfile(clients), "-u", user[0],
                          "--password-stdin", clients.registry.host, input=user[1].encode(), check=check)


def import_random_image(clients, local_name: str, storage: str = "default") -> None:
    tar_path = clients.tmp / "layer.tar"
    tar_path.write_bytes(random_tar(200 * 1024, files=3, prefix="auth"))
    clients.podman("import", "--change", "CMD=/bin/sh", str(tar_path), local_name, storage=storage)


def test_podman_login_push_pull(auth_clients, repo):
    c = auth_clients
    podman_login(c, ALICE)
    ref = c.ref(repo("podman"), "v1")
    import_random_image(c, ref)
    c.podman("push", "--tls-verify=false", "--authfile", authfile(c), ref)
    c.podman("pull", "--tls-verify=false", "--authfile", authfile(c), ref, storage="pull")
    pushed = c.podman("image", "inspect", "--format", "{{.Digest}}", ref, storage="pull").stdout.decode().strip()
    raw = c.skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds(ALICE), c.docker_ref(repo("podman"), "v1")).stdout
    assert sha256_digest(raw) == pushed

    # Logged out: the pull is refused.
    c.podman("logout", "--authfile", authfile(c), c.registry.host)
    cp = c.podman("pull", "--tls-verify=false", "--authfile", authfile(c), ref, storage="anon", check=False)
    assert cp.returncode != 0


def test_podman_login_wrong_password_fails(auth_clients):
    cp = podman_login(auth_clients, ("alice", "not-the-password"), check=False)
    assert cp.returncode != 0
    err = cp.stderr.decode().lower()
    assert "401" in err or "unauthorized" in err or "invalid username/password" in err, err
    cp = podman_login(auth_clients, ("nobody", "x"), check=False)
    assert cp.returncode != 0


def test_podman_read_only_user_cannot_push(auth_clients, repo):
    c = auth_clients
    podman_login(c, READER)
    ref = c.ref(repo("ro"), "v1")
    import_random_image(c, ref)
    cp = c.podman("push", "--tls-verify=false", "--authfile", authfile(c), ref, check=False)
    assert cp.returncode != 0
    err = cp.stderr.decode().lower()
    assert "denied" in err or "403" in err or "unauthorized" in err, err


def test_skopeo_creds_copy_and_mount(auth_clients, repo):
    c = auth_clients
    layout = make_single_arch(str(c.tmp / "src"), "v1")
    name = repo("skopeo")
    c.skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds(ALICE), layout.oci_ref, c.docker_ref(name, "v1"))

    info = json.loads(c.skopeo("inspect", "--tls-verify=false", "--creds", creds(READER), c.docker_ref(name, "v1")).stdout)
    assert info["Digest"] == layout.top_digest

    # Registry to registry within Pier: skopeo mounts the blobs (pull on the source, push on the target).
    other = repo("skopeo-copy")
    c.skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--src-creds", creds(ALICE),
             "--dest-creds", creds(ALICE), c.docker_ref(name, "v1"), c.docker_ref(other, "v1"))
    out = str(c.tmp / "out")
    c.skopeo("copy", "--src-tls-verify=false", "--src-creds", creds(READER), c.docker_ref(other, "v1"), f"oci:{out}:x")
    assert layout_blobs(out) == layout_blobs(layout.path)

    # Refused: the reader pushing, nobody inspecting, a wrong password.
    with pytest.raises(CommandFailed):
        c.skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds(READER), layout.oci_ref, c.docker_ref(name, "v2"))
    with pytest.raises(CommandFailed):
        c.skopeo("inspect", "--tls-verify=false", "--no-creds", c.docker_ref(name, "v1"))
    with pytest.raises(CommandFailed):
        c.skopeo("inspect", "--tls-verify=false", "--creds", "alice:wrong", c.docker_ref(name, "v1"))


def test_skopeo_anonymous_pull_of_public_repository(auth_clients, repo):
    c = auth_clients
    layout = make_single_arch(str(c.tmp / "src"), "v1")
    name = "clients/public/" + repo("anon").replace("/", "-")
    c.skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds(ALICE), layout.oci_ref, c.docker_ref(name, "v1"))
    info = json.loads(c.skopeo("inspect", "--tls-verify=false", "--no-creds", c.docker_ref(name, "v1")).stdout)
    assert info["Digest"] == layout.top_digest
    with pytest.raises(CommandFailed):
        c.skopeo("copy", "--dest-tls-verify=false", "--dest-no-creds", layout.oci_ref, c.docker_ref(name, "v2"))


class PierOras(oras.client.OrasClient):
    """OrasClient without the SDK's sleep-and-retry on errors."""

    def do_request(self, *args, **kwargs):
        return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)


def oras_client(registry, user: tuple[str, str] | None, backend: str = "token") -> PierOras:
    client = PierOras(hostname=registry.host, insecure=True, auth_backend=backend)
    request = client.session.request
    client.session.request = lambda *a, **kw: request(*a, **{"timeout": 60, **kw})
    if user is not None:
        client.auth.set_basic_auth(*user)
    return client


def test_oras_push_pull_with_credentials(auth_clients, auth_registry, repo):
    c = auth_clients
    src = c.tmp / "in"
    src.mkdir()
    files = {"notes.txt": os.urandom(100), "data.bin": os.urandom(200_000)}
    for n, data in files.items():
        (src / n).write_bytes(data)
    target = f"{repo('oras')}:v1"

    orc = oras_client(auth_registry, ALICE, backend="basic")
    resp = orc.push(target=target, files=[str(src / n) for n in files], disable_path_validation=True, quiet=True)
    assert resp.status_code == 201, resp.text[:300]
    out = c.tmp / "out"
    pulled = oras_client(auth_registry, READER).pull(target=target, outdir=str(out))
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for n, data in files.items():
        assert (out / n).read_bytes() == data

    # Without credentials (anonymous token: nothing under clients/ but public/) the push is refused.
    with pytest.raises(Exception):
        r = oras_client(auth_registry, None).push(target=f"{repo('oras-anon')}:v1", files=[str(src / "notes.txt")],
                                                  disable_path_validation=True, quiet=True)
        assert r.status_code == 201
