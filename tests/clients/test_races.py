"""Races, torn requests and concurrency against upload sessions and manifests, over raw HTTP.

What is attacked:
- two PATCHes racing at the same offset of one upload session (one writer per session: one 202, one 416);
- the Azure corruption scenario: a PATCH holding a session a little over one part in, while a second PATCH on the
  same session sends other bytes and drops its connection mid-body (a store whose parts are addressed by number
  alone would let the torn request replace the holder's part, and the blob would be served under a digest its
  bytes do not have); and the reverse, where the torn request is the holder;
- a PATCH torn mid-body (with Content-Length, and with chunked transfer encoding): it must commit nothing;
- final PUTs racing on one session (at most one 201);
- many manifest PUTs racing on one tag, and a manifest PUT by tag racing a DELETE by digest;
- two full uploads of the same content into two repositories at once (and a mount from one of them).

Every test asserts that no request ever gets a 5xx, that every blob that got a 201 serves bytes hashing to its
digest in every repository it went into (following a 307 to a presigned URL where the backend redirects), and that
a fresh upload of the same content into a fresh repository still works.

Only the standard library is used: each request gets its own `http.client` connection whose body is written by
hand (`select` + `socket.send`), so a test controls exactly when bytes go out, can stop when the server answers
before the body is complete (an early 416), and can tear a connection mid-body. Every socket has a timeout, so a
server that hangs fails the test rather than the suite. No test sleeps for correctness; sleeps only pace bounded
polling.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import select
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass

import pytest

KiB = 1024
MiB = 1024 * KiB
PART = 8 * MiB  # Pier's default part size (object stores need parts of at least 5 MiB)
SMALL = 100 * KiB
OVER_ONE_PART = 9 * MiB  # "a little over one part"
HOLD_AT = PART + MiB // 2  # how far a PATCH that holds its session has sent: past the first part boundary

TIMEOUT = 60  # every socket operation and every wait on another thread
# How long a retry may keep getting 416 after a torn request: the server normally releases the session as soon as
# it sees the body end early, but may keep it claimed until a 60 s lease runs out.
LEASE_WAIT = 75
# A held request's bytes must not just sit in the client's kernel buffer: with a small send buffer, what counts as
# sent has left the client, and the server's receive window only keeps opening while the server (or the proxy in
# front of it) reads, so a PATCH held 8.5 MiB in is really being streamed into its session.
HELD_SNDBUF = 256 * KiB
SEND_SLICE = 256 * KiB

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
ACCEPT_MANIFESTS = ", ".join([
    MT_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])

# What a PUT that lost a race on its session may answer: RANGE_INVALID (someone else holds the session),
# BLOB_UPLOAD_UNKNOWN (the winner finished it first) or 400 (DIGEST_INVALID / BLOB_UPLOAD_INVALID).
LOSING_FINISH = {400, 404, 416}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ServerError(AssertionError):
    """The registry answered 5xx: never acceptable, whatever the race."""


# ---------------------------------------------------------------------------------------------------------------
# A tiny HTTP client


@dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def __str__(self) -> str:
        interesting = {k: v for k, v in self.headers.items()
                       if k.lower() in ("location", "range", "docker-content-digest", "content-length")}
        return f"{self.status} {interesting} {self.body[:300]!r}"


class Api:
    """Requests against one registry. Relative Locations resolve against its base URL; every exchange is logged
    (printed for a failing test) and a 5xx raises `ServerError` at once, in whichever thread got it."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self._lock = threading.Lock()
        self.log: list[str] = []
        self.server_errors: list[str] = []

    def url(self, location: str) -> str:
        return urllib.parse.urljoin(self.base + "/", location)

    def record(self, line: str, server_error: bool = False) -> None:
        with self._lock:
            self.log.append(f"{time.monotonic():.3f} [{threading.current_thread().name}] {line}")
            if server_error:
                self.server_errors.append(line)

    def exchange(self, method: str, url: str, headers: dict | None = None, **kw) -> Exchange:
        return Exchange(self, method, self.url(url), headers or {}, **kw)

    def request(self, method: str, url: str, body: bytes = b"", headers: dict | None = None) -> Resp:
        headers = dict(headers or {})
        if body or method in ("POST", "PUT", "PATCH"):
            headers.setdefault("Content-Length", str(len(body)))
        ex = self.exchange(method, url, headers)
        ex.send(body)  # stops by itself if the server answers before taking the whole body
        return ex.response()

    def stream(self, method: str, url: str, body: bytes, headers: dict | None = None) -> Resp:
        """`body` with chunked transfer encoding (no Content-Length)."""
        ex = self.exchange(method, url, {**(headers or {}), "Transfer-Encoding": "chunked"})
        if ex.send_chunks(body):
            ex.end_chunks()
        return ex.response()

    def assert_no_5xx(self) -> None:
        assert not self.server_errors, "the registry answered 5xx:\n" + "\n".join(self.server_errors)


