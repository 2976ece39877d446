//! A namespace's publisher keys: a hash-chained, append-only log of signed entries.
//!
//! Each entry adds or revokes one Ed25519 key. The first entry adds the namespace's first key
//! and is signed by that key; every later entry is signed by a key that is valid at that point
//! (added by an earlier entry and not yet revoked) and names the hash of the entry before it.
//! So nobody without a current key can add one, and a registry cannot rewrite the past
//! without the change showing: a host pins the log's length and head hash at its first
//! install from the namespace and from then on refuses a log that is shorter (entries
//! dropped) or whose entry at the pinned position has another hash (a fork).
//!
//! A revocation applies from its position on. A release names the log length at which it
//! was published; it verifies when its key was valid at that length. Releases made before a
//! key was revoked keep verifying; new ones signed by it do not.
//!
//! An entry's signed bytes (see [`crate::signing`] for the layout):
//!
//! ```text
//! field("kelp-registry/v1/key-log-entry") ‖ field(namespace) ‖ integer(seq)
//! ‖ option(digest(previous entry's hash)) ‖ field("add" | "revoke")
//! ‖ field(subject: the added public key, or the revoked key id) ‖ field(signer key id)
//! ```
//!
//! and its hash is SHA-256 of those bytes followed by the 64 signature bytes, so the chain
//! also fixes each entry's signature.

use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::signing::{
    KeyId, MessageKind, Sha256Digest, SigningError, SigningLayout, decode_public_key,
    decode_signature, encode_public_key, encode_signature, sign_bytes, verify_bytes,
};

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum KeyAction {
    /// Makes a public key (lowercase hex) a publisher key of the namespace.
    Add {
        /// The public key, 64 lowercase hex digits.
        public_key: String,
    },
    /// Ends a key's validity from this entry on.
    Revoke {
        /// The key revoked.
        key_id: KeyId,
    },
}

/// One entry of a namespace's key log, as served (one JSON line per entry). Fields beyond
/// these are ignored (serde cannot refuse them beside a flattened action); only the fields
/// here are signed, so nothing else a server adds can change what an entry means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLogEntry {
    /// The namespace whose keys this log holds.
    pub namespace: String,
    /// The entry's position, from 0.
    pub seq: u64,
    /// The hash of the entry before it; absent on the first.
    pub previous: Option<Sha256Digest>,
    /// What the entry does.
    #[serde(flatten)]
    pub action: KeyAction,
    /// The key that signed the entry.
    pub signer: KeyId,
    /// The signature, 128 lowercase hex digits.
    pub signature: String,
}

impl KeyLogEntry {
    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let (action, subject) = match &self.action {
            KeyAction::Add { public_key } => ("add", public_key.as_str()),
            KeyAction::Revoke { key_id } => ("revoke", key_id.as_str()),
        };
        SigningLayout::new(MessageKind::KeyLogEntry)
            .text(&self.namespace)
            .integer(self.seq)
            .optional_digest(self.previous.as_ref())
            .text(action)
            .text(subject)
            .text(self.signer.as_str())
            .finish()
    }

    /// The entry's hash, which the next entry names. Covers the signature too.
    pub fn hash(&self) -> Result<Sha256Digest, KeyLogError> {
        let signature = decode_signature(&self.signature).map_err(|e| self.error(e.into()))?;
        let mut bytes = self.signing_bytes();
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(Sha256Digest::of(&bytes))
    }

    fn error(&self, problem: Problem) -> KeyLogError {
        KeyLogError::Entry {
            namespace: self.namespace.clone(),
            seq: self.seq,
            problem,
        }
    }
}

