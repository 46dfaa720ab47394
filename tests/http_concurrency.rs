//! Concurrent clients: index-like state (tags, catalog, referrers, upload sessions) must not lose or duplicate updates
//! when requests race.

mod common;

use common::*;
use std::sync::Arc;
use std::thread;

const THREADS: usize = 12;

#[test]
fn concurrent_tag_pushes_to_one_repository_are_all_listed() {
    let s = Arc::new(Server::start());
    let repo = unique("conctags");
    let img = push_image(&s, &repo, "base", unique_seed());
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let s = Arc::clone(&s);
            let repo = repo.clone();
            let bytes = img.bytes.clone();
            thread::spawn(move || {
                push_manifest(&s, &repo, &format!("t{i:02}"), OCI_MANIFEST, &bytes);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("push thread");
    }
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    r.expect(200);
    let mut expected: Vec<String> = (0..THREADS).map(|i| format!("t{i:02}")).collect();
    expected.push("base".into());
    expected.sort();
    assert_eq!(strings(&r.json()["tags"]), expected);
}

#[test]
fn concurrent_distinct_manifests_and_tags() {
    let s = Arc::new(Server::start());
    let repo = unique("concimages");
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let s = Arc::clone(&s);
            let repo = repo.clone();
            thread::spawn(move || {
                push_image(&s, &repo, &format!("img{i:02}"), unique_seed() ^ i as u64)
            })
        })
        .collect();
    let images: Vec<Image> = handles
        .into_iter()
        .map(|h| h.join().expect("push thread"))
        .collect();
    for (i, img) in images.iter().enumerate() {
        let r = s.get(&format!("/v2/{repo}/manifests/img{i:02}"));
        r.expect(200);
        assert_eq!(r.body, img.bytes);
    }
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]).len(), THREADS);
}

#[test]
fn concurrent_new_repositories_all_appear_in_catalog() {
    let s = Arc::new(Server::start());
    let prefix = unique("conccat");
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let s = Arc::clone(&s);
            let name = format!("{prefix}/r{i:02}");
            thread::spawn(move || {
                push_image(&s, &name, "latest", unique_seed() ^ (i as u64) << 8);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("push thread");
    }
    let r = s.get("/v2/_catalog");
    r.expect(200);
    let mine: Vec<String> = strings(&r.json()["repositories"])
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}/")))
        .collect();
    let expected: Vec<String> = (0..THREADS).map(|i| format!("{prefix}/r{i:02}")).collect();
    assert_eq!(mine, expected);
}

#[test]
fn concurrent_referrers_are_all_listed() {
    let s = Arc::new(Server::start());
    let repo = unique("concrefs");
    let img = push_image(&s, &repo, "v1", unique_seed());
    push_empty_blob(&s, &repo);
    let subject = img.descriptor();
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let s = Arc::clone(&s);
            let repo = repo.clone();
            let subject = subject.clone();
            thread::spawn(move || {
                let (d, _) = push_artifact(
                    &s,
                    &repo,
                    &format!("application/vnd.example.t{i}"),
                    Some(&subject),
                    None,
                    unique_seed() ^ (i as u64) << 16,
                );
                d
            })
        })
        .collect();
    let mut digests: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("push thread"))
        .collect();
    digests.sort();
    let r = s.get(&format!("/v2/{repo}/referrers/{}", img.digest));
    r.expect(200);
    let mut listed: Vec<String> = r.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, digests);
}

#[test]
fn concurrent_pushes_of_the_same_blob() {
    let s = Arc::new(Server::start());
    let repo = unique("concblob");
    let data = Arc::new(random_bytes(unique_seed(), 50_000));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let s = Arc::clone(&s);
            let repo = repo.clone();
            let data = Arc::clone(&data);
            thread::spawn(move || {
                let d = sha256(&data);
                if i % 2 == 0 {
                    push_blob(&s, &repo, &data);
                } else {
                    s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest={d}"), &data)
                        .expect(201);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("push thread");
    }
    let r = s.get(&format!("/v2/{repo}/blobs/{}", sha256(&data)));
    r.expect(200);
    assert!(r.body == *data);
}

#[test]
fn racing_patches_on_one_session_stay_consistent() {
    // Racing chunks at one offset: the first to claim the session (a compare-and-swap in the store) is accepted; every
    // other one is refused with 416, and the session holds exactly the winner's bytes.
    let s = Arc::new(Server::start());
    let repo = unique("concpatch");
    let data = Arc::new(random_bytes(unique_seed(), 4000));
    let loc = start_upload(&s, &repo);
    // Several clients send the same first chunk at offset 0: exactly one may win, the rest must get 416.
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let s = Arc::clone(&s);
            let loc = loc.clone();
            let data = Arc::clone(&data);
            thread::spawn(move || s.patch_range(&loc, 0, &data[..2000]).status)
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("patch thread"))
        .collect();
    let ok = statuses.iter().filter(|&&c| c == 202).count();
    assert!(
        statuses.iter().all(|&c| c == 202 || c == 416),
        "{statuses:?}"
    );
    assert_eq!(ok, 1, "exactly one chunk at offset 0 is accepted: {statuses:?}");
    let r = s.get(&loc);
    r.expect(204);
    assert_eq!(r.header("range"), Some("0-1999"));
    let loc = r.location(&s);
    let d = sha256(&data);
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), &data[2000..])
        .expect(201);
    assert!(s.get(&format!("/v2/{repo}/blobs/{d}")).body == *data);
}

#[test]
fn concurrent_tag_deletes_and_pushes() {
    let s = Arc::new(Server::start());
    let repo = unique("concdel");
    let img = push_image(&s, &repo, "keep", unique_seed());
    for i in 0..THREADS {
        push_manifest(&s, &repo, &format!("d{i:02}"), OCI_MANIFEST, &img.bytes);
    }
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let s = Arc::clone(&s);
            let repo = repo.clone();
            let bytes = img.bytes.clone();
            thread::spawn(move || {
                s.delete(&format!("/v2/{repo}/manifests/d{i:02}"))
                    .expect(202);
                push_manifest(&s, &repo, &format!("n{i:02}"), OCI_MANIFEST, &bytes);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    r.expect(200);
    let mut expected: Vec<String> = (0..THREADS).map(|i| format!("n{i:02}")).collect();
    expected.push("keep".into());
    expected.sort();
    assert_eq!(strings(&r.json()["tags"]), expected);
}
