//! The registry's own keys and the signed state every process serves.
//!
//! In the data directory: `root.pub` (the root public key, served so hosts can check the
//! certificate against the id they pinned), `online.key` (0600) and `certificate.json` (the
//! root's statement that the online key signs for the registry). `root.key` is written there
//! only when `serve` creates a registry's keys on its first start; the log says to move it
//! offline, and nothing reads it again except `kelp-registry keys certify --root-key FILE`,
//! which replaces the online key.
//!
//! The advisory list and the timestamp live in the database, so that several processes on
//! one PostgreSQL serve the same ones; each change of the advisories re-signs both, and a
//! timer re-signs the timestamp well before it expires.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sqlx::{Any, Row, Transaction};

use super::db::Db;
use super::now_ms;
use crate::signing::{
    KeyId, decode_public_key, decode_signing_key, encode_public_key, encode_signing_key,
    generate_signing_key,
};
use crate::trust::{Advisory, AdvisoryList, OnlineKeyCertificate, Timestamp};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// How long a timestamp is valid: hosts refuse installs past it, so a registry that stops
/// re-signing (or a mirror replaying an old copy) is noticed within a week.
pub const TIMESTAMP_LIFETIME_MS: u64 = 7 * DAY_MS;
/// A timestamp with less than this left is replaced: about one new timestamp a day.
const RESIGN_WHEN_LEFT_MS: u64 = 6 * DAY_MS;
/// How long a new online-key certificate is valid.
const CERTIFICATE_LIFETIME_MS: u64 = 365 * DAY_MS;
/// How often a server checks whether its timestamp needs re-signing.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// The keys a running registry signs with and shows.
pub struct RegistryKeys {
    pub root: VerifyingKey,
    pub online: SigningKey,
    pub certificate: OnlineKeyCertificate,
}

impl RegistryKeys {
    /// The root key's id: what hosts pin.
    pub fn root_id(&self) -> KeyId {
        KeyId::of(&self.root)
    }

    /// Loads the keys from `dir`, creating a root key, an online key and a certificate when
    /// the directory has none (a registry's first start). Returns whether they were created.
    pub fn load_or_create(dir: &Path) -> Result<(RegistryKeys, bool)> {
        let paths = KeyPaths::in_dir(dir);
        if !paths.certificate.exists() && !paths.root_pub.exists() {
            let root = generate_signing_key()?;
            write_secret(&paths.root_key, &encode_signing_key(&root))?;
            std::fs::write(&paths.root_pub, encode_public_key(&root.verifying_key()))?;
            certify(dir, &root)?;
            return Ok((RegistryKeys::load(dir)?, true));
        }
        Ok((RegistryKeys::load(dir)?, false))
    }

    fn load(dir: &Path) -> Result<RegistryKeys> {
        let paths = KeyPaths::in_dir(dir);
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the registry key file {}", path.display()))
        };
        let root = decode_public_key(read(&paths.root_pub)?.trim())?;
        let online = decode_signing_key(read(&paths.online_key)?.trim())?;
        let certificate: OnlineKeyCertificate =
            serde_json::from_str(&read(&paths.certificate)?).context("certificate.json")?;
        if certificate.root_key_id != KeyId::of(&root) {
            bail!("certificate.json is signed by another root key than root.pub");
        }
        if certificate.online_key != encode_public_key(&online.verifying_key()) {
            bail!("certificate.json certifies another key than online.key");
        }
        if certificate.expires_ms <= now_ms() {
            bail!(
                "the online key's certificate expired; issue a new one with \
                 `kelp-registry keys certify --root-key ROOT_KEY_FILE`"
            );
        }
        Ok(RegistryKeys {
            root,
            online,
            certificate,
        })
    }
}

struct KeyPaths {
    root_key: PathBuf,
    root_pub: PathBuf,
    online_key: PathBuf,
    certificate: PathBuf,
}

impl KeyPaths {
    fn in_dir(dir: &Path) -> KeyPaths {
        KeyPaths {
            root_key: dir.join("root.key"),
            root_pub: dir.join("root.pub"),
            online_key: dir.join("online.key"),
            certificate: dir.join("certificate.json"),
        }
    }
}

/// A new online key for the registry in `dir`, certified by `root` for a year.
pub fn certify(dir: &Path, root: &SigningKey) -> Result<KeyId> {
    let paths = KeyPaths::in_dir(dir);
    if paths.root_pub.exists() {
        let pinned = decode_public_key(std::fs::read_to_string(&paths.root_pub)?.trim())?;
        if pinned != root.verifying_key() {
            bail!(
                "this root key is not the registry's ({}): hosts pinned {}",
                KeyId::of(&root.verifying_key()),
                KeyId::of(&pinned)
            );
        }
    } else {
        std::fs::write(&paths.root_pub, encode_public_key(&root.verifying_key()))?;
    }
    let online = generate_signing_key()?;
    let certificate = OnlineKeyCertificate::issue(
        root,
        &online.verifying_key(),
        now_ms() + CERTIFICATE_LIFETIME_MS,
    )?;
    write_secret(&paths.online_key, &encode_signing_key(&online))?;
    std::fs::write(
        &paths.certificate,
        serde_json::to_string_pretty(&certificate)?,
    )?;
    Ok(KeyId::of(&online.verifying_key()))
}