/// Why a key log, or a release checked against one, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLogError {
    /// An entry breaks a rule of the log.
    #[error("key log of `{namespace}`, entry {seq}: {problem}")]
    Entry {
        /// The namespace.
        namespace: String,
        /// The entry's position.
        seq: u64,
        /// What is wrong with it.
        problem: Problem,
    },
    /// The log has no entries: a namespace has at least its first key.
    #[error("the key log is empty")]
    Empty,
    /// The log is shorter than one seen before: entries were dropped.
    #[error(
        "the key log of `{namespace}` has {len} entries, fewer than the {pinned} pinned at an \
         earlier install: entries were removed"
    )]
    Shortened {
        /// The namespace.
        namespace: String,
        /// Entries now.
        len: u64,
        /// Entries pinned.
        pinned: u64,
    },
    /// The entry at the pinned position has another hash: the log was rewritten.
    #[error(
        "the key log of `{namespace}` forks from the one pinned at an earlier install: entry \
         {seq} has hash {found}, the pinned log's has {pinned}"
    )]
    Forked {
        /// The namespace.
        namespace: String,
        /// The pinned head's position.
        seq: u64,
        /// Its hash in this log.
        found: Sha256Digest,
        /// Its pinned hash.
        pinned: Sha256Digest,
    },
    /// A release's key is not a publisher key of the namespace at the release's position.
    #[error("key {key_id} {why} in the key log of `{namespace}` at position {position}")]
    KeyNotValid {
        /// The namespace.
        namespace: String,
        /// The key the release names.
        key_id: KeyId,
        /// The log length the release was published at.
        position: u64,
        /// `was never added`, `was not yet added`, `was revoked at entry N`.
        why: String,
    },
}

/// What is wrong with one entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not the next position.
    #[error("its position should be {expected}")]
    OutOfOrder {
        /// The position it should have.
        expected: u64,
    },
    /// Belongs to another namespace's log.
    #[error("it is an entry of another namespace's log")]
    WrongNamespace,
    /// Does not name the hash of the entry before it.
    #[error(
        "it does not follow the entry before it (previous hash {found:?}, expected {expected:?})"
    )]
    BrokenChain {
        /// The hash it names.
        found: Option<Sha256Digest>,
        /// The hash of the entry before it.
        expected: Option<Sha256Digest>,
    },
    /// The first entry must add a key and be signed by it.
    #[error("the first entry must add a key and be signed by that key")]
    BadFirstEntry,
    /// Signed by a key that is not valid at this point.
    #[error("it is signed by {0}, which is not a current key of the namespace at this point")]
    SignerNotValid(KeyId),
    /// Adds a key the log already has (keys are never re-added).
    #[error("it adds {0}, which the log already has")]
    DuplicateKey(KeyId),
    /// Revokes a key that is not current.
    #[error("it revokes {0}, which is not a current key")]
    RevokesUnknownKey(KeyId),
    /// Would leave the namespace with no key.
    #[error("it revokes the namespace's last current key")]
    RevokesLastKey,
    /// A key, signature or id that does not decode or verify.
    #[error("{0}")]
    Signing(#[from] SigningError),
}

/// A key's life in the log.
#[derive(Debug, Clone)]
struct KeyLife {
    key: VerifyingKey,
    added_at: u64,
    revoked_at: Option<u64>,
}

impl KeyLife {
    fn valid_at(&self, position: u64) -> bool {
        self.added_at < position && self.revoked_at.is_none_or(|r| r >= position)
    }
}

/// What a host pins of a namespace's log: its length and the hash of its last entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Entries in the log.
    pub len: u64,
    /// Hash of the last entry.
    pub head: Sha256Digest,
}

/// A key log that passed every check: its entries, each key's life and each entry's hash.
#[derive(Debug, Clone)]
pub struct KeyLog {
    namespace: String,
    entries: Vec<KeyLogEntry>,
    hashes: Vec<Sha256Digest>,
    keys: BTreeMap<KeyId, KeyLife>,
}

impl KeyLog {
    /// Checks every entry of `entries` in order and returns the log.
    pub fn verify(namespace: &str, entries: Vec<KeyLogEntry>) -> Result<KeyLog, KeyLogError> {
        if entries.is_empty() {
            return Err(KeyLogError::Empty);
        }
        let mut log = KeyLog {
            namespace: namespace.to_owned(),
            entries: Vec::with_capacity(entries.len()),
            hashes: Vec::with_capacity(entries.len()),
            keys: BTreeMap::new(),
        };
        for entry in entries {
            log.append(entry)?;
        }
        Ok(log)
    }

