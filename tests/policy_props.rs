//! Property tests for the policy primitives (issue 4): each matcher against a reference
//! written from its definition, on random input.
//!
//! - CIDR matching against `ipnet`'s own `contains`, with IPv4 and IPv4-mapped IPv6
//!   addresses taken as the same client;
//! - the permission query parser and evaluator against direct evaluation of a random
//!   AST, printed to text (with random keyword case, spacing and redundant parentheses)
//!   and parsed back;
//! - path globs against a naive recursive matcher;
//! - referrer patterns against a lower-cased suffix comparison, and referrer host
//!   extraction against a reference written with plain string operations;
//! - serde round trips: every type serialises as its source strings and parses back.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use credstore::InputError;
use credstore::policy::{
    EndpointAllowlist, IpAllowlist, PathGlob, Permission, PermissionQuery, PermissionSet, ReferrerAllowlist,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use proptest::sample::{Index, select};

// ---------------------------------------------------------------------------------------
// CIDR

const MAPPED: u128 = 0xffff_0000_0000;

fn v6net(addr: u128, prefix: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), prefix).unwrap())
}

/// Networks with host bits left in (the allowlist must ignore them, as `contains` does),
/// biased towards the IPv4-mapped block and its edges.
fn arb_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), p).unwrap())),
        (any::<u128>(), 0u8..=128).prop_map(|(a, p)| v6net(a, p)),
        (any::<u32>(), 96u8..=128).prop_map(|(a, p)| v6net(MAPPED | u128::from(a), p)),
        // Near the mapped block: one bit of the top 96 flipped, any prefix.
        (any::<u32>(), 32u32..128, 0u8..=128).prop_map(|(a, bit, p)| v6net((MAPPED | u128::from(a)) ^ (1 << bit), p)),
        (any::<u32>(), 0u8..=96).prop_map(|(a, p)| v6net(MAPPED | u128::from(a), p)),
    ]
}

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
        (any::<u32>(), 32u32..128)
            .prop_map(|(a, bit)| IpAddr::V6(Ipv6Addr::from((MAPPED | u128::from(a)) ^ (1 << bit)))),
    ]
}

/// The same client in its other form: IPv4 <-> IPv4-mapped IPv6.
fn other_form(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
    }
}

/// An address inside `net` (random host bits), in the form `form` picks.
fn inside(net: &IpNet, host: u128, form: bool) -> IpAddr {
    let ip = match net {
        IpNet::V4(n) => {
            let mask = u32::from(n.netmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | (host as u32 & !mask)))
        }
        IpNet::V6(n) => {
            let mask = u128::from(n.netmask());
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | (host & !mask)))
        }
    };
    if form { other_form(ip).unwrap_or(ip) } else { ip }
}

