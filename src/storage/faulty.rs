//! Fault injection for both storage traits: [`FaultyObjectStore`] and [`FaultyMetaStore`] wrap real stores and share
//! one [`FaultPlan`], which numbers every store call across both of them and, at one chosen call, injects a fault.
//!
//! Real stores fail in two ways a handler must survive. A call can fail cleanly ([`FaultKind::Fail`]: nothing
//! happened). Or the store commits and the answer is lost — a connection dropped after S3 or R2 stored the object —
//! so the caller sees an error for a write that did happen ([`FaultKind::Tear`]). Reads that tear fail like `Fail`,
//! except an object read, which may answer with a body that stops half-way. Running a request sequence once to count
//! its calls and then once more per call index with a fault there checks every point at which a store can fail.
//!
//! The plan can also make calls yield to the executor before they run ([`FaultPlan::set_interleave`]), so requests
//! polled together (`futures::join`) interleave at store-call granularity, deterministically: races between requests
//! become repeatable tests. And one call can stall ([`FaultPlan::stall_before`]) while the test moves its clock, the
//! way a request hanging in a slow store call outlives a lease.
//!
//! Compiled on every target (no threads, no files), so a long run on any platform can use it. It is single-threaded
//! state (`Cell`s behind an `Rc`), like the registry core itself.

use super::{ByteStream, MetaStore, ObjectRead, ObjectStore, Precondition, Versioned};
use crate::error::{Error, Result};
use crate::spec::range::ByteRange;
use crate::upload::PartRecord;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// How an injected fault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The call does nothing and fails.
    Fail,
    /// A write happens and then fails anyway (an ambiguous outcome); a read fails, or an object's body stops half-way.
    Tear,
}

/// The store calls a plan counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    ObjectHead,
    ObjectGet,
    ObjectPut,
    ObjectPutIf,
    ObjectDelete,
    CreateMultipart,
    UploadPart,
    CompleteMultipart,
    AbortMultipart,
    Rename,
    ObjectList,
    MetaGet,
    MetaGetVersioned,
    MetaPut,
    MetaPutIf,
    MetaDelete,
    MetaList,
}

impl StoreOp {
    /// Whether the call changes the store (a torn write is performed before it fails).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            StoreOp::ObjectPut
                | StoreOp::ObjectPutIf
                | StoreOp::ObjectDelete
                | StoreOp::CreateMultipart
                | StoreOp::UploadPart
                | StoreOp::CompleteMultipart
                | StoreOp::AbortMultipart
                | StoreOp::Rename
                | StoreOp::MetaPut
                | StoreOp::MetaPutIf
                | StoreOp::MetaDelete
        )
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            StoreOp::ObjectHead => "objects.head",
            StoreOp::ObjectGet => "objects.get",
            StoreOp::ObjectPut => "objects.put",
            StoreOp::ObjectPutIf => "objects.put_if",
            StoreOp::ObjectDelete => "objects.delete",
            StoreOp::CreateMultipart => "objects.create_multipart",
            StoreOp::UploadPart => "objects.upload_part",
            StoreOp::CompleteMultipart => "objects.complete_multipart",
            StoreOp::AbortMultipart => "objects.abort_multipart",
            StoreOp::Rename => "objects.rename",
            StoreOp::ObjectList => "objects.list",
            StoreOp::MetaGet => "meta.get",
            StoreOp::MetaGetVersioned => "meta.get_versioned",
            StoreOp::MetaPut => "meta.put",
            StoreOp::MetaPutIf => "meta.put_if",
            StoreOp::MetaDelete => "meta.delete",
            StoreOp::MetaList => "meta.list",
        }
    }
}

impl fmt::Display for StoreOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fault a plan injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredFault {
    /// The call's index (0-based, counting every call of both stores while the plan was not paused).
    pub index: u64,
    pub kind: FaultKind,
    pub op: StoreOp,
    pub key: String,
}

impl fmt::Display for FiredFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at call {}: {} {}", self.kind, self.index, self.op, self.key)
    }
}

