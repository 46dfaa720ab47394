//! Blobs in an S3-compatible bucket (AWS S3, R2's S3 API, MinIO, s3s-fs) over the platform's [`HttpClient`], signed
//! with SigV4 header auth ([`crate::sign::sigv4`]). Every request body is a whole `Bytes` (a small object or one
//! multipart part), so the payload hash is the SHA-256 of exactly the bytes sent; response bodies of GETs stream.
//!
//! Keys live under an optional root directory (`REGISTRY_STORAGE_S3_ROOTDIRECTORY`), which the store adds and strips
//! so the registry sees its own keys only. Blob GETs can redirect to SigV4-presigned URLs (the store holds a clock for
//! that: presigning is the only place it needs the time outside of signing requests).

use super::http::{read_body, HttpClient, HttpRequest, HttpResponse};
use super::{ObjectRead, ObjectStore, Precondition};
use crate::error::{Error, Result};
use crate::sign::sigv4::{Credentials, S3Endpoint};
use crate::sign::{percent_encode, sha256_hex, Timestamp};
use crate::spec::range::ByteRange;
use crate::storage::xml;
use crate::upload::PartRecord;
use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use std::fmt;
use std::rc::Rc;

/// S3's smallest part size (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest object CopyObject copies in one request; beyond it S3 wants UploadPartCopy.
pub const MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// ListObjectsV2's largest page.
const LIST_PAGE: usize = 1000;
/// The most bytes read from an XML response (a list page of 1000 long keys is well under this).
const MAX_XML: usize = 8 * 1024 * 1024;

/// A source of the current time in Unix seconds.
pub type Clock = Rc<dyn Fn() -> u64>;

/// Blobs in one S3 bucket.
pub struct S3ObjectStore {
    http: Rc<dyn HttpClient>,
    endpoint: S3Endpoint,
    bucket: String,
    /// Key prefix: "" or "dir/".
    root: String,
    credentials: Credentials,
    clock: Clock,
}

impl fmt::Debug for S3ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ObjectStore").field("endpoint", &self.endpoint).field("bucket", &self.bucket).field("root", &self.root).finish()
    }
}

/// An error of an S3 request: the operation, the HTTP status and S3's error code (never a secret).
fn s3_error(op: &str, key: &str, status: u16, code: Option<&str>, message: Option<&str>) -> Error {
    let mut s = format!("s3 {op} {key:?}: HTTP {status}");
    if let Some(code) = code {
        s.push(' ');
        s.push_str(code);
    }
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        s.push_str(": ");
        s.push_str(&m.chars().take(300).collect::<String>());
    }
    Error::storage(s)
}

/// S3 error codes of a multipart upload whose stored parts are not the recorded ones: the upload cannot complete.
const PARTS_MISMATCH_CODES: [&str; 4] = ["InvalidPart", "InvalidPartOrder", "NoSuchUpload", "EntityTooSmall"];

/// An S3 error as the registry sees it: a parts mismatch (a 4xx for the client) or a storage failure.
fn multipart_error(op: &str, key: &str, status: u16, code: Option<&str>, message: Option<&str>) -> Error {
    if code.is_some_and(|c| PARTS_MISMATCH_CODES.contains(&c)) {
        return Error::parts_mismatch(format!("s3 {op}: {}", code.unwrap_or_default()));
    }
    s3_error(op, key, status, code, message)
}

/// S3's `<Error><Code>…</Code><Message>…</Message></Error>`, if `body` is one.
pub fn parse_error(body: &str) -> Option<(String, String)> {
    let err = xml::elements(body, "Error").into_iter().next()?;
    Some((xml::text(err, "Code").unwrap_or_default(), xml::text(err, "Message").unwrap_or_default()))
}

