//! `credstore usage` shows the anomalies of its subject and range: a section under the
//! table, and `"anomalies"` in `--json`; the same through a running server's socket. The
//! anomaly here is the one a one-shot CLI can raise with the real clock: a revoked key
//! presented again (the store logs what the detector found when it closes).

mod common;

use common::Cli;

#[test]
fn usage_shows_a_dead_key_presented_in_its_table_and_json() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "old", "--json"]);
    let id = created["id"].as_str().expect("id").to_string();
    let key = created["key"].as_str().expect("key").to_string();
    cli.ok(&["revoke", &id, "--yes"]);
    let quiet = cli.ok(&["usage", &id, "--by", "hour", "--since", "1h"]).stdout;
    assert!(!quiet.contains("Anomalies"), "none yet:\n{quiet}");
    for _ in 0..3 {
        let run = cli.run(&["verify", &key]);
        assert_eq!(run.code, Some(1), "{run:?}");
    }

    let doc = cli.json(&["usage", &id, "--by", "hour", "--since", "1h", "--json"]);
    let anomalies = doc["anomalies"].as_array().expect("anomalies");
    // Each one-shot verify is a new process, with a detector of its own: each raised its
    // own; what matters here is that usage shows them, with their figures.
    assert!(!anomalies.is_empty(), "{doc}");
    assert!(
        anomalies
            .iter()
            .all(|a| a["reason"] == "dead_key_presented" && a["key_id"] == id.as_str()),
        "{doc}"
    );
    assert_eq!(anomalies[0]["observed"], 1);

    let table = cli.ok(&["usage", &id, "--by", "hour", "--since", "1h"]).stdout;
    assert!(table.contains("Anomalies ("), "{table}");
    assert!(table.contains("dead_key_presented"), "{table}");
    // The whole store's usage shows it too; another key's does not.
    let all = cli.json(&["usage", "--all", "--by", "hour", "--since", "1h", "--json"]);
    assert_eq!(all["anomalies"].as_array().expect("anomalies").len(), anomalies.len());
    let other = cli.json(&["create", "--name", "other", "--json"]);
    let other_id = other["id"].as_str().expect("id");
    let of_other = cli.json(&["usage", other_id, "--by", "hour", "--since", "1h", "--json"]);
    assert_eq!(of_other["anomalies"], serde_json::json!([]));
    // An anomaly event is in audit like any event of the key.
    let audit = cli.json(&["audit", "--key", &id, "--kind", "key.anomaly", "--json"]);
    assert_eq!(audit.as_array().expect("events").len(), anomalies.len(), "{audit}");
}

#[cfg(feature = "http")]
#[test]
fn usage_through_a_running_server_shows_anomalies_too() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "old", "--json"]);
    let id = created["id"].as_str().expect("id").to_string();
    let key = created["key"].as_str().expect("key").to_string();
    cli.ok(&["revoke", &id, "--yes"]);
    let sidecar = common::Sidecar::start(&cli);
    // Through the server: one detector, so presenting the key again and again is one
    // episode; the flusher logs it within a flush interval.
    for _ in 0..5 {
        assert_eq!(cli.run(&["verify", &key]).code, Some(1));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let doc = loop {
        let doc = cli.json(&["usage", &id, "--by", "hour", "--since", "1h", "--json"]);
        if !doc["anomalies"].as_array().expect("anomalies").is_empty() {
            break doc;
        }
        assert!(std::time::Instant::now() < deadline, "no anomaly logged: {doc}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (_, stderr) = sidecar.stop();
    let anomalies = doc["anomalies"].as_array().expect("anomalies");
    assert_eq!(anomalies.len(), 1, "one episode: {doc}\n{stderr}");
    assert_eq!(anomalies[0]["reason"], "dead_key_presented");
}
