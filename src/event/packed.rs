//! The packed form of a `key.uses` record's uses ([`EventKind::KeysUsed`]): each distinct
//! key id, endpoint and client address written once, and each use as a few small
//! integers, about 5 bytes a use instead of about 40. A record is hashed, framed and
//! written by the commit thread, which in every-request mode handles millions of uses a
//! second: bytes per use are its work per use.
//!
//! Layout (integers are LEB128 varints; `at` deltas are zigzag-coded):
//!
//! ```text
//! version (1 byte, 1)
//! key count,      then each key id:   length, UTF-8 bytes
//! endpoint count, then each endpoint: length, UTF-8 bytes
//! address count,  then each address:  4 and 4 bytes, or 6 and 16 bytes
//! use count,      then each use:      key index, at - previous at (the first: at itself),
//!                                     code (1 byte), address index + 1 (0: none),
//!                                     endpoint index + 1 (0: none)
//! ```
//!
//! Decoding checks every count against the bytes left before it allocates, every index
//! against its table and every key id's form, and refuses trailing bytes: the bytes come
//! from disk and may be damaged or forged.
//!
//! [`EventKind::KeysUsed`]: super::EventKind::KeysUsed

use std::borrow::Borrow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::decision::Code;
use crate::name::InlineName;
use crate::record::KeyId;

use super::KeyUse;

/// The packed layout's version, its first byte.
const LAYOUT: u8 = 1;

/// At most this many uses in one `key.uses` record.
pub(crate) const MAX_USES_PER_RECORD: usize = 4_096;

/// At most this many bytes of distinct endpoints in one `key.uses` record.
pub(crate) const MAX_ENDPOINT_BYTES_PER_RECORD: usize = 256 * 1024;

/// An endpoint longer than this is cut (at a character boundary) when recorded.
pub(crate) const MAX_RECORDED_ENDPOINT: usize = 1_024;

/// The fewest bytes one use takes (five one-byte fields).
const MIN_USE_LEN: usize = 5;

/// A key id as the use log carries it: inline (ids are `key_` and 22 digits, 26 bytes), so
/// no `Arc` of the record crosses to the commit thread, and compared as bytes.
pub(crate) type UseId = InlineName<32>;

/// One use, borrowed: what the packer reads, from a [`KeyUse`] or from the commit
/// thread's hand-off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UseView<'a> {
    pub id: UseId,
    pub at: i64,
    pub code: Code,
    pub ip: Option<IpAddr>,
    pub endpoint: Option<&'a str>,
}

impl<'a> From<&'a KeyUse> for UseView<'a> {
    fn from(u: &'a KeyUse) -> Self {
        UseView {
            // A key id is 26 ASCII bytes: never cut.
            id: UseId::lossy(u.id.as_str()),
            at: u.at,
            code: u.code,
            ip: u.ip,
            endpoint: u.endpoint.as_deref(),
        }
    }
}

/// A table of distinct values, numbered in order of first appearance. Runs of one value
/// (one key verified over and over) skip the hash.
struct Table<K> {
    index: HashMap<K, u32>,
    order: Vec<K>,
    last: Option<u32>,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            index: HashMap::new(),
            order: Vec::new(),
            last: None,
        }
    }

    /// `value`'s number, and whether it is new to the table.
    fn number<Q>(&mut self, value: &Q) -> (u32, bool)
    where
        K: Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(n) = self.last
            && self.order.get(n as usize).is_some_and(|last| last.borrow() == value)
        {
            return (n, false);
        }
        let (n, new) = match self.index.get(value) {
            Some(n) => (*n, false),
            None => {
                let n = u32::try_from(self.order.len()).unwrap_or(u32::MAX);
                self.index.insert(value.to_owned(), n);
                self.order.push(value.to_owned());
                (n, true)
            }
        };
        self.last = Some(n);
        (n, new)
    }
}

/// Packs uses one at a time (the commit thread packs them as it takes them off the
/// rings, without gathering them first).
pub(crate) struct Packer {
    keys: Table<UseId>,
    endpoints: Table<String>,
    ips: Table<IpAddr>,
    body: Vec<u8>,
    count: usize,
    previous: i64,
    endpoint_bytes: usize,
}

impl Packer {
    pub fn new() -> Self {
        Packer {
            keys: Table::new(),
            endpoints: Table::new(),
            ips: Table::new(),
            body: Vec::new(),
            count: 0,
            previous: 0,
            endpoint_bytes: 0,
        }
    }

    /// Uses packed so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Bytes of distinct endpoints packed so far.
    pub fn endpoint_bytes(&self) -> usize {
        self.endpoint_bytes
    }

