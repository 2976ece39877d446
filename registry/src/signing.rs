//! Signed messages: publisher release statements and the registry's own statements.
//!
//! Every signature is Ed25519 over bytes laid out by [`SigningLayout`], never over JSON or
//! text joined with separators: the bytes a signer commits to must have exactly one reading.
//! The layout is
//!
//! ```text
//! message  = field(domain tag) ‖ item*
//! field(x) = u32 big-endian length of x ‖ x          (every variable-length value)
//! digest   = the 32 bytes of a SHA-256               (fixed length, so no prefix)
//! option   = 0x00  |  0x01 ‖ value                    (before every optional value)
//! integer  = u64 big-endian
//! ```
//!
//! Without lengths, `a/b` + `11.0.0` and `a/b1` + `1.0.0` would sign the same bytes; without
//! presence bytes, "no `plugin.wasm`" could not be told from some other field; without a
//! domain tag per kind of message ([`MessageKind`]), a signature made for one kind (say a
//! timestamp) could be replayed as another whose fields happen to line up. The tag comes
//! first and is itself length-prefixed, so no message of one kind is a prefix of another.
//!
//! A release statement is laid out as
//!
//! ```text
//! field("kelp-registry/v1/release-statement")
//! ‖ field(namespace/name) ‖ field(version) ‖ option(field(contract version))
//! ‖ field(key id) ‖ digest(kelp.toml) ‖ option(digest(plugin.wasm)) ‖ digest(package)
//! ```
//!
//! The contract version is optional because a skill that brings no `plugin.wasm` has none.
//!
//! **Key ids** are `ed25519:` followed by the lowercase hex of the first 16 bytes of the
//! SHA-256 of the 32-byte public key: short enough to show and log, 128 bits so no one can
//! make a second key with the same id. The id names a key; it never stands in for it: a
//! signature is checked with the full public key (taken from the namespace's key log), and
//! the id that key hashes to must be the one the message names.
//!
//! **Encodings**: public keys, signatures and secret keys are lowercase hex (64, 128 and 64
//! digits), like every digest in Kelp; decoding refuses uppercase so each value has one
//! spelling that can be compared as text.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::PluginName;
use crate::package::Package;

/// The prefix of every key id: the algorithm, so another one can be added beside it.
pub const KEY_ID_PREFIX: &str = "ed25519:";
/// Bytes of the public key's SHA-256 a key id keeps.
const KEY_ID_BYTES: usize = 16;

/// The kinds of signed message. Each has its own domain tag, so a signature over one kind
/// never verifies as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A publisher's statement that a package is a release of a name and version.
    ReleaseStatement,
    /// An entry in a namespace's hash-chained key log (add or revoke a publisher key).
    KeyLogEntry,
    /// The registry's list of releases hosts must refuse and disable.
    AdvisoryList,
    /// The registry's timestamp: sequence number, expiry and the advisory list's hash.
    Timestamp,
    /// The registry's offline root key certifying the online key that signs advisory lists
    /// and timestamps.
    OnlineKeyCertificate,
}

impl MessageKind {
    /// Every kind, for checks that tags stay distinct.
    pub const ALL: [MessageKind; 5] = [
        MessageKind::ReleaseStatement,
        MessageKind::KeyLogEntry,
        MessageKind::AdvisoryList,
        MessageKind::Timestamp,
        MessageKind::OnlineKeyCertificate,
    ];

    /// The domain tag that starts this kind's signed bytes. Versioned (`v1`): a new layout
    /// of the same kind gets a new tag rather than a second reading of the old one.
    pub fn domain_tag(self) -> &'static str {
        match self {
            MessageKind::ReleaseStatement => "kelp-registry/v1/release-statement",
            MessageKind::KeyLogEntry => "kelp-registry/v1/key-log-entry",
            MessageKind::AdvisoryList => "kelp-registry/v1/advisory-list",
            MessageKind::Timestamp => "kelp-registry/v1/timestamp",
            MessageKind::OnlineKeyCertificate => "kelp-registry/v1/online-key-certificate",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageKind::ReleaseStatement => "release statement",
            MessageKind::KeyLogEntry => "key log entry",
            MessageKind::AdvisoryList => "advisory list",
            MessageKind::Timestamp => "timestamp",
            MessageKind::OnlineKeyCertificate => "online key certificate",
        })
    }
}

