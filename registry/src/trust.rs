//! The registry's own keys and what they sign: the online-key certificate, the advisory list
//! and the timestamp.
//!
//! - The **root key** stays offline. Its id (a [`KeyId`]) is what a host pins when it adds a
//!   registry (`kelp registry add URL --root-key ID`). It signs one thing: a certificate that
//!   makes an **online key** the registry's for a while. Rotating the online key is a new
//!   certificate; rotating the root is a new pin, on purpose.
//! - The online key signs the **advisory list** (releases hosts must refuse, and disable if
//!   installed) and the **timestamp**: a sequence number, an expiry about a week out and the
//!   advisory list's hash. The registry re-signs the timestamp well before it expires.
//! - A host keeps the highest timestamp sequence it has seen. An older one is a rollback
//!   (someone replaying an old advisory list or index) and is refused; an expired one means
//!   the registry cannot be shown to be current, so installs are refused (a freeze) while
//!   what is installed keeps running.
//!
//! Signed layouts (see [`crate::signing`]):
//!
//! ```text
//! certificate: field(tag) ‖ field(online public key) ‖ integer(expires, ms since the epoch)
//!              ‖ field(root key id)
//! advisories:  field(tag) ‖ integer(count) ‖ per advisory: (field(name) ‖ field(versions, a
//!              semver requirement) ‖ option(digest(package)) ‖ field(reason))
//!              ‖ field(signer key id)
//! timestamp:   field(tag) ‖ integer(seq) ‖ integer(expires) ‖ digest(advisory list signing
//!              bytes) ‖ field(signer key id)
//! ```

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::signing::{
    KeyId, MessageKind, Sha256Digest, SigningError, SigningLayout, decode_public_key,
    decode_signature, encode_public_key, encode_signature, sign_bytes, verify_bytes,
};

/// The root key's statement that `online_key` signs for the registry until `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineKeyCertificate {
    /// The online public key, lowercase hex.
    pub online_key: String,
    /// Milliseconds since the Unix epoch after which the certificate is void.
    pub expires_ms: u64,
    /// The root key that signed it.
    pub root_key_id: KeyId,
    /// Its signature, lowercase hex.
    pub signature: String,
}

impl OnlineKeyCertificate {
    fn signing_bytes(&self) -> Vec<u8> {
        SigningLayout::new(MessageKind::OnlineKeyCertificate)
            .text(&self.online_key)
            .integer(self.expires_ms)
            .text(self.root_key_id.as_str())
            .finish()
    }

    /// The root key certifies `online` until `expires_ms`.
    pub fn issue(
        root: &SigningKey,
        online: &VerifyingKey,
        expires_ms: u64,
    ) -> Result<OnlineKeyCertificate, SigningError> {
        let mut cert = OnlineKeyCertificate {
            online_key: encode_public_key(online),
            expires_ms,
            root_key_id: KeyId::of(&root.verifying_key()),
            signature: String::new(),
        };
        let signature = sign_bytes(
            MessageKind::OnlineKeyCertificate,
            &cert.root_key_id,
            root,
            &cert.signing_bytes(),
        )?;
        cert.signature = encode_signature(&signature);
        Ok(cert)
    }
}

/// A release hosts must refuse to install and disable where installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advisory {
    /// `namespace/name`.
    pub name: String,
    /// The versions it covers, a semver requirement (`=1.2.3`, `<1.4.0`, `*`).
    pub versions: String,
    /// Only the package with this digest (for example one uploaded directly, unsigned); any
    /// package of the versions when absent.
    #[serde(default)]
    pub package_sha256: Option<Sha256Digest>,
    /// Why, shown to users.
    pub reason: String,
}

/// The registry's current advisories, signed by its online key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryList {
    /// The advisories.
    pub advisories: Vec<Advisory>,
    /// The online key that signed the list.
    pub signer: KeyId,
    /// Its signature, lowercase hex.
    pub signature: String,
}