class Exchange:
    """One request on a connection of its own. The headers go out at once; the body goes out as the test sends
    it. Sending stops (returns False) as soon as the server answers or closes, so an early 416 is read rather than
    lost to a reset, and a server that neither reads nor answers fails on the socket timeout."""

    def __init__(self, api: Api, method: str, url: str, headers: dict, small_send_buffer: bool = False):
        self.api, self.method, self.url = api, method, url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":  # a presigned URL of a real object store
            self.conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=TIMEOUT)
        else:
            self.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=TIMEOUT)
        self.conn.connect()
        self.sock: socket.socket = self.conn.sock
        if small_send_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HELD_SNDBUF)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers.items():
            self.conn.putheader(k, str(v))
        self.conn.endheaders()
        self.what = f"{method} {path} {sorted((k, str(v)) for k, v in headers.items() if k.lower() != 'content-type')}"
        self.sent = 0
        self.answered = False  # the server answered (or closed) before the body was all sent
        self.closed = False

    def send(self, data: bytes) -> bool:
        """Send `data`; False if the server answered or closed first (then the rest is not sent)."""
        view = memoryview(data)
        while view and not self.answered:
            readable, writable, _ = select.select([self.sock], [self.sock], [], TIMEOUT)
            if readable:
                self.answered = True
                break
            if not writable:
                raise TimeoutError(f"{self.what}: the server took no bytes for {TIMEOUT}s after {self.sent}")
            try:
                n = self.sock.send(view[:SEND_SLICE])
            except (BrokenPipeError, ConnectionResetError):
                self.answered = True
                break
            self.sent += n
            view = view[n:]
        return not self.answered

    def send_chunks(self, data: bytes) -> bool:
        """Send `data` as chunked-encoding frames (without the terminating empty chunk)."""
        for i in range(0, len(data), 64 * KiB):
            piece = data[i:i + 64 * KiB]
            if not self.send(b"%x\r\n" % len(piece) + piece + b"\r\n"):
                return False
        return True

    def end_chunks(self) -> bool:
        return self.send(b"0\r\n\r\n")

    def has_answer(self) -> bool:
        """Whether the server has answered (or closed) already, without waiting."""
        return self.answered or bool(select.select([self.sock], [], [], 0)[0])

    def response(self, optional: bool = False) -> Resp | None:
        """Read the answer. With `optional`, a connection closed without an answer gives None."""
        try:
            r = self.conn.getresponse()
            resp = Resp(r.status, r.headers, r.read())
        except TimeoutError:
            self.api.record(f"{self.what} (sent {self.sent}) -> no answer within {TIMEOUT}s")
            raise AssertionError(f"{self.what}: no answer within {TIMEOUT}s after {self.sent} body bytes") from None
        except (ConnectionError, http.client.HTTPException) as e:
            self.api.record(f"{self.what} (sent {self.sent}) -> no answer: {e!r}")
            if optional:
                return None
            raise AssertionError(f"{self.what}: connection closed without an answer after {self.sent} body bytes: "
                                 f"{e!r}") from None
        finally:
            self.close()
        server_error = resp.status >= 500
        self.api.record(f"{self.what} (sent {self.sent}) -> {resp}", server_error)
        if server_error:
            raise ServerError(f"{self.what} -> {resp}")
        return resp

    def tear(self) -> None:
        """Drop the connection mid-body."""
        self.api.record(f"{self.what} torn after {self.sent} bytes")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()


