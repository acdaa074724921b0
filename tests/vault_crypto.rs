//! The provider-key vault's cryptographic core, tested through its public API: round trips,
//! tamper and move detection, master keys (wrong, unknown, retired), rewrap without
//! decryption, nonce freshness, input bounds, redaction, and a parser that never panics.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use credstore::InputError;
use credstore::vault::{
    self, HEADER_LEN, MAX_BLOB_LEN, MAX_SECRET_LEN, MIN_BLOB_LEN, MasterKey, MasterKeyring, SealedSecret, TAG_LEN,
    VaultError,
};
use proptest::prelude::*;

fn key(version: u32, byte: u8) -> MasterKey {
    MasterKey::from_bytes(version, [byte; 32]).unwrap()
}

fn ring_v1() -> MasterKeyring {
    MasterKeyring::new(key(1, 0x11))
}

#[test]
fn round_trips_at_every_size_boundary() {
    let ring = ring_v1();
    for len in [1, 2, 15, 16, 17, 1000, MAX_SECRET_LEN - 1, MAX_SECRET_LEN] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let sealed = vault::seal(&ring, "acme", "openai.prod_key-2", 7, &plaintext).unwrap();
        assert_eq!(sealed.encoded_len(), HEADER_LEN + len + TAG_LEN);
        let parsed = SealedSecret::from_bytes(&sealed.to_bytes()).unwrap();
        assert_eq!(parsed.master_version(), 1);
        let opened = vault::open(&ring, &parsed, "acme", "openai.prod_key-2", 7).unwrap();
        assert_eq!(opened.expose(), plaintext.as_slice(), "length {len}");
    }
}

#[test]
fn opens_as_a_zeroizing_secret_string() {
    let ring = ring_v1();
    let sealed = vault::seal(&ring, "default", "anthropic", 1, b"sk-ant-123").unwrap();
    let secret = vault::open(&ring, &sealed, "default", "anthropic", 1)
        .unwrap()
        .into_secret()
        .unwrap();
    assert_eq!(secret.expose(), "sk-ant-123");
}

#[test]
fn an_altered_byte_anywhere_fails_to_open() {
    let ring = ring_v1();
    let bytes = vault::seal(&ring, "acme", "openai", 1, b"a provider secret")
        .unwrap()
        .to_bytes();
    for i in 0..bytes.len() {
        for value in [bytes[i] ^ 0x01, bytes[i] ^ 0xff, 0x00] {
            if value == bytes[i] {
                continue;
            }
            let mut bad = bytes.clone();
            bad[i] = value;
            let result = SealedSecret::from_bytes(&bad).and_then(|s| vault::open(&ring, &s, "acme", "openai", 1));
            assert!(result.is_err(), "byte {i} set to {value:#04x} still opened");
        }
    }
}

#[test]
fn a_truncated_or_extended_blob_fails_clearly() {
    let ring = ring_v1();
    let bytes = vault::seal(&ring, "acme", "openai", 1, b"secret").unwrap().to_bytes();
    for len in 0..bytes.len() {
        let result = SealedSecret::from_bytes(&bytes[..len]).and_then(|s| vault::open(&ring, &s, "acme", "openai", 1));
        assert!(result.is_err(), "truncated to {len} bytes still opened");
    }
    assert_eq!(
        SealedSecret::from_bytes(&bytes[..MIN_BLOB_LEN - 1]).unwrap_err(),
        VaultError::BlobTooShort {
            len: MIN_BLOB_LEN - 1,
            min: MIN_BLOB_LEN
        }
    );
    assert_eq!(
        SealedSecret::from_bytes(&[]).unwrap_err(),
        VaultError::BlobTooShort {
            len: 0,
            min: MIN_BLOB_LEN
        }
    );
    let mut longer = bytes.clone();
    longer.push(0);
    let sealed = SealedSecret::from_bytes(&longer).unwrap();
    assert_eq!(
        vault::open(&ring, &sealed, "acme", "openai", 1).unwrap_err(),
        VaultError::DecryptFailed
    );
    let mut other_format = bytes.clone();
    other_format[0] = 2;
    assert_eq!(
        SealedSecret::from_bytes(&other_format).unwrap_err(),
        VaultError::UnsupportedFormat { found: 2, supported: 1 }
    );
    assert!(matches!(
        SealedSecret::from_bytes(&vec![1u8; MAX_BLOB_LEN + 1]).unwrap_err(),
        VaultError::BlobTooLong { .. }
    ));
}

