"""Fixtures for the real-client tests: a Pier server, an isolated environment for the clients.

The `registry` fixture starts `pier serve --addr 127.0.0.1:0 --root <fresh temp dir>` once per
session, reads the address from its first stdout line (`pier listening on http://127.0.0.1:PORT`) and
stops it by PID at the end (terminate, wait, kill after a timeout). If `PIER_TEST_URL` is set, that
server is used instead and nothing is started. The binary is `$PIER_BIN`, else `target/debug/pier`.

Each test uses repository names of its own (see `repo`), so tests never depend on each other even
though they share one server. When a test fails, what the server logged during it is attached to the
report.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTEN_LINE = re.compile(r"^pier listening on (http://[^\s/]+)/?\s*$")
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 60
SLOW_COMMAND_S = 8.0

# (seconds, command) of every client command slower than SLOW_COMMAND_S, shown at the end.
SLOW_COMMANDS: list[tuple[float, str]] = []


@dataclass
class Registry:
    """A running registry: its base URL, `host:port` and (when we started it) process and log."""

    url: str
    host: str
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    root: Path | None = None

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0

    def log_since(self, offset: int, limit: int = 12000) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        text = data.decode("utf-8", "replace")
        return text if len(text) <= limit else "...\n" + text[-limit:]


def _pier_bin() -> Path:
    env = os.environ.get("PIER_BIN")
    return Path(env) if env else REPO_ROOT / "target" / "debug" / "pier"


def _read_first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of `proc`, or raise if it does not come within `timeout`."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"pier printed no listening line within {timeout}s (got {buf!r})")
            if not sel.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"pier exited (status {proc.wait()}) before printing its address; got {buf!r}")
            buf += chunk
    finally:
        sel.unregister(proc.stdout)
    line, _, rest = buf.partition(b"\n")
    proc._pier_rest = rest  # type: ignore[attr-defined]  # bytes already read past the first line
    return line.decode("utf-8", "replace")


def _drain(stream, first: bytes, log_file) -> None:
    """Copy the rest of the server's stdout into its log so the pipe never fills up."""
    if first:
        log_file.write(first)
        log_file.flush()
    for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
        log_file.write(chunk)
        log_file.flush()