class PartialPatch:
    """A PATCH whose body goes out on a thread of its own in two steps: `body[:pause_at]`, then — when the test
    says so — either the rest (and the answer is read) or nothing: the connection is torn mid-body. The thread
    sets `paused` when the first step is done (or cut short because the server answered early) and waits on an
    Event for the test's decision."""

    def __init__(self, api: Api, url: str, body: bytes, pause_at: int, *, start: int | None = 0,
                 chunked: bool = False):
        self.api, self.url, self.body, self.pause_at, self.chunked = api, url, body, pause_at, chunked
        if chunked:
            self.headers = {"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"}
        else:
            self.headers = chunk_headers(start, len(body)) if start is not None else {
                "Content-Type": "application/octet-stream", "Content-Length": str(len(body))}
        self.paused = threading.Event()
        self._decided = threading.Event()
        self._tear = False
        self.exchange: Exchange | None = None
        self.result: Resp | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"partial-{sha256(body)[7:15]}", daemon=True)
        self._thread.start()

    def _send(self, data: bytes) -> bool:
        return self.exchange.send_chunks(data) if self.chunked else self.exchange.send(data)

    def _run(self) -> None:
        try:
            self.exchange = self.api.exchange("PATCH", self.url, self.headers, small_send_buffer=True)
            whole = self._send(self.body[:self.pause_at])
            self.paused.set()
            if not self._decided.wait(TIMEOUT):
                raise TimeoutError("the test never said whether to finish or tear this PATCH")
            if self._tear:
                # An answer already there (an early 416) is read first; the connection is dropped either way.
                if self.exchange.has_answer():
                    self.result = self.exchange.response(optional=True)
                self.exchange.tear()
                return
            if whole and self._send(self.body[self.pause_at:]) and self.chunked:
                self.exchange.end_chunks()
            self.result = self.exchange.response()
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            self.error = e
        finally:
            self.paused.set()
            if self.exchange is not None:
                self.exchange.close()

    def wait_paused(self) -> None:
        assert self.paused.wait(TIMEOUT), "the partial PATCH never got its first bytes out"
        if self.error:
            raise self.error

    @property
    def answered_early(self) -> bool:
        return self.exchange is not None and self.exchange.answered

    def _decide(self, tear: bool) -> Resp | None:
        self._tear = tear
        self._decided.set()
        self._thread.join(TIMEOUT + 5)
        assert not self._thread.is_alive(), "the partial PATCH hung"
        if self.error:
            raise self.error
        return self.result

    def finish(self) -> Resp:
        """Send the rest of the body and return the answer."""
        return self._decide(tear=False)

    def tear(self) -> Resp | None:
        """Drop the connection mid-body; the answer if the server had given one already, else None."""
        return self._decide(tear=True)


def patch_partial(api: Api, url: str, body: bytes, pause_at: int, **kw) -> PartialPatch:
    """Start a PATCH of `body` that pauses after `pause_at` bytes (see `PartialPatch`); waits until it has."""
    p = PartialPatch(api, url, body, pause_at, **kw)
    p.wait_paused()
    return p


def send_and_answer(ex: Exchange, body: bytes) -> Resp:
    """The body of a request whose headers were sent earlier, and the answer."""
    ex.send(body)
    return ex.response()


def race(*fns):
    """Call every function on its own thread, all released at once by a barrier; return their results in order.
    An exception in any thread (a 5xx included) is raised here."""
    barrier = threading.Barrier(len(fns), timeout=TIMEOUT)
    results: list = [None] * len(fns)
    errors: list[BaseException | None] = [None] * len(fns)

    def run(i, fn):
        try:
            barrier.wait()
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            errors[i] = e
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i, fn), name=f"racer-{i}", daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 2 * TIMEOUT + 10
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        assert not t.is_alive(), f"{t.name} hung"
    # A broken barrier is only the echo of another thread's failure: raise the failure itself.
    failures = sorted((e for e in errors if e is not None), key=lambda e: isinstance(e, threading.BrokenBarrierError))
    if failures:
        raise failures[0]
    return results


# ---------------------------------------------------------------------------------------------------------------
# Registry operations