/// Which call a plan faults.
#[derive(Debug, Clone)]
enum Target {
    /// The call with this index.
    Index(u64),
    /// The first call of `op` whose key contains `key`.
    Op { op: StoreOp, key: String },
}

/// Counts store calls and decides where the one fault goes. Shared (`Rc`) by the two wrappers of one registry.
#[derive(Default)]
pub struct FaultPlan {
    calls: Cell<u64>,
    target: RefCell<Option<(Target, FaultKind)>>,
    fired: RefCell<Option<FiredFault>>,
    paused: Cell<bool>,
    /// xorshift state deciding which calls yield; 0 = interleaving off.
    interleave: Cell<u64>,
    trace: RefCell<Option<Vec<String>>>,
    /// A call that stalls: the hook runs (a test moves its clock) and the call yields once before it goes on.
    stall: RefCell<Option<Stall>>,
}

/// See [`FaultPlan::stall_before`].
struct Stall {
    op: StoreOp,
    hook: Box<dyn Fn()>,
}

impl FaultPlan {
    /// A plan that only counts.
    pub fn counting() -> Rc<Self> {
        Rc::new(FaultPlan::default())
    }

    /// A plan that injects `kind` at call `index`.
    pub fn at(index: u64, kind: FaultKind) -> Rc<Self> {
        let plan = FaultPlan::default();
        *plan.target.borrow_mut() = Some((Target::Index(index), kind));
        Rc::new(plan)
    }

    /// A plan that injects `kind` into the first call of `op` whose key contains `key` (for tests aimed at one step).
    pub fn on_op(op: StoreOp, key: &str, kind: FaultKind) -> Rc<Self> {
        let plan = FaultPlan::default();
        *plan.target.borrow_mut() = Some((Target::Op { op, key: key.to_string() }, kind));
        Rc::new(plan)
    }

    /// Wrap a pair of stores so that both count against (and fault through) this plan.
    pub fn wrap(self: &Rc<Self>, objects: Rc<dyn ObjectStore>, meta: Rc<dyn MetaStore>) -> (Rc<FaultyObjectStore>, Rc<FaultyMetaStore>) {
        (Rc::new(FaultyObjectStore { inner: objects, plan: self.clone() }), Rc::new(FaultyMetaStore { inner: meta, plan: self.clone() }))
    }

    /// Calls counted so far.
    pub fn calls(&self) -> u64 {
        self.calls.get()
    }

    /// The fault, once it has fired.
    pub fn fired(&self) -> Option<FiredFault> {
        self.fired.borrow().clone()
    }

    /// While paused, calls are neither counted nor faulted (a test's own checks go through the same stores).
    pub fn set_paused(&self, paused: bool) {
        self.paused.set(paused);
    }

    /// With `Some(seed)`, each counted call first yields to the executor or not, as a PRNG seeded with `seed`
    /// decides; `None` turns it off. Requests polled together then interleave between store calls, repeatably.
    pub fn set_interleave(&self, seed: Option<u64>) {
        // xorshift needs a non-zero state; 0 is "off".
        self.interleave.set(seed.map_or(0, |s| s | 1));
    }

    /// Make the next call of `op` stall, once: `hook` runs (a test advances its clock past a lease, say) and the call
    /// yields to the executor before it is performed, as a request hanging in a slow store call would. Another request
    /// polled alongside runs meanwhile.
    pub fn stall_before(&self, op: StoreOp, hook: impl Fn() + 'static) {
        *self.stall.borrow_mut() = Some(Stall { op, hook: Box::new(hook) });
    }

    /// Drop a stall that has not happened.
    pub fn clear_stall(&self) {
        *self.stall.borrow_mut() = None;
    }

    /// Start or stop recording a line per counted call (for replaying a failure).
    pub fn set_trace(&self, on: bool) {
        *self.trace.borrow_mut() = on.then(Vec::new);
    }

    /// The recorded calls.
    pub fn trace(&self) -> Vec<String> {
        self.trace.borrow().clone().unwrap_or_default()
    }