    pub fn push(&mut self, u: UseView<'_>) {
        let key = self.keys.number(&u.id).0;
        let body = &mut self.body;
        put_varint(body, u64::from(key));
        put_varint(body, zigzag(u.at.wrapping_sub(self.previous)));
        self.previous = u.at;
        body.push(u.code.byte());
        put_varint(body, u.ip.map_or(0, |ip| u64::from(self.ips.number(&ip).0) + 1));
        let endpoint = u.endpoint.map_or(0, |e| {
            let (n, new) = self.endpoints.number(e);
            if new {
                self.endpoint_bytes += e.len();
            }
            u64::from(n) + 1
        });
        put_varint(body, endpoint);
        self.count += 1;
    }

    /// The packed bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 64);
        out.push(LAYOUT);
        put_strings(&mut out, &self.keys.order);
        put_strings(&mut out, &self.endpoints.order);
        put_varint(&mut out, self.ips.order.len() as u64);
        for ip in &self.ips.order {
            match ip {
                IpAddr::V4(v4) => {
                    out.push(4);
                    out.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    out.push(6);
                    out.extend_from_slice(&v6.octets());
                }
            }
        }
        put_varint(&mut out, self.count as u64);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Packs uses, in order.
pub(crate) fn pack<'a>(uses: impl IntoIterator<Item = UseView<'a>>) -> Vec<u8> {
    let mut packer = Packer::new();
    uses.into_iter().for_each(|u| packer.push(u));
    packer.finish()
}

/// Unpacks what [`pack`] wrote.
///
/// # Errors
/// A message naming what is wrong: the version, a count larger than the bytes left, an
/// index outside its table, a key id or endpoint that is not one, an unknown outcome code,
/// more uses or endpoint bytes than a record may hold, truncated or trailing bytes.
pub(crate) fn unpack(bytes: &[u8]) -> Result<Vec<KeyUse>, String> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.byte("the layout version")?;
    if version != LAYOUT {
        return Err(format!("unknown packed-uses layout {version}"));
    }
    let keys = r
        .strings("key id")?
        .into_iter()
        .map(|id| KeyId::parse(id).map_err(|e| format!("packed uses: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let endpoints = r.strings("endpoint")?;
    // Each use copies its endpoint out: bounded as the writer bounds them, a forged record
    // of many uses of one long endpoint cannot decode to gigabytes.
    if let Some(long) = endpoints.iter().find(|e| e.len() > MAX_RECORDED_ENDPOINT) {
        return Err(format!(
            "packed uses: an endpoint of {} bytes (at most {MAX_RECORDED_ENDPOINT})",
            long.len()
        ));
    }
    let endpoint_bytes: usize = endpoints.iter().map(|e| e.len()).sum();
    if endpoint_bytes > MAX_ENDPOINT_BYTES_PER_RECORD {
        return Err(format!(
            "packed uses: {endpoint_bytes} bytes of endpoints (at most {MAX_ENDPOINT_BYTES_PER_RECORD})"
        ));
    }
    let ip_count = r.count("address", 5)?;
    let mut ips = Vec::with_capacity(ip_count);
    for _ in 0..ip_count {
        ips.push(match r.byte("an address family")? {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
            other => return Err(format!("packed uses: unknown address family {other}")),
        });
    }
    let use_count = r.count("use", MIN_USE_LEN)?;
    if use_count > MAX_USES_PER_RECORD {
        return Err(format!("packed uses: {use_count} uses (at most {MAX_USES_PER_RECORD})"));
    }
    let mut uses = Vec::with_capacity(use_count);
    let mut previous = 0i64;
    for _ in 0..use_count {
        let id = pick(&keys, r.varint()?, "key")?.clone();
        // Deltas wrap, as the packer took them: any i64 follows any other.
        let at = previous.wrapping_add(unzigzag(r.varint()?));
        previous = at;
        let code = code_of(r.byte("an outcome code")?)?;
        let ip = match r.varint()? {
            0 => None,
            n => Some(*pick(&ips, n - 1, "address")?),
        };
        let endpoint = match r.varint()? {
            0 => None,
            n => Some((*pick(&endpoints, n - 1, "endpoint")?).to_string()),
        };
        uses.push(KeyUse {
            id,
            at,
            code,
            ip,
            endpoint,
        });
    }
    if r.at != bytes.len() {
        return Err(format!("packed uses: {} trailing bytes", bytes.len() - r.at));
    }
    Ok(uses)
}

fn code_of(byte: u8) -> Result<Code, String> {
    Code::from_byte(byte).ok_or_else(|| format!("packed uses: unknown outcome code {byte}"))
}

fn pick<'t, T>(table: &'t [T], n: u64, what: &str) -> Result<&'t T, String> {
    usize::try_from(n)
        .ok()
        .and_then(|n| table.get(n))
        .ok_or_else(|| format!("packed uses: {what} index {n} is outside the table of {}", table.len()))
}