    /// Checks `entry` as the next one and appends it.
    pub fn append(&mut self, entry: KeyLogEntry) -> Result<(), KeyLogError> {
        let seq = self.entries.len() as u64;
        let fail = |problem: Problem| entry.error(problem);
        if entry.namespace != self.namespace {
            return Err(fail(Problem::WrongNamespace));
        }
        if entry.seq != seq {
            return Err(fail(Problem::OutOfOrder { expected: seq }));
        }
        let expected = self.hashes.last().copied();
        if entry.previous != expected {
            return Err(fail(Problem::BrokenChain {
                found: entry.previous,
                expected,
            }));
        }
        let signature = decode_signature(&entry.signature).map_err(|e| fail(e.into()))?;
        // The key the entry is checked with: a current key, or on the first entry the key it
        // adds (the namespace's first key vouches for itself; the pin makes it stick).
        let signer = if seq == 0 {
            match &entry.action {
                KeyAction::Add { public_key } => {
                    let key = decode_public_key(public_key).map_err(|e| fail(e.into()))?;
                    if KeyId::of(&key) != entry.signer {
                        return Err(fail(Problem::BadFirstEntry));
                    }
                    key
                }
                KeyAction::Revoke { .. } => return Err(fail(Problem::BadFirstEntry)),
            }
        } else {
            match self.keys.get(&entry.signer) {
                Some(life) if life.revoked_at.is_none() => life.key,
                _ => return Err(fail(Problem::SignerNotValid(entry.signer.clone()))),
            }
        };
        verify_bytes(
            MessageKind::KeyLogEntry,
            &entry.signer,
            &signer,
            &entry.signing_bytes(),
            &signature,
        )
        .map_err(|e| fail(e.into()))?;
        match &entry.action {
            KeyAction::Add { public_key } => {
                let key = decode_public_key(public_key).map_err(|e| fail(e.into()))?;
                let id = KeyId::of(&key);
                if self.keys.contains_key(&id) {
                    return Err(fail(Problem::DuplicateKey(id)));
                }
                self.keys.insert(
                    id,
                    KeyLife {
                        key,
                        added_at: seq,
                        revoked_at: None,
                    },
                );
            }
            KeyAction::Revoke { key_id } => {
                let current = self
                    .keys
                    .values()
                    .filter(|k| k.revoked_at.is_none())
                    .count();
                match self.keys.get_mut(key_id) {
                    Some(life) if life.revoked_at.is_none() => {
                        if current == 1 {
                            return Err(fail(Problem::RevokesLastKey));
                        }
                        life.revoked_at = Some(seq);
                    }
                    _ => return Err(fail(Problem::RevokesUnknownKey(key_id.clone()))),
                }
            }
        }
        let hash = entry.hash()?;
        self.hashes.push(hash);
        self.entries.push(entry);
        Ok(())
    }

    /// Makes, signs and appends the next entry; `signer` must be a current key (or, on an
    /// empty log made with [`KeyLog::start`], the key being added).
    pub fn sign_next(
        &mut self,
        action: KeyAction,
        signer: &SigningKey,
    ) -> Result<&KeyLogEntry, KeyLogError> {
        let mut entry = KeyLogEntry {
            namespace: self.namespace.clone(),
            seq: self.entries.len() as u64,
            previous: self.hashes.last().copied(),
            action,
            signer: KeyId::of(&signer.verifying_key()),
            signature: String::new(),
        };
        let signature = sign_bytes(
            MessageKind::KeyLogEntry,
            &entry.signer,
            signer,
            &entry.signing_bytes(),
        )
        .map_err(|e| entry.error(e.into()))?;
        entry.signature = encode_signature(&signature);
        self.append(entry)?;
        Ok(self.entries.last().expect("just appended"))
    }

