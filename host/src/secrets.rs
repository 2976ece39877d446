//! Keys kept by the host and secrets encrypted at rest.
//!
//! Plugin secrets (API keys, bot tokens) are stored encrypted with XChaCha20-Poly1305 under a
//! master key taken from `KELP_MASTER_KEY` (64 hex digits) or from a 0600 key file created at
//! first start. The key never enters the database, so a leaked database file alone reveals no
//! secret.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// Reads a 32-byte key from `path`, creating it (mode 0600) with random bytes if absent.
pub fn load_or_create_key(path: &Path) -> Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).context("key file is not text")?;
            parse_hex_key(text.trim())
                .with_context(|| format!("reading key file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    file.write_all(hex::encode(key).as_bytes())?;
                    file.sync_all()?;
                    Ok(key)
                }
                // Another process created it between our read and our create: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(e) => Err(e).with_context(|| format!("creating key file {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
    }
}

fn parse_hex_key(text: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(text).context("key is not hex")?;
    let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!("key must be 32 bytes (64 hex digits), got {}", bytes.len());
    };
    Ok(key)
}

/// Encrypts and decrypts secret values with the master key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// The master key from `KELP_MASTER_KEY`, else from `key_file` (created if absent).
    pub fn from_env_or_file(key_file: &Path) -> Result<SecretBox> {
        let key = match std::env::var("KELP_MASTER_KEY") {
            Ok(hex) if !hex.is_empty() => parse_hex_key(hex.trim()).context("KELP_MASTER_KEY")?,
            _ => load_or_create_key(key_file)?,
        };
        Ok(SecretBox {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// `base64(nonce ‖ ciphertext)`; `context` (e.g. instance id + secret name) is bound as
    /// associated data so a ciphertext cannot be moved to another secret's slot.
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                chacha20poly1305::aead::Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("encrypting a secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Reverses [`SecretBox::seal`]; fails on a wrong key, context or tampered value.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .context("stored secret is not base64")?;
        if bytes.len() < 24 {
            bail!("stored secret is truncated");
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                chacha20poly1305::aead::Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "stored secret could not be decrypted (wrong master key or tampered)"
                )
            })?;
        String::from_utf8(plain).context("stored secret is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox {
            cipher: XChaCha20Poly1305::new(
                &load_or_create_key(&dir.path().join("k")).unwrap().into(),
            ),
        };
        let sealed = sb.seal("inst/API_KEY", "sk-123").unwrap();
        assert!(!sealed.contains("sk-123"));
        assert_eq!(sb.open("inst/API_KEY", &sealed).unwrap(), "sk-123");
        assert!(sb.open("other/API_KEY", &sealed).is_err());
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = load_or_create_key(&path).unwrap();
        let b = load_or_create_key(&path).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
