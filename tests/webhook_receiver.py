#!/usr/bin/env python3
"""A webhook receiver for notification tests (scripts/test, tests/clients): records every delivery as one JSON line
in OUT ({"status", "signature_ok", "events"}), verifies X-Pier-Signature with SECRET, answers 500 to the first
FAIL_FIRST deliveries and 200 after. Loopback only.

    webhook_receiver.py PORT OUT [SECRET] [FAIL_FIRST]
"""
import hashlib
import hmac
import http.server
import json
import sys
import threading

port, out = int(sys.argv[1]), sys.argv[2]
secret = sys.argv[3].encode() if len(sys.argv) > 3 and sys.argv[3] else None
fail_first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
lock = threading.Lock()
seen = 0


def signature_ok(header, body):
    if secret is None:
        return header is None
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(header, expected)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            status = 500 if seen < fail_first else 200
            seen += 1
            try:
                events = json.loads(body).get("events", [])
            except ValueError:
                events = None
            record = {
                "status": status,
                "content_type": self.headers.get("Content-Type"),
                "signature_ok": signature_ok(self.headers.get("X-Pier-Signature"), body),
                "events": events,
            }
            with open(out, "a") as f:
                f.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
