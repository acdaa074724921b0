//! Secret-shaped input in error messages, shared by the input checks (`policy_checks.rs`,
//! `time_checks.rs`, `http_checks.rs`) through `#[path]`, as they are.
//!
//! A key pasted in the wrong field (an allowlist, an expiry, a query parameter) must not
//! come back in the error, which ends up in logs and in HTTP answers. Each parser of
//! untrusted text says, in its module's [`TextParser`] table, whether its refusals repeat
//! the input today ([`Echo::Repeats`]) or never do ([`Echo::Never`]); the fuzz checks
//! assert the latter on every refused input, and `tests/fuzz_corpus.rs` keeps the tables
//! true (a parser marked `Repeats` that stops repeating must become `Never`, so that the
//! fix is defended from then on).
#![allow(dead_code)]

/// The key prefixes of the seed formats (`checks::seed_formats`).
pub const KEY_PREFIXES: [&str; 4] = ["sk_live_", "sk_test_", "cmp_", "comp_"];

/// The shortest run of base62 characters after a key prefix counted as secret-shaped:
/// long enough that no error message holds one by chance.
pub const MIN_SECRET_RUN: usize = 16;

/// A key of the `sk_live_` shape (not a key of any store): the probe the echo tables are
/// checked with.
pub const PROBE_KEY: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc2Xk0Yb9mVn";

/// Whether a parser's refusals repeat its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// The error message never holds the input.
    Never,
    /// The error message quotes the input (or part of it), today.
    Repeats,
}

/// A parser of untrusted text as the echo checks see it.
pub struct TextParser {
    /// How the report names it (`Permission::parse`).
    pub name: &'static str,
    /// What its refusals do today.
    pub echo: Echo,
    /// Parses `text`: `None` if accepted, else the refusal's message as a caller shows it.
    pub refuse: fn(&str) -> Option<String>,
}

/// The secret-shaped runs in `text`: each key prefix followed by at least
/// [`MIN_SECRET_RUN`] base62 characters, as the prefix and its run.
pub fn secret_runs(text: &str) -> Vec<&str> {
    let mut runs = Vec::new();
    for prefix in KEY_PREFIXES {
        let mut from = 0;
        while let Some(at) = text.get(from..).and_then(|t| t.find(prefix)) {
            let start = from + at;
            let body = &text[start + prefix.len()..];
            let len = body.bytes().take_while(u8::is_ascii_alphanumeric).count();
            if len >= MIN_SECRET_RUN {
                runs.push(&text[start..start + prefix.len() + len]);
            }
            from = start + prefix.len();
        }
    }
    runs
}

/// Whether `message` repeats a secret-shaped run of `input` (its random part: a message
/// may name a prefix).
pub fn repeats_secret(input: &str, message: &str) -> bool {
    secret_runs(input).iter().any(|run| {
        let prefix_len = KEY_PREFIXES
            .iter()
            .find(|p| run.starts_with(**p))
            .map_or(0, |p| p.len());
        message.contains(&run[prefix_len..])
    })
}

/// Checks a refusal of `input` by the parser `name`: a parser marked [`Echo::Never`] must
/// not repeat a secret-shaped run of it.
pub fn check_refusal(name: &str, echo: Echo, input: &str, message: &str) {
    if echo == Echo::Never {
        assert!(
            !repeats_secret(input, message),
            "{name} repeats secret-shaped input in its error: {message:?}"
        );
    }
}

/// Runs `parser` on `text` and, if it refuses, checks the refusal (see [`check_refusal`]).
/// Returns whether it refused.
pub fn refuses(parser: &TextParser, text: &str) -> bool {
    match (parser.refuse)(text) {
        None => false,
        Some(message) => {
            check_refusal(parser.name, parser.echo, text, &message);
            true
        }
    }
}

/// Keeps a table true: each parser is given the probe key alone and in the shapes a
/// pasted key takes in its field; a parser marked [`Echo::Repeats`] must repeat it in some
/// refusal (else it was fixed: mark it `Never`), one marked `Never` in none. Returns the
/// names of the parsers that repeat it.
pub fn check_echo_table(table: &[TextParser]) -> Vec<&'static str> {
    let probes = [
        PROBE_KEY.to_string(),
        format!("{PROBE_KEY}!"),
        format!("GET /{PROBE_KEY} x"),
        format!("{PROBE_KEY}/8"),
        format!("{PROBE_KEY}ms"),
    ];
    let mut repeating = Vec::new();
    for parser in table {
        let repeats = probes
            .iter()
            .any(|probe| (parser.refuse)(probe).is_some_and(|message| repeats_secret(probe, &message)));
        match parser.echo {
            Echo::Repeats => assert!(
                repeats,
                "{} no longer repeats a pasted key: mark it Echo::Never so the fuzz check defends that",
                parser.name
            ),
            Echo::Never => assert!(!repeats, "{} repeats a pasted key", parser.name),
        }
        if repeats {
            repeating.push(parser.name);
        }
    }
    repeating
}
