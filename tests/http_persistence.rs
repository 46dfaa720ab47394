//! Filesystem persistence: content and upload sessions survive a server restart on the same root.

mod common;

use common::*;

#[test]
fn content_survives_restart() {
    if skip_if_external("content_survives_restart") {
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let repo = unique("persist");
    let data = random_bytes(unique_seed(), 3000);
    let (blob, img, art) = {
        let s = Server::start_in(dir.path(), &[]);
        let blob = push_blob(&s, &repo, &data);
        let img = push_image(&s, &repo, "v1", unique_seed());
        push_manifest(&s, &repo, "v2", OCI_MANIFEST, &img.bytes);
        let (art, _) = push_artifact(
            &s,
            &repo,
            "application/vnd.example.sig",
            Some(&img.descriptor()),
            None,
            unique_seed(),
        );
        (blob, img, art)
    };
    let s = Server::start_in(dir.path(), &[]);
    let r = s.get(&format!("/v2/{repo}/blobs/{blob}"));
    r.expect(200);
    assert_eq!(r.body, data);
    let r = s.get(&format!("/v2/{repo}/manifests/v1"));
    r.expect(200);
    assert_eq!(r.body, img.bytes);
    s.get(&format!("/v2/{repo}/manifests/{}", img.digest))
        .expect(200);
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["v1", "v2"]);
    let r = s.get("/v2/_catalog");
    r.expect(200);
    assert_eq!(
        strings(&r.json()["repositories"]),
        std::slice::from_ref(&repo)
    );
    let r = s.get(&format!("/v2/{repo}/referrers/{}", img.digest));
    r.expect(200);
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], art.as_str());
}

#[test]
fn upload_session_survives_restart() {
    if skip_if_external("upload_session_survives_restart") {
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let repo = unique("persistup");
    let data = random_bytes(unique_seed(), 5000);
    let d = sha256(&data);
    let loc_path = {
        let s = Server::start_in(dir.path(), &["--part-size", "1024"]);
        let loc = start_upload(&s, &repo);
        let r = s.patch_range(&loc, 0, &data[..2500]);
        r.expect(202);
        let loc = r.location(&s);
        // Keep path + query only: the port changes across restarts.
        let p = path_of(&loc);
        match loc.split_once('?') {
            Some((_, q)) => format!("{p}?{q}"),
            None => p,
        }
    };
    let s = Server::start_in(dir.path(), &["--part-size", "1024"]);
    let r = s.get(&loc_path);
    r.expect(204);
    assert_eq!(r.header("range"), Some("0-2499"));
    let loc = r.location(&s);
    let r = s.patch_range(&loc, 2500, &data[2500..4000]);
    r.expect(202);
    let loc = r.location(&s);
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), &data[4000..])
        .expect(201);
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert!(r.body == data);
}

#[test]
fn deletes_survive_restart() {
    if skip_if_external("deletes_survive_restart") {
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let repo = unique("persistdel");
    let (a, b) = {
        let s = Server::start_in(dir.path(), &[]);
        let a = push_image(&s, &repo, "a", unique_seed());
        let b = push_image(&s, &repo, "b", unique_seed());
        s.delete(&format!("/v2/{repo}/manifests/{}", a.digest))
            .expect(202);
        (a, b)
    };
    let s = Server::start_in(dir.path(), &[]);
    s.get(&format!("/v2/{repo}/manifests/{}", a.digest))
        .expect(404);
    s.get(&format!("/v2/{repo}/manifests/b")).expect(200);
    assert_eq!(
        s.get(&format!("/v2/{repo}/manifests/{}", b.digest)).body,
        b.bytes
    );
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["b"]);
}