    fn should_yield(&self) -> bool {
        let mut s = self.interleave.get();
        if s == 0 || self.paused.get() {
            return false;
        }
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.interleave.set(s);
        s & 1 == 1
    }

    /// Account for one call; the fault to inject into it, if this is the chosen one.
    async fn enter(&self, op: StoreOp, key: &str) -> Option<FaultKind> {
        if self.should_yield() {
            YieldOnce(false).await;
        }
        let stall = self.stall.borrow_mut().take_if(|s| s.op == op && !self.paused.get());
        if let Some(stall) = stall {
            (stall.hook)();
            YieldOnce(false).await;
        }
        if self.paused.get() {
            return None;
        }
        let index = self.calls.get();
        self.calls.set(index + 1);
        let chosen = match &*self.target.borrow() {
            Some((Target::Index(at), kind)) if *at == index => Some(*kind),
            Some((Target::Op { op: want, key: part }, kind)) if *want == op && key.contains(part.as_str()) => Some(*kind),
            _ => None,
        };
        let fault = match chosen {
            Some(kind) if self.fired.borrow().is_none() => {
                *self.fired.borrow_mut() = Some(FiredFault { index, kind, op, key: key.to_string() });
                Some(kind)
            }
            _ => None,
        };
        if let Some(trace) = self.trace.borrow_mut().as_mut() {
            let mark = match fault {
                Some(kind) => format!("  <-- {kind:?}"),
                None => String::new(),
            };
            trace.push(format!("#{index} {op} {key}{mark}"));
        }
        fault
    }
}

fn injected(kind: FaultKind, op: StoreOp, key: &str) -> Error {
    Error::storage(format!("injected fault ({kind:?}) in {op} {key}"))
}

/// Resolves on its second poll, waking itself after the first: lets another future polled alongside run.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// A body that yields its first `keep` bytes and then an error, like a read whose connection drops.
fn torn_body(body: ByteStream, keep: u64, message: String) -> ByteStream {
    let state = (body, keep, Some(message));
    Box::pin(futures::stream::unfold(state, |(mut body, left, message)| async move {
        let message = message?;
        match body.next().await {
            Some(Ok(chunk)) if (chunk.len() as u64) < left => {
                let left = left - chunk.len() as u64;
                Some((Ok(chunk), (body, left, Some(message))))
            }
            Some(Ok(chunk)) if left > 0 => Some((Ok(chunk.slice(..left as usize)), (body, 0, Some(message)))),
            // The cut point (or the real end, for a body shorter than expected): the connection "drops".
            Some(Ok(_)) | None => Some((Err(Error::storage(message)), (body, 0, None))),
            Some(Err(e)) => Some((Err(e), (body, 0, None))),
        }
    }))
}

/// An [`ObjectStore`] that counts its calls and faults as its [`FaultPlan`] says.
pub struct FaultyObjectStore {
    inner: Rc<dyn ObjectStore>,
    plan: Rc<FaultPlan>,
}

impl FaultyObjectStore {
    /// Wrap `inner`; see also [`FaultPlan::wrap`].
    pub fn new(inner: Rc<dyn ObjectStore>, plan: Rc<FaultPlan>) -> Self {
        FaultyObjectStore { inner, plan }
    }

    /// The plan in force.
    pub fn plan(&self) -> &Rc<FaultPlan> {
        &self.plan
    }
}

/// A [`MetaStore`] that counts its calls and faults as its [`FaultPlan`] says.
pub struct FaultyMetaStore {
    inner: Rc<dyn MetaStore>,
    plan: Rc<FaultPlan>,
}

impl FaultyMetaStore {
    /// Wrap `inner`; see also [`FaultPlan::wrap`].
    pub fn new(inner: Rc<dyn MetaStore>, plan: Rc<FaultPlan>) -> Self {
        FaultyMetaStore { inner, plan }
    }

    /// The plan in force.
    pub fn plan(&self) -> &Rc<FaultPlan> {
        &self.plan
    }
}

