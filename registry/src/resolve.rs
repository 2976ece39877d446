//! A host's side of installing from a registry, without I/O: given what it fetched (the
//! well-known document's root key and certificate, the timestamp, the advisory list, the
//! namespace's key log, the package's index) and what it remembers from before (its pins),
//! decide which release to install — or refuse, saying why — and then check the downloaded
//! bytes before anything is unpacked.
//!
//! The order of checks is the order of trust: the registry's signed state against the pinned
//! root (and the newest timestamp seen: no rollback; not expired: no install from a frozen
//! registry); the namespace's key log as a chain that extends the one pinned at an earlier
//! install (no fork, no shortening); the package's index as a chain whose every statement is
//! signed by a key the log says was valid at its position, extending its pin; then the
//! choice of release. Only after all of that are the package bytes looked at, and then only
//! their SHA-256 until it matches the signed statement.

use ed25519_dalek::VerifyingKey;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use crate::index::{Index, IndexError, IndexLine};
use crate::keylog::{KeyLog, KeyLogEntry, KeyLogError, Pin};
use crate::manifest::PluginName;
use crate::package::{Package, PackageError, PackageLimits, read_package};
use crate::signing::{KeyId, ReleaseStatement, Sha256Digest};
use crate::trust::{AdvisoryList, OnlineKeyCertificate, Timestamp, TrustError, check_registry};
use crate::version::newest_matching;

/// What a host remembers about one registry and package between installs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    /// The highest timestamp sequence seen from the registry.
    pub timestamp_seq: u64,
    /// The namespace's key log as seen at the last install from it.
    pub key_log: Option<Pin>,
    /// The package's index as seen at the last install of it.
    pub index: Option<IndexPin>,
}

/// A package index's length and last line's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPin {
    /// Lines seen.
    pub len: usize,
    /// Hash of the last of them.
    pub head: Option<Sha256Digest>,
}

/// What the host fetched from the registry for one install.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The root public key (hex) from the well-known document; checked against the pin.
    pub root_key: String,
    /// The online key's certificate from the well-known document.
    pub certificate: OnlineKeyCertificate,
    /// `/timestamp.json`.
    pub timestamp: Timestamp,
    /// `/advisories.json`.
    pub advisories: AdvisoryList,
    /// `/keys/{namespace}`: JSON lines.
    pub key_log: String,
    /// `/index/{namespace}/{name}`: JSON lines.
    pub index: String,
}

/// Which release is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// The newest non-yanked release matching (see [`crate::version::parse_requirement`]).
    Range(VersionReq),
    /// Exactly this release, as a lock recorded it: yanked or not, with this digest.
    Locked {
        /// The version.
        version: Version,
        /// The package's digest the lock recorded.
        package_sha256: Sha256Digest,
    },
}

/// One install's question.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The package.
    pub name: &'a PluginName,
    /// Which release.
    pub wanted: Wanted,
    /// Contract versions this host serves.
    pub served: &'a [Version],
    /// The version installed now, if any.
    pub installed: Option<&'a Version>,
    /// Whether an older release than the installed one may replace it.
    pub allow_downgrade: bool,
}

/// Why a release was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its owner yanked it.
    Yanked,
    /// Its component uses a contract version this host does not serve.
    Contract(Version),
    /// An advisory names it.
    Advisory(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Yanked => f.write_str("yanked"),
            Skip::Contract(v) => write!(f, "needs kelp:plugin {v}, which this host does not serve"),
            Skip::Advisory(reason) => write!(f, "recalled by the registry: {reason}"),
        }
    }
}

/// The release to install, and the pins to keep once it is installed.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The chosen release's index line (statement, signature, position).
    pub line: IndexLine,
    /// The key that signed it.
    pub key: VerifyingKey,
    /// The pins after this install: the new timestamp, key log and index heads.
    pub pins: Pins,
    /// The verified advisory list (to disable installed releases it names).
    pub advisories: AdvisoryList,
    /// Newer matching releases passed over, and why (for the user).
    pub skipped: Vec<(Version, Skip)>,
}

