//! Blobs in an Azure Blob Storage container (any realm: `core.windows.net`, `core.chinacloudapi.cn`, …, or
//! Azurite's path-style endpoint) over the platform's [`HttpClient`], signed with SharedKey ([`crate::sign::azure`]).
//!
//! Multipart uploads are block blobs: each part is a Put Block and completing is a Put Block List of the block ids the
//! upload session recorded. A block id is the base64 of the part number and a random nonce, written with a fixed
//! width (Azure wants every block id of a blob to have the same length): each write of a part stages a block of its
//! own, so a racing or torn request re-writing part 1 stages a different block and can never change the bytes behind
//! the id the session recorded (with ids from the part number alone, Put Block List committed whatever was staged
//! last under that number). The upload id is synthetic: the registry gives every upload its own key, so the blob
//! name alone identifies the blocks. Aborting does nothing: Azure discards uncommitted blocks after seven days.
//!
//! Conditional writes are Put Blob with `If-None-Match: *` or `If-Match: <etag>`. Presigned (SAS) URLs do not serve
//! suffix ranges (`bytes=-N`), so the registry serves those itself.
//!
//! The container is created on first write if it does not exist (Azurite starts empty; a real account may too), so
//! no separate set-up step is needed. Renames are a Copy Blob from a short-lived read SAS of the source, then a
//! Delete Blob of the source.

use super::http::{read_body, HttpClient, HttpRequest, HttpResponse};
use super::s3::{object_size, Clock};
use super::{ObjectRead, ObjectStore, Precondition};
use crate::error::{Error, Result};
use crate::sign::azure::{BlobEndpoint, SharedKeyCredential, DEFAULT_API_VERSION};
use crate::sign::Timestamp;
use crate::spec::range::ByteRange;
use crate::storage::xml;
use crate::upload::PartRecord;
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::Method;
use std::fmt;
use std::rc::Rc;

/// The synthetic upload id of every multipart upload (see the module docs).
pub const UPLOAD_ID: &str = "blocks";
/// List Blobs' largest page.
const LIST_PAGE: usize = 5000;
const MAX_XML: usize = 16 * 1024 * 1024;
/// How often a pending copy's status is read before giving up (copies inside one account finish at once in practice).
const COPY_POLLS: usize = 600;
/// Lifetime of the read SAS a Copy Blob reads its source through.
const COPY_SAS_SECS: i64 = 3600;

/// Blobs in one Azure container.
pub struct AzureObjectStore {
    http: Rc<dyn HttpClient>,
    endpoint: BlobEndpoint,
    credential: SharedKeyCredential,
    container: String,
    /// Key prefix: "" or "dir/".
    root: String,
    clock: Clock,
}

impl fmt::Debug for AzureObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureObjectStore")
            .field("endpoint", &self.endpoint)
            .field("container", &self.container)
            .field("root", &self.root)
            .finish()
    }
}

/// The block id of one write of part `number`: base64 of a 10-digit decimal and a 16-hex-digit nonce, so every id of
/// a blob has the same length and no two writes share one.
pub fn block_id(number: u32, nonce: u64) -> String {
    B64.encode(format!("{number:010}-{nonce:016x}"))
}

/// The Put Block List document committing `parts` in order: the recorded block ids (a part's etag is its block id).
pub fn block_list_body(parts: &[PartRecord]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    for p in parts {
        s.push_str(&format!("<Latest>{}</Latest>", xml::escape(&p.etag)));
    }
    s.push_str("</BlockList>");
    s
}

/// One page of List Blobs: the names and the next marker.
pub fn parse_list(body: &str) -> (Vec<String>, Option<String>) {
    let names = xml::elements(body, "Blob").into_iter().filter_map(|b| xml::text(b, "Name")).collect();
    let marker = xml::text(body, "NextMarker").filter(|m| !m.is_empty());
    (names, marker)
}

fn azure_error(op: &str, key: &str, status: u16, code: Option<&str>, message: Option<&str>) -> Error {
    let mut s = format!("azure {op} {key:?}: HTTP {status}");
    if let Some(code) = code.filter(|c| !c.is_empty()) {
        s.push(' ');
        s.push_str(code);
    }
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        // Azure's messages end with a request id and time on new lines; the first line says it.
        s.push_str(": ");
        s.push_str(&m.lines().next().unwrap_or_default().chars().take(300).collect::<String>());
    }
    Error::storage(s)
}

