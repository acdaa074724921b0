//! The properties the `webhook_input` target defends, shared word for word by the target
//! (`fuzz/fuzz_targets/webhook_input.rs`, via `#[path]`) and by `tests/fuzz_corpus.rs`,
//! which runs every seed in `fuzz/corpus/webhook_input/` through them. The parsers take
//! what `webhook add` and `POST /v1/webhooks` are given: untrusted text.
//!
//! An input is a selector byte and the rest (text, UTF-8 lossily):
//!
//! | byte | input | parser |
//! | --- | --- | --- |
//! | `u` | a URL | `WebhookUrl::parse` |
//! | `k` | event kinds, comma-separated | `EventKinds::parse` |
//! | `i` | a webhook id | `WebhookId::parse` |
//! | `s` | a signing secret (`whsec_` + base64) | `webhook::secret_bytes`, then `sign` |
//!
//! A URL accepted is `http://` or `https://` with a host, no user info, a path from `/`, a
//! port from 1 to 65535 to connect to (443 by default for https), and parses again to the
//! same; an https one has a TLS server name (its host) and an http one none. Kinds accepted are `*` or dotted
//! lowercase words, none of them `webhook.*`, and each matches itself and no `webhook.*`
//! kind. An id is accepted exactly when it is `wh_` and 16 lowercase hex digits. A secret
//! accepted formats back to the same text and signs as `v1,` and 44 base64 characters. No
//! refusal repeats secret-shaped input (every parser here is [`Echo::Never`]).

#![expect(
    clippy::indexing_slicing,
    reason = "a fuzz check reports a finding by panicking, as libFuzzer expects"
)]
#![allow(dead_code)]

use credstore::InputError;
use credstore::webhook::{self, EventKinds, Scheme, WebhookId, WebhookUrl};

use super::secret_echo::{self, Echo, TextParser};

/// Which parser an input goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookInput {
    Url,
    Kinds,
    Id,
    Secret,
}

impl WebhookInput {
    const ALL: [WebhookInput; 4] = [
        WebhookInput::Url,
        WebhookInput::Kinds,
        WebhookInput::Id,
        WebhookInput::Secret,
    ];

    /// The parser a selector byte picks.
    pub fn from_selector(byte: u8) -> WebhookInput {
        match byte {
            b'u' => WebhookInput::Url,
            b'k' => WebhookInput::Kinds,
            b'i' => WebhookInput::Id,
            b's' => WebhookInput::Secret,
            other => WebhookInput::ALL[usize::from(other) % WebhookInput::ALL.len()],
        }
    }
}

/// The webhook parsers of untrusted text and what their refusals do with it.
pub fn text_parsers() -> Vec<TextParser> {
    fn message<T>(r: Result<T, InputError>) -> Option<String> {
        r.err().map(|e| e.to_string())
    }
    vec![
        TextParser {
            name: "WebhookUrl::parse",
            echo: Echo::Never,
            refuse: |s| message(WebhookUrl::parse(s)),
        },
        TextParser {
            name: "EventKinds::parse",
            echo: Echo::Never,
            refuse: |s| message(EventKinds::parse(&kinds_of(s))),
        },
        TextParser {
            name: "WebhookId::parse",
            echo: Echo::Never,
            refuse: |s| message(WebhookId::parse(s)),
        },
        TextParser {
            name: "webhook::secret_bytes",
            echo: Echo::Never,
            refuse: |s| message(webhook::secret_bytes(s)),
        },
    ]
}

/// Every check on one input (see the module docs). Returns whether the parser accepted it.
pub fn check_webhook_input(data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else {
        return false;
    };
    check_webhook_text(WebhookInput::from_selector(selector), &String::from_utf8_lossy(rest))
}

