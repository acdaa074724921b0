//! The properties the `policy_parsers` target defends, shared word for word by the target
//! (`fuzz/fuzz_targets/policy_parsers.rs`, via `#[path]`) and by `tests/fuzz_corpus.rs`,
//! which runs every seed in `fuzz/corpus/policy_parsers/` through them.
//!
//! An input is a selector byte and text (UTF-8, lossily). The selector says which parser
//! the text goes to; the letters are the seeds' (any other byte picks one by its value):
//!
//! | byte | input | parser |
//! | --- | --- | --- |
//! | `p` | a permission | `Permission::parse` |
//! | `q` | a permission query | `PermissionQuery::parse` |
//! | `c` | an IP allowlist entry | `IpAllowlist::new`, `TrustedProxies::new` |
//! | `r` | a referrer pattern | `ReferrerAllowlist::new` |
//! | `h` | a `Referer` / `Origin` header value | `ReferrerAllowlist::allows`, `referrer_host` |
//! | `e` | an endpoint allowlist entry | `EndpointAllowlist::new` |
//! | `m` | a request's `METHOD PATH` | `EndpointAllowlist::allows` |
//! | `g` | a path glob | `PathGlob::parse` |
//! | `o` | a role name | `RoleName::parse` |
//! | `u` | a user id | `validate_user_id`, `User::new` |
//!
//! Each parser must accept exactly what a reference written from its documentation
//! accepts; what it accepts must serialise as the text it was parsed from and parse back
//! equal; and what it answers afterwards must agree with a reference matcher: a
//! permission's grants, a query's verdict and the order it asks for permissions in (the
//! short-circuit walk of its tree), an allowlist entry allowing its own network, host or
//! path and nothing outside it, a glob matching its own instances. A refusal is of the
//! parser's own error kind, and for a parser marked `Echo::Never` in [`text_parsers`] it
//! does not repeat secret-shaped input (`secret_echo.rs`).

#![expect(
    clippy::indexing_slicing,
    reason = "a fuzz check reports a finding by panicking, as libFuzzer expects"
)]
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use credstore::InputError;
use credstore::http::TrustedProxies;
use credstore::policy::{
    EndpointAllowlist, IpAllowlist, MAX_GLOB_LEN, MAX_HOST_LEN, MAX_METHOD_LEN, MAX_PERMISSION_LEN, MAX_QUERY_ATOMS,
    MAX_QUERY_DEPTH, MAX_QUERY_LEN, MAX_ROLE_NAME_LEN, PathGlob, Permission, PermissionQuery, PermissionSet,
    ReferrerAllowlist, RoleName, User, referrer_host, validate_user_id,
};

use super::secret_echo::{self, Echo, TextParser};

/// Which parser an input goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyInput {
    Permission,
    Query,
    Cidr,
    Referrer,
    RefererHeader,
    Endpoint,
    EndpointRequest,
    Glob,
    Role,
    User,
}

impl PolicyInput {
    const ALL: [PolicyInput; 10] = [
        PolicyInput::Permission,
        PolicyInput::Query,
        PolicyInput::Cidr,
        PolicyInput::Referrer,
        PolicyInput::RefererHeader,
        PolicyInput::Endpoint,
        PolicyInput::EndpointRequest,
        PolicyInput::Glob,
        PolicyInput::Role,
        PolicyInput::User,
    ];

    /// The parser a selector byte picks.
    pub fn from_selector(byte: u8) -> PolicyInput {
        match byte {
            b'p' => PolicyInput::Permission,
            b'q' => PolicyInput::Query,
            b'c' => PolicyInput::Cidr,
            b'r' => PolicyInput::Referrer,
            b'h' => PolicyInput::RefererHeader,
            b'e' => PolicyInput::Endpoint,
            b'm' => PolicyInput::EndpointRequest,
            b'g' => PolicyInput::Glob,
            b'o' => PolicyInput::Role,
            b'u' => PolicyInput::User,
            other => PolicyInput::ALL[usize::from(other) % PolicyInput::ALL.len()],
        }
    }
}

/// The policy parsers of untrusted text and what their refusals do with it today.
pub fn text_parsers() -> Vec<TextParser> {
    fn message<T>(r: Result<T, InputError>) -> Option<String> {
        r.err().map(|e| e.to_string())
    }
    vec![
        TextParser {
            name: "Permission::parse",
            echo: Echo::Never,
            refuse: |s| message(Permission::parse(s)),
        },
        TextParser {
            name: "PermissionQuery::parse",
            echo: Echo::Never,
            refuse: |s| message(PermissionQuery::parse(s)),
        },
        TextParser {
            name: "IpAllowlist::new",
            echo: Echo::Never,
            refuse: |s| message(IpAllowlist::new([s])),
        },
        TextParser {
            name: "ReferrerAllowlist::new",
            echo: Echo::Never,
            refuse: |s| message(ReferrerAllowlist::new([s])),
        },
        TextParser {
            name: "EndpointAllowlist::new",
            echo: Echo::Never,
            refuse: |s| message(EndpointAllowlist::new([s])),
        },
        TextParser {
            name: "PathGlob::parse",
            echo: Echo::Never,
            refuse: |s| message(PathGlob::parse(s)),
        },
        TextParser {
            name: "RoleName::parse",
            echo: Echo::Never,
            refuse: |s| message(RoleName::parse(s)),
        },
        TextParser {
            name: "validate_user_id",
            echo: Echo::Never,
            refuse: |s| message(validate_user_id(s)),
        },
    ]
}

