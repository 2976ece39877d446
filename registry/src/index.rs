//! A package's index: one JSON line per released version, hash-chained, each carrying its
//! signed release statement.
//!
//! A line holds what never changes about a release — the [`ReleaseStatement`], its signature
//! and the namespace key-log length it was published at — plus the hash of the line before
//! it, and one thing that does change: `yanked`. The chain hashes only the unchanging part,
//! so yanking a release (the owner's call, unsigned) does not rewrite history, and a host
//! that saw the index once can tell a rewritten one (a fork) from a grown one, as with key
//! logs.
//!
//! A line's hash is SHA-256 of
//!
//! ```text
//! statement's signing bytes ‖ signature (64 bytes) ‖ key-log position (u64 big-endian)
//! ‖ 0x00 | 0x01 ‖ previous line's hash
//! ```
//!
//! Checks a host makes on an index it fetched ([`Index::verify`]): every line follows the one
//! before it; every statement names this package and a version not seen before on an earlier
//! line; key-log positions never go down; each statement's signature verifies with the key
//! the namespace's log says was valid at the line's position.

use serde::{Deserialize, Serialize};

use crate::keylog::{KeyLog, KeyLogError};
use crate::manifest::PluginName;
use crate::signing::{ReleaseStatement, Sha256Digest, SigningError, decode_signature};

/// One version's line in a package's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexLine {
    /// What the publisher signed.
    pub statement: ReleaseStatement,
    /// The publisher's signature over the statement, 128 lowercase hex digits.
    pub signature: String,
    /// The length of the namespace's key log when this was published: the key must have been
    /// valid then.
    pub key_log_position: u64,
    /// Hash of the line before it; absent on the first.
    pub previous: Option<Sha256Digest>,
    /// Withdrawn by its owner: not chosen for a version range, still installable by exact
    /// version from a lock. Not part of the chain.
    #[serde(default)]
    pub yanked: bool,
}

impl IndexLine {
    /// The hash the next line names: over everything but `yanked`.
    pub fn hash(&self) -> Result<Sha256Digest, IndexError> {
        let signature = decode_signature(&self.signature).map_err(|e| self.error(e.into()))?;
        // The statement's bytes delimit themselves (tagged, every field length-prefixed); the
        // rest has fixed lengths, so the concatenation has one reading.
        let mut bytes = self.statement.signing_bytes();
        bytes.extend_from_slice(&signature.to_bytes());
        bytes.extend_from_slice(&self.key_log_position.to_be_bytes());
        match &self.previous {
            None => bytes.push(0),
            Some(previous) => {
                bytes.push(1);
                bytes.extend_from_slice(&previous.0);
            }
        }
        Ok(Sha256Digest::of(&bytes))
    }

    fn error(&self, problem: LineProblem) -> IndexError {
        IndexError::Line {
            version: self.statement.version.to_string(),
            problem: Box::new(problem),
        }
    }
}