def chunk_headers(start: int, length: int) -> dict:
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
    if length:
        headers["Content-Range"] = f"{start}-{start + length - 1}"
    return headers


def range_for(offset: int) -> str:
    """The `Range` header of a session holding `offset` bytes (`0-0` for none, as registries answer)."""
    return f"0-{max(offset - 1, 0)}"


def assert_range(resp: Resp, offset: int, what: str = "") -> None:
    got = (resp.header("Range") or "").removeprefix("bytes=")
    assert got == range_for(offset), f"{what}: Range {got!r}, expected {range_for(offset)!r} (offset {offset}): {resp}"


def with_digest(url: str, digest: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}digest={digest}"


def start_upload(api: Api, name: str) -> str:
    r = api.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 202, f"POST upload: {r}"
    assert r.header("Location"), f"POST upload without Location: {r}"
    return api.url(r.header("Location"))


def patch(api: Api, url: str, data: bytes, start: int) -> Resp:
    return api.request("PATCH", url, data, chunk_headers(start, len(data)))


def put_final(api: Api, url: str, digest: str, last: bytes = b"", start: int | None = None) -> Resp:
    headers = chunk_headers(start, len(last)) if start is not None else {"Content-Length": str(len(last))}
    return api.request("PUT", with_digest(url, digest), last, headers)


def upload_status(api: Api, url: str) -> Resp:
    r = api.request("GET", url)
    assert r.status == 204, f"upload status: {r}"
    return r


def patch_until_accepted(api: Api, url: str, data: bytes, start: int, chunked: bool = False) -> Resp:
    """PATCH `data` at `start`, retrying while it gets 416 because a torn request may still hold the session
    (until the server notices its body ended early, or its lease runs out). Every 416 must report the session
    still at `start`: the torn request committed nothing."""
    deadline = time.monotonic() + LEASE_WAIT
    pause = 0.1
    while True:
        if chunked:
            r = api.stream("PATCH", url, data, {"Content-Type": "application/octet-stream"})
        else:
            r = patch(api, url, data, start)
        if r.status != 416:
            return r
        assert_range(r, start, "416 while the torn request's claim lasts")
        assert_range(upload_status(api, url), start, "status while the torn request's claim lasts")
        if time.monotonic() + pause > deadline:
            return r
        time.sleep(pause)  # bounded polling, not correctness
        pause = min(pause * 2, 5.0)


def upload_blob(api: Api, name: str, data: bytes) -> str:
    """A whole upload: POST, one PATCH, PUT ?digest → 201."""
    digest = sha256(data)
    url = start_upload(api, name)
    if data:
        r = patch(api, url, data, 0)
        assert r.status == 202, f"PATCH: {r}"
        assert_range(r, len(data), "PATCH")
        url = api.url(r.header("Location") or url)
    r = put_final(api, url, digest)
    assert r.status == 201, f"PUT ?digest: {r}"
    assert r.header("Docker-Content-Digest") == digest, f"PUT ?digest: {r}"
    return digest


def get_blob(api: Api, name: str, digest: str) -> Resp:
    r = api.request("GET", f"/v2/{name}/blobs/{digest}")
    if r.status == 307:
        # Object-store backends redirect to a presigned URL (maybe another host:port); clients follow it plainly.
        r = api.request("GET", api.url(r.header("Location")))
    return r


def assert_blob(api: Api, name: str, data: bytes) -> None:
    """`name` serves exactly `data` under its digest (HEAD and GET)."""
    digest = sha256(data)
    h = api.request("HEAD", f"/v2/{name}/blobs/{digest}")
    assert h.status in (200, 307), f"HEAD {name}@{digest}: {h}"
    if h.status == 200:
        assert h.header("Content-Length") == str(len(data)), f"HEAD {name}@{digest}: {h}"
        assert h.header("Docker-Content-Digest") in (None, digest), f"HEAD {name}@{digest}: {h}"
    g = get_blob(api, name, digest)
    assert g.status == 200, f"GET {name}@{digest}: {g}"
    assert sha256(g.body) == digest, (f"{name} serves {len(g.body)} bytes hashing to {sha256(g.body)} under {digest} "
                                      f"({len(data)} bytes)")