impl AdvisoryList {
    /// The bytes signed, and hashed into the timestamp.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut layout =
            SigningLayout::new(MessageKind::AdvisoryList).integer(self.advisories.len() as u64);
        for a in &self.advisories {
            layout = layout
                .text(&a.name)
                .text(&a.versions)
                .optional_digest(a.package_sha256.as_ref())
                .text(&a.reason);
        }
        layout.text(self.signer.as_str()).finish()
    }

    /// Signs `advisories` with the online key.
    pub fn sign(
        advisories: Vec<Advisory>,
        online: &SigningKey,
    ) -> Result<AdvisoryList, SigningError> {
        let mut list = AdvisoryList {
            advisories,
            signer: KeyId::of(&online.verifying_key()),
            signature: String::new(),
        };
        let signature = sign_bytes(
            MessageKind::AdvisoryList,
            &list.signer,
            online,
            &list.signing_bytes(),
        )?;
        list.signature = encode_signature(&signature);
        Ok(list)
    }

    /// Whether a release is covered: by name and version, and by digest when the advisory
    /// names one. An advisory whose version requirement does not parse covers every version
    /// of the name: failing closed.
    pub fn covers(
        &self,
        name: &str,
        version: &semver::Version,
        package_sha256: &Sha256Digest,
    ) -> Option<&Advisory> {
        self.advisories.iter().find(|a| {
            a.name == name
                && semver::VersionReq::parse(&a.versions).map_or(true, |req| req.matches(version))
                && a.package_sha256
                    .as_ref()
                    .is_none_or(|d| d == package_sha256)
        })
    }
}

/// The registry's timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    /// Grows with every timestamp the registry signs.
    pub seq: u64,
    /// Milliseconds since the Unix epoch after which it is stale.
    pub expires_ms: u64,
    /// SHA-256 of the current advisory list's signing bytes.
    pub advisory_list_sha256: Sha256Digest,
    /// The online key that signed it.
    pub signer: KeyId,
    /// Its signature, lowercase hex.
    pub signature: String,
}

impl Timestamp {
    fn signing_bytes(&self) -> Vec<u8> {
        SigningLayout::new(MessageKind::Timestamp)
            .integer(self.seq)
            .integer(self.expires_ms)
            .digest(&self.advisory_list_sha256)
            .text(self.signer.as_str())
            .finish()
    }

    /// Signs a timestamp for `advisories` with the online key.
    pub fn sign(
        seq: u64,
        expires_ms: u64,
        advisories: &AdvisoryList,
        online: &SigningKey,
    ) -> Result<Timestamp, SigningError> {
        let mut ts = Timestamp {
            seq,
            expires_ms,
            advisory_list_sha256: Sha256Digest::of(&advisories.signing_bytes()),
            signer: KeyId::of(&online.verifying_key()),
            signature: String::new(),
        };
        let signature = sign_bytes(
            MessageKind::Timestamp,
            &ts.signer,
            online,
            &ts.signing_bytes(),
        )?;
        ts.signature = encode_signature(&signature);
        Ok(ts)
    }
}

/// Why the registry's statements were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The certificate is signed by another root than the pinned one.
    #[error(
        "the registry's online key is certified by root key {found}, not the pinned {pinned}: \
         the registry is not the one added, or its root was replaced"
    )]
    WrongRoot {
        /// The certificate's root.
        found: KeyId,
        /// The pinned root.
        pinned: KeyId,
    },
    /// The certificate has expired.
    #[error("the registry's online key certificate expired; the registry must issue a new one")]
    CertificateExpired,
    /// The timestamp or advisory list is signed by a key the certificate does not name.
    #[error("the {0} is signed by {1}, not the registry's certified online key")]
    NotOnlineKey(MessageKind, KeyId),
    /// An older timestamp than one seen before.
    #[error(
        "the registry's timestamp {found} is older than {seen}, seen before: a stale or replayed \
         copy of the registry is being served"
    )]
    Rollback {
        /// The sequence now.
        found: u64,
        /// The highest seen.
        seen: u64,
    },
    /// The timestamp has expired: installs wait until the registry is shown to be current.
    #[error(
        "the registry's timestamp expired: it cannot be shown to be current, so nothing is \
         installed from it until it is (installed plugins keep running)"
    )]
    Expired,
    /// The advisory list is not the one the timestamp names.
    #[error("the advisory list served is not the one the registry's timestamp names")]
    AdvisoryListMismatch,
    /// A signature or encoding is wrong.
    #[error("{0}")]
    Signing(#[from] SigningError),
}