#[test]
fn a_blob_moved_to_another_record_fails_to_open() {
    let ring = ring_v1();
    let sealed = vault::seal(&ring, "acme", "openai", 3, b"sk-abc").unwrap();
    for (project, name, version) in [
        ("other", "openai", 3),
        ("acme", "anthropic", 3),
        ("acme", "openai", 2),
        ("acme", "openai", 4),
        // Bytes shifted between project and name are another record too.
        ("acmeo", "penai", 3),
    ] {
        assert_eq!(
            vault::open(&ring, &sealed, project, name, version).unwrap_err(),
            VaultError::UnwrapFailed { version: 1 },
            "opened as {project}/{name} v{version}"
        );
    }
}

#[test]
fn a_data_part_spliced_from_another_blob_fails_to_open() {
    let ring = ring_v1();
    let a = vault::seal(&ring, "acme", "openai", 1, b"secret A").unwrap().to_bytes();
    let b = vault::seal(&ring, "acme", "openai", 1, b"secret B").unwrap().to_bytes();
    // a's header and wrapped data key, b's data nonce and ciphertext.
    let data_nonce_at = HEADER_LEN - 24;
    let mut spliced = a[..data_nonce_at].to_vec();
    spliced.extend_from_slice(&b[data_nonce_at..]);
    let sealed = SealedSecret::from_bytes(&spliced).unwrap();
    assert_eq!(
        vault::open(&ring, &sealed, "acme", "openai", 1).unwrap_err(),
        VaultError::DecryptFailed
    );
}

#[test]
fn the_wrong_master_key_fails_to_open() {
    let sealed = vault::seal(&ring_v1(), "acme", "openai", 1, b"sk-abc").unwrap();
    let wrong = MasterKeyring::new(key(1, 0x22));
    let err = vault::open(&wrong, &sealed, "acme", "openai", 1).unwrap_err();
    assert_eq!(err, VaultError::UnwrapFailed { version: 1 });
    assert!(err.to_string().contains("wrong master key"), "{err}");
    // The public check value tells the keys apart before any blob is tried.
    assert_ne!(key(1, 0x11).check_value(), key(1, 0x22).check_value());
    assert_eq!(key(1, 0x11).check_value(), key(1, 0x11).check_value());
}

#[test]
fn an_unknown_master_version_fails_clearly() {
    let mut ring = ring_v1();
    ring.insert(key(2, 0x22)).unwrap();
    let sealed = vault::seal(&ring, "acme", "openai", 1, b"sk-abc").unwrap();
    assert_eq!(sealed.master_version(), 2);
    let err = vault::open(&ring_v1(), &sealed, "acme", "openai", 1).unwrap_err();
    assert_eq!(err, VaultError::UnknownMasterKey { version: 2 });
    assert!(err.to_string().contains("version 2 is not loaded"), "{err}");
}

#[test]
fn a_retired_master_version_fails_clearly() {
    let mut ring = ring_v1();
    let old = vault::seal(&ring, "acme", "openai", 1, b"sk-abc").unwrap();
    ring.insert(key(2, 0x22)).unwrap();
    ring.set_min_decrypt_version(2).unwrap();
    // The key is still held, but retired: neither open nor rewrap uses it.
    assert_eq!(ring.versions(), [1, 2]);
    let err = vault::open(&ring, &old, "acme", "openai", 1).unwrap_err();
    assert_eq!(err, VaultError::RetiredMasterKey { version: 1, min: 2 });
    assert!(err.to_string().contains("retired"), "{err}");
    assert_eq!(
        vault::rewrap(&ring, &old, "acme", "openai", 1).unwrap_err(),
        VaultError::RetiredMasterKey { version: 1, min: 2 }
    );
    // The current key cannot be retired.
    assert_eq!(
        ring.set_min_decrypt_version(3).unwrap_err(),
        VaultError::WouldRetireCurrent { min: 3, current: 2 }
    );
}

