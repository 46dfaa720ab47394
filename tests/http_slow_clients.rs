//! Slow and idle clients cannot hold the native server: a client that never finishes its request headers is
//! disconnected, a request body that stops arriving ends its request (and the upload keeps its last good offset), and
//! with a connection limit of 1 a second client is served once the first is gone. The limits are set low here
//! (`PIER_HTTP_HEADER_TIMEOUT=1`, `PIER_HTTP_BODY_TIMEOUT=1`); every wait has a generous bound, so these check
//! behaviour, not speed.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn connect(s: &Server) -> TcpStream {
    let addr = s.base.trim_start_matches("http://");
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
    c
}

/// Everything the server sends until it closes the connection.
fn read_to_close(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let s = Server::start_with_env(&[("PIER_HTTP_HEADER_TIMEOUT", "1")], &[]);
    let mut c = connect(&s);
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").expect("partial headers");
    // The server closes the connection (hyper may first answer 408) instead of waiting forever.
    let answer = read_to_close(&mut c);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    s.get("/v2/").expect(200);
}

#[test]
fn a_stalled_upload_body_ends_the_request_and_keeps_the_session() {
    let s = Server::start_with_env(&[("PIER_HTTP_BODY_TIMEOUT", "1")], &[]);
    let repo = unique("stalled");
    let loc = start_upload(&s, &repo);
    let path = loc.trim_start_matches(&s.base).to_string();
    let mut c = connect(&s);
    let head = format!("PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nContent-Range: 0-999\r\n\r\n");
    c.write_all(head.as_bytes()).expect("headers");
    c.write_all(&[1u8; 10]).expect("a few bytes");
    let answer = read_to_close(&mut c);
    assert!(answer.starts_with("HTTP/1.1 400"), "a stalled body is a client error: {answer}");
    assert!(answer.contains("BLOB_UPLOAD_INVALID"), "{answer}");
    // The session is where it was, and not held: the upload goes on.
    let r = s.get(&loc);
    r.expect(204);
    assert_eq!(r.header("range"), Some("0-0"));
    let data = random_bytes(unique_seed(), 1000);
    s.patch_range(&loc, 0, &data).expect(202);
}

#[test]
fn past_the_connection_limit_clients_wait_for_a_slot() {
    let s = Server::start_with_env(&[("PIER_HTTP_MAX_CONNECTIONS", "1"), ("PIER_HTTP_HEADER_TIMEOUT", "1")], &[]);
    // The first client takes the only slot and idles; the header timeout frees it, then the second is served.
    let mut idle = connect(&s);
    idle.write_all(b"GET /v2/ HTTP/1.1\r\n").expect("partial headers");
    let mut second = connect(&s);
    second.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
    let answer = read_to_close(&mut second);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);
}
