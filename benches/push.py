#!/usr/bin/env python3
"""Push throughput of one blob into a running Pier: POST, then the bytes as one PATCH (chunked transfer encoding,
as podman sends them) or as PATCHes of --chunk bytes with Content-Range, then PUT ?digest=. Bytes are generated and
hashed on the fly, so the client holds no more than one chunk. Prints MB/s and, with --pid, the peak RSS (VmHWM) of
that process and its children (workerd under wrangler).

    benches/push.py http://127.0.0.1:8787 --size 200MiB [--chunk 8MiB] [--pid PID]
"""
import argparse
import hashlib
import http.client
import os
import sys
import time
import urllib.parse


def parse_size(s):
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "": 1}
    num = s.rstrip("KMGiBkmgib")
    return int(num) * units[s[len(num):].lower()]


def peak_rss_kib(pid):
    """VmHWM of pid and its descendants, in KiB (each process' own peak; summed)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


def pattern(size, block=1 << 20):
    seed = os.urandom(block)
    sent = 0
    i = 0
    while sent < size:
        n = min(block, size - sent)
        # A different block each time (first bytes vary) so content is not trivially repetitive.
        chunk = i.to_bytes(8, "little") + seed[8:n] if n >= 8 else seed[:n]
        yield chunk[:n]
        sent += n
        i += 1


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--size", default="200MiB")
    ap.add_argument("--chunk", default=None, help="PATCH size (default: one PATCH, chunked transfer encoding)")
    ap.add_argument("--pid", type=int, default=None)
    ap.add_argument("--repo", default="bench/push")
    a = ap.parse_args()
    size = parse_size(a.size)
    u = urllib.parse.urlparse(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    h = hashlib.sha256()
    start = time.monotonic()
    loc = request(conn, "POST", f"/v2/{a.repo}/blobs/uploads/").getheader("Location")
    if a.chunk is None:
        def body():
            for c in pattern(size):
                h.update(c)
                yield c
        conn.request("PATCH", loc, body=body(), headers={"Content-Type": "application/octet-stream"},
                     encode_chunked=True)
        r = conn.getresponse()
        r.read()
        if r.status != 202:
            sys.exit(f"PATCH: {r.status}")
        loc = r.getheader("Location")
    else:
        chunk = parse_size(a.chunk)
        off = 0
        buf = bytearray()
        gen = pattern(size)
        done = False
        while not done:
            while len(buf) < chunk:
                try:
                    buf += next(gen)
                except StopIteration:
                    done = True
                    break
            if not buf:
                break
            piece, buf = bytes(buf[:chunk]), buf[chunk:]
            h.update(piece)
            r = request(conn, "PATCH", loc, body=piece, headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{off}-{off + len(piece) - 1}",
                "Content-Length": str(len(piece))})
            off += len(piece)
            loc = r.getheader("Location")
            if done and not buf:
                break
    sep = "&" if "?" in loc else "?"
    request(conn, "PUT", f"{loc}{sep}digest=sha256:{h.hexdigest()}", body=b"", headers={"Content-Length": "0"})
    secs = time.monotonic() - start
    mode = "one PATCH" if a.chunk is None else f"{a.chunk} PATCHes"
    line = f"push {a.size} ({mode}): {size / secs / 1e6:.1f} MB/s ({secs:.1f} s)"
    if a.pid:
        line += f", peak RSS {peak_rss_kib(a.pid) / 1024:.0f} MiB"
    print(line)


if __name__ == "__main__":
    main()