def assert_no_blob(api: Api, name: str, digest: str) -> None:
    r = api.request("HEAD", f"/v2/{name}/blobs/{digest}")
    assert r.status == 404, f"{digest} should not exist in {name}: {r}"


class Pushed:
    """Every blob that got a 201 and the repositories it went into, all checked at the end of a test."""

    def __init__(self):
        self.blobs: dict[str, tuple[bytes, set[str]]] = {}

    def add(self, name: str, data: bytes) -> None:
        self.blobs.setdefault(sha256(data), (data, set()))[1].add(name)

    def verify(self, api: Api) -> None:
        for data, names in self.blobs.values():
            for name in sorted(names):
                assert_blob(api, name, data)


def final_checks(api: Api, repo, pushed: Pushed, data: bytes) -> None:
    """Every 201'd blob serves its bytes wherever it went; `data` uploads afresh into a fresh repository (where
    it must not be visible before); no 5xx at any point."""
    pushed.verify(api)
    fresh = repo("fresh")
    assert_no_blob(api, fresh, sha256(data))
    upload_blob(api, fresh, data)
    assert_blob(api, fresh, data)
    api.assert_no_5xx()


# Manifests


def push_image_blobs(api: Api, name: str, pushed: Pushed) -> tuple[dict, dict, bytes]:
    """Push a small config and layer into `name`; their descriptors, and the layer's bytes."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": os.urandom(8).hex()}).encode()
    layer = os.urandom(4 * KiB)
    for data in (config, layer):
        upload_blob(api, name, data)
        pushed.add(name, data)
    return ({"mediaType": MT_CONFIG, "digest": sha256(config), "size": len(config)},
            {"mediaType": MT_LAYER, "digest": sha256(layer), "size": len(layer)}, layer)


def manifest_bytes(config: dict, layer: dict, n: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config, "layers": [layer],
                       "annotations": {"n": n}}).encode()


def put_manifest(api: Api, name: str, ref: str, body: bytes) -> Resp:
    r = api.request("PUT", f"/v2/{name}/manifests/{ref}", body, {"Content-Type": MT_MANIFEST})
    if r.status == 201:
        assert r.header("Docker-Content-Digest") in (None, sha256(body)), f"PUT manifest: {r}"
    return r


def get_manifest(api: Api, name: str, ref: str) -> Resp:
    r = api.request("GET", f"/v2/{name}/manifests/{ref}", headers={"Accept": ACCEPT_MANIFESTS})
    if r.status == 200:
        assert r.header("Docker-Content-Digest") == sha256(r.body), \
            f"GET {name}:{ref} serves bytes hashing to {sha256(r.body)} under Docker-Content-Digest {r}"
    return r


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def api(registry):
    a = Api(registry.url)
    yield a
    print("\n--- HTTP exchanges (last 120) ---")
    print("\n".join(a.log[-120:]))


# ---------------------------------------------------------------------------------------------------------------
# 1. Racing PATCHes at offset 0


# Small bodies race in several rounds (a lost race is otherwise easily missed). Even rounds send both requests'
# headers before the barrier, so both are past their session look-up before either body goes out; odd rounds race
# whole requests. The big bodies race once, headers first.
@pytest.mark.parametrize("size,rounds", [(SMALL, 6), (OVER_ONE_PART, 1)], ids=["100KiB", "9MiB"])
def test_racing_patches_one_wins(api, repo, size, rounds):
    name = repo()
    pushed = Pushed()
    for rnd in range(rounds):
        url = start_upload(api, name)
        bodies = [os.urandom(size), os.urandom(size)]
        if rnd % 2 == 0:
            exchanges = [api.exchange("PATCH", url, chunk_headers(0, size)) for _ in bodies]
            answers = race(*(lambda ex=ex, b=b: send_and_answer(ex, b) for ex, b in zip(exchanges, bodies)))
        else:
            answers = race(*(lambda b=b: patch(api, url, b, 0) for b in bodies))

        statuses = [a.status for a in answers]
        assert sorted(statuses) == [202, 416], \
            f"round {rnd}: racing PATCHes at offset 0 answered {statuses}: one writer per session"
        win = statuses.index(202)
        winner, loser = bodies[win], answers[1 - win]
        assert_range(answers[win], size, "winning PATCH")
        # The loser either ran into the winner's claim (nothing committed yet) or came after it (offset moved on).
        assert loser.header("Location"), f"416 without Location: {loser}"
        assert (loser.header("Range") or "") in (range_for(0), range_for(size)), f"416 with a wrong Range: {loser}"
        assert_range(upload_status(api, url), size, "status after the race")

        # A chunk that does not start at the session's offset is refused and changes nothing.
        stale = patch(api, url, os.urandom(KiB), 0)
        assert stale.status == 416, f"PATCH at a stale offset: {stale}"
        assert_range(stale, size, "416 for a stale offset")

        r = put_final(api, url, sha256(winner))
        assert r.status == 201, f"PUT ?digest=winner: {r}"
        pushed.add(name, winner)
        assert_no_blob(api, name, sha256(bodies[1 - win]))
    final_checks(api, repo, pushed, winner)


# ---------------------------------------------------------------------------------------------------------------
# 2. The Azure corruption scenario: a torn PATCH racing a PATCH that holds the session past a part boundary


def test_torn_patch_cannot_touch_a_held_session(api, repo):
    """A holds the session a little over one part in; B sends other bytes on the same session and is torn;
    then A completes. A's bytes, and only A's, end up under A's digest."""
    name = repo()
    pushed = Pushed()
    url = start_upload(api, name)
    a, b = os.urandom(OVER_ONE_PART), os.urandom(OVER_ONE_PART)

    holder = patch_partial(api, url, a, HOLD_AT)
    assert not holder.answered_early, "the server answered A before its body was complete"
    torn = patch_partial(api, url, b, len(b) - 64 * KiB)  # nearly all of B, then the connection drops
    b_answer = torn.tear()
    assert b_answer is None or b_answer.status == 416, f"B, racing a PATCH that holds the session: {b_answer}"
    a_answer = holder.finish()
    assert a_answer.status == 202, f"A, which held the session: {a_answer}"
    assert_range(a_answer, len(a), "A")
    assert_range(upload_status(api, url), len(a), "status after A")

    r = put_final(api, url, sha256(a))
    assert r.status == 201, f"PUT ?digest=sha256(A): {r}"
    pushed.add(name, a)
    assert_no_blob(api, name, sha256(b))
    # final_checks also uploads A's bytes into another repository through a fresh session and reads them back.
    final_checks(api, repo, pushed, a)