/// [`check_webhook_input`] for one parser.
pub fn check_webhook_text(input: WebhookInput, text: &str) -> bool {
    let (accepted, refusal) = match input {
        WebhookInput::Url => check_url(text),
        WebhookInput::Kinds => check_kinds(text),
        WebhookInput::Id => check_id(text),
        WebhookInput::Secret => check_secret(text),
    };
    if let Some(message) = refusal {
        let parser = &text_parsers()[WebhookInput::ALL.iter().position(|i| *i == input).unwrap_or(0)];
        secret_echo::check_refusal(parser.name, parser.echo, text, &message);
    }
    accepted
}

fn kinds_of(text: &str) -> Vec<&str> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').collect()
    }
}

fn refused<T>(r: Result<T, InputError>) -> (bool, Option<String>) {
    match r {
        Ok(_) => (true, None),
        Err(e) => {
            assert!(matches!(e, InputError::InvalidWebhook(_)), "not InvalidWebhook: {e:?}");
            (false, Some(e.to_string()))
        }
    }
}

fn check_url(text: &str) -> (bool, Option<String>) {
    let parsed = WebhookUrl::parse(text);
    if let Ok(url) = &parsed {
        assert!(text.len() <= webhook::MAX_URL_LEN);
        let https = text.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        assert!(
            https || text.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")),
            "{text:?}"
        );
        assert_eq!(url.scheme() == Scheme::Https, https, "{text:?}");
        assert_eq!(url.server_name().is_some(), https, "{text:?}");
        assert!(!text.bytes().any(|b| b.is_ascii_control() || b == b' '), "{text:?}");
        let authority = url.authority();
        assert!(
            !authority.is_empty() && !authority.contains(['@', '/', '?', '#']),
            "{text:?}"
        );
        assert!(url.path().starts_with('/') && !url.path().contains('#'), "{text:?}");
        let target = url.connect_to();
        let (host, port) = target
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("no port in {target:?}"));
        assert!(!host.is_empty(), "{text:?}");
        assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "port {port:?} of {text:?}");
        if !authority.ends_with(']') && !authority.contains(':') {
            assert_eq!(port, url.scheme().default_port().to_string(), "{text:?}");
        }
        assert_eq!(
            WebhookUrl::parse(url.as_str()).as_ref(),
            Ok(url),
            "{text:?} parses again"
        );
    }
    refused(parsed)
}

fn check_kinds(text: &str) -> (bool, Option<String>) {
    let list = kinds_of(text);
    let parsed = EventKinds::parse(&list);
    if let Ok(kinds) = &parsed {
        assert!(!kinds.as_slice().is_empty() && kinds.as_slice().len() <= webhook::MAX_KINDS);
        for kind in kinds.as_slice() {
            assert!(!kind.starts_with("webhook."), "{kind:?}");
            let word = |w: &str| {
                !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            };
            assert!(kind == "*" || kind.split('.').all(word), "{kind:?}");
            if kind != "*" {
                assert!(kinds.matches(kind), "{kind:?} does not match itself");
            }
        }
        assert!(!kinds.matches("webhook.attempt"));
        assert_eq!(
            kinds.matches("key.created"),
            list.iter().any(|k| *k == "*" || *k == "key.created")
        );
    }
    refused(parsed)
}

fn check_id(text: &str) -> (bool, Option<String>) {
    let reference = text.len() == 19
        && text.starts_with("wh_")
        && text
            .bytes()
            .skip(3)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let parsed = WebhookId::parse(text);
    assert_eq!(parsed.is_ok(), reference, "{text:?}");
    if let Ok(id) = &parsed {
        assert_eq!(id.as_str(), text);
    }
    refused(parsed)
}

fn check_secret(text: &str) -> (bool, Option<String>) {
    let parsed = webhook::secret_bytes(text);
    if let Ok(bytes) = &parsed {
        let canonical = if text.starts_with(webhook::SECRET_PREFIX) {
            text.to_string()
        } else {
            format!("{}{text}", webhook::SECRET_PREFIX)
        };
        assert_eq!(webhook::secret_text(bytes), canonical, "{text:?} formats back");
        let signature = webhook::sign(bytes, "msg_1", 1, b"{}");
        assert!(signature.starts_with("v1,") && signature.len() == 47, "{signature:?}");
    }
    refused(parsed)
}