/// How an entry is written: CIDR text, or a bare address when it is a single host.
fn entry_text(net: &IpNet, bare: bool) -> String {
    if bare && net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn cidr_matches_ipnet_contains(
        nets in prop::collection::vec(arb_net(), 0..6),
        bare in any::<bool>(),
        near in prop::collection::vec((any::<Index>(), any::<u128>(), any::<bool>()), 0..8),
        random in prop::collection::vec(arb_addr(), 0..8),
    ) {
        let list = IpAllowlist::new(nets.iter().map(|n| entry_text(n, bare))).unwrap();
        prop_assert_eq!(list.len(), nets.len());
        let mut addrs = random;
        if !nets.is_empty() {
            addrs.extend(near.iter().map(|(i, host, form)| inside(i.get(&nets), *host, *form)));
        }
        for ip in addrs {
            let expected = nets.is_empty()
                || nets.iter().any(|n| n.contains(&ip) || other_form(ip).is_some_and(|o| n.contains(&o)));
            prop_assert_eq!(list.allows(ip), expected, "{} against {:?}", ip, list);
            // The two forms of one client always get the same answer.
            if let Some(o) = other_form(ip) {
                prop_assert_eq!(list.allows(o), expected, "{} (other form of {}) against {:?}", o, ip, list);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Permission queries

#[derive(Debug, Clone)]
enum Ast {
    Atom(String),
    And(Vec<Ast>),
    Or(Vec<Ast>),
}

impl Ast {
    fn atoms(&self) -> usize {
        match self {
            Ast::Atom(_) => 1,
            Ast::And(xs) | Ast::Or(xs) => xs.iter().map(Ast::atoms).sum(),
        }
    }

    fn eval(&self, grants: &[String]) -> bool {
        match self {
            Ast::Atom(p) => grants.iter().any(|g| reference_grants(g, p)),
            Ast::And(xs) => xs.iter().all(|x| x.eval(grants)),
            Ast::Or(xs) => xs.iter().any(|x| x.eval(grants)),
        }
    }

    /// A short-circuiting walk with `truth` deciding each atom, logging the atoms asked.
    fn walk(&self, truth: &dyn Fn(&str) -> bool, asked: &mut Vec<String>) -> bool {
        match self {
            Ast::Atom(p) => {
                asked.push(p.clone());
                truth(p)
            }
            Ast::And(xs) => xs.iter().all(|x| x.walk(truth, asked)),
            Ast::Or(xs) => xs.iter().any(|x| x.walk(truth, asked)),
        }
    }
}

/// Segment-wise: a granted `*` covers anything, a name only the same name; `*` = `*:*`.
fn reference_grants(granted: &str, required: &str) -> bool {
    let split = |s: &str| -> (String, String) {
        if s == "*" {
            ("*".into(), "*".into())
        } else {
            let (r, a) = s.split_once(':').unwrap();
            (r.into(), a.into())
        }
    };
    let (gr, ga) = split(granted);
    let (rr, ra) = split(required);
    (gr == "*" || gr == rr) && (ga == "*" || ga == ra)
}

/// Prints `ast`; `style` supplies choices (keyword case, spacing, extra parentheses).
struct Printer<'a> {
    style: &'a [u8],
    next: usize,
    minimal: bool,
}

impl Printer<'_> {
    fn pick(&mut self) -> u8 {
        let b = self
            .style
            .get(self.next % self.style.len().max(1))
            .copied()
            .unwrap_or(0);
        self.next += 1;
        b
    }

    fn keyword(&mut self, word: &str) -> String {
        let kw = match self.pick() % 3 {
            0 => word.to_uppercase(),
            1 => word.to_lowercase(),
            _ => {
                let (first, rest) = word.split_at(1);
                format!("{}{}", first.to_uppercase(), rest.to_lowercase())
            }
        };
        let space = match self.pick() % 4 {
            0 => " ",
            1 => "  ",
            2 => "\t",
            _ => "\n ",
        };
        format!("{space}{kw}{space}")
    }

    /// `parent_and`: the node is an operand of AND (so an OR needs parentheses).
    fn print(&mut self, ast: &Ast, parent_and: bool) -> String {
        let (items, word, is_and) = match ast {
            Ast::Atom(p) => {
                return if self.pick().is_multiple_of(8) {
                    format!("({p})")
                } else {
                    p.clone()
                };
            }
            Ast::And(xs) => (xs, "and", true),
            Ast::Or(xs) => (xs, "or", false),
        };
        let mut parts = Vec::new();
        for x in items {
            parts.push(self.print(x, is_and));
        }
        let mut out = parts.remove(0);
        for p in parts {
            out.push_str(&self.keyword(word));
            out.push_str(&p);
        }
        let needs = !self.minimal || (parent_and && !is_and);
        if needs || self.pick().is_multiple_of(6) {
            format!("({out})")
        } else {
            out
        }
    }
}

fn arb_permission_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (select(vec!["docs", "users", "a.b", "x-y_z"]), select(vec!["read", "write", "run"]))
            .prop_map(|(r, a)| format!("{r}:{a}")),
        1 => select(vec!["*", "*:*", "docs:*", "*:read", "users:*", "*:run"]).prop_map(String::from),
        // Names around 16 bytes, where the library's packed comparison hands over to the text
        // (up to 30 bytes, so that two fit in MAX_PERMISSION_LEN).
        2 => (select(LONG_NAMES.to_vec()), select(LONG_NAMES.to_vec())).prop_map(|(r, a)| format!("{r}:{a}")),
    ]
}