def test_patch_refused_while_a_torn_request_holds_the_session(api, repo):
    """The reverse: B holds the session a little over one part in; A sends its whole body meanwhile and gets 416
    at once; B is torn; A retries and wins. Nothing of B's survives."""
    name = repo()
    pushed = Pushed()
    url = start_upload(api, name)
    a, b = os.urandom(OVER_ONE_PART), os.urandom(OVER_ONE_PART)

    holder = patch_partial(api, url, b, HOLD_AT)
    assert not holder.answered_early, "the server answered B before its body was complete"
    refused = patch(api, url, a, 0)
    assert refused.status == 416, f"A, while B is still streaming into the session: {refused}"
    assert_range(refused, 0, "416 while B streams")
    assert refused.header("Location"), f"416 without Location: {refused}"
    holder.tear()
    assert_range(upload_status(api, url), 0, "status after B was torn")

    r = patch_until_accepted(api, url, a, 0)
    assert r.status == 202, f"A's retry after B was torn: {r}"
    assert_range(r, len(a), "A's retry")
    r = put_final(api, url, sha256(a))
    assert r.status == 201, f"PUT ?digest=sha256(A): {r}"
    pushed.add(name, a)
    assert_no_blob(api, name, sha256(b))
    final_checks(api, repo, pushed, a)