/// Run a write through the plan: `Fail` skips it, `Tear` performs it and fails anyway.
macro_rules! write_call {
    ($plan:expr, $op:expr, $key:expr, $call:expr) => {{
        match $plan.enter($op, $key).await {
            None => $call.await,
            Some(FaultKind::Fail) => Err(injected(FaultKind::Fail, $op, $key)),
            Some(FaultKind::Tear) => {
                let _ = $call.await;
                Err(injected(FaultKind::Tear, $op, $key))
            }
        }
    }};
}

/// Run a read through the plan: any fault fails it without calling the store.
macro_rules! read_call {
    ($plan:expr, $op:expr, $key:expr, $call:expr) => {{
        match $plan.enter($op, $key).await {
            None => $call.await,
            Some(kind) => Err(injected(kind, $op, $key)),
        }
    }};
}

#[async_trait(?Send)]
impl ObjectStore for FaultyObjectStore {
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        read_call!(self.plan, StoreOp::ObjectHead, key, self.inner.head(key))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>> {
        let op = StoreOp::ObjectGet;
        match self.plan.enter(op, key).await {
            None => self.inner.get(key, range).await,
            Some(FaultKind::Fail) => Err(injected(FaultKind::Fail, op, key)),
            Some(FaultKind::Tear) => match self.inner.get(key, range).await? {
                // The read starts and its body stops half-way through the bytes asked for.
                Some(read) => {
                    let len = range.map_or(read.size, |r| r.end.min(read.size.saturating_sub(1)).saturating_sub(r.start) + 1);
                    let body = torn_body(read.body, len / 2, format!("injected fault (Tear) in the body of {op} {key}"));
                    Ok(Some(ObjectRead { size: read.size, body, etag: read.etag }))
                }
                None => Err(injected(FaultKind::Tear, op, key)),
            },
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        write_call!(self.plan, StoreOp::ObjectPut, key, self.inner.put(key, data))
    }

    async fn put_if(&self, key: &str, data: Bytes, condition: &Precondition) -> Result<Option<String>> {
        write_call!(self.plan, StoreOp::ObjectPutIf, key, self.inner.put_if(key, data, condition))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        write_call!(self.plan, StoreOp::ObjectDelete, key, self.inner.delete(key))
    }

    async fn delete_if(&self, key: &str, etag: &str) -> Result<bool> {
        write_call!(self.plan, StoreOp::ObjectDelete, key, self.inner.delete_if(key, etag))
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        write_call!(self.plan, StoreOp::CreateMultipart, key, self.inner.create_multipart(key))
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u32, data: Bytes) -> Result<String> {
        write_call!(self.plan, StoreOp::UploadPart, key, self.inner.upload_part(key, upload_id, number, data))
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartRecord]) -> Result<()> {
        write_call!(self.plan, StoreOp::CompleteMultipart, key, self.inner.complete_multipart(key, upload_id, parts))
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        write_call!(self.plan, StoreOp::AbortMultipart, key, self.inner.abort_multipart(key, upload_id))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        write_call!(self.plan, StoreOp::Rename, from, self.inner.rename(from, to))
    }

    fn can_rename(&self) -> bool {
        self.inner.can_rename()
    }

    fn presign_get(&self, key: &str, expires_secs: u64) -> Option<String> {
        self.inner.presign_get(key, expires_secs)
    }

    fn presigned_suffix_ranges(&self) -> bool {
        self.inner.presigned_suffix_ranges()
    }

    fn atomic_conditional_writes(&self) -> bool {
        self.inner.atomic_conditional_writes()
    }

    fn min_part_size(&self) -> u64 {
        self.inner.min_part_size()
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        read_call!(self.plan, StoreOp::ObjectList, prefix, self.inner.list(prefix, start_after, limit))
    }
}