const LONG_NAMES: [&str; 6] = [
    "abcdefghijklmno",
    "abcdefghijklmnop",
    "abcdefghijklmnopq",
    "abcdefghijklmnopr",
    "abcdefghijklmnopqrstuvwxyz0123",
    "abcdefghijklmnopqrstuvwxyz0124",
];

fn arb_ast() -> impl Strategy<Value = Ast> {
    arb_permission_text()
        .prop_map(Ast::Atom)
        .prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Ast::And),
                prop::collection::vec(inner, 2..4).prop_map(Ast::Or),
            ]
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn query_matches_direct_evaluation(
        ast in arb_ast(),
        grant_sets in prop::collection::vec(prop::collection::vec(arb_permission_text(), 0..5), 1..6),
        style in prop::collection::vec(any::<u8>(), 1..16),
        minimal in any::<bool>(),
    ) {
        prop_assume!(ast.atoms() <= 64);
        let text = Printer { style: &style, next: 0, minimal }.print(&ast, false);
        let query = PermissionQuery::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(query.as_str(), text.as_str());
        let json = serde_json::to_string(&query).unwrap();
        prop_assert_eq!(serde_json::from_str::<PermissionQuery>(&json).unwrap(), query.clone());
        for grants in grant_sets {
            let set = PermissionSet::parse(&grants).unwrap();
            prop_assert_eq!(query.evaluate(&set), ast.eval(&grants), "{:?} with {:?}", text, grants);
        }
    }

    /// `evaluate_with` asks about the same permissions, in the same order, as a
    /// short-circuiting walk of the tree (the library compiles the tree to a flat form).
    #[test]
    fn query_asks_in_walk_order(ast in arb_ast(), seed in any::<u64>(), style in prop::collection::vec(any::<u8>(), 1..16)) {
        prop_assume!(ast.atoms() <= 64);
        // Each distinct permission text gets a truth value from the seed.
        let truth = |p: &str| p.bytes().fold(seed, |h, b| h.rotate_left(5) ^ u64::from(b)).count_ones() % 2 == 0;
        let text = Printer { style: &style, next: 0, minimal: false }.print(&ast, false);
        let query = PermissionQuery::parse(&text).unwrap();
        let mut expected_asked = Vec::new();
        let expected = ast.walk(&truth, &mut expected_asked);
        let asked = std::cell::RefCell::new(Vec::new());
        let got = query.evaluate_with(&|p: &Permission| {
            asked.borrow_mut().push(p.as_str().to_string());
            truth(p.as_str())
        });
        prop_assert_eq!(got, expected, "{:?}", text);
        prop_assert_eq!(asked.into_inner(), expected_asked, "{:?}", text);
    }

    /// Dropping one token from a valid query (a parenthesis, an operator or a permission)
    /// leaves either a valid query or an `InvalidQuery`, never a panic.
    #[test]
    fn query_mutations_fail_cleanly(ast in arb_ast(), style in prop::collection::vec(any::<u8>(), 1..8), cut in any::<Index>(), junk in "[()a-zA-Z:*&| ]{0,6}") {
        let text = Printer { style: &style, next: 0, minimal: false }.print(&ast, false);
        let at = cut.index(text.len() + 1);
        let (a, b) = text.split_at(at);
        for mutated in [format!("{a}{b}").replacen('(', "", 1), format!("{a}{junk}{b}"), format!("{a})"), format!("({a}")] {
            match PermissionQuery::parse(&mutated) {
                Ok(_) | Err(InputError::InvalidQuery(_)) => {}
                Err(other) => prop_assert!(false, "{:?} gave {:?}", mutated, other),
            }
        }
    }

    #[test]
    fn permission_grants_match_reference(g in arb_permission_text(), r in arb_permission_text()) {
        let (gp, rp) = (Permission::parse(&g).unwrap(), Permission::parse(&r).unwrap());
        prop_assert_eq!(gp.grants(&rp), reference_grants(&g, &r));
    }
}