# ---------------------------------------------------------------------------------------------------------------
# 3. A torn PATCH commits nothing; a retry from the same offset works


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_torn_patch_commits_nothing(api, repo, chunked):
    name = repo()
    pushed = Pushed()
    url = start_upload(api, name)
    if chunked:
        # Streamed appends: the server can only tell the body ended early from the missing last chunk.
        first, chunk = os.urandom(64 * KiB), os.urandom(512 * KiB)
    else:
        # The torn half crosses the first part boundary (7.75 MiB + 0.5 MiB > 8 MiB): a part gets written by a
        # request that never completes.
        first, chunk = os.urandom(PART - MiB // 4), os.urandom(MiB)
    r = patch(api, url, first, 0)
    assert r.status == 202, f"first PATCH: {r}"

    torn = patch_partial(api, url, chunk, len(chunk) // 2, start=None if chunked else len(first), chunked=chunked)
    answer = torn.tear()
    assert answer is None or answer.status in (400, 416), f"torn PATCH answered {answer}"
    assert_range(upload_status(api, url), len(first), "status after the torn PATCH")

    r = patch_until_accepted(api, url, chunk, len(first), chunked=chunked)
    assert r.status == 202, f"retried PATCH: {r}"
    assert_range(r, len(first) + len(chunk), "retried PATCH")
    whole = first + chunk
    r = put_final(api, url, sha256(whole))
    assert r.status == 201, f"PUT ?digest after the retry: {r}"
    pushed.add(name, whole)
    final_checks(api, repo, pushed, whole)


# ---------------------------------------------------------------------------------------------------------------
# 4. Racing final PUTs on one session


@pytest.mark.parametrize("last_chunk,prefix_size", [(False, SMALL), (True, SMALL), (False, PART + 256 * KiB)],
                         ids=["empty-body", "last-chunk", "empty-body-multipart"])
def test_racing_final_puts(api, repo, last_chunk, prefix_size):
    name = repo()
    pushed = Pushed()
    url = start_upload(api, name)
    prefix = os.urandom(prefix_size)
    r = patch(api, url, prefix, 0)
    assert r.status == 202, f"PATCH: {r}"
    if last_chunk:
        # Each PUT carries a different last chunk, so each claims a different digest. Both requests' headers are
        # at the server before either body goes out, so both are past their session look-up at once.
        contents = [prefix + os.urandom(64 * KiB), prefix + os.urandom(64 * KiB)]
        exchanges = [api.exchange("PUT", with_digest(url, sha256(c)), chunk_headers(len(prefix), len(c) - len(prefix)))
                     for c in contents]
        calls = [lambda ex=ex, c=c: send_and_answer(ex, c[len(prefix):]) for ex, c in zip(exchanges, contents)]
    else:
        contents = [prefix, prefix]
        calls = [lambda: put_final(api, url, sha256(prefix))] * 2

    answers = race(*calls)

    statuses = [a.status for a in answers]
    # At most one 201 per session; and since nothing else held the session, one of the two must get it.
    assert statuses.count(201) == 1, f"racing final PUTs on one session answered {statuses}"
    assert all(s in LOSING_FINISH for s in statuses if s != 201), f"losing final PUT answered {statuses}"
    win = statuses.index(201)
    pushed.add(name, contents[win])
    if last_chunk:
        assert_no_blob(api, name, sha256(contents[1 - win]))
    gone = api.request("GET", url)
    assert gone.status == 404, f"session status after it was finished: {gone}"
    final_checks(api, repo, pushed, contents[win])


# ---------------------------------------------------------------------------------------------------------------
# 5. Racing tag PUTs


def test_racing_tag_puts(api, repo):
    name = repo()
    pushed = Pushed()
    config, layer, layer_bytes = push_image_blobs(api, name, pushed)
    accepted: dict[str, bytes] = {}
    for rnd in range(3):
        bodies = [manifest_bytes(config, layer, f"{rnd}-{i}") for i in range(8)]
        answers = race(*(lambda b=b: put_manifest(api, name, "racy", b) for b in bodies))
        won = [b for b, a in zip(bodies, answers) if a.status == 201]
        assert won, f"no manifest PUT succeeded: {[str(a) for a in answers]}"
        accepted.update((sha256(b), b) for b in won)

        tag = get_manifest(api, name, "racy")
        assert tag.status == 200, f"GET the raced tag: {tag}"
        assert tag.body in won, "the tag serves a manifest that was not one of this round's accepted PUTs"
        head = api.request("HEAD", f"/v2/{name}/manifests/racy", headers={"Accept": ACCEPT_MANIFESTS})
        assert head.status == 200 and head.header("Docker-Content-Digest") == sha256(tag.body), f"HEAD tag: {head}"

    for digest, body in accepted.items():
        r = get_manifest(api, name, digest)
        assert r.status == 200 and r.body == body, f"GET manifest {digest}: {r}"
    final_checks(api, repo, pushed, layer_bytes)


# ---------------------------------------------------------------------------------------------------------------
# 6. A manifest PUT by tag racing a DELETE by digest


def test_tag_put_racing_manifest_delete(api, repo):
    name = repo()
    pushed = Pushed()
    config, layer, layer_bytes = push_image_blobs(api, name, pushed)
    probe = api.request("DELETE", f"/v2/{name}/manifests/sha256:{'0' * 64}")
    if probe.status == 405:
        pytest.skip("deletes are disabled on this registry")

    for rnd in range(6):
        tag = f"t{rnd}"
        old = manifest_bytes(config, layer, f"old-{rnd}")
        r = put_manifest(api, name, tag, old)
        assert r.status == 201, f"PUT {tag}: {r}"
        # Even rounds re-push the same manifest under the tag; odd rounds move the tag to another one.
        new = old if rnd % 2 == 0 else manifest_bytes(config, layer, f"new-{rnd}")

        put, delete = race(lambda: put_manifest(api, name, tag, new),
                           lambda: api.request("DELETE", f"/v2/{name}/manifests/{sha256(old)}"))
        if delete.status == 405:
            pytest.skip("deletes are disabled on this registry")
        assert delete.status in (202, 404), f"DELETE racing a PUT: {delete}"
        assert put.status == 201 or 400 <= put.status < 500, f"PUT racing a DELETE: {put}"

        t = get_manifest(api, name, tag)  # checks the served bytes hash to Docker-Content-Digest
        assert t.status in (200, 404), f"GET {tag} after the race: {t}"
        if t.status == 200:
            assert t.body in (old, new), f"{tag} serves a manifest never pushed to it"
        for body in {old, new}:
            d = get_manifest(api, name, sha256(body))
            assert d.status in (200, 404), f"GET by digest after the race: {d}"
            if d.status == 200:
                assert d.body == body, "a manifest served under a digest its bytes do not have"
        if new != old and put.status == 201:
            # Nobody deleted `new`: once its PUT succeeded it must be there.
            d = get_manifest(api, name, sha256(new))
            assert d.status == 200, f"{sha256(new)} vanished though only {sha256(old)} was deleted: {d}"
    final_checks(api, repo, pushed, layer_bytes)


# ---------------------------------------------------------------------------------------------------------------
# 7. The same content uploaded into two repositories at once


def test_same_content_two_repositories_at_once(api, repo):
    names = [repo("a"), repo("b")]
    pushed = Pushed()
    data = os.urandom(OVER_ONE_PART)
    digest = sha256(data)
    cut = 5 * MiB

    def fill(name: str, i: int) -> str:
        url = start_upload(api, name)
        r = patch(api, url, data[:cut], 0)
        assert r.status == 202, f"{name} first PATCH: {r}"
        url = api.url(r.header("Location") or url)
        # One repository finishes with a Content-Range chunk, the other with a chunked streamed append.
        if i == 0:
            r = patch(api, url, data[cut:], cut)
        else:
            r = api.stream("PATCH", url, data[cut:], {"Content-Type": "application/octet-stream"})
        assert r.status == 202, f"{name} second PATCH: {r}"
        assert_range(r, len(data), f"{name} second PATCH")
        return api.url(r.header("Location") or url)

    urls = race(*(lambda n=n, i=i: fill(n, i) for i, n in enumerate(names)))
    # The final PUTs race too: both complete the same digest at the same moment.
    answers = race(*(lambda u=u: put_final(api, u, digest) for u in urls))
    assert [a.status for a in answers] == [201, 201], f"final PUTs: {[str(a) for a in answers]}"
    for n in names:
        pushed.add(n, data)

    mounted = repo("mounted")
    r = api.request("POST", f"/v2/{mounted}/blobs/uploads/?mount={digest}&from={names[0]}")
    assert r.status == 201, f"mount from {names[0]}: {r}"
    pushed.add(mounted, data)
    final_checks(api, repo, pushed, data)
