//! Signing layout tests: what a signature covers, and what it must not verify.

use super::*;
use crate::package::{PackageLimits, read_package, write_package};

/// A fixed key, so the layout test below is reproducible.
fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn statement(name: &str, version: &str) -> ReleaseStatement {
    ReleaseStatement {
        name: name.parse().unwrap(),
        version: version.parse().unwrap(),
        contract: Some(Version::new(0, 2, 0)),
        key_id: KeyId::of(&key(1).verifying_key()),
        manifest_sha256: Sha256Digest::of(b"kelp.toml"),
        wasm_sha256: Some(Sha256Digest::of(b"plugin.wasm")),
        package_sha256: Sha256Digest::of(b"package"),
    }
}

#[test]
fn the_colliding_name_and_version_pair_signs_different_bytes() {
    let short = statement("a/b", "11.0.0");
    let long = statement("a/b1", "1.0.0");
    // Joined without lengths, the two would be the same bytes.
    assert_eq!(
        format!("{}{}", short.name, short.version),
        format!("{}{}", long.name, long.version)
    );
    assert_ne!(short.signing_bytes(), long.signing_bytes());

    let signature = short.sign(&key(1)).unwrap();
    short.verify(&key(1).verifying_key(), &signature).unwrap();
    assert!(matches!(
        long.verify(&key(1).verifying_key(), &signature),
        Err(SigningError::BadSignature { .. })
    ));
}

#[test]
fn the_layout_is_exactly_as_documented() {
    let s = statement("a/b", "1.0.0");
    let mut expected = Vec::new();
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(&mut expected, b"kelp-registry/v1/release-statement");
    field(&mut expected, b"a/b");
    field(&mut expected, b"1.0.0");
    expected.push(1);
    field(&mut expected, b"0.2.0");
    field(&mut expected, s.key_id.as_str().as_bytes());
    expected.extend_from_slice(&Sha256Digest::of(b"kelp.toml").0);
    expected.push(1);
    expected.extend_from_slice(&Sha256Digest::of(b"plugin.wasm").0);
    expected.extend_from_slice(&Sha256Digest::of(b"package").0);
    assert_eq!(s.signing_bytes(), expected);
    // The tag's length prefix is the first four bytes.
    assert_eq!(&expected[..4], &[0, 0, 0, 34]);
}

#[test]
fn a_presence_byte_tells_absent_from_present_digests() {
    let with_wasm = statement("a/b", "1.0.0");
    let skill_only = ReleaseStatement {
        wasm_sha256: None,
        contract: None,
        ..with_wasm.clone()
    };
    let with_bytes = with_wasm.signing_bytes();
    let without_bytes = skill_only.signing_bytes();
    assert_ne!(with_bytes, without_bytes);
    // Absent: one 0x00 where the presence byte and digest would be, and the package digest
    // right after it.
    let tail = &without_bytes[without_bytes.len() - 33..];
    assert_eq!(tail[0], 0);
    assert_eq!(&tail[1..], &Sha256Digest::of(b"package").0);
    assert_eq!(
        with_bytes.len() - without_bytes.len(),
        32 + (4 + "0.2.0".len())
    );

    let signature = skill_only.sign(&key(1)).unwrap();
    skill_only
        .verify(&key(1).verifying_key(), &signature)
        .unwrap();
    assert!(
        with_wasm
            .verify(&key(1).verifying_key(), &signature)
            .is_err()
    );
}