/// What a host checked: the advisory list to apply and the sequence to remember.
#[derive(Debug, Clone)]
pub struct Current {
    /// The timestamp's sequence: the new highest seen.
    pub seq: u64,
    /// Whether installs may proceed (false when the timestamp has expired; the advisory list
    /// still applies to installed plugins).
    pub fresh: bool,
    /// The verified advisories.
    pub advisories: AdvisoryList,
}

/// Checks the registry's certificate, timestamp and advisory list against the pinned root
/// key id and the highest timestamp sequence seen, at `now_ms`. An expired timestamp is not
/// an error here (advisories still apply to what is installed): [`Current::fresh`] says
/// whether installs may go on; [`Current::require_fresh`] makes it one.
pub fn check_registry(
    pinned_root: &KeyId,
    root_key: &str,
    certificate: &OnlineKeyCertificate,
    timestamp: &Timestamp,
    advisories: AdvisoryList,
    seen_seq: u64,
    now_ms: u64,
) -> Result<Current, TrustError> {
    let root = decode_public_key(root_key)?;
    if certificate.root_key_id != *pinned_root {
        return Err(TrustError::WrongRoot {
            found: certificate.root_key_id.clone(),
            pinned: pinned_root.clone(),
        });
    }
    // `verify_bytes` also checks that `root_key` is the key the pinned id names.
    verify_bytes(
        MessageKind::OnlineKeyCertificate,
        pinned_root,
        &root,
        &certificate.signing_bytes(),
        &decode_signature(&certificate.signature)?,
    )?;
    if now_ms >= certificate.expires_ms {
        return Err(TrustError::CertificateExpired);
    }
    let online = decode_public_key(&certificate.online_key)?;
    let online_id = KeyId::of(&online);
    for (kind, signer) in [
        (MessageKind::Timestamp, &timestamp.signer),
        (MessageKind::AdvisoryList, &advisories.signer),
    ] {
        if *signer != online_id {
            return Err(TrustError::NotOnlineKey(kind, signer.clone()));
        }
    }
    verify_bytes(
        MessageKind::Timestamp,
        &online_id,
        &online,
        &timestamp.signing_bytes(),
        &decode_signature(&timestamp.signature)?,
    )?;
    if timestamp.seq < seen_seq {
        return Err(TrustError::Rollback {
            found: timestamp.seq,
            seen: seen_seq,
        });
    }
    verify_bytes(
        MessageKind::AdvisoryList,
        &online_id,
        &online,
        &advisories.signing_bytes(),
        &decode_signature(&advisories.signature)?,
    )?;
    if Sha256Digest::of(&advisories.signing_bytes()) != timestamp.advisory_list_sha256 {
        return Err(TrustError::AdvisoryListMismatch);
    }
    Ok(Current {
        seq: timestamp.seq,
        fresh: now_ms < timestamp.expires_ms,
        advisories,
    })
}