#[async_trait(?Send)]
impl MetaStore for FaultyMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        read_call!(self.plan, StoreOp::MetaGet, key, self.inner.get(key))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        read_call!(self.plan, StoreOp::MetaGetVersioned, key, self.inner.get_versioned(key))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        write_call!(self.plan, StoreOp::MetaPut, key, self.inner.put(key, value))
    }

    async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>> {
        write_call!(self.plan, StoreOp::MetaPutIf, key, self.inner.put_if(key, value, condition))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        write_call!(self.plan, StoreOp::MetaDelete, key, self.inner.delete(key))
    }

    async fn delete_if(&self, key: &str, version: &str) -> Result<bool> {
        write_call!(self.plan, StoreOp::MetaDelete, key, self.inner.delete_if(key, version))
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        read_call!(self.plan, StoreOp::MetaList, prefix, self.inner.list(prefix, start_after, limit))
    }

    fn atomic_conditional_writes(&self) -> bool {
        self.inner.atomic_conditional_writes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::{MemoryMetaStore, MemoryObjectStore};
    use futures::executor::block_on;

    fn stores(plan: &Rc<FaultPlan>) -> (Rc<MemoryObjectStore>, Rc<MemoryMetaStore>, Rc<FaultyObjectStore>, Rc<FaultyMetaStore>) {
        let (o, m) = (Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()));
        let (fo, fm) = plan.wrap(o.clone(), m.clone());
        (o, m, fo, fm)
    }

    #[test]
    fn counts_across_both_stores_and_fails_once() {
        let plan = FaultPlan::at(1, FaultKind::Fail);
        let (o, m, fo, fm) = stores(&plan);
        block_on(async {
            fm.put("a", Bytes::from_static(b"1")).await.unwrap();
            assert!(fo.put("x", Bytes::from_static(b"2")).await.is_err());
            assert!(o.head("x").await.unwrap().is_none(), "a failed write does nothing");
            fo.put("x", Bytes::from_static(b"2")).await.unwrap();
            assert!(m.get("a").await.unwrap().is_some());
        });
        assert_eq!(plan.calls(), 3);
        let fired = plan.fired().unwrap();
        assert_eq!((fired.index, fired.op, fired.key.as_str()), (1, StoreOp::ObjectPut, "x"));
    }

    #[test]
    fn torn_writes_happen_and_torn_reads_stop_half_way() {
        let plan = FaultPlan::at(0, FaultKind::Tear);
        let (_, m, _, fm) = stores(&plan);
        block_on(async {
            assert!(fm.put_if("k", Bytes::from_static(b"v"), &Precondition::Absent).await.is_err());
            assert!(m.get("k").await.unwrap().is_some(), "a torn write is performed");
        });
        let plan = FaultPlan::at(1, FaultKind::Tear);
        let (_, _, fo, _) = stores(&plan);
        block_on(async {
            fo.put("o", Bytes::from(vec![7u8; 10])).await.unwrap();
            let read = fo.get("o", None).await.unwrap().unwrap();
            let items: Vec<_> = read.body.collect().await;
            assert_eq!(items.len(), 2);
            assert_eq!(items[0].as_ref().unwrap().len(), 5);
            assert!(items[1].is_err());
        });
    }

    #[test]
    fn paused_calls_are_not_counted() {
        let plan = FaultPlan::at(0, FaultKind::Fail);
        let (_, _, _, fm) = stores(&plan);
        plan.set_paused(true);
        block_on(fm.get("a")).unwrap();
        plan.set_paused(false);
        assert_eq!(plan.calls(), 0);
        assert!(block_on(fm.get("a")).is_err());
    }

    #[test]
    fn interleaving_lets_joined_requests_alternate() {
        let plan = FaultPlan::counting();
        let (_, _, _, fm) = stores(&plan);
        plan.set_interleave(Some(3));
        plan.set_trace(true);
        let a = async {
            for i in 0..20 {
                fm.put(&format!("a{i}"), Bytes::new()).await.unwrap();
            }
        };
        let b = async {
            for i in 0..20 {
                fm.put(&format!("b{i}"), Bytes::new()).await.unwrap();
            }
        };
        block_on(futures::future::join(a, b));
        let trace = plan.trace();
        let first_b = trace.iter().position(|l| l.contains(" b")).unwrap();
        assert!(first_b < 20, "b ran only after a finished: {trace:?}");
    }
}