fn put_strings<S: std::ops::Deref<Target = str>>(out: &mut Vec<u8>, strings: &[S]) {
    put_varint(out, strings.len() as u64);
    for s in strings {
        let s: &str = s;
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// Reads the packed form, every step bounded by the bytes left.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn byte(&mut self, what: &str) -> Result<u8, String> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| format!("packed uses: truncated before {what}"))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], String> {
        let end = self.at.checked_add(n).ok_or("packed uses: truncated")?;
        let out = self.bytes.get(self.at..end).ok_or("packed uses: truncated")?;
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte("a number")?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("packed uses: a number overflows 64 bits".into());
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("packed uses: a number overflows 64 bits".into())
    }

    /// A count of items of at least `min_len` bytes each, refused when the bytes left
    /// cannot hold that many (so a forged count cannot make us allocate).
    fn count(&mut self, what: &str, min_len: usize) -> Result<usize, String> {
        let n = self.varint()?;
        let left = self.bytes.len() - self.at;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_len) <= left => Ok(n),
            _ => Err(format!("packed uses: {n} {what}s cannot fit in {left} bytes")),
        }
    }

    fn strings(&mut self, what: &str) -> Result<Vec<&'b str>, String> {
        let n = self.count(what, 1)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = usize::try_from(self.varint()?).map_err(|_| "packed uses: a length overflows")?;
            let bytes = self.take(len)?;
            out.push(std::str::from_utf8(bytes).map_err(|_| format!("packed uses: a {what} is not UTF-8"))?);
        }
        Ok(out)
    }
}

/// `#[serde(with)]` for a `Vec<KeyUse>` kept packed: bincode writes it as one byte string.
pub(crate) mod serde_packed {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{KeyUse, UseView, pack, unpack};

