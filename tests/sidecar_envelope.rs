//! Every error `credstore serve` answers is the JSON envelope
//! `{"success": false, "error": {"code", "message"}}`, including the ones axum makes itself
//! (a body over the limit, a path that does not decode).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{Cli, Sidecar};

/// An answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[track_caller]
    fn envelope_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{:?}",
            self.headers
        );
        let doc: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        assert_eq!(doc["success"], false, "{doc}");
        assert_eq!(doc["error"]["code"], code, "{doc}");
        assert!(doc["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{doc}");
        doc
    }
}

/// Sends `head` (the request line and headers, without the blank line), announcing a
/// body of `length` bytes that a thread of its own sends after it (the server may answer
/// and close before taking it all: what it could not send is dropped), and reads the
/// answer.
fn exchange(addr: SocketAddr, head: &str, length: usize) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let request = format!("{head}\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write head");
    let mut writer = stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = length;
        while left > 0 {
            let n = left.min(chunk.len());
            if writer.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (head_len, body_len) = loop {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed before an answer: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().expect("content-length"))
            .expect("a content-length");
        break (end + 4, length);
    };
    while raw.len() < head_len + body_len {
        let n = stream.read(&mut buf).expect("read body");
        assert!(n > 0, "body cut short");
        raw.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    let _ = sender.join();
    let head = String::from_utf8_lossy(&raw[..head_len]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = String::from_utf8_lossy(&raw[head_len..head_len + body_len]).to_string();
    Answer { status, headers, body }
}

/// Issue 17, item 7: the 413 for a body over the limit was axum's `text/plain`.
#[test]
fn a_body_over_the_limit_is_a_413_in_the_envelope() {
    let cli = Cli::init();
    let admin = cli.json(&["create", "--name", "admin", "--role", "admin", "--json"]);
    let auth = format!("Authorization: Bearer {}", admin["key"].as_str().expect("key"));
    let sidecar = Sidecar::start(&cli);
    let too_large = 3 * 1024 * 1024;
    for path in ["/v1/keys.verify", "/v1/api-keys"] {
        let head = format!("POST {path} HTTP/1.1\r\nContent-Type: application/json\r\n{auth}");
        let answer = exchange(sidecar.addr, &head, too_large);
        let doc = answer.envelope_error(413, "PAYLOAD_TOO_LARGE");
        let message = doc["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(&(2 * 1024 * 1024).to_string()),
            "names the limit: {doc}"
        );
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    // Under the limit, the same route answers as before: a body that is not JSON is a 400.
    let answer = exchange(
        sidecar.addr,
        "POST /v1/keys.verify HTTP/1.1\r\nContent-Type: application/json",
        1024,
    );
    answer.envelope_error(400, "BAD_REQUEST");
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{stderr}");
}

/// The other answers axum makes itself: an id in the path that is not UTF-8.
#[test]
fn a_path_that_does_not_decode_is_a_400_in_the_envelope() {
    let cli = Cli::init();
    let admin = cli.json(&["create", "--name", "admin", "--role", "admin", "--json"]);
    let key = admin["key"].as_str().expect("key");
    let sidecar = Sidecar::start(&cli);
    let answer = exchange(
        sidecar.addr,
        &format!("GET /v1/api-keys/%FF%FE HTTP/1.1\r\nAuthorization: Bearer {key}"),
        0,
    );
    let doc = answer.envelope_error(400, "BAD_REQUEST");
    assert!(!doc.to_string().contains(key), "{doc}");
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{stderr}");
}
