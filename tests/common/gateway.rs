//! What the forward-auth tests need around `credstore serve`: a raw HTTP/1.1 client that
//! can choose its source address and headers, a tiny upstream that echoes the head of every
//! request it gets, and a real nginx running `examples/nginx/` on free loopback ports.
//!
//! nginx comes from the distribution's packages (`scripts/install-test-deps.sh`, run by
//! `.ci/run`). Where it is missing, [`Nginx::start`] returns `None` and says `SKIPPED` on
//! stderr; under `CI=true` it panics instead: the gateway test never skips silently there.
//! It is never a system service: each test starts its own, in the foreground, with its
//! own configuration, pid file and logs in a temporary directory, and kills it on drop.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
// Each test binary uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// An answer: status, headers (names lower-cased, in order), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a header.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// A problem document of `status` with `code`.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "{self:#?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:#?}"
        );
        let doc = self.json();
        assert_eq!(doc["status"], status, "{doc}");
        assert_eq!(doc["code"], code, "{doc}");
        doc
    }
}

/// One request on a fresh connection (`Connection: close`), from `from` (a loopback
/// address other than 127.0.0.1, say) when given.
pub fn send(to: SocketAddr, from: Option<IpAddr>, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = connect(to, from);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read answer");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

fn connect(to: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    let Some(from) = from else {
        return TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
    };
    // std cannot bind before it connects; tokio's socket can, and hands the stream over.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = match from {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("socket");
        socket.bind(SocketAddr::new(from, 0)).expect("bind the source address");
        socket.connect(to).await.expect("connect")
    });
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
}

/// An upstream on a free loopback port that answers every request 200 with the request's
/// head (request line and headers) as its body; it serves until the test process ends.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || echo(stream));
            }
        });
        Upstream { addr, hits }
    }

    /// Requests it has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        head.len()
    );
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.write_all(&head);
}

/// nginx running `examples/nginx/credstore-gateway.conf` between a client, `credstore
/// serve` and an upstream; killed on drop.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx in front of `upstream`, asking `credstore`; `None` (with `SKIPPED` on
    /// stderr) when nginx is not installed and this is not CI.
    pub fn start(credstore: SocketAddr, upstream: SocketAddr) -> Option<Nginx> {
        let Some(bin) = find_nginx() else {
            let why = "nginx is not installed (run scripts/install-test-deps.sh)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}: the gateway test needs it under CI");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        };
        // A free port can be taken between our look and nginx's bind: try again then.
        let mut last_error = String::new();
        for _ in 0..5 {
            match Nginx::try_start(&bin, credstore, upstream) {
                Ok(nginx) => return Some(nginx),
                Err(log) => last_error = log,
            }
        }
        panic!("nginx did not start:\n{last_error}");
    }

    fn try_start(bin: &Path, credstore: SocketAddr, upstream: SocketAddr) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx");
        let gateway = std::fs::read_to_string(examples.join("credstore-gateway.conf")).expect("read the example");
        let gateway = replace_once(&gateway, "server 127.0.0.1:8080;", &format!("server {credstore};"));
        let gateway = replace_once(&gateway, "server 127.0.0.1:9000;", &format!("server {upstream};"));
        let gateway = replace_once(&gateway, "listen 127.0.0.1:8000;", &format!("listen {addr};"));
        std::fs::write(dir.path().join("credstore-gateway.conf"), gateway).expect("write config");
        std::fs::copy(
            examples.join("credstore-rate-limit-headers.conf"),
            dir.path().join("credstore-rate-limit-headers.conf"),
        )
        .expect("copy the snippet");
        let d = dir.path().display();
        // The workers of a root master run as `nobody`, which cannot enter a 0700 temp dir.
        let user = if is_root() { "user root;" } else { "" };
        let main = format!(
            "{user}
worker_processes 1;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/credstore-gateway.conf;
}}
"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main).expect("write nginx.conf");
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-g")
            .arg(format!("daemon off; pid {d}/nginx.pid;"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited ({status}):\n{log}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(Nginx { child, addr, dir });
            }
            if Instant::now() > deadline {
                // Dropped: stopped as in `Drop`.
                drop(Nginx { child, addr, dir });
                return Err("nginx did not listen within 30 s".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// nginx's error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGTERM first: the master stops its workers (SIGKILL would leave them orphaned,
    /// holding the port); SIGKILL if it has not exited within 10 s.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[track_caller]
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "examples/nginx/credstore-gateway.conf should hold `{from}` once"
    );
    text.replacen(from, to, 1)
}

fn find_nginx() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"));
    on_path.chain([PathBuf::from("/usr/sbin/nginx")]).find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