/// Why an install was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The registry's signed state does not check out.
    #[error("{0}")]
    Trust(#[from] TrustError),
    /// The namespace's key log does not check out.
    #[error("{0}")]
    KeyLog(Box<KeyLogError>),
    /// The package's index does not check out.
    #[error("{0}")]
    Index(Box<IndexError>),
    /// A key log line is not JSON of an entry.
    #[error("key log line {line}: {message}")]
    MalformedKeyLog {
        /// From 1.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// No release fits.
    #[error("no release of `{name}` matches {wanted}{}", skipped_text(.skipped))]
    NoMatch {
        /// The package.
        name: String,
        /// The requirement, as text.
        wanted: String,
        /// Matching releases passed over, and why.
        skipped: Vec<(Version, Skip)>,
    },
    /// The locked release is recalled or cannot run here.
    #[error("`{name}` {version} cannot be installed: {why}")]
    Refused {
        /// The package.
        name: String,
        /// The version.
        version: Version,
        /// Why.
        why: Skip,
    },
    /// The lock's digest is not the registry's for that version.
    #[error(
        "`{name}` {version} in the registry has package {found}, not {locked} as locked: the \
         release was replaced, which a registry never does; nothing installed"
    )]
    LockMismatch {
        /// The package.
        name: String,
        /// The version (text: keeps the error small).
        version: String,
        /// The lock's digest.
        locked: Sha256Digest,
        /// The registry's.
        found: Sha256Digest,
    },
    /// Older than what is installed.
    #[error(
        "`{name}` {installed} is installed and {chosen} is older; pass --allow-downgrade to \
         install it anyway"
    )]
    Downgrade {
        /// The package.
        name: String,
        /// Installed now.
        installed: Version,
        /// Resolved.
        chosen: Version,
    },
    /// The downloaded bytes are not the signed package.
    #[error(
        "the downloaded package has SHA-256 {found}, not the signed {expected}: it was \
         tampered with or damaged; nothing was unpacked or installed"
    )]
    DigestMismatch {
        /// Signed.
        expected: Sha256Digest,
        /// Downloaded.
        found: Sha256Digest,
    },
    /// The package's digest matched, but its contents differ from the statement.
    #[error("the package does not match its signed statement: {0}")]
    ContentMismatch(String),
    /// The package's digest matched but it does not read (a publisher's broken package).
    #[error("{0}")]
    Package(#[from] PackageError),
}

fn skipped_text(skipped: &[(Version, Skip)]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let list: Vec<String> = skipped
        .iter()
        .map(|(v, why)| format!("{v}: {why}"))
        .collect();
    format!(" (passed over: {})", list.join("; "))
}

impl From<KeyLogError> for ResolveError {
    fn from(e: KeyLogError) -> ResolveError {
        ResolveError::KeyLog(Box::new(e))
    }
}

impl From<IndexError> for ResolveError {
    fn from(e: IndexError) -> ResolveError {
        ResolveError::Index(Box::new(e))
    }
}

