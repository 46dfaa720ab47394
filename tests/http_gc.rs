//! Garbage collection end to end on the native server's filesystem storage: images that share layers are pushed,
//! some deleted, `pier gc` runs beside the live server, and the storage's own listing (the files under
//! `objects/blobs/`) must hold exactly the blobs the remaining images reference, which still pull byte-identical.
//! The admin endpoints run a collection and report it.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Digests of the blob files stored under `root` (the storage's own view, not the registry's).
fn stored_blobs(root: &Path) -> BTreeSet<String> {
    let dir = root.join("objects/blobs/sha256");
    std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| format!("sha256:{}", e.file_name().to_string_lossy())).collect())
        .unwrap_or_default()
}

/// Pushes an image of `layers` (their bytes) with a config unique to `seed`; returns (manifest digest, blob digests).
fn push(server: &Server, repo: &str, tag: &str, layers: &[&[u8]], seed: u64) -> (String, Vec<String>) {
    let config = to_bytes(&json!({ "architecture": "amd64", "os": "linux", "seed": seed }));
    let config_digest = push_blob(server, repo, &config);
    let mut digests = vec![config_digest.clone()];
    let mut descs = Vec::new();
    for l in layers {
        let d = push_blob(server, repo, l);
        descs.push((d.clone(), l.len()));
        digests.push(d);
    }
    let descs: Vec<(&str, usize)> = descs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let manifest = oci_manifest((OCI_CONFIG, &config_digest, config.len()), &descs);
    (push_manifest(server, repo, tag, OCI_MANIFEST, &to_bytes(&manifest)), digests)
}

fn pier_gc(root: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pier")).arg("gc").arg("--root").arg(root).args(extra).output().unwrap();
    assert!(out.status.success(), "pier gc failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("pier gc output {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn pier_gc_removes_exactly_the_unreferenced_blobs_while_the_server_runs() {
    if skip_if_external("pier_gc_removes_exactly_the_unreferenced_blobs_while_the_server_runs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = Server::start_in(root, &[]);
    let base = random_bytes(1, 4096);
    let shared = random_bytes(2, 3000);
    let only_old = random_bytes(3, 2000);
    let only_new = random_bytes(4, 1000);
    let (old, old_blobs) = push(&s, "team/app", "v1", &[&base, &shared, &only_old], 10);
    let (_, new_blobs) = push(&s, "team/app", "v2", &[&base, &shared, &only_new], 11);
    let (_, other_blobs) = push(&s, "team/other", "latest", &[&base], 12);
    // A blob pushed and never used by any manifest, and one deleted from its repository.
    let stray = push_blob(&s, "team/app", &random_bytes(5, 500));
    let unlinked = push_blob(&s, "team/tmp", &random_bytes(6, 700));
    s.delete(&format!("/v2/team/tmp/blobs/{unlinked}")).expect(202);
    s.delete(&format!("/v2/team/app/manifests/{old}")).expect(202);

    let dry = pier_gc(root, &["--dry-run", "--grace", "0"]);
    assert!(dry["blobs_deleted"].as_u64().unwrap() >= 3, "{dry}");
    let before = stored_blobs(root);
    assert!(before.contains(&stray) && before.contains(&unlinked));

    let report = pier_gc(root, &["--grace", "0"]);
    let keep: BTreeSet<String> = new_blobs.iter().chain(other_blobs.iter()).cloned().collect();
    assert_eq!(stored_blobs(root), keep, "report: {report}");
    let gone: Vec<&String> = old_blobs.iter().filter(|d| !keep.contains(*d)).collect();
    assert_eq!(gone.len(), 2, "the old config and its own layer");

    // What remains pulls byte-identical; what went answers 404.
    for (d, bytes) in [(&new_blobs[1], &base), (&new_blobs[2], &shared), (&new_blobs[3], &only_new)] {
        let r = s.get(&format!("/v2/team/app/blobs/{d}"));
        r.expect(200);
        assert_eq!(&r.body, bytes);
    }
    s.get("/v2/team/app/manifests/v2").expect(200);
    s.get("/v2/team/other/manifests/latest").expect(200);
    for d in gone {
        s.head(&format!("/v2/team/app/blobs/{d}")).expect(404);
    }
    s.head(&format!("/v2/team/app/blobs/{stray}")).expect(404);

    // A second collection finds nothing more, and the last report is kept.
    let again = pier_gc(root, &["--grace", "0"]);
    assert_eq!(again["blobs_deleted"], 0);
    let out = Command::new(env!("CARGO_BIN_EXE_pier")).args(["gc", "--report", "--root"]).arg(root).output().unwrap();
    let last: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["cycle"], again["cycle"]);
}

#[test]
fn admin_endpoints_collect_and_report() {
    if skip_if_external("admin_endpoints_collect_and_report") {
        return;
    }
    let s = Server::start_custom(None, &[("PIER_GC_GRACE_PERIOD", "0")], &["--memory"]);
    let layer = random_bytes(7, 1500);
    let (digest, blobs) = push(&s, "gc/app", "v1", &[&layer], 20);
    s.delete(&format!("/v2/gc/app/manifests/{digest}")).expect(202);
    let mut reports = Vec::new();
    // Three cycles: mark, unlink (and mark the blobs), delete. Small slices, as a scheduler calling the endpoint makes.
    while reports.len() < 3 {
        let r = s.raw("POST", "/admin/gc?calls=12", &[], b"");
        r.expect(200);
        let v = r.json();
        if v["cycle_done"] == true {
            reports.push(v["report"].clone());
        }
    }
    assert_eq!(reports[2]["blobs_deleted"], 2, "{reports:?}");
    for d in &blobs {
        s.head(&format!("/v2/gc/app/blobs/{d}")).expect(404);
    }
    let status = s.get("/admin/gc");
    status.expect(200);
    assert_eq!(status.json()["last"]["cycle"], reports[2]["cycle"]);
    let (_, kept) = push(&s, "gc/other", "v1", &[&layer], 21);
    let du = s.get("/admin/du");
    du.expect(200);
    let v = du.json();
    assert_eq!(v["repositories"].as_array().unwrap().len(), 2);
    let other = v["repositories"].as_array().unwrap().iter().find(|r| r["name"] == "gc/other").unwrap().clone();
    assert_eq!(other["blobs"], kept.len());
    assert_eq!(other["exclusive_bytes"], other["bytes"]);
    s.raw("POST", "/admin/gc?calls=x", &[], b"").expect_client_error();
    s.get("/admin/nothing").expect(404);
}