fn parser(name: &str) -> TextParser {
    match text_parsers().into_iter().find(|p| p.name == name) {
        Some(p) => p,
        None => panic!("no parser {name} in the table"),
    }
}

/// Every check on one input (see the module docs). Returns whether the parser accepted
/// the text (for `h` and `m`, whether the fixed allowlist allowed the request).
pub fn check_policy_input(data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else {
        return false;
    };
    let text = String::from_utf8_lossy(rest);
    check_policy_text(PolicyInput::from_selector(selector), &text)
}

/// [`check_policy_input`] for a parser and text.
pub fn check_policy_text(input: PolicyInput, text: &str) -> bool {
    match input {
        PolicyInput::Permission => check_permission(text),
        PolicyInput::Query => check_query(text),
        PolicyInput::Cidr => check_cidr(text),
        PolicyInput::Referrer => check_referrer_pattern(text),
        PolicyInput::RefererHeader => check_referer_header(text),
        PolicyInput::Endpoint => check_endpoint_entry(text),
        PolicyInput::EndpointRequest => check_endpoint_request(text),
        PolicyInput::Glob => check_glob(text),
        PolicyInput::Role => check_role(text),
        PolicyInput::User => check_user(text),
    }
}

/// Serialises `value` to JSON and back: it must serialise as `source` (its text, or its
/// list of texts) and come back equal.
fn check_serde<T, S>(value: &T, source: &S)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    S: serde::Serialize + ?Sized,
{
    let json = serde_json::to_string(value).unwrap_or_else(|e| panic!("{value:?} does not serialise: {e}"));
    let expected = serde_json::to_string(source).unwrap_or_else(|e| panic!("source does not serialise: {e}"));
    assert_eq!(json, expected, "{value:?} does not serialise as its source");
    match serde_json::from_str::<T>(&json) {
        Ok(back) => assert_eq!(&back, value, "{json} parses back to another value"),
        Err(e) => panic!("{json} does not parse back: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Permissions

/// Permissions whose grants are checked against every parsed one: wildcards, and names
/// around the 16 bytes the library packs into an integer key (equal up to the 16th byte,
/// then different).
const PERMISSION_PROBES: [&str; 14] = [
    "*",
    "*:*",
    "docs:read",
    "docs:*",
    "*:read",
    "abcdefghijklmnop:read",
    "abcdefghijklmnopq:read",
    "abcdefghijklmnopr:read",
    "abcdefghijklmnop:*",
    "a:abcdefghijklmnop",
    "a:abcdefghijklmnopq",
    "a:abcdefghijklmnopr",
    "*:abcdefghijklmnopq",
    "a.b-c_d:e.f",
];

/// `(resource, action)` of a permission by its definition: `*`, or two segments joined by
/// one `:`, each `*` or one or more of `[a-z0-9_.-]`, at most 64 bytes in all.
fn reference_permission(text: &str) -> Option<(String, String)> {
    if text.is_empty() || text.len() > MAX_PERMISSION_LEN {
        return None;
    }
    if text == "*" {
        return Some(("*".into(), "*".into()));
    }
    let (resource, action) = text.split_once(':')?;
    let segment_ok = |s: &str| {
        s == "*"
            || (!s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')))
    };
    (segment_ok(resource) && segment_ok(action)).then(|| (resource.to_string(), action.to_string()))
}

/// Whether the grant `granted` grants `required`, segment by segment.
fn reference_grants(granted: &(String, String), required: &(String, String)) -> bool {
    (granted.0 == "*" || granted.0 == required.0) && (granted.1 == "*" || granted.1 == required.1)
}

fn check_permission(text: &str) -> bool {
    let expected = reference_permission(text);
    let p = match Permission::parse(text) {
        Ok(p) => p,
        Err(e) => {
            assert!(expected.is_none(), "{text:?} refused ({e}), the reference accepts it");
            assert!(matches!(e, InputError::InvalidPermission(_)), "{text:?}: {e:?}");
            secret_echo::refuses(&parser("Permission::parse"), text);
            return false;
        }
    };
    let Some(segments) = expected else {
        panic!("{text:?} accepted as {p:?}, the reference refuses it");
    };
    assert_eq!(p.as_str(), text);
    assert_eq!(p.to_string(), text);
    assert_eq!((p.resource(), p.action()), (segments.0.as_str(), segments.1.as_str()));
    assert_eq!(p.is_wildcard(), segments.0 == "*" || segments.1 == "*");
    assert_eq!(Permission::from_str(text).as_ref(), Ok(&p));
    check_serde(&p, text);
    // Grants, against fixed probes and against the permission's own neighbours.
    let mut probes: Vec<String> = PERMISSION_PROBES.iter().map(|s| s.to_string()).collect();
    let (r, a) = &segments;
    probes.extend([
        format!("{r}:*"),
        format!("*:{a}"),
        format!("{r}x:{a}"),
        format!("{r}:{a}x"),
        format!("{}:{a}", &r[..r.len().saturating_sub(1).max(1)]),
        format!("{r}:{}", &a[..a.len().saturating_sub(1).max(1)]),
    ]);
    let alone = PermissionSet::new([p.clone()]);
    let mut parsed = Vec::new();
    for probe in &probes {
        let (Ok(q), Some(q_segments)) = (Permission::parse(probe), reference_permission(probe)) else {
            continue;
        };
        assert_eq!(
            p.grants(&q),
            reference_grants(&segments, &q_segments),
            "{text} grants {probe}?"
        );
        assert_eq!(
            q.grants(&p),
            reference_grants(&q_segments, &segments),
            "{probe} grants {text}?"
        );
        assert_eq!(alone.allows(&q), p.grants(&q), "a set of {text} alone allows {probe}?");
        parsed.push((q, q_segments));
    }
    assert!(p.grants(&p), "{text} does not grant itself");
    let set = PermissionSet::new(parsed.iter().map(|(q, _)| q.clone()));
    let expected = parsed.iter().any(|(_, s)| reference_grants(s, &segments));
    assert_eq!(set.allows(&p), expected, "the probes' set allows {text}?");
    true
}

// ---------------------------------------------------------------------------------------
// Permission queries

/// A query's tree, by the reference parser.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ast {
    Atom(String),
    All(Vec<Ast>),
    Any(Vec<Ast>),
}

impl Ast {
    /// A short-circuiting walk with `truth` deciding each atom, logging the atoms asked.
    fn walk(&self, truth: &dyn Fn(&str) -> bool, asked: &mut Vec<String>) -> bool {
        match self {
            Ast::Atom(p) => {
                asked.push(p.clone());
                truth(p)
            }
            Ast::All(xs) => xs.iter().all(|x| x.walk(truth, asked)),
            Ast::Any(xs) => xs.iter().any(|x| x.walk(truth, asked)),
        }
    }

    fn atoms(&self, out: &mut Vec<String>) {
        match self {
            Ast::Atom(p) => out.push(p.clone()),
            Ast::All(xs) | Ast::Any(xs) => xs.iter().for_each(|x| x.atoms(out)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Open,
    Close,
    And,
    Or,
    Word(&'a str),
}

/// The reference parser, from `PermissionQuery`'s documentation: permissions joined by
/// `AND` / `OR` (any case, `AND` binding tighter), parentheses at most 16 deep, at most 64
/// permissions and 8192 bytes; `&`, `&&`, `|`, `||`, `!` and `NOT` are refused outright.
fn reference_query(text: &str) -> Option<Ast> {
    if text.len() > MAX_QUERY_LEN {
        return None;
    }
    fn push_word<'a>(tokens: &mut Vec<Tok<'a>>, w: &'a str) {
        tokens.push(if w.eq_ignore_ascii_case("and") {
            Tok::And
        } else if w.eq_ignore_ascii_case("or") {
            Tok::Or
        } else {
            Tok::Word(w)
        });
    }
    let mut tokens = Vec::new();
    let mut word_start = None;
    for (i, c) in text.char_indices() {
        if c.is_ascii_whitespace() || c == '(' || c == ')' {
            if let Some(s) = word_start.take() {
                push_word(&mut tokens, &text[s..i]);
            }
            match c {
                '(' => tokens.push(Tok::Open),
                ')' => tokens.push(Tok::Close),
                _ => {}
            }
        } else if word_start.is_none() {
            word_start = Some(i);
        }
    }
    if let Some(s) = word_start {
        push_word(&mut tokens, &text[s..]);
    }
    let refused_word = |t: &Tok<'_>| matches!(t, Tok::Word(w) if ["&", "&&", "|", "||", "!"].contains(w) || w.eq_ignore_ascii_case("not"));
    if tokens.iter().any(refused_word) {
        return None;
    }
    let mut parser = RefQuery {
        tokens: &tokens,
        at: 0,
        atoms: 0,
    };
    let ast = parser.or(0)?;
    (parser.at == tokens.len() && parser.atoms <= MAX_QUERY_ATOMS).then_some(ast)
}

struct RefQuery<'t, 'a> {
    tokens: &'t [Tok<'a>],
    at: usize,
    atoms: usize,
}

impl RefQuery<'_, '_> {
    fn or(&mut self, depth: usize) -> Option<Ast> {
        let mut xs = vec![self.and(depth)?];
        while self.tokens.get(self.at) == Some(&Tok::Or) {
            self.at += 1;
            xs.push(self.and(depth)?);
        }
        Some(if xs.len() == 1 { xs.remove(0) } else { Ast::Any(xs) })
    }

    fn and(&mut self, depth: usize) -> Option<Ast> {
        let mut xs = vec![self.primary(depth)?];
        while self.tokens.get(self.at) == Some(&Tok::And) {
            self.at += 1;
            xs.push(self.primary(depth)?);
        }
        Some(if xs.len() == 1 { xs.remove(0) } else { Ast::All(xs) })
    }

    fn primary(&mut self, depth: usize) -> Option<Ast> {
        let token = self.tokens.get(self.at)?.clone();
        self.at += 1;
        match token {
            Tok::Word(w) => {
                self.atoms += 1;
                reference_permission(w)?;
                Some(Ast::Atom(w.to_string()))
            }
            Tok::Open if depth < MAX_QUERY_DEPTH => {
                let inner = self.or(depth + 1)?;
                (self.tokens.get(self.at) == Some(&Tok::Close)).then(|| {
                    self.at += 1;
                    inner
                })
            }
            _ => None,
        }
    }
}

/// A deterministic truth assignment: `seed` picks one of several.
fn truth(seed: u64) -> impl Fn(&str) -> bool {
    move |p: &str| {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for b in p.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h >> 29) & 1 == 1
    }
}

fn check_query(text: &str) -> bool {
    let expected = reference_query(text);
    let q = match PermissionQuery::parse(text) {
        Ok(q) => q,
        Err(e) => {
            assert!(
                expected.is_none(),
                "{text:?} refused ({e}), the reference parses {expected:?}"
            );
            assert!(matches!(e, InputError::InvalidQuery(_)), "{text:?}: {e:?}");
            secret_echo::refuses(&parser("PermissionQuery::parse"), text);
            return false;
        }
    };
    let Some(ast) = expected else {
        panic!("{text:?} accepted, the reference refuses it");
    };
    assert_eq!(q.as_str(), text);
    assert_eq!(
        PermissionQuery::parse(q.as_str()).as_ref(),
        Ok(&q),
        "{text:?} parses to another query"
    );
    check_serde(&q, text);
    // The compiled query asks for the same permissions, in the same order, and comes to
    // the same verdict as a short-circuit walk of the tree.
    for seed in 0..6 {
        let decide = truth(seed);
        let mut want = Vec::new();
        let verdict = ast.walk(&decide, &mut want);
        let asked = std::cell::RefCell::new(Vec::new());
        let got = q.evaluate_with(&|p: &Permission| {
            asked.borrow_mut().push(p.as_str().to_string());
            decide(p.as_str())
        });
        assert_eq!(got, verdict, "{text:?} under assignment {seed}");
        assert_eq!(asked.into_inner(), want, "{text:?} asks in another order");
    }
    // Monotone: everything granted satisfies it, nothing granted does not.
    assert!(q.evaluate_with(&|_| true), "{text:?} refuses every permission granted");
    assert!(!q.evaluate_with(&|_| false), "{text:?} holds with nothing granted");
    let mut atoms = Vec::new();
    ast.atoms(&mut atoms);
    let all = PermissionSet::parse(&atoms).unwrap_or_else(|e| panic!("atoms of {text:?}: {e}"));
    assert!(q.evaluate(&all), "{text:?} refused by its own atoms");
    assert!(!q.evaluate(&PermissionSet::default()), "{text:?} holds with no grants");
    if atoms.len() == 1 {
        let single = Permission::parse(&atoms[0]).unwrap_or_else(|e| panic!("{e}"));
        let from = PermissionQuery::from(single);
        for seed in 0..3 {
            let decide = truth(seed);
            assert_eq!(
                from.evaluate_with(&|p: &Permission| decide(p.as_str())),
                q.evaluate_with(&|p: &Permission| decide(p.as_str()))
            );
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// CIDR

/// The network address and prefix of an entry: `ADDR` (a host) or `ADDR/LEN`, read as std
/// reads addresses and as CIDRs are written: `LEN` plain decimal, no sign, no leading
/// zeros, at most the address's bits. The library accepts exactly these (it once took
/// `010.0.0.0/8` through ipnet's laxer parser while refusing `010.0.0.1`; the fuzzer
/// found it).
fn reference_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let Some((addr, len)) = text.split_once('/') else {
        let addr = IpAddr::from_str(text).ok()?;
        return Some((addr, if addr.is_ipv4() { 32 } else { 128 }));
    };
    let addr = IpAddr::from_str(addr).ok()?;
    let digits_ok = !len.is_empty() && len.len() <= 3 && len.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok || (len.len() > 1 && len.starts_with('0')) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// The mask of a `/prefix` of an address of `bits` bits.
fn mask(bits: u32, prefix: u8) -> u128 {
    let all = if bits == 32 { u128::from(u32::MAX) } else { u128::MAX };
    let host_bits = bits - u32::from(prefix);
    match host_bits {
        0 => all,
        128 => 0,
        n => all & !((1u128 << n) - 1),
    }
}

fn as_bits(ip: IpAddr) -> (u32, u128) {
    match ip {
        IpAddr::V4(v4) => (32, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (128, u128::from(v6)),
    }
}

fn from_bits(bits: u32, value: u128) -> IpAddr {
    if bits == 32 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(value & u128::from(u32::MAX)).unwrap_or(0)))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

/// The same client in its other form: IPv4 and IPv4-mapped IPv6.
fn other_form(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
    }
}

/// Whether the range `net/prefix` holds `ip` in either of its forms.
fn reference_allows(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let (bits, n) = as_bits(net);
    let m = mask(bits, prefix);
    let inside = |a: IpAddr| {
        let (b, x) = as_bits(a);
        b == bits && x & m == n & m
    };
    inside(ip) || other_form(ip).is_some_and(inside)
}

const IP_PROBES: [&str; 12] = [
    "0.0.0.0",
    "255.255.255.255",
    "10.0.0.1",
    "192.168.1.1",
    "::",
    "::1",
    "::ffff:10.0.0.1",
    "::ffff:0:0",
    "2001:db8::1",
    "64:ff9b::a00:1",
    "::a00:1",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

fn check_cidr(text: &str) -> bool {
    let list = match IpAllowlist::new([text]) {
        Ok(list) => list,
        Err(e) => {
            assert!(
                reference_cidr(text).is_none(),
                "{text:?} refused ({e}), the reference accepts it"
            );
            assert!(matches!(e, InputError::InvalidCidr(_)), "{text:?}: {e:?}");
            assert!(
                TrustedProxies::new([text]).is_err(),
                "{text:?}: a trusted proxy but no allowlist entry"
            );
            secret_echo::refuses(&parser("IpAllowlist::new"), text);
            return false;
        }
    };
    let Some((addr, prefix)) = reference_cidr(text) else {
        panic!("{text:?} accepted, the reference cannot read it");
    };
    assert_eq!(list.sources(), [text]);
    assert_eq!((list.len(), list.is_empty()), (1, false));
    let proxies = TrustedProxies::new([text]).unwrap_or_else(|e| panic!("{text:?} as a trusted proxy: {e}"));
    let (bits, value) = as_bits(addr);
    let m = mask(bits, prefix);
    let network = value & m;
    let last = network | (!m & if bits == 32 { u128::from(u32::MAX) } else { u128::MAX });
    let mut probes: Vec<IpAddr> = IP_PROBES.iter().filter_map(|s| s.parse().ok()).collect();
    probes.extend([addr, from_bits(bits, network), from_bits(bits, last)]);
    if network > 0 {
        probes.push(from_bits(bits, network - 1));
    }
    if last < if bits == 32 { u128::from(u32::MAX) } else { u128::MAX } {
        probes.push(from_bits(bits, last + 1));
    }
    let forms: Vec<IpAddr> = probes.iter().filter_map(|&ip| other_form(ip)).collect();
    probes.extend(forms);
    let back: IpAllowlist = serde_json::from_str(&serde_json::to_string(&list).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{text:?} does not come back from JSON: {e}"));
    check_serde(&list, &[text]);
    for ip in probes {
        let want = reference_allows(addr, prefix, ip);
        assert_eq!(list.allows(ip), want, "{text} allows {ip}?");
        assert_eq!(back.allows(ip), want, "{text}, back from JSON, allows {ip}?");
        assert_eq!(proxies.contains(ip), want, "{text} as trusted proxies holds {ip}?");
    }
    assert!(list.allows(addr), "{text} does not allow its own address");
    true
}

// ---------------------------------------------------------------------------------------
// Referrers

/// `(wildcard, host)` of a referrer pattern, from `ReferrerAllowlist`'s documentation: a
/// host name, or `*.` and one; labels of 1 to 63 of `[A-Za-z0-9_-]`, at most 253 bytes; no
/// scheme, port, path or IPv6 literal.
fn reference_pattern(pattern: &str) -> Option<(bool, &str)> {
    if pattern.is_empty() || pattern.contains(['/', ':', '[']) {
        return None;
    }
    let (wildcard, host) = match pattern.strip_prefix("*.") {
        Some(host) => (true, host),
        None => (false, pattern),
    };
    let labels_ok = host.split('.').all(|l| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    });
    (host.len() <= MAX_HOST_LEN && labels_ok).then_some((wildcard, host))
}

/// The host of a referrer, from `referrer_host`'s definition, with plain string
/// operations (the library scans the authority once, byte by byte).
fn reference_host(referrer: &str) -> Option<&str> {
    let s = referrer.trim_matches(|c: char| c.is_ascii_whitespace());
    let is_scheme = |t: &str| {
        t.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    };
    let (rest, marker) = match s.find("://") {
        Some(i) if is_scheme(&s[..i]) => (&s[i + 3..], true),
        _ if s.starts_with("//") => (&s[2..], true),
        _ => (s, false),
    };
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
    if authority.contains('@') && !marker {
        return None;
    }
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let port_ok = |p: Option<&str>| p.is_none_or(|p| p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']')?;
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        if !port_ok(port) || inner.parse::<Ipv6Addr>().is_err() {
            return None;
        }
        return Some(&host_port[..inner.len() + 2]);
    }
    let (host, port) = match host_port.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = name.split('.').all(|l| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    });
    (port_ok(port) && !name.is_empty() && name.len() <= MAX_HOST_LEN && labels_ok).then_some(host)
}

/// Whether a list of `(wildcard, host)` patterns allows `referrer`, by the definition.
fn reference_referrer_allows(patterns: &[(bool, &str)], referrer: &str) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let Some(host) = reference_host(referrer) else {
        return false;
    };
    if host.starts_with('[') {
        return false;
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    patterns.iter().any(|&(wildcard, h)| {
        let h = h.to_ascii_lowercase();
        if wildcard {
            name.len() > h.len() + 1 && name.ends_with(&format!(".{h}"))
        } else {
            name == h
        }
    })
}

/// Referrers built around `host`: the forms a browser sends, and near misses.
fn referrers_around(host: &str) -> Vec<String> {
    let upper = host.to_ascii_uppercase();
    vec![
        host.to_string(),
        format!("https://{host}/"),
        format!("http://{upper}:8443/path?q=1#f"),
        format!("//{host}."),
        format!(" https://{host}\t"),
        format!("{host}:99999x"),
        format!("{host}:123456"),
        format!("user@{host}"),
        format!("https://user:pw@{host}/"),
        format!("https://{host}@evil.invalid/"),
        format!("https://{host}\\@evil.invalid/"),
        format!("a.{host}"),
        format!("https://a.b.{host}/"),
        format!("{host}.evil.invalid"),
        format!("x{host}"),
        format!("x-y+z.w://{host}"),
        format!("https://[::1]/{host}"),
        format!("ftp://{host}:21"),
    ]
}

fn check_referrer_pattern(text: &str) -> bool {
    let expected = reference_pattern(text);
    let list = match ReferrerAllowlist::new([text]) {
        Ok(list) => list,
        Err(e) => {
            assert!(expected.is_none(), "{text:?} refused ({e}), the reference accepts it");
            assert!(matches!(e, InputError::InvalidReferrer(_)), "{text:?}: {e:?}");
            secret_echo::refuses(&parser("ReferrerAllowlist::new"), text);
            return false;
        }
    };
    let Some((wildcard, host)) = expected else {
        panic!("{text:?} accepted, the reference refuses it");
    };
    assert_eq!(list.sources(), [text]);
    check_serde(&list, &[text]);
    let patterns = [(wildcard, host)];
    let mut probes = referrers_around(host);
    probes.push(text.to_string());
    for referrer in &probes {
        assert_eq!(
            list.allows(referrer),
            reference_referrer_allows(&patterns, referrer),
            "{text} allows {referrer:?}?"
        );
        assert_eq!(
            referrer_host(referrer),
            reference_host(referrer),
            "host of {referrer:?}"
        );
    }
    // What the pattern names is allowed, the apex of a wildcard is not.
    if wildcard {
        let sub = format!("a.{host}");
        assert_eq!(
            list.allows(&format!("https://{sub}/")),
            sub.len() <= MAX_HOST_LEN,
            "{text} vs {sub}"
        );
        assert!(!list.allows(host), "{text} allows its apex");
    } else {
        assert!(list.allows(text), "{text} does not allow itself");
    }
    true
}

/// The fixed allowlist a referrer header is checked against.
const REFERRER_PATTERNS: [&str; 5] = ["example.com", "*.example.org", "127.0.0.1", "A-b_C.test", "*.x"];

fn check_referer_header(text: &str) -> bool {
    let list = ReferrerAllowlist::new(REFERRER_PATTERNS).unwrap_or_else(|e| panic!("fixed patterns: {e}"));
    let patterns: Vec<(bool, &str)> = REFERRER_PATTERNS
        .iter()
        .map(|p| reference_pattern(p).unwrap_or_else(|| panic!("reference refuses {p}")))
        .collect();
    let allowed = list.allows(text);
    assert_eq!(allowed, reference_referrer_allows(&patterns, text), "allows {text:?}?");
    assert_eq!(referrer_host(text), reference_host(text), "host of {text:?}");
    assert!(
        ReferrerAllowlist::default().allows(text),
        "the empty list refuses {text:?}"
    );
    allowed
}

// ---------------------------------------------------------------------------------------
// Endpoints and path globs

/// Whether a glob parses, from `PathGlob`'s documentation.
fn reference_glob_ok(glob: &str) -> bool {
    glob.starts_with('/')
        && glob.len() <= MAX_GLOB_LEN
        && !glob.chars().any(|c| c.is_whitespace() || c.is_control())
        && !glob.contains(['?', '#'])
        && glob[1..].split('/').all(|s| s == "**" || !s.contains("**"))
}

/// Whether `pattern` (one glob segment) matches `text` (one path segment): `*` any run
/// of bytes, any other byte itself. By dynamic programming over both, not the library's
/// backtracking walk.
fn reference_segment(pattern: &[u8], text: &[u8]) -> bool {
    if !pattern.contains(&b'*') {
        return pattern == text;
    }
    // row[j]: the pattern so far matches text[..j].
    let mut row = vec![false; text.len() + 1];
    let mut next = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        next[0] = p == b'*' && row[0];
        for j in 1..=text.len() {
            next[j] = if p == b'*' {
                row[j] || next[j - 1]
            } else {
                row[j - 1] && text[j - 1] == p
            };
        }
        std::mem::swap(&mut row, &mut next);
    }
    row[text.len()]
}

/// Whether `glob` matches `path`, by the definition: the path cut at `?` / `#`, then
/// segment by segment, `**` any number of segments, `*` any run within one.
fn reference_glob(glob: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let Some(path) = path.strip_prefix('/') else {
        return false;
    };
    let glob: Vec<&str> = glob[1..].split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    // table[i][j]: glob[i..] matches path[j..].
    let mut table = vec![vec![false; path.len() + 1]; glob.len() + 1];
    table[glob.len()][path.len()] = true;
    for i in (0..glob.len()).rev() {
        for j in (0..=path.len()).rev() {
            table[i][j] = if glob[i] == "**" {
                table[i + 1][j] || (j < path.len() && table[i][j + 1])
            } else {
                j < path.len() && table[i + 1][j + 1] && reference_segment(glob[i].as_bytes(), path[j].as_bytes())
            };
        }
    }
    table[0][0]
}

/// Paths made from a glob: `**` as no, one and two segments, `*` as nothing and as text,
/// and near misses of each.
fn paths_around(glob: &str) -> Vec<String> {
    let segments: Vec<&str> = glob.get(1..).unwrap_or("").split('/').collect();
    let mut paths = Vec::new();
    for choice in 0..3 {
        let mut parts = Vec::new();
        for s in &segments {
            if *s == "**" {
                match choice {
                    0 => {}
                    1 => parts.push("x".to_string()),
                    _ => parts.extend(["x".to_string(), "y".to_string()]),
                }
            } else {
                parts.push(s.replace('*', ["", "z", "z.z"][choice]));
            }
        }
        let path = format!("/{}", parts.join("/"));
        let mut shorter = path.clone();
        shorter.pop();
        paths.extend([
            format!("{path}/extra"),
            format!("{path}?q=1/x"),
            format!("{path}#f"),
            format!("{path}/"),
            shorter,
            path.to_uppercase(),
            path,
        ]);
    }
    paths.extend([
        "".into(),
        "/".into(),
        "//".into(),
        glob.to_string(),
        glob.trim_start_matches('/').to_string(),
    ]);
    paths
}

/// The method of an endpoint entry: `None` for every method.
fn reference_method(method: &str) -> Option<Option<String>> {
    if method == "*" || method.eq_ignore_ascii_case("any") {
        return Some(None);
    }
    (method.len() <= MAX_METHOD_LEN && !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| Some(method.to_string()))
}

/// `(method, glob)` of an endpoint entry: exactly two words, by the definition.
fn reference_endpoint(entry: &str) -> Option<(Option<String>, &str)> {
    let words: Vec<&str> = entry.split_ascii_whitespace().collect();
    let [method, glob] = words[..] else {
        return None;
    };
    let method = reference_method(method)?;
    reference_glob_ok(glob).then_some((method, glob))
}

fn reference_endpoint_allows(rules: &[(Option<String>, &str)], method: &str, path: &str) -> bool {
    rules.is_empty()
        || rules
            .iter()
            .any(|(m, glob)| m.as_ref().is_none_or(|m| m.eq_ignore_ascii_case(method)) && reference_glob(glob, path))
}

/// Request methods: cases, near misses, NUL bytes and non-ASCII around the 7 bytes the
/// library packs a method into.
const REQUEST_METHODS: [&str; 14] = [
    "GET",
    "get",
    "POST",
    "DELETE",
    "GET\0",
    "GE",
    "GETS",
    "propfind",
    "PROPFINDS",
    "PROPFIN",
    "MkCalendar",
    "",
    "G\u{e9}T",
    "*",
];

fn check_endpoint_entry(text: &str) -> bool {
    let expected = reference_endpoint(text);
    let list = match EndpointAllowlist::new([text]) {
        Ok(list) => list,
        Err(e) => {
            assert!(expected.is_none(), "{text:?} refused ({e}), the reference accepts it");
            assert!(
                matches!(e, InputError::InvalidEndpoint(_) | InputError::InvalidGlob(_)),
                "{text:?}: {e:?}"
            );
            secret_echo::refuses(&parser("EndpointAllowlist::new"), text);
            return false;
        }
    };
    let Some((method, glob)) = expected else {
        panic!("{text:?} accepted, the reference refuses it");
    };
    assert_eq!(list.sources(), [text]);
    check_serde(&list, &[text]);
    let rule_method = text.split_ascii_whitespace().next().unwrap_or("");
    let mut methods: Vec<String> = REQUEST_METHODS.iter().map(|m| m.to_string()).collect();
    methods.extend([
        rule_method.to_string(),
        rule_method.to_ascii_lowercase(),
        format!("{rule_method}X"),
    ]);
    for path in paths_around(glob) {
        let path_ok = reference_glob(glob, &path);
        for m in &methods {
            let method_ok = method.as_ref().is_none_or(|rule| rule.eq_ignore_ascii_case(m));
            assert_eq!(
                list.allows(m, &path),
                method_ok && path_ok,
                "{text} allows {m:?} {path:?}?"
            );
        }
    }
    true
}

/// The fixed allowlist a request is checked against: methods of every kind (long ones
/// too, past the packed key), globs of every shape.
const ENDPOINT_RULES: [&str; 7] = [
    "GET /v1/users/*",
    "post /v1/jobs/**",
    "* /health",
    "PROPFIND /dav/**/*.ics",
    "mkcalendar /cal/*",
    "ANY /a/*/b/**/c",
    "Delete /v1/users/*/keys/*",
];

fn check_endpoint_request(text: &str) -> bool {
    let (method, path) = text.split_once(' ').unwrap_or((text, ""));
    let list = EndpointAllowlist::new(ENDPOINT_RULES).unwrap_or_else(|e| panic!("fixed rules: {e}"));
    let rules: Vec<(Option<String>, &str)> = ENDPOINT_RULES
        .iter()
        .map(|r| reference_endpoint(r).unwrap_or_else(|| panic!("reference refuses {r}")))
        .collect();
    let allowed = list.allows(method, path);
    assert_eq!(
        allowed,
        reference_endpoint_allows(&rules, method, path),
        "allows {method:?} {path:?}?"
    );
    let everything = EndpointAllowlist::new(["ANY /**"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        everything.allows(method, path),
        path.starts_with('/'),
        "ANY /** vs {path:?}"
    );
    assert!(EndpointAllowlist::default().allows(method, path));
    for glob in [
        "/v1/users/*",
        "/v1/jobs/**",
        "/health",
        "/dav/**/*.ics",
        "/**",
        "/a/*/b/**/c",
        "/*",
    ] {
        let g = PathGlob::parse(glob).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.matches(path), reference_glob(glob, path), "{glob} matches {path:?}?");
    }
    allowed
}

fn check_glob(text: &str) -> bool {
    let expected = reference_glob_ok(text);
    let glob = match PathGlob::parse(text) {
        Ok(glob) => glob,
        Err(e) => {
            assert!(!expected, "{text:?} refused ({e}), the reference accepts it");
            assert!(matches!(e, InputError::InvalidGlob(_)), "{text:?}: {e:?}");
            secret_echo::refuses(&parser("PathGlob::parse"), text);
            return false;
        }
    };
    assert!(expected, "{text:?} accepted, the reference refuses it");
    assert_eq!(glob.as_str(), text);
    assert_eq!(PathGlob::parse(glob.as_str()).as_ref(), Ok(&glob));
    check_serde(&glob, text);
    for path in paths_around(text) {
        assert_eq!(
            glob.matches(&path),
            reference_glob(text, &path),
            "{text} matches {path:?}?"
        );
    }
    true
}

// ---------------------------------------------------------------------------------------
// Roles and users

fn check_role(text: &str) -> bool {
    let expected = !text.is_empty()
        && text.len() <= MAX_ROLE_NAME_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let role = match RoleName::parse(text) {
        Ok(role) => role,
        Err(e) => {
            assert!(!expected, "{text:?} refused ({e}), the reference accepts it");
            assert!(matches!(e, InputError::InvalidRole(_)), "{text:?}: {e:?}");
            secret_echo::refuses(&parser("RoleName::parse"), text);
            return false;
        }
    };
    assert!(expected, "{text:?} accepted, the reference refuses it");
    assert_eq!(role.as_str(), text);
    check_serde(&role, text);
    true
}

fn check_user(text: &str) -> bool {
    let expected = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'+' | b'-'));
    match validate_user_id(text) {
        Ok(()) => {
            assert!(expected, "{text:?} accepted, the reference refuses it");
            let user = User::new(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(user.id, text);
            true
        }
        Err(e) => {
            assert!(!expected, "{text:?} refused ({e}), the reference accepts it");
            assert!(matches!(e, InputError::InvalidUser(_)), "{text:?}: {e:?}");
            assert!(User::new(text).is_err());
            secret_echo::refuses(&parser("validate_user_id"), text);
            false
        }
    }
}