// ---------------------------------------------------------------------------------------
// Path globs

/// Glob segments against path segments, from the definition.
fn reference_segments(glob: &[&str], path: &[&str]) -> bool {
    match glob.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|k| reference_segments(rest, &path[k..])),
        Some((seg, rest)) => match path.split_first() {
            Some((p, prest)) => reference_segment(seg.as_bytes(), p.as_bytes()) && reference_segments(rest, prest),
            None => false,
        },
    }
}

fn reference_segment(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|k| reference_segment(rest, &text[k..])),
        Some((c, rest)) => text.first() == Some(c) && reference_segment(rest, &text[1..]),
    }
}

fn reference_glob(glob: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap();
    let Some(path) = path.strip_prefix('/') else {
        return false;
    };
    let glob: Vec<&str> = glob.strip_prefix('/').unwrap().split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    reference_segments(&glob, &path)
}

/// Rule methods, with some too long for the library's packed method key (over 7 bytes).
const RULE_METHODS: [&str; 9] = [
    "GET",
    "post",
    "*",
    "ANY",
    "any",
    "Delete",
    "PROPFIND",
    "mkcalendar",
    "OPTIONS",
];
/// Request methods: cases, near misses, NUL bytes and non-ASCII around those lengths.
const REQUEST_METHODS: [&str; 17] = [
    "GET",
    "get",
    "POST",
    "DELETE",
    "PUT",
    "GET\0",
    "GE",
    "GETS",
    "propfind",
    "PROPFINDS",
    "PROPFIN",
    "MkCalendar",
    "options",
    "OPTIONSX",
    "",
    "G\u{e9}T",
    "*",
];

fn arb_glob() -> impl Strategy<Value = String> {
    prop::collection::vec(
        select(vec!["**", "*", "a", "b", "ab", "a*", "*b", "a*b", "*a*", "**", ""]),
        0..6,
    )
    .prop_map(|segs| format!("/{}", segs.join("/")))
}

fn arb_path() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "(/[ab]{0,3}){0,7}",
        1 => "(/[ab]{0,3}){0,5}[?#][ab/]{0,4}",
        1 => "[ab/]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn glob_matches_reference(glob in arb_glob(), paths in prop::collection::vec(arb_path(), 1..8)) {
        let compiled = PathGlob::parse(&glob).unwrap();
        for path in paths {
            prop_assert_eq!(compiled.matches(&path), reference_glob(&glob, &path), "{} vs {:?}", glob, path);
        }
    }

    /// The shapes matched without a segment walk (`/a/b`, `/a/b/*`, `/a/b/**`, `/**`),
    /// on paths that share the glob's literal prefix, so that near misses are common.
    #[test]
    fn glob_shapes_match_reference(
        literal in prop::collection::vec("[ab]{0,2}", 0..4),
        shape in 0u8..3,
        tails in prop::collection::vec("[ab/?#]{0,5}", 1..8),
        cut in any::<Index>(),
    ) {
        let base = literal.iter().map(|seg| format!("/{seg}")).collect::<String>();
        let glob = match shape {
            0 if base.is_empty() => "/".to_string(),
            0 => base.clone(),
            1 => format!("{base}/*"),
            _ => format!("{base}/**"),
        };
        let compiled = PathGlob::parse(&glob).unwrap();
        let shortened = &base[..cut.index(base.len() + 1)];
        for tail in tails {
            for path in [format!("{base}{tail}"), format!("{shortened}{tail}"), format!("{glob}{tail}")] {
                prop_assert_eq!(compiled.matches(&path), reference_glob(&glob, &path), "{} vs {:?}", glob, path);
            }
        }
    }

    #[test]
    fn endpoint_matches_reference(
        entries in prop::collection::vec((select(RULE_METHODS.to_vec()), arb_glob()), 0..4),
        requests in prop::collection::vec((select(REQUEST_METHODS.to_vec()), arb_path()), 1..8),
    ) {
        let list = EndpointAllowlist::new(entries.iter().map(|(m, g)| format!("{m} {g}"))).unwrap();
        for (method, path) in requests {
            let expected = entries.is_empty() || entries.iter().any(|(m, g)| {
                let method_ok = *m == "*" || m.eq_ignore_ascii_case("any") || m.eq_ignore_ascii_case(method);
                method_ok && reference_glob(g, &path)
            });
            prop_assert_eq!(list.allows(method, &path), expected, "{} {:?} against {:?}", method, path, list);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Referrers

fn arb_label() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,5}"
}

