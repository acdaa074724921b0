//! Key formats that share a prefix (DESIGN.md "Key format" and the CLI contract): a
//! presented key is refused for its most specific fault, a new key names the registered
//! format it is issued in (by its random or its total length), and a further format for a
//! prefix is registered only when asked for.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use credstore::{Code, Env, Format, Malformed, NewKey};
use serde_json::{Value, json};

mod common;
use common::{Cli, Fixture, Sidecar, http};

/// A key with the character at byte `at` replaced by `with`.
fn with_char(key: &str, at: usize, with: &str) -> String {
    let mut bad = key.to_string();
    bad.replace_range(at..=at, with);
    bad
}

/// Issue 17, item 5: with two `comp_` formats (32 characters without a checksum, 43 with
/// one), a 32-character `comp_` key with a `!` in it has an invalid character; that it
/// is also the wrong length for the longer format is no news.
#[test]
fn a_key_is_refused_for_its_most_specific_fault_where_formats_share_its_prefix() {
    let fx = Fixture::new();
    let store = fx.init();
    let short = Format::new("comp_", Env::Live, 27, false).expect("format");
    let long = Format::new("comp_", Env::Live, 32, true).expect("format");
    let a = store.create(NewKey::new("short").format(short)).expect("create");
    let b = store.create(NewKey::new("long").format(long)).expect("create");
    let (a, b) = (a.key.expose().to_string(), b.key.expose().to_string());
    assert_eq!((a.len(), b.len()), (32, 43));
    let reason = |key: &str| {
        let d = store.verify(key).expect("verify");
        assert_eq!(d.code, Code::Malformed, "{key}");
        d.malformed.expect("a reason")
    };
    // Either format's key, a bad character anywhere after the prefix.
    for key in [&a, &b] {
        for at in [5, 12, key.len() - 1] {
            assert_eq!(
                reason(&with_char(key, at, "!")),
                Malformed::BadAlphabet,
                "{key} at {at}"
            );
        }
    }
    // The long key with a typo: its checksum fails, whatever the short format says.
    let last = b.len() - 1;
    let typo = with_char(&b, 10, if &b[10..11] == "a" { "b" } else { "a" });
    assert_eq!(reason(&typo), Malformed::BadChecksum);
    // A length neither format has is still the wrong length.
    assert_eq!(reason(&a[..31]), Malformed::WrongLength);
    assert_eq!(reason(&format!("{}!", &b[..last])), Malformed::BadAlphabet);
    assert_eq!(reason(&format!("{b}x")), Malformed::WrongLength);
    // And both keys verify.
    assert!(store.verify(&a).expect("verify").is_valid());
    assert!(store.verify(&b).expect("verify").is_valid());
    store.close().expect("close");
}

/// `create --json` with these extra arguments, and its document.
#[track_caller]
fn create(cli: &Cli, name: &str, extra: &[&str]) -> Value {
    let mut args = vec!["create", "--name", name, "--json"];
    args.extend_from_slice(extra);
    cli.json(&args)
}

fn key_of(doc: &Value) -> String {
    doc["key"].as_str().expect("key").to_string()
}

/// The `format.registered` events of `prefix`, as (random length, checksum).
fn registered(cli: &Cli, prefix: &str) -> Vec<(u64, bool)> {
    let events = cli.json(&["audit", "--kind", "format.registered", "--json"]);
    events
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["details"]["prefix"] == prefix)
        .map(|e| {
            let d = &e["details"];
            (
                d["random_len"].as_u64().expect("random_len"),
                d["checksum"].as_bool().expect("checksum"),
            )
        })
        .collect()
}

fn event_count(cli: &Cli) -> usize {
    cli.json(&["audit", "--json"]).as_array().expect("array").len()
}