#[test]
fn a_signature_for_one_kind_of_message_does_not_verify_as_another() {
    let tags: std::collections::BTreeSet<&str> =
        MessageKind::ALL.iter().map(|k| k.domain_tag()).collect();
    assert_eq!(
        tags.len(),
        MessageKind::ALL.len(),
        "domain tags are distinct"
    );

    // The statement's own fields, laid out under every other kind's tag and signed with the
    // statement's key: none of those signatures is a release statement's.
    let s = statement("a/b", "1.0.0");
    let contract = s.contract.as_ref().map(ToString::to_string);
    for kind in MessageKind::ALL {
        let bytes = SigningLayout::new(kind)
            .text(&s.name.to_string())
            .text(&s.version.to_string())
            .optional_text(contract.as_deref())
            .text(s.key_id.as_str())
            .digest(&s.manifest_sha256)
            .optional_digest(s.wasm_sha256.as_ref())
            .digest(&s.package_sha256)
            .finish();
        let signature = key(1).sign(&bytes);
        let verified = s.verify(&key(1).verifying_key(), &signature);
        if kind == MessageKind::ReleaseStatement {
            assert_eq!(bytes, s.signing_bytes());
            verified.unwrap();
        } else {
            let err = verified.unwrap_err();
            assert!(
                matches!(
                    err,
                    SigningError::BadSignature {
                        kind: MessageKind::ReleaseStatement,
                        ..
                    }
                ),
                "{kind}: {err}"
            );
        }
    }
}

