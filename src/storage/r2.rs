//! Cloudflare R2 through the Workers binding: blobs ([`R2ObjectStore`]) and every metadata key ([`R2MetaStore`]).
//!
//! Why R2 holds the metadata too, key by key: upload sessions are rewritten by every chunk of an upload (Workers KV
//! takes about one write per second per key and is eventually consistent, so a session read back by the next PATCH
//! could be stale); tags and manifests must be visible to a pull right after the push, from any location (KV takes
//! up to ~60 s to converge; R2 is strongly consistent); blob links and records are read right after they are written
//! (the HEAD that follows a push). No Pier key tolerates KV's staleness, so no KV namespace is needed.
//!
//! R2's binding has no copy, so [`ObjectStore::can_rename`] is false: a verified multipart blob stays at the key it
//! was assembled under and the registry records that key.
//!
//! Conditional writes use the binding's `onlyIf`: `etagDoesNotMatch: "*"` creates only if absent, `etagMatches`
//! replaces only an unchanged object; a failed condition makes `put` return no object. R2 is strongly consistent and
//! checks the condition atomically with the write.
//!
//! Blob bytes (parts, tails, small blobs) cross from wasm memory to JavaScript once: straight from the caller's buffer
//! into a `Uint8Array` (`worker::Data::Bytes` would take a `Vec`, a second copy in wasm memory), and the caller's
//! buffer is released before the store call is awaited, so an upload holds one copy of a part in flight. The bytes are
//! copied rather than handed over as a view of wasm memory: R2 reads them after the call returns, and a view is
//! invalidated when wasm memory grows (another request of the isolate allocating meanwhile). Copies of a MiB or more
//! go into JavaScript buffers the isolate keeps for the next part ([`JS_BUFFERS`]): a fresh 8 MiB array per part is
//! garbage as soon as the part is stored, and V8 collects such arrays only after tens of MiB of them pile up (seen
//! under `wrangler dev` as a saw-tooth of up to 56 MiB of array buffers in Pier's isolate across a 1 GiB push). A
//! buffer goes back for reuse only once the binding has settled the call that reads it; the buffer of a call whose
//! future was dropped unsettled is left to the garbage collector, never reused. A call that succeeded has had all its
//! bytes stored (R2 answers with the part's etag after reading it whole); one that failed wrote nothing the upload
//! records, and should R2 still keep a part from it, completion finds an etag it was never given and refuses (see
//! `registry::uploads`, "a stale holder").

use super::{ByteStream, MetaStore, ObjectRead, ObjectStore, Precondition, Revalidated, Versioned};
use crate::error::{Error, Result};
use crate::spec::range::ByteRange;
use crate::upload::PartRecord;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::worker_sys::{R2Bucket as SysBucket, R2MultipartUpload as SysMultipartUpload, R2UploadedPart as SysUploadedPart};
use worker::{Bucket, Conditional, Range, UploadedPart};

fn r2_err(what: &str, e: worker::Error) -> Error {
    Error::storage(format!("r2 {what}: {e}"))
}

/// The `onlyIf` of a conditional put.
fn only_if(condition: &Precondition) -> Conditional {
    match condition {
        Precondition::Absent => Conditional { etag_does_not_match: Some("*".into()), ..Conditional::default() },
        Precondition::Version(etag) => Conditional { etag_matches: Some(etag.clone()), ..Conditional::default() },
    }
}

/// Copies at least this long go into a pooled JavaScript buffer (see the module doc); shorter ones (metadata, small
/// blobs) into a fresh array.
const POOLED_MIN_LEN: usize = 1024 * 1024;
/// Idle pooled buffers an isolate keeps: enough for a couple of concurrent uploads, bounded so that an isolate holds
/// at most this many parts' worth of JavaScript memory between pushes.
const POOLED_IDLE: usize = 2;

thread_local! {
    /// JavaScript buffers for large copies, idle between the part uploads of this isolate (one thread per isolate).
    static JS_BUFFERS: std::cell::RefCell<Vec<js_sys::Uint8Array>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Bytes copied into JavaScript memory for one binding call.
struct JsCopy {
    /// The bytes, as the binding takes them.
    view: js_sys::Uint8Array,
    /// The pooled buffer under `view`, to give back once the call has settled.
    pooled: Option<js_sys::Uint8Array>,
}

impl JsCopy {
    /// `data` copied once into JavaScript memory: into the smallest idle pooled buffer that fits (a new one if none
    /// does) when it is long, else into a fresh array.
    fn of(data: &[u8]) -> JsCopy {
        let len = data.len() as u32;
        if data.len() < POOLED_MIN_LEN {
            let view = js_sys::Uint8Array::new_with_length(len);
            view.copy_from(data);
            return JsCopy { view, pooled: None };
        }
        let idle = JS_BUFFERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            let fits = pool.iter().enumerate().filter(|(_, b)| b.length() >= len).min_by_key(|(_, b)| b.length()).map(|(i, _)| i);
            fits.map(|i| pool.swap_remove(i))
        });
        let buffer = idle.unwrap_or_else(|| js_sys::Uint8Array::new_with_length(len));
        let view = buffer.subarray(0, len);
        view.copy_from(data);
        JsCopy { view, pooled: Some(buffer) }
    }

    /// The call that read the bytes has settled (either way): its buffer can take the next copy.
    fn recycle(self) {
        let Some(buffer) = self.pooled else { return };
        JS_BUFFERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            pool.push(buffer);
            if pool.len() > POOLED_IDLE {
                if let Some(i) = pool.iter().enumerate().min_by_key(|(_, b)| b.length()).map(|(i, _)| i) {
                    pool.swap_remove(i);
                }
            }
        });
    }
}