/// Reads a signing key file (as `keys init` or a first start wrote it).
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    Ok(decode_signing_key(text.trim())?)
}

/// Writes a secret readable by its owner only.
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Replacing (a new online key): remove and create, so the mode is ours.
            std::fs::remove_file(path)?;
            options
                .open(path)
                .with_context(|| format!("writing {}", path.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
    };
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// The advisory list and timestamp as served.
pub struct SignedState {
    pub advisories: String,
    pub timestamp: String,
}

/// Reads the signed state.
pub async fn signed_state(db: &Db) -> Result<SignedState> {
    let row = sqlx::query("SELECT advisories, timestamp FROM registry_state WHERE id = 1")
        .fetch_one(&db.pool)
        .await
        .context("the registry has no signed timestamp yet")?;
    Ok(SignedState {
        advisories: row.try_get("advisories")?,
        timestamp: row.try_get("timestamp")?,
    })
}

/// What [`resign`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Resigned {
    /// Wrote a new list and timestamp (commit the transaction).
    Written,
    /// Nothing was due.
    NotDue,
    /// Another process re-signed first (roll back; retry if the advisories changed).
    Lost,
}

/// Re-signs the advisory list (from the `advisories` table) and a new timestamp when `force`
/// is set (the advisories changed), when there is none, when the current one has less than
/// six days left, or when another online key signed it. Retries when another process
/// re-signed at the same moment and the advisories changed.
pub async fn refresh(db: &Db, keys: &RegistryKeys, force: bool) -> Result<()> {
    loop {
        let _lock = db.write_lock().await;
        let mut tx = db.pool.begin().await?;
        match resign(&mut tx, keys, force).await? {
            Resigned::Written => {
                tx.commit().await?;
                return Ok(());
            }
            Resigned::NotDue => return Ok(()),
            Resigned::Lost if !force => return Ok(()),
            Resigned::Lost => tx.rollback().await?,
        }
    }
}

/// [`refresh`]'s work inside the caller's transaction, so that a change of the advisories
/// and the list that carries it commit together.
pub async fn resign(
    tx: &mut Transaction<'_, Any>,
    keys: &RegistryKeys,
    force: bool,
) -> Result<Resigned> {
    let current = sqlx::query("SELECT timestamp_seq, timestamp FROM registry_state WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await?;
    let now = now_ms();
    let seq = match &current {
        Some(row) => {
            let seq: i64 = row.try_get("timestamp_seq")?;
            let timestamp: Timestamp =
                serde_json::from_str(&row.try_get::<String, _>("timestamp")?)?;
            let stale = timestamp.expires_ms.saturating_sub(now) < RESIGN_WHEN_LEFT_MS;
            let other_key = timestamp.signer != KeyId::of(&keys.online.verifying_key());
            if !force && !stale && !other_key {
                return Ok(Resigned::NotDue);
            }
            seq as u64 + 1
        }
        None => 1,
    };
    let rows =
        sqlx::query("SELECT name, versions, package_sha256, reason FROM advisories ORDER BY id")
            .fetch_all(&mut **tx)
            .await?;
    let mut advisories = Vec::with_capacity(rows.len());
    for row in rows {
        let digest: Option<String> = row.try_get("package_sha256")?;
        advisories.push(Advisory {
            name: row.try_get("name")?,
            versions: row.try_get("versions")?,
            package_sha256: digest.map(|d| d.parse()).transpose()?,
            reason: row.try_get("reason")?,
        });
    }
    let list = AdvisoryList::sign(advisories, &keys.online)?;
    let timestamp = Timestamp::sign(seq, now + TIMESTAMP_LIFETIME_MS, &list, &keys.online)?;
    let (list, timestamp) = (
        serde_json::to_string(&list)?,
        serde_json::to_string(&timestamp)?,
    );
    // The sequence is compared on write: two processes re-signing at once cannot both
    // write the same number.
    let written = if current.is_some() {
        sqlx::query(
            "UPDATE registry_state SET timestamp_seq = $1, advisories = $2, timestamp = $3 \
             WHERE id = 1 AND timestamp_seq = $4",
        )
        .bind(seq as i64)
        .bind(&list)
        .bind(&timestamp)
        .bind(seq as i64 - 1)
        .execute(&mut **tx)
        .await?
        .rows_affected()
    } else {
        sqlx::query(
            "INSERT INTO registry_state (id, timestamp_seq, advisories, timestamp) \
             VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(seq as i64)
        .bind(&list)
        .bind(&timestamp)
        .execute(&mut **tx)
        .await?
        .rows_affected()
    };
    Ok(if written == 0 {
        Resigned::Lost
    } else {
        Resigned::Written
    })
}