/// Decides which release of `request.name` to install from what was `fetched`, against the
/// pinned root key id and the `pins` kept from earlier installs, at `now_ms`.
pub fn resolve(
    pinned_root: &KeyId,
    pins: &Pins,
    fetched: Fetched,
    request: &Request<'_>,
    now_ms: u64,
) -> Result<Resolution, ResolveError> {
    let current = check_registry(
        pinned_root,
        &fetched.root_key,
        &fetched.certificate,
        &fetched.timestamp,
        fetched.advisories,
        pins.timestamp_seq,
        now_ms,
    )?;
    current.require_fresh()?;

    let namespace = request.name.namespace();
    let mut entries = Vec::new();
    for (i, line) in fetched.key_log.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: KeyLogEntry =
            serde_json::from_str(line).map_err(|e| ResolveError::MalformedKeyLog {
                line: i + 1,
                message: e.to_string(),
            })?;
        entries.push(entry);
    }
    let log = KeyLog::verify(namespace, entries)?;
    if let Some(pin) = &pins.key_log {
        log.check_extends(pin)?;
    }
    let index = Index::verify(request.name, Index::parse_lines(&fetched.index)?, &log)?;
    if let Some(pin) = &pins.index {
        index.check_extends(pin.len, pin.head)?;
    }

    let name = request.name.to_string();
    let why_not = |line: &IndexLine| -> Option<Skip> {
        let statement = &line.statement;
        if let Some(contract) = &statement.contract
            && !request.served.contains(contract)
        {
            return Some(Skip::Contract(contract.clone()));
        }
        current
            .advisories
            .covers(&name, &statement.version, &statement.package_sha256)
            .map(|a| Skip::Advisory(a.reason.clone()))
    };
    let mut skipped = Vec::new();
    let line = match &request.wanted {
        Wanted::Range(requirement) => {
            let mut usable = Vec::new();
            for line in index.lines() {
                if !requirement.matches(&line.statement.version) {
                    continue;
                }
                let why = if line.yanked {
                    Some(Skip::Yanked)
                } else {
                    why_not(line)
                };
                match why {
                    Some(why) => skipped.push((line.statement.version.clone(), why)),
                    None => usable.push(line),
                }
            }
            let newest =
                newest_matching(requirement, usable.iter().map(|l| &l.statement.version)).cloned();
            // Only what is newer than the choice was passed over for it.
            skipped.retain(|(v, _)| newest.as_ref().is_none_or(|n| v > n));
            skipped.sort_by(|a, b| b.0.cmp(&a.0));
            let Some(newest) = newest else {
                return Err(ResolveError::NoMatch {
                    name,
                    wanted: requirement.to_string(),
                    skipped,
                });
            };
            usable
                .into_iter()
                .find(|l| l.statement.version == newest)
                .expect("the newest was chosen from these")
                .clone()
        }
        Wanted::Locked {
            version,
            package_sha256,
        } => {
            let line = index
                .lines()
                .iter()
                .find(|l| l.statement.version == *version)
                .ok_or_else(|| ResolveError::NoMatch {
                    name: name.clone(),
                    wanted: format!("={version} (locked)"),
                    skipped: Vec::new(),
                })?;
            if line.statement.package_sha256 != *package_sha256 {
                return Err(ResolveError::LockMismatch {
                    name,
                    version: version.to_string(),
                    locked: *package_sha256,
                    found: line.statement.package_sha256,
                });
            }
            // A yanked release still installs from a lock; a recalled one never does.
            if let Some(why) = why_not(line) {
                return Err(ResolveError::Refused {
                    name,
                    version: version.clone(),
                    why,
                });
            }
            line.clone()
        }
    };
    if let Some(installed) = request.installed
        && line.statement.version < *installed
        && !request.allow_downgrade
    {
        return Err(ResolveError::Downgrade {
            name,
            installed: installed.clone(),
            chosen: line.statement.version.clone(),
        });
    }
    let key = *log.release_key(&line.statement.key_id, line.key_log_position)?;
    Ok(Resolution {
        key,
        pins: Pins {
            timestamp_seq: current.seq,
            key_log: Some(log.pin()),
            index: Some(IndexPin {
                len: index.lines().len(),
                head: index.head(),
            }),
        },
        advisories: current.advisories,
        skipped,
        line,
    })
}

/// Checks downloaded `bytes` against the resolved release: the SHA-256 first, before a byte
/// is unpacked; then reads the package and checks its manifest and component against the
/// statement's digests, name and version.
pub fn verify_download(
    line: &IndexLine,
    bytes: &[u8],
    limits: &PackageLimits,
) -> Result<Package, ResolveError> {
    let statement = &line.statement;
    let found = Sha256Digest::of(bytes);
    if found != statement.package_sha256 {
        return Err(ResolveError::DigestMismatch {
            expected: statement.package_sha256,
            found,
        });
    }
    let package = read_package(bytes, limits)?;
    let actual = ReleaseStatement::for_package(&package, statement.key_id.clone());
    if actual != *statement {
        return Err(ResolveError::ContentMismatch(format!(
            "it is {} {} (contract {:?}), the statement says {} {} (contract {:?})",
            actual.name,
            actual.version,
            actual.contract.as_ref().map(ToString::to_string),
            statement.name,
            statement.version,
            statement.contract.as_ref().map(ToString::to_string),
        )));
    }
    Ok(package)
}

#[cfg(test)]
mod tests;
