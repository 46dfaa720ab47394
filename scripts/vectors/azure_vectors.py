#!/usr/bin/env python3
"""Azure Blob signing vectors for src/sign/azure.rs, computed with the Azure SDK's own signing code.

Azure publishes no fixed SharedKey/SAS test vectors (unlike AWS for SigV4), so Pier's expected values come from
azure-storage-blob itself: `SharedKeyCredentialPolicy.on_request` for SharedKey and `BlobSharedAccessSignature`
(the code behind `generate_blob_sas`) for service SAS. Re-run to regenerate:

    python3 -m venv /tmp/azvenv && /tmp/azvenv/bin/pip install azure-storage-blob
    /tmp/azvenv/bin/python scripts/vectors/azure_vectors.py

The key is Azurite's well-known development key for `devstoreaccount1` (published in the Azurite docs; not a secret).
Printed values are pasted into the `tests` module of src/sign/azure.rs.
"""
from datetime import datetime, timezone

import azure.storage.blob as blob_pkg
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.storage.blob import generate_blob_sas
from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy
from azure.storage.blob._shared_access_signature import BlobSharedAccessSignature

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DATE = "Fri, 24 May 2013 00:00:00 GMT"
VERSION = "2021-08-06"


def shared_key(name, account, method, url, headers):
    """Sign one request the way the SDK's pipeline does and print the string to sign and the Authorization value."""
    req = HttpRequest(method, url, headers=dict(headers))
    pipeline_request = PipelineRequest(req, PipelineContext(None))
    policy = SharedKeyCredentialPolicy(account, AZURITE_KEY)
    captured = {}
    original = policy._add_authorization_header

    def capture(request, string_to_sign):
        captured["sts"] = string_to_sign
        original(request, string_to_sign)

    policy._add_authorization_header = capture
    policy.on_request(pipeline_request)
    print(f"== shared key: {name}")
    print(f"url           = {url}")
    print(f"string_to_sign= {captured['sts']!r}")
    print(f"authorization = {req.headers['Authorization']}")
    print()


def blob_sas(name, account, container, blob, start, expiry, protocol, version):
    """A read-only service SAS for one blob, from the SDK's BlobSharedAccessSignature with a pinned version."""
    sas = BlobSharedAccessSignature(account, AZURITE_KEY)
    if version is not None:
        sas.x_ms_version = version
    seen = {}
    token = sas.generate_blob(
        container, blob, permission="r", expiry=expiry, start=start, protocol=protocol,
        sts_hook=lambda s: seen.setdefault("sts", s),
    )
    print(f"== blob sas: {name}")
    print(f"string_to_sign= {seen['sts']!r}")
    print(f"token         = {token}")
    print()


def main():
    print(f"# azure-storage-blob {blob_pkg.__version__}\n")
    # Azurite, path-style: the account is both in the URL path and prepended by the signer.
    shared_key(
        "azurite GET blob with x-ms-range", "devstoreaccount1", "GET",
        "http://127.0.0.1:10000/devstoreaccount1/pier/docker/registry/v2/blobs/sha256/ab/data",
        [("x-ms-date", DATE), ("x-ms-version", VERSION), ("x-ms-range", "bytes=0-9")],
    )
    shared_key(
        "azurite list blobs", "devstoreaccount1", "GET",
        "http://127.0.0.1:10000/devstoreaccount1/pier?restype=container&comp=list&prefix=docker%2Frepo%2F&maxresults=2",
        [("x-ms-date", DATE), ("x-ms-version", VERSION)],
    )
    # Production host names: the account lives in the host only.
    shared_key(
        "put block, global cloud", "pierregistry", "PUT",
        "https://pierregistry.blob.core.windows.net/pier/uploads/u1/data?comp=block&blockid=MDAwMDAx",
        [("Content-Length", "1024"), ("Content-Type", "application/octet-stream"),
         ("x-ms-date", DATE), ("x-ms-version", VERSION)],
    )
    shared_key(
        "put block list, china cloud, content-md5", "pierregistry", "PUT",
        "https://pierregistry.blob.core.chinacloudapi.cn/pier/uploads/u1/data?comp=blocklist",
        [("Content-Length", "78"), ("Content-Type", "application/xml"),
         ("Content-MD5", "Q2hlY2sgSW50ZWdyaXR5IQ=="), ("x-ms-date", DATE), ("x-ms-version", VERSION),
         ("x-ms-blob-content-type", "application/octet-stream")],
    )
    shared_key(
        "delete with zero content-length, special characters in the name", "pierregistry", "DELETE",
        "https://pierregistry.blob.core.windows.net/pier/a%20b/c%2Bd%24e.txt",
        [("Content-Length", "0"), ("x-ms-date", DATE), ("x-ms-version", VERSION)],
    )
    shared_key(
        "put blob with if-none-match, gov cloud", "pierregistry", "PUT",
        "https://pierregistry.blob.core.usgovcloudapi.net/pier/docker/registry/v2/repositories/r/_manifests/tags/latest/current/link",
        [("Content-Length", "71"), ("Content-Type", "text/plain"), ("If-None-Match", "*"),
         ("x-ms-blob-type", "BlockBlob"), ("x-ms-date", DATE), ("x-ms-version", VERSION)],
    )

    start = datetime(2024, 1, 1, 0, 0, 0, tzinfo=timezone.utc)
    expiry = datetime(2024, 1, 1, 0, 15, 0, tzinfo=timezone.utc)
    blob_sas("azurite read, https+http, 2022-11-02", "devstoreaccount1", "pier",
             "docker/registry/v2/blobs/sha256/ab/data", start, expiry, "https,http", "2022-11-02")
    blob_sas("global read, https only, no start, 2022-11-02", "pierregistry", "pier",
             "docker/registry/v2/blobs/sha256/ab/data", None, expiry, "https", "2022-11-02")
    blob_sas("name needing encoding, SDK default version", "pierregistry", "pier",
             "a b/c+d$e.txt", start, expiry, None, None)


if __name__ == "__main__":
    main()