/// Why a key, signature or signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// A value is not in its encoding.
    #[error("{what} `{input}` is not {expected}")]
    Encoding {
        /// What was being decoded: `public key`, `signature`, `secret key`, `SHA-256 digest`.
        what: &'static str,
        /// The input, cut to 80 characters.
        input: String,
        /// The encoding it must have.
        expected: &'static str,
    },
    /// A public key that is not a point on the curve, or one of small order.
    #[error("public key `{key}` is not usable: {reason}")]
    BadPublicKey {
        /// The encoded key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A key id not in the `ed25519:<32 hex>` form.
    #[error(
        "key id `{0}` is not `ed25519:` followed by 32 lowercase hex digits (the start of the \
         public key's SHA-256)"
    )]
    BadKeyId(String),
    /// The message names one key and another was used.
    #[error("the {kind} names key {named}, but the key given is {given}")]
    KeyIdMismatch {
        /// The kind of message.
        kind: MessageKind,
        /// The key id in the message.
        named: KeyId,
        /// The id of the key used.
        given: KeyId,
    },
    /// The signature does not verify.
    #[error(
        "the signature on the {kind} does not verify with key {key_id}: a signed field was \
         changed, or it was made by another key or for another kind of message"
    )]
    BadSignature {
        /// The kind of message.
        kind: MessageKind,
        /// The key it was checked with.
        key_id: KeyId,
    },
    /// The operating system's random generator failed.
    #[error("could not read random bytes from the operating system to make a key: {0}")]
    Random(String),
}

/// A SHA-256 digest, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(data).into())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl FromStr for Sha256Digest {
    type Err = SigningError;

    fn from_str(s: &str) -> Result<Self, SigningError> {
        decode_hex("SHA-256 digest", s, "64 lowercase hex digits").map(Sha256Digest)
    }
}

/// Names a publisher or registry key: `ed25519:` + hex of the first 16 bytes of the SHA-256
/// of its public key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> KeyId {
        let hash = Sha256::digest(key.as_bytes());
        KeyId(format!(
            "{KEY_ID_PREFIX}{}",
            hex::encode(&hash[..KEY_ID_BYTES])
        ))
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl FromStr for KeyId {
    type Err = SigningError;

    fn from_str(s: &str) -> Result<Self, SigningError> {
        let ok = s.strip_prefix(KEY_ID_PREFIX).is_some_and(|hex| {
            hex.len() == 2 * KEY_ID_BYTES && hex.bytes().all(is_lower_hex_digit)
        });
        if ok {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(SigningError::BadKeyId(cut(s)))
        }
    }
}

macro_rules! serde_as_string {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_string!(Sha256Digest);
serde_as_string!(KeyId);

/// Makes a new key from the operating system's random generator.
pub fn generate_signing_key() -> Result<SigningKey, SigningError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A public key as 64 lowercase hex digits.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Reads a public key written by [`encode_public_key`]. Small-order ("weak") keys are
/// refused: a signature by one can verify over more than one message.
pub fn decode_public_key(s: &str) -> Result<VerifyingKey, SigningError> {
    let bytes = decode_hex::<32>("public key", s, "64 lowercase hex digits")?;
    let bad = |reason| SigningError::BadPublicKey {
        key: cut(s),
        reason,
    };
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| bad("it is not a point on the Ed25519 curve"))?;
    if key.is_weak() {
        return Err(bad("it is a small-order (weak) Ed25519 key"));
    }
    Ok(key)
}

/// A signature as 128 lowercase hex digits.
pub fn encode_signature(signature: &Signature) -> String {
    hex::encode(signature.to_bytes())
}