fn arb_host() -> impl Strategy<Value = String> {
    prop::collection::vec(arb_label(), 1..4).prop_map(|labels| labels.join("."))
}

/// Case shuffled by `bits`, and dressed as a URL in one of several ways.
fn dress(host: &str, bits: u64, how: u8) -> String {
    let host: String = host
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if bits >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    match how % 6 {
        0 => host,
        1 => format!("https://{host}/"),
        2 => format!("http://{host}:8080/a/b?c=d"),
        3 => format!("https://user:pw@{host}#x"),
        4 => format!("//{host}/x"),
        _ => format!("https://{host}."),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn referrer_matches_suffix_reference(
        patterns in prop::collection::vec((any::<bool>(), arb_host()), 0..4),
        hosts in prop::collection::vec((prop::option::of(arb_label()), arb_host()), 1..6),
        bits in any::<u64>(),
        how in any::<u8>(),
    ) {
        let texts: Vec<String> =
            patterns.iter().map(|(wild, h)| if *wild { format!("*.{h}") } else { h.clone() }).collect();
        let list = ReferrerAllowlist::new(&texts).unwrap();
        let join = |sub: &Option<String>, host: &str| match sub {
            Some(s) => format!("{s}.{host}"),
            None => host.to_string(),
        };
        let mut candidates: Vec<String> = hosts.iter().map(|(sub, h)| join(sub, h)).collect();
        // Referrers built from the patterns' own hosts, so that matches are common, and
        // near misses (`x` + host is no subdomain of host).
        for (i, (_, p)) in patterns.iter().enumerate() {
            let (sub, _) = &hosts[i % hosts.len()];
            candidates.push(join(sub, p));
            candidates.push(format!("x{p}"));
        }
        for host in candidates {
            let expected = patterns.is_empty()
                || patterns.iter().any(|(wild, p)| {
                    if *wild { host.ends_with(&format!(".{p}")) } else { host == *p }
                });
            let referrer = dress(&host, bits, how);
            prop_assert_eq!(list.allows(&referrer), expected, "{:?} against {:?}", referrer, texts);
        }
    }
}

/// The host of a referrer, written from `referrer_host`'s definition with plain string
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
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap();
    if authority.contains('@') && !marker {
        return None;
    }
    let host_port = authority.rsplit('@').next().unwrap();
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
    (port_ok(port) && !name.is_empty() && name.len() <= 253 && labels_ok).then_some(host)
}