/// One page of ListObjectsV2: the keys and the continuation token when truncated.
pub fn parse_list(body: &str) -> (Vec<String>, Option<String>) {
    let keys = xml::elements(body, "Contents").into_iter().filter_map(|c| xml::text(c, "Key")).collect();
    let truncated = xml::text(body, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let token = if truncated { xml::text(body, "NextContinuationToken").filter(|t| !t.is_empty()) } else { None };
    (keys, token)
}

/// The CompleteMultipartUpload document for `parts`.
pub fn complete_body(parts: &[PartRecord]) -> String {
    let mut s = String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for p in parts {
        let etag = if p.etag.starts_with('"') { p.etag.clone() } else { format!("\"{}\"", p.etag) };
        s.push_str(&format!("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", p.number, xml::escape(&etag)));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

/// The size of an object from a GET/HEAD response: the total of `Content-Range: bytes a-b/total`, else
/// `Content-Length`.
pub(crate) fn object_size(resp: &HttpResponse) -> Option<u64> {
    if let Some(cr) = resp.header("content-range") {
        return cr.rsplit_once('/').and_then(|(_, total)| total.trim().parse().ok());
    }
    resp.header("content-length").and_then(|v| v.trim().parse().ok())
}

impl S3ObjectStore {
    /// A store of `bucket` at `endpoint`, keys under `root` (may be empty), signed with `credentials`, presigning with
    /// the time from `clock`.
    pub fn new(
        http: Rc<dyn HttpClient>,
        endpoint: S3Endpoint,
        bucket: &str,
        root: &str,
        credentials: Credentials,
        clock: Clock,
    ) -> Self {
        let root = root.trim_matches('/');
        let root = if root.is_empty() { String::new() } else { format!("{root}/") };
        S3ObjectStore { http, endpoint, bucket: bucket.to_string(), root, credentials, clock }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_unix_seconds(i64::try_from((self.clock)()).unwrap_or(i64::MAX))
    }

    /// The signed request for `method` on the object `full_key` ("" for the bucket).
    pub fn request(
        &self,
        method: Method,
        full_key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> HttpRequest {
        let payload_hash = sha256_hex(&body);
        let signed = self.endpoint.sign(
            &self.credentials,
            self.now(),
            method.as_str(),
            &self.bucket,
            full_key,
            query,
            headers,
            &payload_hash,
        );
        // The URL carries the host; every HTTP client sets `Host` from it (exactly as signed).
        let headers = signed.headers.into_iter().filter(|(n, _)| n != "host").collect();
        HttpRequest { method, url: self.endpoint.url(&self.bucket, full_key, query), headers, body }
    }

    /// Send a request; answer statuses in `ok` as the response, and everything else as an error with S3's code.
    async fn send(&self, op: &str, key: &str, req: HttpRequest, ok: &[u16]) -> Result<HttpResponse> {
        let resp = self.http.send(req).await?;
        if ok.contains(&resp.status) {
            return Ok(resp);
        }
        Err(self.error_of(op, key, resp).await)
    }

    async fn error_of(&self, op: &str, key: &str, resp: HttpResponse) -> Error {
        let status = resp.status;
        let body = read_body(resp.body, 64 * 1024).await.unwrap_or_default();
        let parsed = parse_error(&String::from_utf8_lossy(&body));
        multipart_error(op, key, status, parsed.as_ref().map(|p| p.0.as_str()), parsed.as_ref().map(|p| p.1.as_str()))
    }

    /// Read an XML success body, failing when it is an `<Error>` document (CopyObject and CompleteMultipartUpload
    /// can answer 200 and fail in the body).
    async fn xml_ok(&self, op: &str, key: &str, resp: HttpResponse) -> Result<String> {
        let status = resp.status;
        let body = read_body(resp.body, MAX_XML).await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if let Some((code, message)) = parse_error(&text) {
            return Err(multipart_error(op, key, status, Some(&code), Some(&message)));
        }
        Ok(text)
    }
}

#[async_trait(?Send)]
impl ObjectStore for S3ObjectStore {
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let full = self.full_key(key);
        let resp = self.send("head", &full, self.request(Method::HEAD, &full, &[], &[], Bytes::new()), &[200, 404]).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        object_size(&resp).map(Some).ok_or_else(|| s3_error("head", &full, 200, Some("no Content-Length"), None))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>> {
        let full = self.full_key(key);
        let range_value = range.map(|r| format!("bytes={}-{}", r.start, r.end));
        let headers: Vec<(&str, &str)> = range_value.as_deref().map(|v| ("range", v)).into_iter().collect();
        let req = self.request(Method::GET, &full, &[], &headers, Bytes::new());
        let resp = self.send("get", &full, req, &[200, 206, 404]).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        let size = object_size(&resp).ok_or_else(|| s3_error("get", &full, resp.status, Some("no object size"), None))?;
        let etag = resp.header("etag").map(str::to_string);
        Ok(Some(ObjectRead { size, body: resp.body, etag }))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let full = self.full_key(key);
        self.send("put", &full, self.request(Method::PUT, &full, &[], &[], data), &[200]).await?;
        Ok(())
    }

    /// PutObject with `If-None-Match: *` or `If-Match: <etag>`: S3 (since 2024), R2, MinIO and s3s-fs check them.
    /// A failed condition is 412; 409 (ConditionalRequestConflict: a concurrent conditional write won) and 404 (the
    /// object to replace is gone) lose the race the same way.
    async fn put_if(&self, key: &str, data: Bytes, condition: &Precondition) -> Result<Option<String>> {
        let full = self.full_key(key);
        let header = match condition {
            Precondition::Absent => ("if-none-match", "*"),
            Precondition::Version(etag) => ("if-match", etag.as_str()),
        };
        let req = self.request(Method::PUT, &full, &[], &[header], data);
        let resp = self.send("conditional put", &full, req, &[200, 404, 409, 412]).await?;
        if resp.status != 200 {
            return Ok(None);
        }
        resp.header("etag")
            .map(|e| Some(e.to_string()))
            .ok_or_else(|| s3_error("conditional put", &full, 200, Some("no ETag in the answer"), None))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key);
        self.send("delete", &full, self.request(Method::DELETE, &full, &[], &[], Bytes::new()), &[200, 204, 404]).await?;
        Ok(())
    }

    /// DeleteObject with `If-Match` (atomic on AWS S3, which answers 412 when the object changed), after a HEAD that
    /// skips the delete when the etag already differs (services that ignore `If-Match` on DELETE then only have the
    /// window between the two requests).
    async fn delete_if(&self, key: &str, etag: &str) -> Result<bool> {
        let full = self.full_key(key);
        let req = self.request(Method::HEAD, &full, &[], &[], Bytes::new());
        let head = self.send("conditional delete check", &full, req, &[200, 404]).await?;
        if head.status == 404 {
            return Ok(true);
        }
        if head.header("etag") != Some(etag) {
            return Ok(false);
        }
        let req = self.request(Method::DELETE, &full, &[], &[("if-match", etag)], Bytes::new());
        let resp = self.send("conditional delete", &full, req, &[200, 204, 404, 412]).await?;
        Ok(resp.status != 412)
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        let full = self.full_key(key);
        let req = self.request(Method::POST, &full, &[("uploads", "")], &[], Bytes::new());
        let resp = self.send("create multipart upload", &full, req, &[200]).await?;
        let body = self.xml_ok("create multipart upload", &full, resp).await?;
        xml::text(&body, "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| s3_error("create multipart upload", &full, 200, Some("no UploadId in the answer"), None))
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u32, data: Bytes) -> Result<String> {
        let full = self.full_key(key);
        let n = number.to_string();
        let req = self.request(Method::PUT, &full, &[("partNumber", &n), ("uploadId", upload_id)], &[], data);
        let resp = self.send("upload part", &full, req, &[200]).await?;
        resp.header("etag")
            .map(str::to_string)
            .ok_or_else(|| s3_error("upload part", &full, 200, Some("no ETag in the answer"), None))
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartRecord]) -> Result<()> {
        let full = self.full_key(key);
        let body = Bytes::from(complete_body(parts));
        let req =
            self.request(Method::POST, &full, &[("uploadId", upload_id)], &[("content-type", "application/xml")], body);
        let resp = self.send("complete multipart upload", &full, req, &[200]).await?;
        self.xml_ok("complete multipart upload", &full, resp).await?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let full = self.full_key(key);
        let req = self.request(Method::DELETE, &full, &[("uploadId", upload_id)], &[], Bytes::new());
        self.send("abort multipart upload", &full, req, &[200, 204, 404]).await?;
        Ok(())
    }

    /// CopyObject then DELETE. CopyObject copies at most 5 GiB; larger objects would need a multipart copy
    /// (UploadPartCopy), which Pier does not do yet: such a rename fails with a clear error.
    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (src, dst) = (self.full_key(from), self.full_key(to));
        let size = self.head(from).await?.ok_or_else(|| s3_error("rename", &src, 404, Some("NoSuchKey"), None))?;
        if size > MAX_COPY_SIZE {
            return Err(Error::storage(format!(
                "s3 rename {src:?}: the object is {size} bytes; CopyObject copies at most 5 GiB and multipart copy \
                 (UploadPartCopy) is not implemented"
            )));
        }
        let source = format!("/{}/{}", self.bucket, percent_encode(&src, true));
        let req = self.request(Method::PUT, &dst, &[], &[("x-amz-copy-source", &source)], Bytes::new());
        let resp = self.send("copy", &dst, req, &[200]).await?;
        self.xml_ok("copy", &dst, resp).await?;
        self.delete(from).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let full_prefix = self.full_key(prefix);
        let start = start_after.map(|s| self.full_key(s));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < limit {
            let max = (limit - out.len()).min(LIST_PAGE).to_string();
            let mut query: Vec<(&str, &str)> = vec![("list-type", "2"), ("max-keys", &max), ("prefix", &full_prefix)];
            match (&token, &start) {
                (Some(t), _) => query.push(("continuation-token", t)),
                (None, Some(s)) => query.push(("start-after", s)),
                (None, None) => {}
            }
            let req = self.request(Method::GET, "", &query, &[], Bytes::new());
            let resp = self.send("list", &full_prefix, req, &[200]).await?;
            let body = self.xml_ok("list", &full_prefix, resp).await?;
            let (keys, next) = parse_list(&body);
            out.extend(keys.into_iter().filter_map(|k| k.strip_prefix(&self.root).map(str::to_string)));
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    fn presign_get(&self, key: &str, expires_secs: u64) -> Option<String> {
        self.endpoint.presign_get(&self.credentials, self.now(), &self.bucket, &self.full_key(key), expires_secs).ok()
    }

    fn min_part_size(&self) -> u64 {
        MIN_PART_SIZE
    }

    /// S3-compatible servers differ (AWS S3, R2 and MinIO are atomic; s3s-fs checks, then writes), and which one is
    /// behind an endpoint cannot be told: the registry double-checks its claims here.
    fn atomic_conditional_writes(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::sigv4::AddressingStyle;
    use futures::executor::block_on;
    use std::cell::RefCell;

    /// Records requests and answers each with the next canned response.
    #[derive(Default)]
    struct Recorder {
        sent: RefCell<Vec<HttpRequest>>,
        answers: RefCell<Vec<(u16, Vec<(String, String)>, &'static str)>>,
    }

    #[async_trait(?Send)]
    impl HttpClient for Recorder {
        async fn send(&self, req: HttpRequest) -> Result<HttpResponse> {
            self.sent.borrow_mut().push(req);
            let (status, headers, body) = if self.answers.borrow().is_empty() {
                (200, Vec::new(), "")
            } else {
                self.answers.borrow_mut().remove(0)
            };
            Ok(HttpResponse { status, headers, body: Box::pin(futures::stream::iter([Ok(Bytes::from_static(body.as_bytes()))])) })
        }
    }

    const NOW: u64 = 1_369_353_600; // 2013-05-24T00:00:00Z

    fn store(endpoint: &str, style: AddressingStyle, root: &str) -> (Rc<Recorder>, S3ObjectStore) {
        let rec = Rc::new(Recorder::default());
        let ep = S3Endpoint::parse(endpoint, "us-east-1", style).unwrap();
        let s = S3ObjectStore::new(rec.clone(), ep, "bkt", root, Credentials::new("AK", "SK"), Rc::new(|| NOW));
        (rec, s)
    }

    fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn path_style_put_is_signed_over_the_body() {
        let (rec, s) = store("http://127.0.0.1:9014", AddressingStyle::Path, "/reg/");
        block_on(s.put("blobs/sha256:ab", Bytes::from_static(b"hello"))).unwrap();
        let r = &rec.sent.borrow()[0];
        assert_eq!(r.method, Method::PUT);
        assert_eq!(r.url, "http://127.0.0.1:9014/bkt/reg/blobs/sha256%3Aab");
        assert_eq!(header(r, "x-amz-content-sha256"), Some(sha256_hex(b"hello").as_str()));
        assert_eq!(header(r, "x-amz-date"), Some("20130524T000000Z"));
        assert!(header(r, "host").is_none());
        let auth = header(r, "authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request"), "{auth}");
        assert!(!auth.contains("SK"));
    }

    #[test]
    fn virtual_hosted_ranged_get_reads_size_from_content_range() {
        let (rec, s) = store("https://s3.example.com", AddressingStyle::VirtualHosted, "");
        rec.answers.borrow_mut().push((206, vec![("Content-Range".into(), "bytes 2-4/10".into())], "llo"));
        let read = block_on(s.get("k/x", Some(ByteRange { start: 2, end: 4 }))).unwrap().unwrap();
        assert_eq!(read.size, 10);
        let r = &rec.sent.borrow()[0];
        assert_eq!(r.url, "https://bkt.s3.example.com/k/x");
        assert_eq!(header(r, "range"), Some("bytes=2-4"));
        assert!(header(r, "authorization").unwrap().contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"));
    }

    #[test]
    fn head_404_is_absent_and_errors_carry_the_s3_code() {
        let (rec, s) = store("http://127.0.0.1:9014", AddressingStyle::Path, "");
        rec.answers.borrow_mut().push((404, vec![], ""));
        rec.answers.borrow_mut().push((
            403,
            vec![],
            "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>bad sig</Message></Error>",
        ));
        assert_eq!(block_on(s.head("a")).unwrap(), None);
        let e = block_on(s.put("a", Bytes::new())).unwrap_err();
        let detail = e.detail.unwrap().to_string();
        assert!(detail.contains("SignatureDoesNotMatch") && detail.contains("403"), "{detail}");
        assert!(!detail.contains("SK"));
    }

    #[test]
    fn multipart_requests() {
        let (rec, s) = store("http://127.0.0.1:9014", AddressingStyle::Path, "");
        rec.answers.borrow_mut().push((200, vec![], "<InitiateMultipartUploadResult><Bucket>bkt</Bucket><Key>k</Key><UploadId>u/1+2</UploadId></InitiateMultipartUploadResult>"));
        rec.answers.borrow_mut().push((200, vec![("ETag".into(), "\"e1\"".into())], ""));
        rec.answers.borrow_mut().push((200, vec![], "<Error><Code>InternalError</Code><Message>x</Message></Error>"));
        let id = block_on(s.create_multipart("k")).unwrap();
        assert_eq!(id, "u/1+2");
        assert_eq!(block_on(s.upload_part("k", &id, 3, Bytes::from_static(b"p"))).unwrap(), "\"e1\"");
        let parts = [PartRecord { number: 3, etag: "\"e1\"".into(), size: 1 }];
        // A 200 with an <Error> body is a failure.
        assert!(block_on(s.complete_multipart("k", &id, &parts)).is_err());
        let sent = rec.sent.borrow();
        assert_eq!(sent[0].method, Method::POST);
        assert_eq!(sent[0].url, "http://127.0.0.1:9014/bkt/k?uploads=");
        assert_eq!(sent[1].url, "http://127.0.0.1:9014/bkt/k?partNumber=3&uploadId=u%2F1%2B2");
        assert_eq!(sent[2].url, "http://127.0.0.1:9014/bkt/k?uploadId=u%2F1%2B2");
        assert_eq!(
            String::from_utf8_lossy(&sent[2].body),
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><PartNumber>3</PartNumber>\
             <ETag>&quot;e1&quot;</ETag></Part></CompleteMultipartUpload>"
        );
        assert_eq!(header(&sent[2], "x-amz-content-sha256"), Some(sha256_hex(&sent[2].body).as_str()));
    }

    #[test]
    fn rename_copies_then_deletes() {
        let (rec, s) = store("http://127.0.0.1:9014", AddressingStyle::Path, "root");
        rec.answers.borrow_mut().push((200, vec![("Content-Length".into(), "5".into())], ""));
        rec.answers.borrow_mut().push((200, vec![], "<CopyObjectResult><ETag>\"x\"</ETag></CopyObjectResult>"));
        rec.answers.borrow_mut().push((204, vec![], ""));
        block_on(s.rename("a b", "c")).unwrap();
        let sent = rec.sent.borrow();
        assert_eq!(sent[1].url, "http://127.0.0.1:9014/bkt/root/c");
        assert_eq!(header(&sent[1], "x-amz-copy-source"), Some("/bkt/root/a%20b"));
        assert_eq!(sent[2].method, Method::DELETE);
        assert_eq!(sent[2].url, "http://127.0.0.1:9014/bkt/root/a%20b");
    }

    #[test]
    fn list_pages_and_strips_the_root() {
        let (rec, s) = store("http://127.0.0.1:9014", AddressingStyle::Path, "r");
        rec.answers.borrow_mut().push((200, vec![], "<ListBucketResult><Contents><Key>r/m/a</Key></Contents><IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>"));
        rec.answers.borrow_mut().push((200, vec![], "<ListBucketResult><Contents><Key>r/m/b</Key></Contents><IsTruncated>false</IsTruncated></ListBucketResult>"));
        assert_eq!(block_on(s.list("m/", Some("m/0"), 5000)).unwrap(), ["m/a", "m/b"]);
        let sent = rec.sent.borrow();
        assert_eq!(sent[0].url, "http://127.0.0.1:9014/bkt?list-type=2&max-keys=1000&prefix=r%2Fm%2F&start-after=r%2Fm%2F0");
        assert_eq!(sent[1].url, "http://127.0.0.1:9014/bkt?continuation-token=t1&list-type=2&max-keys=1000&prefix=r%2Fm%2F");
    }

    #[test]
    fn presigns_with_the_clock() {
        let (_, s) = store("http://127.0.0.1:9014", AddressingStyle::Path, "");
        let url = s.presign_get("blobs/x", 600).unwrap();
        assert!(url.starts_with("http://127.0.0.1:9014/bkt/blobs/x?X-Amz-Algorithm=AWS4-HMAC-SHA256"), "{url}");
        assert!(url.contains("X-Amz-Date=20130524T000000Z") && url.contains("X-Amz-Expires=600"));
        assert_eq!(s.min_part_size(), MIN_PART_SIZE);
    }
}