/// Why an index was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// A line breaks a rule.
    #[error("index line for version {version}: {problem}")]
    Line {
        /// The line's version.
        version: String,
        /// What is wrong (boxed: a key-log error inside is large).
        problem: Box<LineProblem>,
    },
    /// Fewer lines than a host saw before.
    #[error(
        "the index has {len} lines, fewer than the {pinned} seen before: releases were removed"
    )]
    Shortened {
        /// Lines now.
        len: usize,
        /// Lines seen before.
        pinned: usize,
    },
    /// The line at a position seen before changed.
    #[error("the index was rewritten: line {position} is not the one seen before")]
    Forked {
        /// The line's position, from 0.
        position: usize,
    },
    /// A line that is not JSON of an index line.
    #[error("index line {line}: {message}")]
    Malformed {
        /// The line number, from 1.
        line: usize,
        /// The parser's message.
        message: String,
    },
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// It does not name the line before it.
    #[error("it does not follow the line before it")]
    BrokenChain,
    /// Its statement is for another package.
    #[error("its statement is for {0}")]
    OtherPackage(String),
    /// An earlier line has the same version (build metadata never differs: it is refused).
    #[error("an earlier line already released this version")]
    Republished,
    /// Its key-log position is lower than an earlier line's.
    #[error("its key-log position {position} is lower than an earlier line's {earlier}")]
    PositionWentBack {
        /// This line's.
        position: u64,
        /// The highest before it.
        earlier: u64,
    },
    /// A new release names another key-log position than the log's current length.
    #[error(
        "it names key-log position {position}, but a new release must name the log's current \
         length {current}"
    )]
    NotCurrentPosition {
        /// The position it names.
        position: u64,
        /// The log's length.
        current: u64,
    },
    /// Its key was not a namespace key at its position.
    #[error("{0}")]
    Key(#[from] KeyLogError),
    /// Its signature or an encoding is wrong.
    #[error("{0}")]
    Signing(#[from] SigningError),
}

/// A verified index of one package.
#[derive(Debug, Clone)]
pub struct Index {
    lines: Vec<IndexLine>,
    hashes: Vec<Sha256Digest>,
}

impl Index {
    /// Parses JSON lines as served. Empty lines are skipped.
    pub fn parse_lines(text: &str) -> Result<Vec<IndexLine>, IndexError> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| IndexError::Malformed {
                    line: i + 1,
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Checks `lines` as the index of `package` against the namespace's verified key log.
    pub fn verify(
        package: &PluginName,
        lines: Vec<IndexLine>,
        keys: &KeyLog,
    ) -> Result<Index, IndexError> {
        let mut index = Index {
            lines: Vec::with_capacity(lines.len()),
            hashes: Vec::with_capacity(lines.len()),
        };
        for line in lines {
            index.check_next(package, &line, keys)?;
            index.hashes.push(line.hash()?);
            index.lines.push(line);
        }
        Ok(index)
    }

    /// Checks `line` as the next one (the registry does this before appending a release).
    ///
    /// A host cannot tell when a line was written, so a stolen key revoked later could sign
    /// a *new* package's first release claiming a position before its revocation. The
    /// registry closes that at publish with [`Index::check_publish_position`]; a host trusts
    /// it for that through the registry's signed timestamp, as it does for freshness.
    pub fn check_next(
        &self,
        package: &PluginName,
        line: &IndexLine,
        keys: &KeyLog,
    ) -> Result<(), IndexError> {
        let fail = |p: LineProblem| line.error(p);
        if line.previous != self.hashes.last().copied() {
            return Err(fail(LineProblem::BrokenChain));
        }
        let statement = &line.statement;
        if statement.name != *package {
            return Err(fail(LineProblem::OtherPackage(statement.name.to_string())));
        }
        if self
            .lines
            .iter()
            .any(|l| l.statement.version == statement.version)
        {
            return Err(fail(LineProblem::Republished));
        }
        if let Some(earlier) = self.lines.iter().map(|l| l.key_log_position).max()
            && line.key_log_position < earlier
        {
            return Err(fail(LineProblem::PositionWentBack {
                position: line.key_log_position,
                earlier,
            }));
        }
        let key = keys
            .release_key(&statement.key_id, line.key_log_position)
            .map_err(|e| fail(e.into()))?;
        let signature = decode_signature(&line.signature).map_err(|e| fail(e.into()))?;
        statement
            .verify(key, &signature)
            .map_err(|e| fail(e.into()))?;
        Ok(())
    }

    /// At publish, a release must name the namespace log's current length: signed by a key
    /// current now, not one valid only in the past.
    pub fn check_publish_position(line: &IndexLine, keys: &KeyLog) -> Result<(), IndexError> {
        if line.key_log_position != keys.len() {
            return Err(line.error(LineProblem::NotCurrentPosition {
                position: line.key_log_position,
                current: keys.len(),
            }));
        }
        Ok(())
    }

    /// The verified lines, oldest first.
    pub fn lines(&self) -> &[IndexLine] {
        &self.lines
    }

    /// Hash of the last line, which a host records with the length (its pin of the index).
    pub fn head(&self) -> Option<Sha256Digest> {
        self.hashes.last().copied()
    }

    /// Refuses this index unless it extends one seen before with `len` lines ending in
    /// `head`.
    pub fn check_extends(&self, len: usize, head: Option<Sha256Digest>) -> Result<(), IndexError> {
        if self.lines.len() < len {
            return Err(IndexError::Shortened {
                len: self.lines.len(),
                pinned: len,
            });
        }
        match len.checked_sub(1) {
            Some(position) if Some(self.hashes[position]) != head => {
                Err(IndexError::Forked { position })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use semver::Version;

    use super::*;
    use crate::keylog::KeyAction;
    use crate::signing::{KeyId, encode_public_key, encode_signature, generate_signing_key};

    fn name() -> PluginName {
        "acme/weather".parse().unwrap()
    }

    fn statement(version: &str, key: &SigningKey) -> ReleaseStatement {
        ReleaseStatement {
            name: name(),
            version: Version::parse(version).unwrap(),
            contract: Some(Version::new(0, 2, 0)),
            key_id: KeyId::of(&key.verifying_key()),
            manifest_sha256: Sha256Digest::of(version.as_bytes()),
            wasm_sha256: Some(Sha256Digest::of(b"wasm")),
            package_sha256: Sha256Digest::of(format!("package {version}").as_bytes()),
        }
    }

    fn line(index: &Index, version: &str, key: &SigningKey, position: u64) -> IndexLine {
        let statement = statement(version, key);
        let signature = encode_signature(&statement.sign(key).unwrap());
        IndexLine {
            statement,
            signature,
            key_log_position: position,
            previous: index.head(),
            yanked: false,
        }
    }

    fn push(index: &mut Index, line: IndexLine, keys: &KeyLog) {
        index.check_next(&name(), &line, keys).unwrap();
        index.hashes.push(line.hash().unwrap());
        index.lines.push(line);
    }

    fn empty() -> Index {
        Index {
            lines: vec![],
            hashes: vec![],
        }
    }

    #[test]
    fn an_index_verifies_from_its_lines_and_yanking_keeps_the_chain() {
        let a = generate_signing_key().unwrap();
        let keys = KeyLog::start("acme", &a).unwrap();
        let mut index = empty();
        let first = line(&index, "1.0.0", &a, 1);
        push(&mut index, first, &keys);
        let second = line(&index, "1.1.0", &a, 1);
        push(&mut index, second, &keys);
        let mut text: String = index
            .lines()
            .iter()
            .map(|l| serde_json::to_string(l).unwrap() + "\n")
            .collect();
        let again = Index::verify(&name(), Index::parse_lines(&text).unwrap(), &keys).unwrap();
        assert_eq!(again.head(), index.head());
        text = text.replacen("\"yanked\":false", "\"yanked\":true", 1);
        let yanked = Index::verify(&name(), Index::parse_lines(&text).unwrap(), &keys).unwrap();
        assert!(yanked.lines()[0].yanked);
        yanked.check_extends(2, index.head()).unwrap();
    }

    #[test]
    fn tampered_forged_republished_and_rewritten_indexes_are_refused() {
        let a = generate_signing_key().unwrap();
        let mut keys = KeyLog::start("acme", &a).unwrap();
        let mut index = empty();
        let first = line(&index, "1.0.0", &a, 1);
        push(&mut index, first, &keys);

        // A changed digest: the signature no longer covers the statement.
        let mut tampered = line(&index, "1.1.0", &a, 1);
        tampered.statement.package_sha256 = Sha256Digest::of(b"evil");
        let err = index.check_next(&name(), &tampered, &keys).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");

        // Signed by a key that is not the namespace's.
        let stranger = generate_signing_key().unwrap();
        let err = index
            .check_next(&name(), &line(&index, "1.1.0", &stranger, 1), &keys)
            .unwrap_err();
        assert!(err.to_string().contains("was never added"), "{err}");

        // The same version again.
        let err = index
            .check_next(&name(), &line(&index, "1.0.0", &a, 1), &keys)
            .unwrap_err();
        assert!(
            matches!(&err, IndexError::Line { problem, .. } if matches!(**problem, LineProblem::Republished)),
            "{err}"
        );

        // Not following the last line.
        let mut loose = line(&index, "1.2.0", &a, 1);
        loose.previous = None;
        let err = index.check_next(&name(), &loose, &keys).unwrap_err();
        assert!(
            matches!(&err, IndexError::Line { problem, .. } if matches!(**problem, LineProblem::BrokenChain)),
            "{err}"
        );

        // A revoked key signs nothing new, and cannot claim an older position.
        let b = generate_signing_key().unwrap();
        keys.sign_next(
            KeyAction::Add {
                public_key: encode_public_key(&b.verifying_key()),
            },
            &a,
        )
        .unwrap();
        keys.sign_next(
            KeyAction::Revoke {
                key_id: KeyId::of(&a.verifying_key()),
            },
            &b,
        )
        .unwrap();
        let second = line(&index, "1.1.0", &b, 3);
        push(&mut index, second, &keys);
        let err = index
            .check_next(&name(), &line(&index, "1.2.0", &a, 3), &keys)
            .unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
        let err = index
            .check_next(&name(), &line(&index, "1.2.0", &a, 1), &keys)
            .unwrap_err();
        assert!(
            matches!(&err, IndexError::Line { problem, .. } if matches!(**problem, LineProblem::PositionWentBack { .. })),
            "{err}"
        );
        // Nor can a new package's first release by it, at publish.
        let claim = line(&empty(), "0.1.0", &a, 1);
        assert!(Index::check_publish_position(&claim, &keys).is_err());
        Index::check_publish_position(&line(&empty(), "0.1.0", &b, 3), &keys).unwrap();
        // The release made before the revocation still verifies.
        Index::verify(&name(), index.lines().to_vec(), &keys).unwrap();

        // Rewritten: a different first line, or lines dropped.
        let pinned = (index.lines().len(), index.head());
        let mut rewritten = empty();
        let other = line(&rewritten, "0.9.0", &b, 3);
        push(&mut rewritten, other, &keys);
        let next = line(&rewritten, "1.1.0", &b, 3);
        push(&mut rewritten, next, &keys);
        assert!(matches!(
            rewritten.check_extends(pinned.0, pinned.1),
            Err(IndexError::Forked { position: 1 })
        ));
        let short = Index::verify(&name(), index.lines()[..1].to_vec(), &keys).unwrap();
        assert!(matches!(
            short.check_extends(pinned.0, pinned.1),
            Err(IndexError::Shortened { .. })
        ));
        assert!(matches!(
            Index::parse_lines("{not json"),
            Err(IndexError::Malformed { line: 1, .. })
        ));
    }
}