/// Referrers near the edges of the grammar: every part optional or mangled.
fn arb_referrer() -> impl Strategy<Value = String> {
    let scheme = select(vec![
        "",
        "https://",
        "http://",
        "HTTPS://",
        "//",
        "a+b.c-d://",
        "1x://",
        "x:",
        "://",
        "https:/",
    ]);
    let userinfo = select(vec!["", "user@", "u:p@", "@", "a@b@", "u:p:q@", "[x@", "é@"]);
    let host = prop_oneof![
        4 => arb_host(),
        1 => select(vec![
            "", ".", "a..b", ".a", "a.", "a..", "[::1]", "[::1", "[x]", "[::ffff:1.2.3.4]", "ex ample", "b\u{fc}cher.de",
            "Ex_Am-Ple.COM", "a%2eb", "127.0.0.1",
        ])
        .prop_map(String::from),
        1 => (1usize..70).prop_map(|n| format!("{}.com", "a".repeat(n))),
        1 => (245usize..260).prop_map(|n| format!("{}.c", "b".repeat(n - 2))),
    ];
    let port = select(vec![
        "", ":", ":8080", ":12345", ":123456", ":8a", ":80:80", ":-1", "]:80",
    ]);
    let tail = select(vec!["", "/", "/x?y", "?q", "#f", "\\x", "/@evil.com", "/a:b@c"]);
    let space = select(vec!["", " ", "\t", "\r\n"]);
    prop_oneof![
        4 => (space.clone(), scheme, userinfo, host, port, tail, space)
            .prop_map(|(a, s, u, h, p, t, b)| format!("{a}{s}{u}{h}{p}{t}{b}")),
        1 => "[ a-zA-Z0-9._:@/?#\\[\\]\\\\%+é-]{0,24}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// The one-pass host scan against the reference, and the allowlist's match against
    /// a lower-cased comparison of the reference host.
    #[test]
    fn referrer_host_matches_reference(
        referrer in arb_referrer(),
        patterns in prop::collection::vec((any::<bool>(), arb_host()), 0..3),
        pick in any::<Index>(),
    ) {
        let expected = reference_host(&referrer);
        prop_assert_eq!(credstore::policy::referrer_host(&referrer), expected, "{:?}", referrer);

        // Patterns taken from the referrer's own host (or its parent), so matches happen.
        let mut texts: Vec<String> =
            patterns.iter().map(|(wild, h)| if *wild { format!("*.{h}") } else { h.clone() }).collect();
        if let Some(host) = expected.map(|h| h.trim_end_matches('.').to_ascii_lowercase()) {
            let labels: Vec<&str> = host.split('.').collect();
            let from = pick.index(labels.len());
            let parent = labels[from..].join(".");
            for candidate in [parent.clone(), format!("*.{parent}")] {
                if ReferrerAllowlist::new([&candidate]).is_ok() {
                    texts.push(candidate);
                }
            }
        }
        let list = ReferrerAllowlist::new(&texts).unwrap();
        let allowed = texts.is_empty()
            || expected.is_some_and(|host| {
                let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
                texts.iter().any(|t| match t.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{}", suffix.to_ascii_lowercase())),
                    None => host == t.to_ascii_lowercase(),
                })
            });
        prop_assert_eq!(list.allows(&referrer), allowed, "{:?} against {:?}", referrer, texts);
    }
}

// ---------------------------------------------------------------------------------------
// Serde round trips

fn arb_cidr_text() -> impl Strategy<Value = String> {
    (arb_net(), any::<bool>()).prop_map(|(n, bare)| entry_text(&n, bare))
}

fn arb_referrer_pattern() -> impl Strategy<Value = String> {
    (any::<bool>(), arb_host(), any::<u64>()).prop_map(|(wild, h, bits)| {
        let h = dress(&h, bits, 0);
        if wild { format!("*.{h}") } else { h }
    })
}

fn arb_endpoint_entry() -> impl Strategy<Value = String> {
    (select(vec!["GET", "post", "*", "ANY", "Patch"]), arb_glob()).prop_map(|(m, g)| format!("{m} {g}"))
}