#[test]
fn rewrap_keeps_the_secret_readable_and_the_ciphertext_identical_without_decrypting() {
    let mut ring = ring_v1();
    let records = [("acme", "openai", 1u32), ("acme", "openai", 2), ("beta", "stripe", 1)];
    let sealed: Vec<SealedSecret> = records
        .iter()
        .map(|(p, n, v)| vault::seal(&ring, p, n, *v, format!("secret of {p}/{n}/{v}").as_bytes()).unwrap())
        .collect();

    ring.insert(key(2, 0x22)).unwrap();
    assert!(sealed.iter().all(|s| ring.needs_rewrap(s)));
    let before = vault::data_decryptions_on_this_thread();
    let rewrapped: Vec<SealedSecret> = records
        .iter()
        .zip(&sealed)
        .map(|((p, n, v), s)| vault::rewrap(&ring, s, p, n, *v).unwrap())
        .collect();
    assert_eq!(
        vault::data_decryptions_on_this_thread(),
        before,
        "rewrap decrypted a secret"
    );

    for (old, new) in sealed.iter().zip(&rewrapped) {
        assert_eq!(new.master_version(), 2);
        assert!(!ring.needs_rewrap(new));
        assert_eq!(new.data_ciphertext(), old.data_ciphertext());
        assert_eq!(new.data_nonce(), old.data_nonce());
        assert_ne!(new.wrap_nonce(), old.wrap_nonce());
        // Byte for byte: only the master version and the wrap differ.
        let (old_bytes, new_bytes) = (old.to_bytes(), new.to_bytes());
        assert_eq!(old_bytes[HEADER_LEN - 24..], new_bytes[HEADER_LEN - 24..]);
        assert_eq!(old_bytes[0], new_bytes[0]);
    }

    // Readable with the new master key alone, once the old one is retired or gone.
    ring.set_min_decrypt_version(2).unwrap();
    let only_new = MasterKeyring::new(key(2, 0x22));
    for ((p, n, v), s) in records.iter().zip(&rewrapped) {
        let expected = format!("secret of {p}/{n}/{v}");
        assert_eq!(vault::open(&ring, s, p, n, *v).unwrap().expose(), expected.as_bytes());
        assert_eq!(
            vault::open(&only_new, s, p, n, *v).unwrap().expose(),
            expected.as_bytes()
        );
    }
    // The counter does count: the six opens above are six data decryptions.
    assert_eq!(vault::data_decryptions_on_this_thread(), before + 6);
}

#[test]
fn rewrap_checks_the_record_and_the_master_key() {
    let mut ring = ring_v1();
    let sealed = vault::seal(&ring, "acme", "openai", 1, b"sk-abc").unwrap();
    ring.insert(key(2, 0x22)).unwrap();
    assert_eq!(
        vault::rewrap(&ring, &sealed, "acme", "other", 1).unwrap_err(),
        VaultError::UnwrapFailed { version: 1 }
    );
    let mut wrong = MasterKeyring::new(key(1, 0x99));
    wrong.insert(key(2, 0x22)).unwrap();
    assert_eq!(
        vault::rewrap(&wrong, &sealed, "acme", "openai", 1).unwrap_err(),
        VaultError::UnwrapFailed { version: 1 }
    );
}

#[test]
fn nonces_and_data_keys_are_fresh_for_every_seal() {
    let ring = ring_v1();
    let sealed: Vec<SealedSecret> = (0..64)
        .map(|_| vault::seal(&ring, "acme", "openai", 1, b"the same secret").unwrap())
        .collect();
    let mut nonces = std::collections::HashSet::new();
    let mut ciphertexts = std::collections::HashSet::new();
    for s in &sealed {
        assert!(nonces.insert(*s.data_nonce()));
        assert!(nonces.insert(*s.wrap_nonce()));
        assert!(ciphertexts.insert(s.data_ciphertext().to_vec()));
    }
    // Rewrapping twice also uses fresh wrap nonces.
    let a = vault::rewrap(&ring, &sealed[0], "acme", "openai", 1).unwrap();
    let b = vault::rewrap(&ring, &sealed[0], "acme", "openai", 1).unwrap();
    assert_ne!(a.wrap_nonce(), b.wrap_nonce());
}

#[test]
fn empty_or_oversized_secrets_are_refused() {
    let ring = ring_v1();
    assert_eq!(
        vault::seal(&ring, "acme", "openai", 1, b"").unwrap_err(),
        VaultError::Input(InputError::EmptySecret)
    );
    let big = vec![b'x'; MAX_SECRET_LEN + 1];
    let err = vault::seal(&ring, "acme", "openai", 1, &big).unwrap_err();
    assert_eq!(
        err,
        VaultError::Input(InputError::SecretTooLarge {
            len: MAX_SECRET_LEN + 1,
            max: MAX_SECRET_LEN
        })
    );
    assert!(err.is_caller_error());
    assert_eq!(vault::validate_secret_len(MAX_SECRET_LEN), Ok(()));
}