def _wait_ready(url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/v2/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer (401 included) means the server is up
        except Exception as e:  # noqa: BLE001 - connection refused while starting
            last = e
            time.sleep(0.1)
    raise RuntimeError(f"{url}/v2/ not answering after {timeout}s: {last}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def _pier_server(extra_env: dict | None = None, prefix: str = "pier-clients-server-"):
    """Start `pier serve` on a free port with a fresh root (plus `extra_env`); yield its Registry; stop it."""
    binary = _pier_bin()
    if not binary.exists():
        pytest.fail(f"pier binary not found at {binary}: run `cargo build` or set PIER_BIN / PIER_TEST_URL")
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    root = workdir / "root"
    root.mkdir()
    log_path = workdir / "pier.log"
    log_file = open(log_path, "ab")
    proc = subprocess.Popen(
        [str(binary), "serve", "--addr", "127.0.0.1:0", "--root", str(root)],
        stdout=subprocess.PIPE,
        stderr=log_file,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        env={**os.environ, "RUST_BACKTRACE": "1", **(extra_env or {})},
    )
    try:
        line = _read_first_line(proc, START_TIMEOUT_S)
        m = LISTEN_LINE.match(line)
        if not m:
            raise RuntimeError(f"unexpected first stdout line from pier: {line!r}")
        drain = threading.Thread(target=_drain, args=(proc.stdout, proc._pier_rest, log_file), daemon=True)
        drain.start()
        url = m.group(1)
        _wait_ready(url)
    except BaseException:
        _stop(proc)
        log_file.close()
        print(log_path.read_text(errors="replace")[-4000:])
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    reg = Registry(url=url, host=url.split("://", 1)[1], proc=proc, log_path=log_path, root=root)
    try:
        yield reg
    finally:
        _stop(proc)
        log_file.close()
        if os.environ.get("PIER_KEEP_TMP"):
            print(f"\nkept server dir {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def registry():
    """The registry under test (started here unless PIER_TEST_URL names one)."""
    external = os.environ.get("PIER_TEST_URL")
    if external:
        url = external.rstrip("/")
        _wait_ready(url)
        yield Registry(url=url, host=re.sub(r"^https?://", "", url))
        return
    with _pier_server() as reg:
        yield reg


@pytest.fixture(scope="session")
def gc_registry():
    """A registry of its own for the garbage-collection tests: a collection cycle reads the whole registry, so on the
    shared one it would cost as much as everything the other suites pushed. PIER_TEST_GC_URL names one (the test
    scripts start a fresh instance per backend); without it one is started here, unless PIER_TEST_URL says the suite
    runs against someone else's server, which is then skipped."""
    url = os.environ.get("PIER_TEST_GC_URL")
    if url:
        url = url.rstrip("/")
        _wait_ready(url)
        yield Registry(url=url, host=re.sub(r"^https?://", "", url))
        return
    if os.environ.get("PIER_TEST_URL"):
        pytest.skip("garbage-collection tests need a registry of their own: set PIER_TEST_GC_URL")
    with _pier_server(prefix="pier-clients-gc-server-") as reg:
        yield reg


# Users of the access-control registry (`auth_registry`): alice may pull and push under clients/, reader may only
# pull there; anonymous may pull under clients/public/.
# The same users and passwords as tests/http_auth.rs, so one external server (PIER_TEST_AUTH_URL) serves both.
AUTH_USERS = {"alice": "alice-pw", "reader": "reader-pw"}
AUTH_RULES = """\
clients/*          alice      pull,push,delete
clients/*          reader     pull
clients/public/*   anonymous  pull
registry:catalog   alice      *
"""


@pytest.fixture(scope="session")
def auth_registry():
    """A second registry with access control on: htpasswd users (bcrypt cost 5, made by `pier htpasswd`), rules,
    a token secret. With PIER_TEST_AUTH_URL, that server is used instead (it must have these users and rules, as
    scripts/test's wrangler dev does); skipped when only PIER_TEST_URL is set."""
    external = os.environ.get("PIER_TEST_AUTH_URL")
    if external:
        url = external.rstrip("/")
        _wait_ready(url)
        yield Registry(url=url, host=re.sub(r"^https?://", "", url))
        return
    if os.environ.get("PIER_TEST_URL"):
        pytest.skip("access-control client tests start their own server (PIER_TEST_URL is set)")
    cfg = Path(tempfile.mkdtemp(prefix="pier-clients-auth-"))
    lines = []
    for user, password in AUTH_USERS.items():
        cp = subprocess.run([str(_pier_bin()), "htpasswd", "--cost", "5", user], input=(password + "\n").encode(),
                            capture_output=True, check=True)
        lines.append(cp.stdout.decode().strip())
    (cfg / "htpasswd").write_text("\n".join(lines) + "\n")
    (cfg / "rules").write_text(AUTH_RULES)
    env = {
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_PATH": str(cfg / "htpasswd"),
        "PIER_AUTH_RULES_PATH": str(cfg / "rules"),
        "PIER_AUTH_TOKEN_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
    }
    try:
        with _pier_server(env, prefix="pier-clients-auth-server-") as reg:
            yield reg
    finally:
        shutil.rmtree(cfg, ignore_errors=True)


@pytest.fixture(autouse=True)
def _server_watch(request, registry):
    """Remember the log offset so a failing test shows what the server logged; check it is alive."""
    request.node._pier_log_offset = registry.log_size()
    request.node._pier_registry = registry
    yield
    if registry.proc is not None and registry.proc.poll() is not None:
        pytest.fail(f"pier exited during the test with status {registry.proc.returncode}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    reg = getattr(item, "_pier_registry", None)
    if report.failed and reg is not None and reg.log_path is not None:
        report.sections.append(("pier log during this test", reg.log_since(getattr(item, "_pier_log_offset", 0))))


def pytest_terminal_summary(terminalreporter):
    if SLOW_COMMANDS:
        terminalreporter.write_sep("-", f"client commands slower than {SLOW_COMMAND_S}s")
        for secs, cmd in sorted(SLOW_COMMANDS, reverse=True):
            terminalreporter.write_line(f"{secs:6.1f}s  {cmd}")


class CommandFailed(AssertionError):
    pass


@dataclass
class Clients:
    """Runs skopeo/podman/buildah with an isolated HOME, registries.conf, policy and storage."""

    registry: Registry
    tmp: Path
    env: dict
    policy: Path
    _podman_dirs: dict = field(default_factory=dict)

    def run(self, *cmd: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S, input: bytes | None = None):
        """Run a command; on failure raise with its output. Returns CompletedProcess (bytes)."""
        started = time.monotonic()
        try:
            cp = subprocess.run(list(cmd), env=self.env, capture_output=True, timeout=timeout, input=input,
                                cwd=self.tmp)
        except subprocess.TimeoutExpired as e:
            raise CommandFailed(f"timed out after {timeout}s: {' '.join(cmd)}\nstderr: "
                                f"{(e.stderr or b'').decode(errors='replace')[-4000:]}") from None
        elapsed = time.monotonic() - started
        if elapsed > SLOW_COMMAND_S:
            SLOW_COMMANDS.append((elapsed, " ".join(cmd)))
        cp.elapsed = elapsed  # type: ignore[attr-defined]
        if check and cp.returncode != 0:
            raise CommandFailed(
                f"command failed with status {cp.returncode} after {elapsed:.1f}s: {' '.join(cmd)}\n"
                f"--- stdout ---\n{cp.stdout.decode(errors='replace')[-4000:]}\n"
                f"--- stderr ---\n{cp.stderr.decode(errors='replace')[-6000:]}"
            )
        return cp

    def skopeo(self, *args: str, **kw):
        return self.run("skopeo", "--policy", str(self.policy), *args, **kw)

    def _storage(self, name: str) -> list[str]:
        # podman refuses a runroot longer than 50 characters, so storage lives in a short path
        # under /tmp (removed with the test) rather than in the test's working directory.
        d = self._podman_dirs.get(name)
        if d is None:
            d = Path(tempfile.mkdtemp(prefix="pier-st-", dir="/tmp"))
            (d / "root").mkdir()
            (d / "run").mkdir()
            self._podman_dirs[name] = d
        return ["--root", str(d / "root"), "--runroot", str(d / "run"), "--storage-driver", "vfs"]

    def cleanup(self) -> None:
        for d in self._podman_dirs.values():
            shutil.rmtree(d, ignore_errors=True)

    def podman(self, *args: str, storage: str = "default", **kw):
        """podman with its own vfs storage per (test, `storage`) name."""
        return self.run("podman", *self._storage("podman-" + storage), "--cgroup-manager=cgroupfs",
                        "--events-backend=file", *args, **kw)

    def buildah(self, *args: str, storage: str = "default", **kw):
        return self.run("buildah", *self._storage("buildah-" + storage), *args, **kw)

    def docker_ref(self, repo: str, ref: str) -> str:
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"docker://{self.registry.host}/{repo}{sep}{ref}"

    def ref(self, repo: str, ref: str) -> str:
        return self.docker_ref(repo, ref)[len("docker://"):]


@contextlib.contextmanager
def _make_client_home(registry):
    """A HOME/XDG tree, registries.conf and policy.json for client commands against `registry`."""
    home = Path(tempfile.mkdtemp(prefix="pier-clients-home-"))
    for sub in ("config", "data", "cache", "runtime"):
        (home / sub).mkdir()
    (home / "runtime").chmod(0o700)
    (home / "registries.conf").write_text(
        'unqualified-search-registries = []\n'
        f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    policy = home / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_AUTH_FILE", "CONTAINERS_"))},
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_RUNTIME_DIR": str(home / "runtime"),
        "CONTAINERS_REGISTRIES_CONF": str(home / "registries.conf"),
        "REGISTRY_AUTH_FILE": str(home / "auth.json"),
        "TMPDIR": str(home),
    }
    (home / "auth.json").write_text('{"auths": {}}\n')
    try:
        yield home, env, policy
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def _client_home(registry):
    """A HOME/XDG tree, registries.conf and policy.json shared by the session's client commands."""
    with _make_client_home(registry) as home:
        yield home


@pytest.fixture(scope="session")
def _auth_client_home(auth_registry):
    """Like `_client_home`, for the access-control registry (its own auth.json, so logins do not leak)."""
    with _make_client_home(auth_registry) as home:
        yield home


@contextlib.contextmanager
def _make_clients(registry, client_home):
    home, env, policy = client_home
    tmp = Path(tempfile.mkdtemp(prefix="pier-clients-test-", dir=home))
    c = Clients(registry=registry, tmp=tmp, env=dict(env), policy=policy)
    try:
        yield c
    finally:
        if os.environ.get("PIER_KEEP_TMP"):
            print(f"\nkept test dir {tmp}")
        else:
            c.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def clients(registry, _client_home):
    """Client runner for one test, with a fresh working directory removed afterwards."""
    with _make_clients(registry, _client_home) as c:
        yield c


@pytest.fixture(scope="session")
def _gc_client_home(gc_registry):
    with _make_client_home(gc_registry) as home:
        yield home


@pytest.fixture
def gc_clients(gc_registry, _gc_client_home):
    """Client runner against the garbage-collection tests' own registry (`gc_registry`)."""
    with _make_clients(gc_registry, _gc_client_home) as c:
        yield c


@pytest.fixture
def auth_clients(auth_registry, _auth_client_home):
    """Client runner against the access-control registry (`auth_registry`)."""
    with _make_clients(auth_registry, _auth_client_home) as c:
        yield c


@pytest.fixture
def repo(request):
    """`repo("name")` → a repository name unique to this test and run, e.g. `clients/name-1a2b3c4d`."""
    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    run = uuid.uuid4().hex[:8]

    def make(name: str = "img") -> str:
        return f"clients/{test}/{name}-{run}"

    return make