fn js_err(what: &str, e: wasm_bindgen::JsValue) -> Error {
    r2_err(what, worker::Error::from(e))
}

/// The binding's own object under `bucket`, whose `put` and `uploadPart` take a `Uint8Array` as it is.
fn sys_bucket(bucket: &Bucket) -> &SysBucket {
    AsRef::<wasm_bindgen::JsValue>::as_ref(bucket).unchecked_ref()
}

/// Put `data` at `key` unconditionally, copying it into JavaScript once and releasing it before the write is awaited.
async fn put_bytes(bucket: &Bucket, key: &str, data: Bytes) -> Result<()> {
    let copy = JsCopy::of(&data);
    drop(data);
    let promise = sys_bucket(bucket).put(key.to_string(), copy.view.clone().into(), wasm_bindgen::JsValue::UNDEFINED);
    let result = match promise {
        Ok(p) => JsFuture::from(p).await.map(|_| ()),
        Err(e) => Err(e),
    };
    copy.recycle();
    result.map_err(|e| js_err("put", e))
}

/// Put `data` at `key` if `condition` holds: the new object's etag, or `None` when the condition failed. Metadata
/// values (sessions, records, links) are small: the builder's extra copy costs nothing worth its own code here.
async fn put_if(bucket: &Bucket, key: String, data: Bytes, condition: &Precondition) -> Result<Option<String>> {
    let put = bucket.put(key, data.to_vec()).only_if(only_if(condition));
    Ok(put.execute().await.map_err(|e| r2_err("conditional put", e))?.map(|o| o.etag()))
}

/// Whether an R2 multipart error means the recorded parts are not the stored ones (a part replaced or missing, the
/// upload completed or aborted already) rather than an R2 failure.
fn is_parts_mismatch(e: &worker::Error) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    ["invalidpart", "invalid part", "nosuchupload", "no such upload", "does not exist", "etag"].iter().any(|p| m.contains(p))
}

/// R2's largest list page.
const LIST_PAGE: usize = 1000;

/// Keys under `prefix` strictly after `start_after`, at most `limit`, paging through R2's 1000-key lists.
async fn list_keys(bucket: &Bucket, prefix: &str, start_after: Option<String>, limit: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut after = start_after;
    while out.len() < limit {
        let want = (limit - out.len()).min(LIST_PAGE) as u32;
        let mut list = bucket.list().prefix(prefix.to_string()).limit(want);
        if let Some(a) = &after {
            list = list.start_after(a.clone());
        }
        let page = list.execute().await.map_err(|e| r2_err("list", e))?;
        let keys: Vec<String> = page.objects().iter().map(|o| o.key()).collect();
        let done = !page.truncated() || keys.is_empty();
        after = keys.last().cloned();
        out.extend(keys);
        if done {
            break;
        }
    }
    out.truncate(limit);
    Ok(out)
}

/// Blobs in an R2 bucket.
pub struct R2ObjectStore {
    bucket: Bucket,
    presigner: Option<Box<dyn Fn(&str, u64) -> Option<String>>>,
}

impl R2ObjectStore {
    /// Blobs in `bucket`.
    pub fn new(bucket: Bucket) -> Self {
        R2ObjectStore { bucket, presigner: None }
    }

    /// Presign blob GETs with `presign(key, expires_secs)` (R2's S3 API with SigV4).
    pub fn with_presigner(mut self, presign: Box<dyn Fn(&str, u64) -> Option<String>>) -> Self {
        self.presigner = Some(presign);
        self
    }
}

fn object_stream(body: worker::ByteStream) -> ByteStream {
    Box::pin(body.map(|r| r.map(Bytes::from).map_err(|e| r2_err("read", e))))
}