    pub fn serialize<S: Serializer>(uses: &[KeyUse], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&pack(uses.iter().map(UseView::from)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<KeyUse>, D::Error> {
        struct Packed;
        impl<'de> Visitor<'de> for Packed {
            type Value = Vec<KeyUse>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("packed uses")
            }
            fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                unpack(bytes).map_err(E::custom)
            }
            // Self-describing formats (JSON) write bytes as a list of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                unpack(&bytes).map_err(A::Error::custom)
            }
        }
        deserializer.deserialize_bytes(Packed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "key_0NUqv2Kv3XaL3mB0cWj8vQ";
    const B: &str = "key_0NUqv2Kv3XaL3mB0cWj8vR";

    fn key_use(id: &str, at: i64, code: Code, ip: Option<&str>, endpoint: Option<&str>) -> KeyUse {
        KeyUse {
            id: KeyId::parse(id).unwrap(),
            at,
            code,
            ip: ip.map(|ip| ip.parse().unwrap()),
            endpoint: endpoint.map(str::to_string),
        }
    }

    fn round_trip(uses: &[KeyUse]) -> Vec<u8> {
        let bytes = pack(uses.iter().map(UseView::from));
        assert_eq!(unpack(&bytes).unwrap(), uses);
        bytes
    }

    #[test]
    fn uses_round_trip_with_every_field_and_code() {
        let mut uses: Vec<KeyUse> = Code::ALL
            .iter()
            .enumerate()
            .map(|(i, code)| key_use(if i % 2 == 0 { A } else { B }, 1_000 + i as i64, *code, None, None))
            .collect();
        uses.push(key_use(A, 999, Code::Valid, Some("192.0.2.7"), Some("GET /v1/x")));
        uses.push(key_use(B, -5, Code::Valid, Some("2001:db8::7"), Some("POST /é")));
        uses.push(key_use(A, i64::MAX, Code::Valid, Some("192.0.2.7"), Some("GET /v1/x")));
        uses.push(key_use(A, i64::MIN, Code::Valid, None, Some("")));
        round_trip(&uses);
        round_trip(&[]);
    }

    #[test]
    fn a_run_of_one_key_takes_five_bytes_a_use() {
        let t = 1_790_000_000_000;
        let uses: Vec<KeyUse> = (0..1000)
            .map(|i| key_use(A, t + i / 3, Code::Valid, Some("192.0.2.7"), Some("GET /v1/ping")))
            .collect();
        let bytes = round_trip(&uses);
        // The tables and the first time are paid once; each use is five one-byte fields.
        assert!(bytes.len() <= 1000 * 5 + 80, "{}", bytes.len());
    }

    #[test]
    fn damaged_bytes_are_refused_with_what_is_wrong() {
        let uses = [
            key_use(A, 10, Code::Valid, Some("192.0.2.7"), Some("GET /")),
            key_use(B, 11, Code::RateLimited, None, None),
        ];
        let good = round_trip(&uses);
        // Every truncation is an error, never a panic or a shorter list.
        for len in 0..good.len() {
            assert!(unpack(&good[..len]).is_err(), "cut at {len}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(unpack(&trailing).unwrap_err().contains("trailing"));
        let mut version = good.clone();
        version[0] = 9;
        assert!(unpack(&version).unwrap_err().contains("layout 9"));
        // A forged count larger than the bytes is refused before anything is allocated.
        let mut huge = vec![LAYOUT];
        put_varint(&mut huge, u64::MAX >> 1);
        assert!(unpack(&huge).unwrap_err().contains("cannot fit"));
        // An index outside its table, an unknown code, an id that is not one.
        // (After the one key: no endpoints, no addresses, one use of key 1.)
        let mut bad_index = vec![LAYOUT];
        put_strings(&mut bad_index, &[A]);
        bad_index.extend_from_slice(&[0, 0, 1, 1, 0, 0, 0, 0]);
        assert!(unpack(&bad_index).unwrap_err().contains("key index 1"));
        let mut bad_code = vec![LAYOUT];
        put_strings(&mut bad_code, &[A]);
        bad_code.extend_from_slice(&[0, 0, 1, 0, 0, 200, 0, 0]);
        assert!(unpack(&bad_code).unwrap_err().contains("outcome code 200"));
        let mut bad_id = vec![LAYOUT];
        put_strings(&mut bad_id, &["key_short"]);
        bad_id.extend_from_slice(&[0, 0, 0]);
        assert!(unpack(&bad_id).unwrap_err().contains("packed uses"));
    }

    /// A record's bytes by hand: one key, the endpoints, no addresses, `uses` uses of key 0
    /// at time 0 with endpoint 1.
    fn forged(endpoints: &[&str], uses: usize) -> Vec<u8> {
        let mut out = vec![LAYOUT];
        put_strings(&mut out, &[A]);
        put_strings(&mut out, endpoints);
        out.push(0);
        put_varint(&mut out, uses as u64);
        for _ in 0..uses {
            out.extend_from_slice(&[0, 0, 0, 0, 1]);
        }
        out
    }

    #[test]
    fn records_past_the_writers_limits_are_refused() {
        // Each use copies its endpoint out: many uses of one long endpoint would decode to
        // far more memory than the record holds.
        let long = "x".repeat(MAX_RECORDED_ENDPOINT + 1);
        assert!(
            unpack(&forged(&[&long], 1))
                .unwrap_err()
                .contains("an endpoint of 1025 bytes")
        );
        let at_most = "x".repeat(MAX_RECORDED_ENDPOINT);
        assert_eq!(unpack(&forged(&[&at_most], 3)).unwrap().len(), 3);
        let many: Vec<String> = (0..MAX_ENDPOINT_BYTES_PER_RECORD / MAX_RECORDED_ENDPOINT + 1)
            .map(|i| format!("{i:0width$}", width = MAX_RECORDED_ENDPOINT))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(unpack(&forged(&many, 1)).unwrap_err().contains("bytes of endpoints"));
        assert!(unpack(&forged(&many[1..], 1)).is_ok());
        assert!(
            unpack(&forged(&["GET /"], MAX_USES_PER_RECORD + 1))
                .unwrap_err()
                .contains("4097 uses")
        );
        assert_eq!(
            unpack(&forged(&["GET /"], MAX_USES_PER_RECORD)).unwrap().len(),
            MAX_USES_PER_RECORD
        );
    }

    #[test]
    fn a_uses_record_survives_a_self_describing_format() {
        let event = super::super::Event {
            at: 7,
            kind: super::super::EventKind::KeysUsed {
                uses: vec![key_use(A, 7, Code::Valid, Some("192.0.2.7"), Some("GET /"))],
            },
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<super::super::Event>(&json).unwrap(), event);
    }

    #[test]
    fn varints_and_zigzag_cover_their_whole_range() {
        for n in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(Reader { bytes: &out, at: 0 }.varint().unwrap(), n);
        }
        for n in [0i64, 1, -1, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(n)), n);
        }
        // Eleven continuation bytes, or a tenth byte with more than one bit, overflow.
        assert!(
            Reader {
                bytes: &[0xff; 11],
                at: 0
            }
            .varint()
            .is_err()
        );
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(Reader { bytes: &too_big, at: 0 }.varint().is_err());
    }
}