    /// A new namespace's log: its first entry adds `first` and is signed by it.
    pub fn start(namespace: &str, first: &SigningKey) -> Result<KeyLog, KeyLogError> {
        let mut log = KeyLog {
            namespace: namespace.to_owned(),
            entries: Vec::new(),
            hashes: Vec::new(),
            keys: BTreeMap::new(),
        };
        let public_key = encode_public_key(&first.verifying_key());
        log.sign_next(KeyAction::Add { public_key }, first)?;
        Ok(log)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[KeyLogEntry] {
        &self.entries
    }

    /// Entries in the log: the position a release published now records.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Never true for a verified log (it has its first key); for completeness.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What a host pins.
    pub fn pin(&self) -> Pin {
        Pin {
            len: self.len(),
            head: *self.hashes.last().expect("a verified log has an entry"),
        }
    }

    /// Refuses this log unless it extends the one `pin` was taken from: no shorter, and with
    /// the same entry at the pinned position (so the same entries up to it, by the chain).
    pub fn check_extends(&self, pin: &Pin) -> Result<(), KeyLogError> {
        if self.len() < pin.len {
            return Err(KeyLogError::Shortened {
                namespace: self.namespace.clone(),
                len: self.len(),
                pinned: pin.len,
            });
        }
        let Some(seq) = pin.len.checked_sub(1) else {
            return Ok(());
        };
        let found = self.hashes[seq as usize];
        if found != pin.head {
            return Err(KeyLogError::Forked {
                namespace: self.namespace.clone(),
                seq,
                found,
                pinned: pin.head,
            });
        }
        Ok(())
    }

    /// The key a release signed by `key_id` and published at log length `position` is
    /// checked with: valid when the key was added before that position and not revoked
    /// before it.
    pub fn release_key(&self, key_id: &KeyId, position: u64) -> Result<&VerifyingKey, KeyLogError> {
        let refuse = |why: String| KeyLogError::KeyNotValid {
            namespace: self.namespace.clone(),
            key_id: key_id.clone(),
            position,
            why,
        };
        if position > self.len() {
            return Err(refuse(format!(
                "cannot be checked: the log has only {} entries",
                self.len()
            )));
        }
        let life = self
            .keys
            .get(key_id)
            .ok_or_else(|| refuse("was never added".into()))?;
        if life.valid_at(position) {
            return Ok(&life.key);
        }
        Err(refuse(match life.revoked_at {
            Some(r) if r < position => format!("was revoked at entry {r}"),
            _ => format!("was not yet added (added at entry {})", life.added_at),
        }))
    }

    /// The keys current now.
    pub fn current_keys(&self) -> Vec<KeyId> {
        self.keys
            .iter()
            .filter(|(_, life)| life.revoked_at.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::generate_signing_key;

    fn key() -> SigningKey {
        generate_signing_key().unwrap()
    }

    fn add(k: &SigningKey) -> KeyAction {
        KeyAction::Add {
            public_key: encode_public_key(&k.verifying_key()),
        }
    }

    fn id(k: &SigningKey) -> KeyId {
        KeyId::of(&k.verifying_key())
    }

    /// `a` first, then `b` added by `a`, then `a` revoked by `b`: four positions to check.
    fn three_entries() -> (KeyLog, SigningKey, SigningKey) {
        let (a, b) = (key(), key());
        let mut log = KeyLog::start("acme", &a).unwrap();
        log.sign_next(add(&b), &a).unwrap();
        log.sign_next(KeyAction::Revoke { key_id: id(&a) }, &b)
            .unwrap();
        (log, a, b)
    }

    #[test]
    fn a_log_verifies_from_its_served_lines() {
        let (log, _, b) = three_entries();
        let lines: Vec<String> = log
            .entries()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let entries = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let again = KeyLog::verify("acme", entries).unwrap();
        assert_eq!(again.pin(), log.pin());
        assert_eq!(again.current_keys(), vec![id(&b)]);
    }

    #[test]
    fn a_revocation_applies_from_its_position_on() {
        let (log, a, b) = three_entries();
        // A release published when the log had 1 or 2 entries, signed by `a`, still verifies.
        assert!(log.release_key(&id(&a), 1).is_ok());
        assert!(log.release_key(&id(&a), 2).is_ok());
        // From the revocation (entry 2) on, `a` signs nothing new.
        let err = log.release_key(&id(&a), 3).unwrap_err();
        assert!(err.to_string().contains("was revoked at entry 2"), "{err}");
        // `b` was added at entry 1: valid for releases at length 2 and after, not before.
        assert!(log.release_key(&id(&b), 1).is_err());
        assert!(log.release_key(&id(&b), 3).is_ok());
        assert!(log.release_key(&id(&key()), 3).is_err());
        assert!(
            log.release_key(&id(&b), 4).is_err(),
            "a position past the log"
        );
    }

    #[test]
    fn an_entry_signed_by_a_key_not_current_is_refused() {
        let (mut log, a, _) = three_entries();
        // The revoked key cannot add a key.
        let err = log.sign_next(add(&key()), &a).unwrap_err();
        assert!(
            matches!(
                err,
                KeyLogError::Entry {
                    problem: Problem::SignerNotValid(_),
                    ..
                }
            ),
            "{err}"
        );
        // Nor can a stranger.
        let err = log.sign_next(add(&key()), &key()).unwrap_err();
        assert!(
            matches!(
                err,
                KeyLogError::Entry {
                    problem: Problem::SignerNotValid(_),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(log.len(), 3, "nothing appended");
    }

    #[test]
    fn a_changed_entry_or_a_broken_chain_is_refused() {
        let (log, _, _) = three_entries();
        let other = key();
        // The added key swapped for another: the signature no longer covers it.
        let mut entries = log.entries().to_vec();
        entries[1].action = add(&other);
        let err = KeyLog::verify("acme", entries).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        // An entry dropped from the middle: the next one names a hash that is not there.
        let mut entries = log.entries().to_vec();
        entries.remove(1);
        assert!(KeyLog::verify("acme", entries).is_err());
        // Another namespace's log served for this one.
        let err = KeyLog::verify("other", log.entries().to_vec()).unwrap_err();
        assert!(matches!(
            err,
            KeyLogError::Entry {
                problem: Problem::WrongNamespace,
                ..
            }
        ));
        // The first entry must be the first key vouching for itself.
        let stranger = key();
        let mut forged = KeyLog::start("acme", &stranger).unwrap().entries().to_vec();
        forged[0].signer = id(&key());
        assert!(KeyLog::verify("acme", forged).is_err());
        assert_eq!(
            KeyLog::verify("acme", vec![]).unwrap_err(),
            KeyLogError::Empty
        );
    }

    #[test]
    fn a_pinned_log_refuses_forks_and_shortened_logs() {
        let (a, b) = (key(), key());
        let mut log = KeyLog::start("acme", &a).unwrap();
        log.sign_next(add(&b), &a).unwrap();
        let pin = log.pin();
        // Growing is fine.
        let mut grown = log.clone();
        grown.sign_next(add(&key()), &b).unwrap();
        grown.check_extends(&pin).unwrap();
        // Shortened: the second entry dropped.
        let short = KeyLog::verify("acme", log.entries()[..1].to_vec()).unwrap();
        assert!(matches!(
            short.check_extends(&pin),
            Err(KeyLogError::Shortened { .. })
        ));
        // A fork: the same first entry, then a different second one (a valid chain of its
        // own, made by the holder of `a`).
        let mut fork = KeyLog::verify("acme", log.entries()[..1].to_vec()).unwrap();
        fork.sign_next(add(&key()), &a).unwrap();
        assert!(matches!(
            fork.check_extends(&pin),
            Err(KeyLogError::Forked { .. })
        ));
    }

    #[test]
    fn keys_are_not_re_added_and_the_last_key_is_not_revoked() {
        let a = key();
        let mut log = KeyLog::start("acme", &a).unwrap();
        let err = log.sign_next(add(&a), &a).unwrap_err();
        assert!(matches!(
            err,
            KeyLogError::Entry {
                problem: Problem::DuplicateKey(_),
                ..
            }
        ));
        let err = log
            .sign_next(KeyAction::Revoke { key_id: id(&a) }, &a)
            .unwrap_err();
        assert!(matches!(
            err,
            KeyLogError::Entry {
                problem: Problem::RevokesLastKey,
                ..
            }
        ));
        let err = log
            .sign_next(KeyAction::Revoke { key_id: id(&key()) }, &a)
            .unwrap_err();
        assert!(matches!(
            err,
            KeyLogError::Entry {
                problem: Problem::RevokesUnknownKey(_),
                ..
            }
        ));
    }
}