/// Issue 17, item 15: a 32-character `comp_` key is asked for as such.
#[test]
fn a_new_key_is_asked_for_by_its_total_length() {
    let cli = Cli::init();
    let first = create(
        &cli,
        "client",
        &["--prefix", "comp_", "--total-length", "32", "--no-checksum"],
    );
    let key = key_of(&first);
    assert!(key.starts_with("comp_") && key.len() == 32, "{first}");
    assert_eq!(registered(&cli, "comp_"), [(27, false)]);
    // The registered format, named by its total length, with or without --no-checksum.
    for extra in [&[][..], &["--no-checksum"][..]] {
        let mut args = vec!["--prefix", "comp_", "--total-length", "32"];
        args.extend_from_slice(extra);
        let key = key_of(&create(&cli, "again", &args));
        assert_eq!(key.len(), 32, "{key}");
    }
    assert_eq!(registered(&cli, "comp_"), [(27, false)]);
    // A new prefix by total length, with the checksum: 42 = 4 + 32 + 6.
    let cmp = key_of(&create(&cli, "cmp", &["--prefix", "cmp_", "--total-length", "42"]));
    assert_eq!(cmp.len(), 42);
    assert_eq!(registered(&cli, "cmp_"), [(32, true)]);
    assert_eq!(cli.run(&["verify", &cmp]).code, Some(0));

    // A total length that leaves too few random characters: exit 2, nothing written, and
    // the message does the arithmetic.
    let events = event_count(&cli);
    let run = cli.run(&["create", "--name", "x", "--prefix", "new_", "--total-length", "31"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("total length 31 leaves 21 random characters") && run.stderr.contains("--no-checksum"),
        "{run:?}"
    );
    let run = cli.run(&["create", "--name", "x", "--length", "27", "--total-length", "32"]);
    assert_eq!(run.code, Some(2), "--length and --total-length together: {run:?}");
    assert_eq!(event_count(&cli), events);
}

/// Issue 17, item 15: `--length 32` on a prefix that has a format does not register a
/// second one behind the operator's back.
#[test]
fn a_second_format_for_a_prefix_is_registered_only_when_asked_for() {
    let cli = Cli::init();
    let first = key_of(&create(
        &cli,
        "client",
        &["--prefix", "comp_", "--total-length", "32", "--no-checksum"],
    ));
    let events = event_count(&cli);
    for shape in [
        &["--length", "32"][..],
        &["--total-length", "43"][..],
        &["--length", "27"][..],
    ] {
        let mut args = vec!["create", "--name", "other shape", "--prefix", "comp_"];
        args.extend_from_slice(shape);
        let run = cli.run(&args);
        if shape == ["--length", "27"] {
            // Without --no-checksum, 27 random characters name the registered format.
            assert_eq!(run.code, Some(0), "{run:?}");
            continue;
        }
        assert_eq!(run.code, Some(2), "{shape:?}: {run:?}");
        assert!(
            run.stderr
                .contains("comp_ + 27 random, no checksum (32 characters, live)")
                && run.stderr.contains("--new-format"),
            "{run:?}"
        );
    }
    assert_eq!(
        event_count(&cli),
        events + 1,
        "only the create that named the format wrote"
    );
    assert_eq!(registered(&cli, "comp_"), [(27, false)]);

    // Asked for explicitly: a second format.
    let second = key_of(&create(
        &cli,
        "longer",
        &["--prefix", "comp_", "--length", "32", "--new-format"],
    ));
    assert_eq!(second.len(), 5 + 32 + 6);
    assert_eq!(registered(&cli, "comp_"), [(27, false), (32, true)]);
    // From now on a create names one of the two.
    let run = cli.run(&["create", "--name", "which", "--prefix", "comp_"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("2 formats") && run.stderr.contains("--total-length"),
        "{run:?}"
    );
    assert_eq!(
        key_of(&create(&cli, "short", &["--prefix", "comp_", "--total-length", "32"])).len(),
        32
    );
    assert_eq!(
        key_of(&create(&cli, "long", &["--prefix", "comp_", "--total-length", "43"])).len(),
        43
    );
    for key in [&first, &second] {
        assert_eq!(cli.run(&["verify", key]).code, Some(0));
    }
}

/// The sidecar's create takes the same rule: `total_length`, and `new_format` to ask for
/// a further format.
#[test]
fn the_sidecar_creates_by_total_length_and_registers_a_second_format_only_when_asked() {
    let cli = Cli::init();
    let admin = cli.json(&["create", "--name", "admin", "--role", "admin", "--json"]);
    let auth = format!("Bearer {}", key_of(&admin));
    let sidecar = Sidecar::start(&cli);
    let post = |body: Value| http(sidecar.addr, "POST", "/v1/api-keys", Some(&auth), Some(&body)).expect("answer");

    let first = post(json!({"name": "a", "prefix": "comp_", "total_length": 32, "checksum": false}));
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["data"]["key"].as_str().expect("key").len(), 32);
    let refused = post(json!({"name": "b", "prefix": "comp_", "length": 32}));
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.body["error"]["code"], "INVALID_INPUT");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("new_format")),
        "{refused:?}"
    );
    let both = post(json!({"name": "b", "prefix": "comp_", "length": 27, "total_length": 32}));
    assert_eq!(both.status, 400, "{both:?}");
    let second = post(json!({"name": "b", "prefix": "comp_", "length": 32, "new_format": true}));
    assert_eq!(second.status, 201, "{second:?}");
    assert_eq!(second.body["data"]["key"].as_str().expect("key").len(), 43);
    let by_total = post(json!({"name": "c", "prefix": "comp_", "total_length": 32}));
    assert_eq!(by_total.status, 201, "{by_total:?}");
    assert_eq!(by_total.body["data"]["key"].as_str().expect("key").len(), 32);
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{stderr}");
}
