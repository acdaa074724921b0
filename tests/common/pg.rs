//! A private PostgreSQL cluster for the fleet tests: `initdb` in a temporary directory,
//! the server on a Unix socket in it (no TCP port to collide on), run as the `postgres`
//! system user when the tests run as root (PostgreSQL refuses to run as root), stopped
//! when the handle drops. [`PgServer::start_tcp`] also listens on a free loopback TCP
//! port, for the tests that put a proxy (`tests/common/proxy.rs`) in front of it.
//!
//! PostgreSQL comes from the distribution's packages (`scripts/install-test-deps.sh`,
//! run by `.ci/run`). Where it is missing, [`PgServer::start`] returns `None` and says
//! so on stderr; under `CI=true` it panics instead: a fleet test never skips silently there.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// A running cluster; stopped (immediately) on drop.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
    /// The server's options (`pg_ctl -o`), the same at every (re)start.
    options: String,
    /// The loopback TCP port it listens on too, if any.
    port: Option<u16>,
}

impl PgServer {
    /// Whether PostgreSQL's server programs are installed (`initdb`, `pg_ctl`).
    pub fn available() -> bool {
        find_bin().is_some()
    }

    /// Starts a fresh cluster, or `None` (with the reason on stderr) when PostgreSQL is not
    /// installed and this is not CI. It runs with `fsync=off`: the tests check behaviour,
    /// not durability of the database's own files.
    pub fn start() -> Option<PgServer> {
        PgServer::start_with(false)
    }

    /// [`PgServer::start`], with `fsync` on (as a production server runs) when `fsync`:
    /// the benchmarks measure what a commit costs.
    pub fn start_with(fsync: bool) -> Option<PgServer> {
        PgServer::start_on(fsync, false)
    }

    /// [`PgServer::start`], listening on a free port of 127.0.0.1 too ([`PgServer::port`]),
    /// besides its Unix socket.
    pub fn start_tcp() -> Option<PgServer> {
        PgServer::start_on(false, true)
    }

    fn start_on(fsync: bool, tcp: bool) -> Option<PgServer> {
        let Some(bin) = find_bin() else {
            let why = "PostgreSQL is not installed (run scripts/install-test-deps.sh)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}: the fleet tests need it under CI");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "credstore-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {dir:?}: {e}"));
        // A port the kernel just handed out and took back: free unless another process
        // grabs it in the moment before the server binds it.
        let port = tcp.then(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("a free loopback port: {e}"))
        });
        let listen = match port {
            Some(port) => format!("-c listen_addresses='127.0.0.1' -p {port}"),
            None => "-c listen_addresses=''".to_string(),
        };
        let options = format!(
            "-k {} {listen} -c fsync={} -c max_connections=200",
            dir.display(),
            if fsync { "on" } else { "off" }
        );
        let server = PgServer {
            bin,
            dir,
            as_postgres,
            options,
            port,
        };
        if as_postgres {
            server.run(
                "chown",
                &[
                    "-R".into(),
                    "postgres:postgres".into(),
                    server.dir.display().to_string(),
                ],
                false,
            );
        }
        let data = server.data().display().to_string();
        server.run_pg(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "credstore", "--no-sync", "-E", "UTF8"],
        );
        server.pg_ctl_start();
        Some(server)
    }

    /// The connection URL of the cluster's `postgres` database as user `credstore`.
    pub fn url(&self) -> String {
        self.socket_url("postgres")
    }

    /// The loopback TCP port the server listens on; panics unless it was started with
    /// [`PgServer::start_tcp`].
    pub fn port(&self) -> u16 {
        self.port
            .unwrap_or_else(|| panic!("this server listens on its Unix socket only"))
    }

    /// The URL of the `postgres` database at 127.0.0.1:`port`: the server's own
    /// [`PgServer::port`], or a proxy's in front of it.
    pub fn tcp_url(&self, port: u16) -> String {
        format!("postgresql://credstore@127.0.0.1:{port}/postgres")
    }

    /// Creates database `name` (owned by `credstore`) and returns its URL, over the Unix
    /// socket: a fresh, empty fleet in the same cluster.
    pub fn create_database(&self, name: &str) -> String {
        let socket = self.dir.display().to_string();
        let port = self.socket_port().to_string();
        self.run_pg("createdb", &["-h", &socket, "-p", &port, "-U", "credstore", name]);
        self.socket_url(name)
    }

    /// The URL of database `db` over the Unix socket. The socket's name carries the port
    /// (`.s.PGSQL.PORT`), so a server on a TCP port has its socket under that port too.
    fn socket_url(&self, db: &str) -> String {
        let dir = self.dir.display();
        match self.port {
            Some(port) => format!("postgresql://credstore@localhost:{port}/{db}?host={dir}"),
            None => format!("postgresql://credstore@localhost/{db}?host={dir}"),
        }
    }

    /// The port in the Unix socket's name: PostgreSQL's default unless it listens on TCP.
    fn socket_port(&self) -> u16 {
        self.port.unwrap_or(5432)
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn kill(&self) {
        let data = self.data().display().to_string();
        self.run_pg("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// Starts it again after [`PgServer::kill`], with the options it first started with
    /// (the same socket, port and settings).
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    fn pg_ctl_start(&self) {
        let data = self.data().display().to_string();
        let log = self.dir.join("server.log").display().to_string();
        self.run_pg(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &self.options, "-w", "-t", "60", "start"],
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run_pg(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool).display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.run(&program, &args, self.as_postgres);
    }

    fn run(&self, program: &str, args: &[String], as_postgres: bool) {
        let mut command = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            Command::new(program)
        };
        let out = command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}\nserver log:\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let program = self.bin.join("pg_ctl").display().to_string();
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            Command::new(&program)
        };
        // A server already stopped (a test killed it) makes this fail: nothing to do.
        let _ = command.args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of `initdb` and `pg_ctl`: on PATH, else Debian's versioned directory.
fn find_bin() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