#[test]
fn tampering_with_any_field_fails_verification() {
    let original = statement("acme/calc", "1.2.3");
    let signature = original.sign(&key(1)).unwrap();
    let public = key(1).verifying_key();
    original.verify(&public, &signature).unwrap();

    let other = Sha256Digest::of(b"something else");
    let tampered: Vec<(&str, ReleaseStatement)> = vec![
        (
            "name",
            ReleaseStatement {
                name: "acme/calk".parse().unwrap(),
                ..original.clone()
            },
        ),
        (
            "version",
            ReleaseStatement {
                version: Version::new(1, 2, 4),
                ..original.clone()
            },
        ),
        (
            "contract",
            ReleaseStatement {
                contract: Some(Version::new(0, 1, 0)),
                ..original.clone()
            },
        ),
        (
            "no contract",
            ReleaseStatement {
                contract: None,
                ..original.clone()
            },
        ),
        (
            "manifest digest",
            ReleaseStatement {
                manifest_sha256: other,
                ..original.clone()
            },
        ),
        (
            "wasm digest",
            ReleaseStatement {
                wasm_sha256: Some(other),
                ..original.clone()
            },
        ),
        (
            "no wasm digest",
            ReleaseStatement {
                wasm_sha256: None,
                ..original.clone()
            },
        ),
        (
            "package digest",
            ReleaseStatement {
                package_sha256: other,
                ..original.clone()
            },
        ),
    ];
    for (what, statement) in tampered {
        let err = statement.verify(&public, &signature).unwrap_err();
        assert!(
            matches!(err, SigningError::BadSignature { .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains("does not verify"), "{what}: {err}");
    }

    // Another key id in the statement: refused before any signature check, naming both.
    let renamed = ReleaseStatement {
        key_id: KeyId::of(&key(2).verifying_key()),
        ..original.clone()
    };
    let err = renamed.verify(&public, &signature).unwrap_err();
    assert!(matches!(err, SigningError::KeyIdMismatch { .. }), "{err}");
    // And the statement re-signed by that other key does not pass for the first.
    let forged = renamed.sign(&key(2)).unwrap();
    assert!(original.verify(&public, &forged).is_err());

    // A flipped bit in the signature itself.
    let mut bytes = signature.to_bytes();
    bytes[10] ^= 1;
    assert!(
        original
            .verify(&public, &Signature::from_bytes(&bytes))
            .is_err()
    );
}

#[test]
fn only_the_named_key_signs_and_verifies() {
    let s = statement("a/b", "1.0.0");
    let err = s.sign(&key(2)).unwrap_err();
    assert!(matches!(err, SigningError::KeyIdMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(s.key_id.as_str())
            && text.contains(KeyId::of(&key(2).verifying_key()).as_str()),
        "{text}"
    );
    let signature = s.sign(&key(1)).unwrap();
    assert!(matches!(
        s.verify(&key(2).verifying_key(), &signature),
        Err(SigningError::KeyIdMismatch { .. })
    ));
}

#[test]
fn key_ids_and_encodings_round_trip() {
    let secret = generate_signing_key().unwrap();
    assert_ne!(
        secret.to_bytes(),
        generate_signing_key().unwrap().to_bytes()
    );
    let public = secret.verifying_key();

    let id = KeyId::of(&public);
    assert!(id.as_str().starts_with("ed25519:"));
    assert_eq!(id.as_str().len(), "ed25519:".len() + 32);
    assert_eq!(
        id.as_str()["ed25519:".len()..],
        hex::encode(&Sha256::digest(public.as_bytes())[..16])
    );
    assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);

    let encoded = encode_public_key(&public);
    assert_eq!(encoded.len(), 64);
    assert_eq!(decode_public_key(&encoded).unwrap(), public);

    let signature = secret.sign(b"x");
    let encoded = encode_signature(&signature);
    assert_eq!(encoded.len(), 128);
    assert_eq!(decode_signature(&encoded).unwrap(), signature);

    let encoded = encode_signing_key(&secret);
    assert_eq!(
        decode_signing_key(&encoded).unwrap().to_bytes(),
        secret.to_bytes()
    );
}

#[test]
fn bad_encodings_are_refused_with_what_was_expected() {
    let public = encode_public_key(&key(1).verifying_key());
    for bad in [
        "",
        "zz",
        &public[..62],
        &format!("{public}00"),
        &public.to_uppercase(),
    ] {
        let err = decode_public_key(bad).unwrap_err();
        assert!(
            matches!(
                err,
                SigningError::Encoding {
                    what: "public key",
                    ..
                }
            ),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("64 lowercase hex digits"), "{err}");
    }
    // The identity point is on the curve but of small order.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let err = decode_public_key(&hex::encode(identity)).unwrap_err();
    assert!(
        matches!(err, SigningError::BadPublicKey { .. }) && err.to_string().contains("weak"),
        "{err}"
    );

    let err = decode_signature("abc").unwrap_err();
    assert!(
        err.to_string().contains("128 lowercase hex digits"),
        "{err}"
    );

    let secret = "f".repeat(63);
    let err = decode_signing_key(&secret).unwrap_err();
    assert!(
        !err.to_string().contains(&secret),
        "a secret is not echoed: {err}"
    );

    for bad in [
        "ed25519:",
        "ed25519:0123",
        "rsa:00112233445566778899aabbccddeeff",
        "ed25519:00112233445566778899AABBCCDDEEFF",
        "00112233445566778899aabbccddeeff",
    ] {
        assert!(
            matches!(bad.parse::<KeyId>(), Err(SigningError::BadKeyId(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        "ABCD".parse::<Sha256Digest>(),
        Err(SigningError::Encoding {
            what: "SHA-256 digest",
            ..
        })
    ));
}

#[test]
fn a_statement_for_a_package_names_its_digests() {
    let manifest = "name = \"acme/notes\"\nversion = \"1.0.0\"\nkind = \"skill\"\n\
                    description = \"Notes.\"\n";
    let skill = "---\nname: notes\ndescription: Take notes.\n---\nBody.\n";
    let bytes = write_package(manifest, None, Some(skill), None).unwrap();
    let package = read_package(&bytes, &PackageLimits::default()).unwrap();
    let id = KeyId::of(&key(3).verifying_key());
    let s = ReleaseStatement::for_package(&package, id.clone());
    assert_eq!(s.name.to_string(), "acme/notes");
    assert_eq!(s.version, Version::new(1, 0, 0));
    assert_eq!(s.contract, None);
    assert_eq!(s.wasm_sha256, None);
    assert_eq!(s.key_id, id);
    assert_eq!(s.package_sha256, Sha256Digest::of(&bytes));
    assert_eq!(s.manifest_sha256, Sha256Digest::of(manifest.as_bytes()));

    let signature = s.sign(&key(3)).unwrap();
    s.verify(&key(3).verifying_key(), &signature).unwrap();

    // Stored as JSON (in an index line) and read back, it still verifies.
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains(&format!(
        "\"package_sha256\":\"{}\"",
        Sha256Digest::of(&bytes)
    )));
    let back: ReleaseStatement = serde_json::from_str(&json).unwrap();
    back.verify(&key(3).verifying_key(), &signature).unwrap();
    let forged = json.replace("\"key_id\":\"ed25519:", "\"key_id\":\"ED25519:");
    assert!(serde_json::from_str::<ReleaseStatement>(&forged).is_err());
}