/// Reads a signature written by [`encode_signature`].
pub fn decode_signature(s: &str) -> Result<Signature, SigningError> {
    decode_hex::<64>("signature", s, "128 lowercase hex digits").map(|b| Signature::from_bytes(&b))
}

/// A secret key's 32-byte seed as 64 lowercase hex digits, for a key file only its owner can
/// read.
pub fn encode_signing_key(key: &SigningKey) -> String {
    hex::encode(key.to_bytes())
}

/// Reads a secret key written by [`encode_signing_key`]. The input is not repeated in the
/// error: it is a secret.
pub fn decode_signing_key(s: &str) -> Result<SigningKey, SigningError> {
    let seed = decode_hex::<32>("secret key", s, "64 lowercase hex digits").map_err(|_| {
        SigningError::Encoding {
            what: "secret key",
            input: "(not shown)".into(),
            expected: "64 lowercase hex digits",
        }
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

fn is_lower_hex_digit(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn decode_hex<const N: usize>(
    what: &'static str,
    s: &str,
    expected: &'static str,
) -> Result<[u8; N], SigningError> {
    let err = || SigningError::Encoding {
        what,
        input: cut(s),
        expected,
    };
    if s.len() != 2 * N || !s.bytes().all(is_lower_hex_digit) {
        return Err(err());
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
    Ok(out)
}

/// An input quoted in an error, cut so a hostile one cannot flood a log.
fn cut(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Writes the bytes a signature covers, in the layout described in the module docs. Every
/// signed message of every kind is built with it, so every one is length-prefixed,
/// presence-marked and domain-tagged the same way.
#[derive(Debug, Clone)]
pub struct SigningLayout {
    bytes: Vec<u8>,
}

impl SigningLayout {
    /// Starts a message of `kind` with its domain tag.
    pub fn new(kind: MessageKind) -> SigningLayout {
        SigningLayout { bytes: Vec::new() }.field(kind.domain_tag().as_bytes())
    }

    /// A variable-length value: its length as a u32, big-endian, then its bytes.
    ///
    /// # Panics
    /// If `value` is 4 GiB or longer; signed fields are names, versions and digests of
    /// lists, never that large.
    pub fn field(mut self, value: &[u8]) -> SigningLayout {
        let len = u32::try_from(value.len()).expect("a signed field is shorter than 4 GiB");
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    /// A text value, as [`field`](Self::field) of its UTF-8 bytes.
    pub fn text(self, value: &str) -> SigningLayout {
        self.field(value.as_bytes())
    }

    /// An optional text value: a presence byte, then the value if present.
    pub fn optional_text(self, value: Option<&str>) -> SigningLayout {
        match value {
            None => self.absent(),
            Some(value) => self.present().text(value),
        }
    }

    /// A digest: fixed length, so written as its 32 bytes.
    pub fn digest(mut self, digest: &Sha256Digest) -> SigningLayout {
        self.bytes.extend_from_slice(&digest.0);
        self
    }

    /// An optional digest: a presence byte, then the digest if present.
    pub fn optional_digest(self, digest: Option<&Sha256Digest>) -> SigningLayout {
        match digest {
            None => self.absent(),
            Some(digest) => self.present().digest(digest),
        }
    }

    /// An integer (a sequence number, a time in milliseconds), as 8 bytes big-endian.
    pub fn integer(mut self, value: u64) -> SigningLayout {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// The bytes to sign.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    fn absent(mut self) -> SigningLayout {
        self.bytes.push(0);
        self
    }

    fn present(mut self) -> SigningLayout {
        self.bytes.push(1);
        self
    }
}

/// Signs `bytes` (made by a [`SigningLayout`] of `kind`) with `key`, which must be the key
/// the message names.
pub(crate) fn sign_bytes(
    kind: MessageKind,
    named: &KeyId,
    key: &SigningKey,
    bytes: &[u8],
) -> Result<Signature, SigningError> {
    let given = KeyId::of(&key.verifying_key());
    if given != *named {
        return Err(SigningError::KeyIdMismatch {
            kind,
            named: named.clone(),
            given,
        });
    }
    Ok(key.sign(bytes))
}

/// Checks a signature over `bytes` (made by a [`SigningLayout`] of `kind`): `key` must be
/// the key the message names, and the signature must verify strictly — `verify_strict`
/// refuses weak keys and non-canonical signatures, so one message has one valid signature
/// encoding per key and a signature cannot be altered into another that also verifies.
pub(crate) fn verify_bytes(
    kind: MessageKind,
    named: &KeyId,
    key: &VerifyingKey,
    bytes: &[u8],
    signature: &Signature,
) -> Result<(), SigningError> {
    let given = KeyId::of(key);
    if given != *named {
        return Err(SigningError::KeyIdMismatch {
            kind,
            named: named.clone(),
            given,
        });
    }
    key.verify_strict(bytes, signature)
        .map_err(|_| SigningError::BadSignature {
            kind,
            key_id: given,
        })
}

/// A publisher's statement that a package is the release `name`@`version`: what `kelp
/// plugin publish` signs and what a host verifies, before unpacking, against the package it
/// downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStatement {
    /// `namespace/name`.
    pub name: PluginName,
    /// The release's version (never with build metadata: see [`crate::version`]).
    pub version: Version,
    /// The `kelp:plugin` version the component uses; `None` for a skill without
    /// `plugin.wasm`.
    pub contract: Option<Version>,
    /// The key that signs this statement.
    pub key_id: KeyId,
    /// SHA-256 of `kelp.toml` as packed.
    pub manifest_sha256: Sha256Digest,
    /// SHA-256 of `plugin.wasm`; `None` when the package has none.
    pub wasm_sha256: Option<Sha256Digest>,
    /// SHA-256 of the whole `.kelp` archive: the digest blobs are stored and fetched by.
    pub package_sha256: Sha256Digest,
}

impl ReleaseStatement {
    /// The statement for a package that passed [`read_package`](crate::package::read_package),
    /// to be signed by `key_id`. Its contract is the manifest's `wit`, which the contract
    /// check makes equal to what the component uses.
    pub fn for_package(package: &Package, key_id: KeyId) -> ReleaseStatement {
        // The package reader writes these with `hex::encode` of a SHA-256, so they parse.
        let digest = |hex: &str| {
            hex.parse::<Sha256Digest>()
                .expect("the package reader writes SHA-256 digests as lowercase hex")
        };
        ReleaseStatement {
            name: package.manifest.name.clone(),
            version: package.manifest.version.clone(),
            contract: package.wasm.as_ref().and(package.manifest.wit.clone()),
            key_id,
            manifest_sha256: digest(&package.manifest_sha256),
            wasm_sha256: package.wasm_sha256.as_deref().map(digest),
            package_sha256: digest(&package.digest),
        }
    }

    /// The bytes a signature covers (layout in the module docs).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let contract = self.contract.as_ref().map(ToString::to_string);
        SigningLayout::new(MessageKind::ReleaseStatement)
            .text(&self.name.to_string())
            .text(&self.version.to_string())
            .optional_text(contract.as_deref())
            .text(self.key_id.as_str())
            .digest(&self.manifest_sha256)
            .optional_digest(self.wasm_sha256.as_ref())
            .digest(&self.package_sha256)
            .finish()
    }

    /// Signs the statement; `key` must be the one [`key_id`](Self::key_id) names.
    pub fn sign(&self, key: &SigningKey) -> Result<Signature, SigningError> {
        sign_bytes(
            MessageKind::ReleaseStatement,
            &self.key_id,
            key,
            &self.signing_bytes(),
        )
    }

    /// Checks `signature` over this statement with `key`, which must be the one
    /// [`key_id`](Self::key_id) names.
    pub fn verify(&self, key: &VerifyingKey, signature: &Signature) -> Result<(), SigningError> {
        verify_bytes(
            MessageKind::ReleaseStatement,
            &self.key_id,
            key,
            &self.signing_bytes(),
            signature,
        )
    }
}

#[cfg(test)]
mod tests;