proptest! {
    #[test]
    fn serde_round_trips_as_source_strings(
        cidrs in prop::collection::vec(arb_cidr_text(), 0..5),
        referrers in prop::collection::vec(arb_referrer_pattern(), 0..5),
        endpoints in prop::collection::vec(arb_endpoint_entry(), 0..5),
        permissions in prop::collection::vec(arb_permission_text(), 0..5),
    ) {
        let ips = IpAllowlist::new(&cidrs).unwrap();
        let json = serde_json::to_string(&ips).unwrap();
        prop_assert_eq!(&json, &serde_json::to_string(&cidrs).unwrap());
        prop_assert_eq!(serde_json::from_str::<IpAllowlist>(&json).unwrap(), ips);

        let refs = ReferrerAllowlist::new(&referrers).unwrap();
        let json = serde_json::to_string(&refs).unwrap();
        prop_assert_eq!(&json, &serde_json::to_string(&referrers).unwrap());
        prop_assert_eq!(serde_json::from_str::<ReferrerAllowlist>(&json).unwrap(), refs);

        let eps = EndpointAllowlist::new(&endpoints).unwrap();
        let json = serde_json::to_string(&eps).unwrap();
        prop_assert_eq!(&json, &serde_json::to_string(&endpoints).unwrap());
        prop_assert_eq!(serde_json::from_str::<EndpointAllowlist>(&json).unwrap(), eps);

        let set = PermissionSet::parse(&permissions).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        prop_assert_eq!(&json, &serde_json::to_string(&permissions).unwrap());
        prop_assert_eq!(serde_json::from_str::<PermissionSet>(&json).unwrap(), set);
        for p in &permissions {
            let parsed = Permission::parse(p).unwrap();
            let json = serde_json::to_string(&parsed).unwrap();
            prop_assert_eq!(serde_json::from_str::<Permission>(&json).unwrap(), parsed);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bad input (tables; the unit tests in src/policy/ check the messages in detail)

#[test]
fn bad_input_gives_typed_errors() {
    for cidr in [
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "300.0.0.1",
        "10.0.0.0 /8",
        "::g",
        "1.2.3.4/8/9",
        "*",
    ] {
        assert!(
            matches!(IpAllowlist::new([cidr]), Err(InputError::InvalidCidr(_))),
            "{cidr:?}"
        );
    }
    for glob in ["", "v1", "/v1/***", "/v1/**x", "/a b", "/a?b"] {
        assert!(
            matches!(PathGlob::parse(glob), Err(InputError::InvalidGlob(_))),
            "{glob:?}"
        );
        assert!(
            matches!(
                EndpointAllowlist::new([format!("GET {glob}")]),
                Err(InputError::InvalidGlob(_) | InputError::InvalidEndpoint(_))
            ),
            "{glob:?}"
        );
    }
    for query in [
        "(a:b",
        "a:b)",
        "((a:b) OR c:d",
        "a:b OR (c:d))",
        ")(",
        "",
        "AND",
        "a:b OR",
        "a:B",
        "a:b ~ c:d",
        "a:b\u{0}",
    ] {
        assert!(
            matches!(PermissionQuery::parse(query), Err(InputError::InvalidQuery(_))),
            "{query:?}"
        );
    }
    for permission in ["A:b", "a:b c", "a;b", "a:b:c", "é:x", "a:b\n"] {
        assert!(
            matches!(Permission::parse(permission), Err(InputError::InvalidPermission(_))),
            "{permission:?}"
        );
    }
    for pattern in [
        "http://x.com",
        "x.com:1",
        "*",
        "a.*.com",
        "ex ample.com",
        "bad_ch@r.com",
    ] {
        assert!(
            matches!(ReferrerAllowlist::new([pattern]), Err(InputError::InvalidReferrer(_))),
            "{pattern:?}"
        );
    }
    // Errors read well through the crate's top-level error too.
    let e = credstore::Error::from(IpAllowlist::new(["10.0.0.0/33"]).unwrap_err());
    assert!(e.to_string().contains("invalid CIDR \"10.0.0.0/33\""), "{e}");
    assert!(e.is_caller_error());
}