/// A failed response's error code (header `x-ms-error-code`, else the XML body's `<Code>`) and message.
async fn error_parts(resp: HttpResponse) -> (u16, Option<String>, Option<String>) {
    let status = resp.status;
    let header_code = resp.header("x-ms-error-code").map(str::to_string);
    let body = read_body(resp.body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let code = header_code.or_else(|| xml::text(&text, "Code"));
    (status, code, xml::text(&text, "Message"))
}

impl AzureObjectStore {
    /// A store of `container` at `endpoint`, keys under `root` (may be empty), signed with `credential`, with the
    /// time (for `x-ms-date` and SAS expiry) from `clock`.
    pub fn new(
        http: Rc<dyn HttpClient>,
        endpoint: BlobEndpoint,
        credential: SharedKeyCredential,
        container: &str,
        root: &str,
        clock: Clock,
    ) -> Self {
        let root = root.trim_matches('/');
        let root = if root.is_empty() { String::new() } else { format!("{root}/") };
        AzureObjectStore { http, endpoint, credential, container: container.to_string(), root, clock }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_unix_seconds(i64::try_from((self.clock)()).unwrap_or(i64::MAX))
    }

    /// The SharedKey-signed request for `method` on blob `full_key` ("" for the container). `Content-Length` is
    /// added (and signed) for bodies.
    pub fn request(
        &self,
        method: Method,
        full_key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> HttpRequest {
        let len = body.len().to_string();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !body.is_empty() || method == Method::PUT {
            all.push(("content-length", &len));
        }
        let signed = self.endpoint.sign(
            &self.credential,
            self.now(),
            DEFAULT_API_VERSION,
            method.as_str(),
            &self.container,
            full_key,
            query,
            &all,
        );
        HttpRequest { method, url: signed.url, headers: signed.headers, body }
    }

    /// Send; `ok` statuses are answered, anything else is an error naming Azure's error code.
    async fn send(&self, op: &str, key: &str, req: HttpRequest, ok: &[u16]) -> Result<HttpResponse> {
        let resp = self.http.send(req).await?;
        if ok.contains(&resp.status) {
            return Ok(resp);
        }
        let (status, code, message) = error_parts(resp).await;
        Err(azure_error(op, key, status, code.as_deref(), message.as_deref()))
    }

    /// Send a write; if the container does not exist yet, create it and send the write again.
    async fn send_write(&self, op: &str, key: &str, build: impl Fn() -> HttpRequest, ok: &[u16]) -> Result<HttpResponse> {
        let resp = self.http.send(build()).await?;
        if ok.contains(&resp.status) {
            return Ok(resp);
        }
        let (status, code, message) = error_parts(resp).await;
        if status == 404 && code.as_deref() == Some("ContainerNotFound") {
            self.create_container().await?;
            return self.send(op, key, build(), ok).await;
        }
        Err(azure_error(op, key, status, code.as_deref(), message.as_deref()))
    }

    /// Create the container (private); an existing one is fine.
    pub async fn create_container(&self) -> Result<()> {
        let req = self.request(Method::PUT, "", &[("restype", "container")], &[], Bytes::new());
        let resp = self.http.send(req).await?;
        if resp.status == 201 {
            return Ok(());
        }
        let (status, code, message) = error_parts(resp).await;
        if status == 409 && code.as_deref() == Some("ContainerAlreadyExists") {
            return Ok(());
        }
        Err(azure_error("create container", &self.container, status, code.as_deref(), message.as_deref()))
    }

    /// A read-only SAS URL of blob `full_key` valid for `secs` from now.
    fn read_url(&self, full_key: &str, secs: i64) -> Result<String> {
        let now = self.now();
        Ok(self.endpoint.presigned_read_url(&self.credential, &self.container, full_key, None, now.plus_seconds(secs))?)
    }
}

#[async_trait(?Send)]
impl ObjectStore for AzureObjectStore {
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let full = self.full_key(key);
        let resp = self.send("head", &full, self.request(Method::HEAD, &full, &[], &[], Bytes::new()), &[200, 404]).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        object_size(&resp).map(Some).ok_or_else(|| azure_error("head", &full, 200, Some("no Content-Length"), None))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>> {
        let full = self.full_key(key);
        let range_value = range.map(|r| format!("bytes={}-{}", r.start, r.end));
        let headers: Vec<(&str, &str)> = range_value.as_deref().map(|v| ("x-ms-range", v)).into_iter().collect();
        let req = self.request(Method::GET, &full, &[], &headers, Bytes::new());
        let resp = self.send("get", &full, req, &[200, 206, 404]).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        let size = object_size(&resp).ok_or_else(|| azure_error("get", &full, resp.status, Some("no blob size"), None))?;
        let etag = resp.header("etag").map(str::to_string);
        Ok(Some(ObjectRead { size, body: resp.body, etag }))
    }

    /// Put Blob with `If-None-Match: *` (409 BlobAlreadyExists when it exists) or `If-Match: <etag>` (412
    /// ConditionNotMet when it changed, 404 when it is gone): all three lose the race.
    async fn put_if(&self, key: &str, data: Bytes, condition: &Precondition) -> Result<Option<String>> {
        let full = self.full_key(key);
        let header = match condition {
            Precondition::Absent => ("if-none-match", "*"),
            Precondition::Version(etag) => ("if-match", etag.as_str()),
        };
        let build = || self.request(Method::PUT, &full, &[], &[("x-ms-blob-type", "BlockBlob"), header], data.clone());
        let mut created_container = false;
        loop {
            let resp = self.http.send(build()).await?;
            match resp.status {
                201 => {
                    return resp
                        .header("etag")
                        .map(|e| Some(e.to_string()))
                        .ok_or_else(|| azure_error("conditional put", &full, 201, Some("no ETag in the answer"), None))
                }
                409 | 412 => return Ok(None),
                _ => {}
            }
            let (status, code, message) = error_parts(resp).await;
            match (status, code.as_deref()) {
                (404, Some("ContainerNotFound")) if !created_container => {
                    self.create_container().await?;
                    created_container = true;
                }
                (404, _) => return Ok(None),
                _ => return Err(azure_error("conditional put", &full, status, code.as_deref(), message.as_deref())),
            }
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let full = self.full_key(key);
        let build = || self.request(Method::PUT, &full, &[], &[("x-ms-blob-type", "BlockBlob")], data.clone());
        self.send_write("put", &full, build, &[201]).await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key);
        self.send("delete", &full, self.request(Method::DELETE, &full, &[], &[], Bytes::new()), &[200, 202, 404]).await?;
        Ok(())
    }

    /// Delete Blob with `If-Match`: 412 when the blob changed.
    async fn delete_if(&self, key: &str, etag: &str) -> Result<bool> {
        let full = self.full_key(key);
        let req = self.request(Method::DELETE, &full, &[], &[("if-match", etag)], Bytes::new());
        let resp = self.send("conditional delete", &full, req, &[200, 202, 404, 412]).await?;
        Ok(resp.status != 412)
    }

    async fn create_multipart(&self, _key: &str) -> Result<String> {
        Ok(UPLOAD_ID.to_string())
    }

    async fn upload_part(&self, key: &str, _upload_id: &str, number: u32, data: Bytes) -> Result<String> {
        let full = self.full_key(key);
        let mut nonce = [0u8; 8];
        getrandom::getrandom(&mut nonce).map_err(|e| Error::storage(format!("random: {e}")))?;
        let id = block_id(number, u64::from_le_bytes(nonce));
        let build = || self.request(Method::PUT, &full, &[("comp", "block"), ("blockid", &id)], &[], data.clone());
        self.send_write("put block", &full, build, &[201]).await?;
        Ok(id)
    }

    async fn complete_multipart(&self, key: &str, _upload_id: &str, parts: &[PartRecord]) -> Result<()> {
        let full = self.full_key(key);
        let body = Bytes::from(block_list_body(parts));
        let req = self.request(Method::PUT, &full, &[("comp", "blocklist")], &[("content-type", "application/xml")], body);
        let resp = self.http.send(req).await?;
        if resp.status == 201 {
            return Ok(());
        }
        let (status, code, message) = error_parts(resp).await;
        if status == 400 && code.as_deref() == Some("InvalidBlockList") {
            // A recorded block is not staged under this blob (never written, or the blob was committed already).
            return Err(Error::parts_mismatch("azure put block list: InvalidBlockList"));
        }
        Err(azure_error("put block list", &full, status, code.as_deref(), message.as_deref()))
    }

    async fn abort_multipart(&self, _key: &str, _upload_id: &str) -> Result<()> {
        // Uncommitted blocks are garbage-collected by Azure after seven days; nothing was committed under the key.
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (src, dst) = (self.full_key(from), self.full_key(to));
        let source = self.read_url(&src, COPY_SAS_SECS)?;
        let build = || self.request(Method::PUT, &dst, &[], &[("x-ms-copy-source", &source)], Bytes::new());
        let resp = self.send_write("copy", &dst, build, &[201, 202]).await?;
        let mut status = resp.header("x-ms-copy-status").unwrap_or("success").to_string();
        let mut polls = 0;
        while status == "pending" {
            polls += 1;
            if polls > COPY_POLLS {
                return Err(azure_error("copy", &dst, 202, Some("copy still pending"), None));
            }
            let req = self.request(Method::HEAD, &dst, &[], &[], Bytes::new());
            let resp = self.send("copy status", &dst, req, &[200]).await?;
            status = resp.header("x-ms-copy-status").unwrap_or("success").to_string();
        }
        if status != "success" {
            return Err(azure_error("copy", &dst, 200, Some(&format!("copy status {status}")), None));
        }
        self.delete(from).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        // List Blobs has no start-after: page from the prefix's start and skip what is not after it.
        let full_prefix = self.full_key(prefix);
        let start = start_after.map(|s| self.full_key(s));
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        while out.len() < limit {
            let max = LIST_PAGE.to_string();
            let mut query: Vec<(&str, &str)> =
                vec![("restype", "container"), ("comp", "list"), ("prefix", &full_prefix), ("maxresults", &max)];
            if let Some(m) = &marker {
                query.push(("marker", m));
            }
            let req = self.request(Method::GET, "", &query, &[], Bytes::new());
            let resp = self.http.send(req).await?;
            if resp.status == 404 {
                return Ok(Vec::new()); // no container yet: nothing stored
            }
            if resp.status != 200 {
                let (status, code, message) = error_parts(resp).await;
                return Err(azure_error("list", &full_prefix, status, code.as_deref(), message.as_deref()));
            }
            let body = read_body(resp.body, MAX_XML).await?;
            let (names, next) = parse_list(&String::from_utf8_lossy(&body));
            out.extend(
                names
                    .into_iter()
                    .filter(|n| start.as_ref().is_none_or(|s| n > s))
                    .filter_map(|n| n.strip_prefix(&self.root).map(str::to_string)),
            );
            match next {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    fn presign_get(&self, key: &str, expires_secs: u64) -> Option<String> {
        self.read_url(&self.full_key(key), i64::try_from(expires_secs).ok()?).ok()
    }

    fn presigned_suffix_ranges(&self) -> bool {
        false
    }

    fn min_part_size(&self) -> u64 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder {
        sent: RefCell<Vec<HttpRequest>>,
        answers: RefCell<Vec<(u16, Vec<(String, String)>, &'static str)>>,
    }

    #[async_trait(?Send)]
    impl HttpClient for Recorder {
        async fn send(&self, req: HttpRequest) -> Result<HttpResponse> {
            self.sent.borrow_mut().push(req);
            let (status, headers, body) =
                if self.answers.borrow().is_empty() { (201, Vec::new(), "") } else { self.answers.borrow_mut().remove(0) };
            Ok(HttpResponse { status, headers, body: Box::pin(futures::stream::iter([Ok(Bytes::from_static(body.as_bytes()))])) })
        }
    }

    const NOW: u64 = 1_369_353_600;

    fn azurite() -> (Rc<Recorder>, AzureObjectStore) {
        let rec = Rc::new(Recorder::default());
        let ep = BlobEndpoint::azurite("127.0.0.1:10000", "devstoreaccount1").unwrap();
        let s = AzureObjectStore::new(rec.clone(), ep, SharedKeyCredential::azurite(), "pier", "", Rc::new(|| NOW));
        (rec, s)
    }

    fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    #[test]
    fn block_ids_have_one_length() {
        assert_eq!(block_id(1, 0xab), B64.encode("0000000001-00000000000000ab"));
        assert_eq!(block_id(1, 0).len(), block_id(u32::MAX, u64::MAX).len());
        assert_ne!(block_id(1, 1), block_id(1, 2));
        let parts = [PartRecord { number: 2, etag: block_id(2, 7), size: 1 }];
        assert_eq!(
            block_list_body(&parts),
            format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><Latest>{}</Latest></BlockList>", block_id(2, 7))
        );
    }

    #[test]
    fn put_block_and_block_list_requests() {
        let (rec, s) = azurite();
        let id = block_on(s.create_multipart("blobs/uploads/u1")).unwrap();
        let etag = block_on(s.upload_part("blobs/uploads/u1", &id, 1, Bytes::from_static(b"abc"))).unwrap();
        let second = block_on(s.upload_part("blobs/uploads/u1", &id, 1, Bytes::from_static(b"abc"))).unwrap();
        assert_ne!(etag, second, "every write of a part stages a block of its own");
        block_on(s.complete_multipart("blobs/uploads/u1", &id, &[PartRecord { number: 1, etag: etag.clone(), size: 3 }]))
            .unwrap();
        let sent = rec.sent.borrow();
        let encoded = etag.replace('=', "%3D").replace('+', "%2B").replace('/', "%2F");
        assert_eq!(sent[0].url, format!("http://127.0.0.1:10000/devstoreaccount1/pier/blobs/uploads/u1?comp=block&blockid={encoded}"));
        assert!(String::from_utf8_lossy(&sent[2].body).contains(&format!("<Latest>{etag}</Latest>")));
        assert_eq!(header(&sent[0], "content-length"), Some("3"));
        assert_eq!(header(&sent[0], "x-ms-version"), Some(DEFAULT_API_VERSION));
        assert_eq!(header(&sent[0], "x-ms-date"), Some("Fri, 24 May 2013 00:00:00 GMT"));
        assert!(header(&sent[0], "authorization").unwrap().starts_with("SharedKey devstoreaccount1:"));
        assert_eq!(sent[2].url, "http://127.0.0.1:10000/devstoreaccount1/pier/blobs/uploads/u1?comp=blocklist");
    }

    #[test]
    fn realm_endpoint_ranged_get_uses_x_ms_range() {
        let rec = Rc::new(Recorder::default());
        let ep = BlobEndpoint::for_realm("acct", "core.chinacloudapi.cn").unwrap();
        let cred = SharedKeyCredential::new("acct", "a2V5").unwrap();
        let s = AzureObjectStore::new(rec.clone(), ep, cred, "reg", "root", Rc::new(|| NOW));
        rec.answers.borrow_mut().push((206, vec![("content-range".into(), "bytes 0-1/9".into())], "ab"));
        let read = block_on(s.get("k", Some(ByteRange { start: 0, end: 1 }))).unwrap().unwrap();
        assert_eq!(read.size, 9);
        let r = &rec.sent.borrow()[0];
        assert_eq!(r.url, "https://acct.blob.core.chinacloudapi.cn/reg/root/k");
        assert_eq!(header(r, "x-ms-range"), Some("bytes=0-1"));
        assert!(header(r, "range").is_none());
        let url = s.presign_get("k", 600).unwrap();
        assert!(url.starts_with("https://acct.blob.core.chinacloudapi.cn/reg/root/k?se=2013-05-24T00%3A10%3A00Z&sp=r&spr=https&"), "{url}");
    }

    #[test]
    fn missing_container_is_created_then_the_write_retried() {
        let (rec, s) = azurite();
        rec.answers.borrow_mut().push((404, vec![("x-ms-error-code".into(), "ContainerNotFound".into())], ""));
        rec.answers.borrow_mut().push((201, vec![], ""));
        rec.answers.borrow_mut().push((201, vec![], ""));
        block_on(s.put("meta/x", Bytes::from_static(b"v"))).unwrap();
        let sent = rec.sent.borrow();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1].url, "http://127.0.0.1:10000/devstoreaccount1/pier?restype=container");
        assert_eq!(sent[2].url, sent[0].url);
        assert_eq!(header(&sent[2], "x-ms-blob-type"), Some("BlockBlob"));
    }

    #[test]
    fn errors_name_the_azure_code_and_lists_parse() {
        let (rec, s) = azurite();
        rec.answers.borrow_mut().push((
            403,
            vec![],
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1</Message></Error>",
        ));
        let detail = block_on(s.delete("x")).unwrap_err().detail.unwrap().to_string();
        assert!(detail.contains("AuthenticationFailed") && !detail.contains("RequestId"), "{detail}");
        rec.answers.borrow_mut().push((200, vec![], "<EnumerationResults><Blobs><Blob><Name>m/a</Name><Properties/></Blob><Blob><Name>m/b</Name></Blob></Blobs><NextMarker/></EnumerationResults>"));
        assert_eq!(block_on(s.list("m/", Some("m/a"), 10)).unwrap(), ["m/b"]);
        assert_eq!(
            rec.sent.borrow()[1].url,
            "http://127.0.0.1:10000/devstoreaccount1/pier?restype=container&comp=list&prefix=m%2F&maxresults=5000"
        );
    }

    #[test]
    fn rename_copies_from_a_read_sas_and_polls_pending_copies() {
        let (rec, s) = azurite();
        rec.answers.borrow_mut().push((202, vec![("x-ms-copy-status".into(), "pending".into())], ""));
        rec.answers.borrow_mut().push((200, vec![("x-ms-copy-status".into(), "success".into())], ""));
        rec.answers.borrow_mut().push((202, vec![], ""));
        block_on(s.rename("a", "b")).unwrap();
        let sent = rec.sent.borrow();
        let src = header(&sent[0], "x-ms-copy-source").unwrap();
        assert!(src.starts_with("http://127.0.0.1:10000/devstoreaccount1/pier/a?se=") && src.contains("sp=r"), "{src}");
        assert_eq!(sent[1].method, Method::HEAD);
        assert_eq!(sent[2].method, Method::DELETE);
    }
}