#[test]
fn bad_names_and_projects_are_refused() {
    let ring = ring_v1();
    let long = "n".repeat(129);
    for name in ["", "has space", "slash/name", "tab\t", "é", "semi;colon", long.as_str()] {
        assert_eq!(
            vault::seal(&ring, "acme", name, 1, b"x").unwrap_err(),
            VaultError::Input(InputError::InvalidSecretName { len: name.len() }),
            "{name:?}"
        );
    }
    assert_eq!(vault::validate_secret_name(&"n".repeat(128)), Ok(()));
    assert_eq!(vault::validate_secret_name("A-z_0.9"), Ok(()));
    assert!(matches!(
        vault::seal(&ring, "a/b", "openai", 1, b"x").unwrap_err(),
        VaultError::Input(InputError::InvalidProject(_))
    ));
    // The error names the rule, never the name (it might be a pasted secret).
    let err = vault::seal(&ring, "acme", "sk live pasted-here", 1, b"x").unwrap_err();
    assert!(!err.to_string().contains("pasted"), "{err}");
    let sealed = vault::seal(&ring, "acme", "ok", 1, b"x").unwrap();
    assert!(
        vault::open(&ring, &sealed, "acme", "not ok", 1)
            .unwrap_err()
            .is_caller_error()
    );
}

#[test]
fn master_keys_parse_from_hex_and_refuse_bad_text() {
    let hex = "ab".repeat(32);
    let k = MasterKey::from_hex(3, &format!("{hex}\n")).unwrap();
    assert_eq!(k.version(), 3);
    assert_eq!(k.to_hex().as_str(), hex);
    assert_eq!(
        MasterKey::from_hex(3, &hex[..62]).unwrap_err(),
        InputError::InvalidMasterKey
    );
    assert_eq!(
        MasterKey::from_hex(3, &format!("{hex}00")).unwrap_err(),
        InputError::InvalidMasterKey
    );
    assert_eq!(
        MasterKey::from_hex(0, &hex).unwrap_err(),
        InputError::InvalidMasterKeyVersion
    );
    let random = MasterKey::random(1).unwrap();
    assert_ne!(
        random.to_hex().as_str(),
        MasterKey::random(1).unwrap().to_hex().as_str()
    );
}

#[test]
fn debug_output_never_shows_key_or_secret_material() {
    let master = key(4, 0xab);
    let mut ring = MasterKeyring::new(key(1, 0xcd));
    ring.insert(master.clone()).unwrap();
    let sealed = vault::seal(&ring, "acme", "openai", 1, b"sk-TOPSECRET").unwrap();
    let opened = vault::open(&ring, &sealed, "acme", "openai", 1).unwrap();
    let texts = [
        format!("{master:?}"),
        format!("{master:#?}"),
        format!("{ring:?}"),
        format!("{sealed:?}"),
        format!("{opened:?}"),
    ];
    for text in &texts {
        for needle in ["abab", "cdcd", "171", "205", "TOPSECRET", "sk-"] {
            assert!(!text.contains(needle), "{needle:?} in {text}");
        }
    }
    assert!(texts[0].contains("version: 4") && texts[0].contains("redacted"));
    let secret = opened.into_secret().unwrap();
    assert!(!format!("{secret:?}").contains("TOPSECRET"));
    assert!(!format!("{secret}").contains("TOPSECRET"));
}

proptest! {
    #[test]
    fn from_bytes_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = SealedSecret::from_bytes(&bytes);
    }

    #[test]
    fn from_bytes_never_panics_on_format_1_blobs(
        tail in proptest::collection::vec(any::<u8>(), 0..(MIN_BLOB_LEN + 64)),
    ) {
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(&tail);
        match SealedSecret::from_bytes(&bytes) {
            // Whatever parses, round trips, and does not open under a key.
            Ok(sealed) => {
                prop_assert_eq!(sealed.to_bytes(), bytes);
                prop_assert!(vault::open(&ring_v1(), &sealed, "acme", "openai", 1).is_err());
            }
            Err(err) => {
                let too_short = matches!(err, VaultError::BlobTooShort { .. });
                prop_assert!(too_short, "{}", err);
            }
        }
    }

    #[test]
    fn any_change_to_a_valid_blob_fails_to_open(
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        plaintext in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let ring = ring_v1();
        let mut bytes = vault::seal(&ring, "acme", "openai", 1, &plaintext).unwrap().to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        let result = SealedSecret::from_bytes(&bytes).and_then(|s| vault::open(&ring, &s, "acme", "openai", 1));
        prop_assert!(result.is_err());
    }
}