impl Current {
    /// Refuses installs from a registry whose timestamp expired.
    pub fn require_fresh(&self) -> Result<(), TrustError> {
        if self.fresh {
            Ok(())
        } else {
            Err(TrustError::Expired)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::generate_signing_key;

    const NOW: u64 = 1_800_000_000_000;
    const WEEK: u64 = 7 * 24 * 3600 * 1000;

    struct Registry {
        root: SigningKey,
        online: SigningKey,
        cert: OnlineKeyCertificate,
    }

    fn registry() -> Registry {
        let root = generate_signing_key().unwrap();
        let online = generate_signing_key().unwrap();
        let cert =
            OnlineKeyCertificate::issue(&root, &online.verifying_key(), NOW + 30 * WEEK).unwrap();
        Registry { root, online, cert }
    }

    fn advisory(name: &str) -> Advisory {
        Advisory {
            name: name.into(),
            versions: "<1.2.0".into(),
            package_sha256: None,
            reason: "steals tokens".into(),
        }
    }

    impl Registry {
        fn check(
            &self,
            ts: &Timestamp,
            list: AdvisoryList,
            seen: u64,
        ) -> Result<Current, TrustError> {
            check_registry(
                &KeyId::of(&self.root.verifying_key()),
                &encode_public_key(&self.root.verifying_key()),
                &self.cert,
                ts,
                list,
                seen,
                NOW,
            )
        }
    }

    #[test]
    fn a_current_registry_verifies_and_its_advisories_apply() {
        let r = registry();
        let list = AdvisoryList::sign(vec![advisory("acme/bad")], &r.online).unwrap();
        let ts = Timestamp::sign(5, NOW + WEEK, &list, &r.online).unwrap();
        let current = r.check(&ts, list, 4).unwrap();
        assert_eq!(current.seq, 5);
        current.require_fresh().unwrap();
        let digest = Sha256Digest::of(b"pkg");
        let v = |s| semver::Version::parse(s).unwrap();
        assert!(
            current
                .advisories
                .covers("acme/bad", &v("1.1.9"), &digest)
                .is_some()
        );
        assert!(
            current
                .advisories
                .covers("acme/bad", &v("1.2.0"), &digest)
                .is_none()
        );
        assert!(
            current
                .advisories
                .covers("acme/good", &v("1.0.0"), &digest)
                .is_none()
        );
    }

    #[test]
    fn rollback_expiry_forgery_and_a_swapped_list_are_refused() {
        let r = registry();
        let list = AdvisoryList::sign(vec![advisory("acme/bad")], &r.online).unwrap();
        let ts = Timestamp::sign(5, NOW + WEEK, &list, &r.online).unwrap();
        // An older timestamp than seen: a replay.
        let err = r.check(&ts, list.clone(), 6).unwrap_err();
        assert!(
            matches!(err, TrustError::Rollback { found: 5, seen: 6 }),
            "{err}"
        );
        // Expired: advisories still apply, installs are refused.
        let stale = Timestamp::sign(7, NOW - 1, &list, &r.online).unwrap();
        let current = r.check(&stale, list.clone(), 6).unwrap();
        assert_eq!(current.require_fresh().unwrap_err(), TrustError::Expired);
        // An empty advisory list served under a timestamp that names the real one.
        let empty = AdvisoryList::sign(vec![], &r.online).unwrap();
        let err = r.check(&ts, empty, 0).unwrap_err();
        assert_eq!(err, TrustError::AdvisoryListMismatch);
        // A list and timestamp forged with another key.
        let forger = generate_signing_key().unwrap();
        let forged = AdvisoryList::sign(vec![], &forger).unwrap();
        let forged_ts = Timestamp::sign(9, NOW + WEEK, &forged, &forger).unwrap();
        let err = r.check(&forged_ts, forged, 0).unwrap_err();
        assert!(matches!(err, TrustError::NotOnlineKey(..)), "{err}");
        // An advisory removed after signing: the signature no longer covers the list.
        let mut trimmed = list.clone();
        trimmed.advisories.clear();
        assert!(r.check(&ts, trimmed, 0).is_err());
        // A certificate from another root.
        let other = registry();
        let err = check_registry(
            &KeyId::of(&r.root.verifying_key()),
            &encode_public_key(&r.root.verifying_key()),
            &other.cert,
            &ts,
            list.clone(),
            0,
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, TrustError::WrongRoot { .. }), "{err}");
        // A served root key that is not the pinned one.
        let err = check_registry(
            &KeyId::of(&r.root.verifying_key()),
            &encode_public_key(&other.root.verifying_key()),
            &r.cert,
            &ts,
            list.clone(),
            0,
            NOW,
        )
        .unwrap_err();
        assert!(
            matches!(err, TrustError::Signing(SigningError::KeyIdMismatch { .. })),
            "{err}"
        );
        // An expired certificate.
        let old = OnlineKeyCertificate::issue(&r.root, &r.online.verifying_key(), NOW).unwrap();
        let err = check_registry(
            &KeyId::of(&r.root.verifying_key()),
            &encode_public_key(&r.root.verifying_key()),
            &old,
            &ts,
            list,
            0,
            NOW,
        )
        .unwrap_err();
        assert_eq!(err, TrustError::CertificateExpired);
    }
}
