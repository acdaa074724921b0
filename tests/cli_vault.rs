//! `credstore vault`: secrets read from stdin, listed without values, rotated by a put, the
//! master key rotated by rewrapping; no secret in any file or in any output but `get`.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Cli, Sidecar, http};
use serde_json::json;

const SECRET: &str = "sk-provider-VAULT-CLI-7f3a9c1e5b";
const ROTATED: &str = "sk-provider-VAULT-CLI-rotated-2d8e";

fn run(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_credstore"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("CREDSTORE_PEPPER")
        .env_remove("CREDSTORE_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn vault_round_trip_rotation_and_no_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert!(run(&data, &["init"], None).status.success());
    let mut outputs = Vec::new();
    let put = run(
        &data,
        &["vault", "put", "openai", "--project", "acme", "--json"],
        Some(&format!("{SECRET}\n")),
    );
    assert!(put.status.success(), "{}", text(&put));
    let doc: serde_json::Value = serde_json::from_slice(&put.stdout).unwrap();
    assert_eq!(
        (doc["version"].as_u64(), doc["project"].as_str()),
        (Some(1), Some("acme"))
    );
    outputs.push(text(&put));
    let got = run(&data, &["vault", "get", "openai", "--project", "acme"], None);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim_end(), SECRET);
    // Rotating the provider key is a put: the next get returns it.
    let put2 = run(&data, &["vault", "put", "openai", "--project", "acme"], Some(ROTATED));
    assert!(put2.status.success());
    outputs.push(text(&put2));
    let got = run(&data, &["vault", "get", "openai", "--project", "acme"], None);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim_end(), ROTATED);
    let old = run(
        &data,
        &["vault", "get", "openai", "--project", "acme", "--version", "1"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&old.stdout).trim_end(), SECRET);
    let list = run(&data, &["vault", "list", "--json"], None);
    let docs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(docs.as_array().unwrap().len(), 2);
    outputs.push(text(&list));
    let rotate = run(&data, &["vault", "rotate-master", "--generate", "--retire-old"], None);
    assert!(rotate.status.success(), "{}", text(&rotate));
    outputs.push(text(&rotate));
    let got = run(&data, &["vault", "get", "openai", "--project", "acme"], None);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim_end(), ROTATED);
    let list = run(&data, &["vault", "list", "--json"], None);
    let docs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(docs.as_array().unwrap().iter().all(|d| d["master_version"] == 2));
    for args in [&["audit", "--json"][..], &["audit", "export"], &["list", "--json"]] {
        outputs.push(text(&run(&data, args, None)));
    }
    for out in &outputs {
        assert!(
            !out.contains(SECRET) && !out.contains(ROTATED),
            "a secret in output: {out}"
        );
    }
    for file in walk(&data) {
        let bytes = std::fs::read(&file).unwrap();
        for s in [SECRET, ROTATED] {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} in {}",
                file.display()
            );
        }
    }
    // Bad input: exit 2, nothing written.
    let before = run(&data, &["vault", "list", "--json"], None).stdout;
    for (args, input) in [
        (&["vault", "put", "empty"][..], ""),
        (&["vault", "put", "bad name!"], "x"),
        (&["vault", "get", "missing"], ""),
        (&["vault", "get", "openai", "--project", "acme", "--version", "9"], ""),
    ] {
        let out = run(&data, args, Some(input));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    assert_eq!(run(&data, &["vault", "list", "--json"], None).stdout, before);
    assert!(
        run(&data, &["vault", "delete", "openai", "--project", "acme"], None)
            .status
            .success()
    );
    assert_eq!(
        run(&data, &["vault", "get", "openai", "--project", "acme"], None)
            .status
            .code(),
        Some(2)
    );
}

/// Issue 17, item 2: once the vault held a secret, every command failed without the
/// master key, so a verifying sidecar had to hold the vault key. Only the vault's own
/// operations need it.
#[test]
fn only_vault_commands_need_the_master_key() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "svc", "--json"]);
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let put = cli.run_with_stdin(&["vault", "put", "openai"], SECRET);
    assert_eq!(put.code, Some(0), "{put:?}");
    // The host that verifies keys holds no vault key: the development store's
    // `master.key` is taken away, and CREDSTORE_MASTER_KEY is not set.
    let kept = cli.tmp.path().join("master.key.kept");
    std::fs::rename(cli.data.join("master.key"), &kept).unwrap();
    for args in [
        &["list", "--json"][..],
        &["show", id.as_str()],
        &["verify", key.as_str()],
        &["role", "set", "support", "--permission", "tickets:read"],
        &["user", "set", "dana", "--member", "default=support"],
        &["plan", "list"],
        &["audit", "--json"],
        &["vault", "list", "--json"],
    ] {
        cli.ok(args);
    }
    let sidecar = Sidecar::start(&cli);
    let reply = http(
        sidecar.addr,
        "POST",
        "/v1/keys.verify",
        None,
        Some(&json!({ "key": key })),
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["data"]["valid"], true, "{reply:?}");
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{stderr}");
    // The vault's own operations refuse with a clear error (exit 2, nothing written).
    for (args, input) in [
        (&["vault", "get", "openai"][..], ""),
        (&["vault", "put", "openai"], "v2"),
    ] {
        let run = cli.run_with_stdin(args, input);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains("CREDSTORE_MASTER_KEY"), "{args:?}: {run:?}");
    }
    // With the key back, the vault opens as before.
    std::fs::rename(&kept, cli.data.join("master.key")).unwrap();
    assert_eq!(cli.ok(&["vault", "get", "openai"]).stdout.trim_end(), SECRET);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