#[async_trait(?Send)]
impl ObjectStore for R2ObjectStore {
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.bucket.head(key).await.map_err(|e| r2_err("head", e))?.map(|o| o.size()))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>> {
        let mut get = self.bucket.get(key);
        if let Some(r) = range {
            get = get.range(Range::OffsetWithLength { offset: r.start, length: r.len() });
        }
        let Some(object) = get.execute().await.map_err(|e| r2_err("get", e))? else { return Ok(None) };
        let size = object.size();
        let etag = Some(object.etag());
        let body = object.body().ok_or_else(|| Error::storage("r2 get: object without body"))?;
        let stream = body.stream().map_err(|e| r2_err("get", e))?;
        Ok(Some(ObjectRead { size, body: object_stream(stream), etag }))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        put_bytes(&self.bucket, key, data).await
    }

    async fn put_if(&self, key: &str, data: Bytes, condition: &Precondition) -> Result<Option<String>> {
        put_if(&self.bucket, key.to_string(), data, condition).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.bucket.delete(key).await.map_err(|e| r2_err("delete", e))
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        let upload = self.bucket.create_multipart_upload(key).execute().await.map_err(|e| r2_err("create multipart", e))?;
        Ok(upload.upload_id().await)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u32, data: Bytes) -> Result<String> {
        let number = u16::try_from(number).map_err(|_| Error::storage("r2: more than 65535 parts"))?;
        let upload: SysMultipartUpload = sys_bucket(&self.bucket)
            .resume_multipart_upload(key.to_string(), upload_id.to_string())
            .map_err(|e| js_err("resume multipart", e))?
            .unchecked_into();
        let copy = JsCopy::of(&data);
        // The part's one copy in flight is JavaScript's from here: the caller's buffer can take the next part.
        drop(data);
        let result = match upload.upload_part(number, copy.view.clone().into()) {
            Ok(promise) => JsFuture::from(promise).await,
            Err(e) => Err(e),
        };
        copy.recycle();
        let part: SysUploadedPart = result
            .map_err(|e| {
                let e = worker::Error::from(e);
                if is_parts_mismatch(&e) {
                    Error::parts_mismatch(format!("r2 upload part: {e}"))
                } else {
                    r2_err("upload part", e)
                }
            })?
            .unchecked_into();
        part.etag().map_err(|e| js_err("upload part etag", e))
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartRecord]) -> Result<()> {
        let upload = self.bucket.resume_multipart_upload(key, upload_id).map_err(|e| r2_err("resume multipart", e))?;
        let mut uploaded = Vec::with_capacity(parts.len());
        for p in parts {
            let n = u16::try_from(p.number).map_err(|_| Error::storage("r2: more than 65535 parts"))?;
            uploaded.push(UploadedPart::new(n, p.etag.clone()));
        }
        upload.complete(uploaded).await.map_err(|e| {
            if is_parts_mismatch(&e) {
                Error::parts_mismatch(format!("r2 complete multipart: {e}"))
            } else {
                r2_err("complete multipart", e)
            }
        })?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let upload = self.bucket.resume_multipart_upload(key, upload_id).map_err(|e| r2_err("resume multipart", e))?;
        upload.abort().await.map_err(|e| r2_err("abort multipart", e))
    }

    async fn rename(&self, _from: &str, _to: &str) -> Result<()> {
        Err(Error::storage("r2 binding cannot rename"))
    }

    fn can_rename(&self) -> bool {
        false
    }

    fn presign_get(&self, key: &str, expires_secs: u64) -> Option<String> {
        self.presigner.as_ref().and_then(|p| p(key, expires_secs))
    }

    fn min_part_size(&self) -> u64 {
        5 * 1024 * 1024
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        list_keys(&self.bucket, prefix, start_after.map(str::to_string), limit).await
    }
}

/// Metadata keys as small R2 objects under a prefix.
pub struct R2MetaStore {
    bucket: Bucket,
    prefix: String,
}

impl R2MetaStore {
    /// Keys stored as `<prefix><key>` in `bucket`.
    pub fn new(bucket: Bucket, prefix: impl Into<String>) -> Self {
        R2MetaStore { bucket, prefix: prefix.into() }
    }
}

#[async_trait(?Send)]
impl MetaStore for R2MetaStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(key).await?.map(|v| v.value))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        let full = format!("{}{key}", self.prefix);
        let Some(object) = self.bucket.get(&full).execute().await.map_err(|e| r2_err("get", e))? else { return Ok(None) };
        let version = object.etag();
        let body = object.body().ok_or_else(|| Error::storage("r2 get: object without body"))?;
        let value = Bytes::from(body.bytes().await.map_err(|e| r2_err("read", e))?);
        Ok(Some(Versioned { value, version }))
    }

    async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>> {
        put_if(&self.bucket, format!("{}{key}", self.prefix), value, condition).await
    }

    async fn get_unless(&self, key: &str, version: &str) -> Result<Revalidated> {
        // A head is the cheapest R2 read (measured under wrangler dev: cheaper than a get whose `onlyIf` fails); a
        // changed value costs a get after it, which is rare for what is revalidated (tags).
        let full = format!("{}{key}", self.prefix);
        let Some(head) = self.bucket.head(&full).await.map_err(|e| r2_err("head", e))? else { return Ok(Revalidated::Absent) };
        if head.etag() == version {
            return Ok(Revalidated::Unchanged);
        }
        Ok(match self.get_versioned(key).await? {
            Some(v) => Revalidated::Changed(v),
            None => Revalidated::Absent,
        })
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        put_bytes(&self.bucket, &format!("{}{key}", self.prefix), value).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.bucket.delete(format!("{}{key}", self.prefix)).await.map_err(|e| r2_err("delete", e))
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let after = start_after.map(|s| format!("{}{s}", self.prefix));
        let keys = list_keys(&self.bucket, &full_prefix, after, limit).await?;
        Ok(keys.into_iter().filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string)).collect())
    }
}
