//! On-disk cache of precompiled components.
//!
//! Compiling a component takes hundreds of milliseconds; loading a precompiled one takes well
//! under one. But `Component::deserialize` runs native code from the file without checking
//! it, so each file is bound to this host by an HMAC under a host key: a file written or
//! altered by anyone without the key is recompiled, never loaded. Files are keyed by the
//! wasm's sha256 and the engine's compatibility hash, so an upgraded engine or changed
//! settings miss the cache instead of loading incompatible code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;
const TAG_LEN: usize = 32;

/// The compile cache of one host.
pub struct CompileCache {
    dir: PathBuf,
    key_file: PathBuf,
    key: [u8; 32],
    engine_hash: String,
}

/// Where a component came from, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// A file was present but failed its HMAC or would not deserialize; it was replaced.
    Rejected,
}

impl CompileCache {
    /// Opens (creating if needed) the cache in `dir`, with the host key stored in
    /// `dir/../cache.key` (mode 0600, created on first use).
    pub fn open(engine: &Engine, dir: &Path, key_file: &Path) -> Result<CompileCache> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = crate::secrets::load_or_create_key(key_file)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir: dir.to_owned(),
            key_file: key_file.to_owned(),
            key,
            engine_hash: format!("{:016x}", hasher.finish()),
        })
    }

    /// Whether an entry for this wasm exists (checked when it is loaded).
    pub fn has_entry(&self, wasm_sha256: &str) -> bool {
        self.path_for(wasm_sha256).is_file()
    }

    fn path_for(&self, wasm_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{wasm_sha256}-{}.cwasm", self.engine_hash))
    }

    fn tag(&self, wasm_sha256: &str, code: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length works");
        mac.update(wasm_sha256.as_bytes());
        mac.update(self.engine_hash.as_bytes());
        mac.update(code);
        mac.finalize().into_bytes().into()
    }

    /// Returns the compiled component for `wasm`, from the cache when a valid file exists.
    /// `wasm_sha256` must be the sha256 of `wasm`; it is recomputed here so a caller's stale
    /// digest can never pair one wasm with another's machine code.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> Result<(Component, CacheOutcome)> {
        let actual = crate::util::sha256_hex(wasm);
        anyhow::ensure!(
            actual == wasm_sha256,
            "plugin.wasm digest mismatch: recorded {wasm_sha256}, actual {actual}"
        );
        let path = self.path_for(wasm_sha256);
        let mut outcome = CacheOutcome::Miss;
        if let Ok(file) = std::fs::read(&path) {
            match self.verify(wasm_sha256, &file) {
                Some(code) => {
                    // SAFETY: the bytes carry a valid HMAC under this host's key, so they were
                    // written by `store` below from `Engine::precompile_component` output for this
                    // exact wasm and engine configuration.
                    match unsafe { Component::deserialize(engine, code) } {
                        Ok(component) => return Ok((component, CacheOutcome::Hit)),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "discarding unusable compile cache entry");
                            outcome = CacheOutcome::Rejected;
                        }
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "compile cache entry failed its HMAC check; recompiling");
                    outcome = CacheOutcome::Rejected;
                }
            }
        }
        let code = engine
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        self.store(&path, wasm_sha256, &code);
        // SAFETY: `code` was produced just now by this engine's `precompile_component`.
        let component = unsafe { Component::deserialize(engine, &code) }
            .map_err(anyhow::Error::from)
            .context("loading the freshly compiled component")?;
        Ok((component, outcome))
    }

    fn verify<'a>(&self, wasm_sha256: &str, file: &'a [u8]) -> Option<&'a [u8]> {
        if file.len() < TAG_LEN {
            return None;
        }
        let (tag, code) = file.split_at(TAG_LEN);
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length works");
        mac.update(wasm_sha256.as_bytes());
        mac.update(self.engine_hash.as_bytes());
        mac.update(code);
        mac.verify_slice(tag).ok().map(|()| code)
    }

    /// Writes atomically (temp file + rename) so a concurrent reader or a crash never sees a
    /// half-written entry. A failed write only costs a recompile next time.
    fn store(&self, path: &Path, wasm_sha256: &str, code: &[u8]) {
        let tag = self.tag(wasm_sha256, code);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = (|| -> std::io::Result<()> {
            let mut bytes = Vec::with_capacity(TAG_LEN + code.len());
            bytes.extend_from_slice(&tag);
            bytes.extend_from_slice(code);
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "could not write compile cache entry");
        }
    }
}

/// Compiles components in a child process (`kelp compile-worker`), which writes them into
/// this host's cache, instead of in the server. A server compiles a handful of plugins once,
/// at install or on a new engine, and then runs for weeks: compiling in-process leaves the
/// compiler's code and its working memory (tens of MiB) resident for all that time, while a
/// child's go with it. The server then only loads the cached, HMAC-checked machine code.
pub struct CompileWorker {
    /// The `kelp` executable.
    pub exe: PathBuf,
}

/// The environment variable a compile worker reads the runtime settings from (as JSON): the
/// engine it builds must be the server's, or its output would not load there.
pub const WORKER_SETTINGS_ENV: &str = "KELP_COMPILE_SETTINGS";

impl CompileWorker {
    /// Compiles `wasm` into `cache` in a child process; the caller then loads it from there.
    pub fn compile(
        &self,
        settings: &super::RuntimeSettings,
        cache: &CompileCache,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> Result<()> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(&self.exe)
            .arg("compile-worker")
            .arg("--cache-dir")
            .arg(&cache.dir)
            .arg("--key-file")
            .arg(&cache.key_file)
            .arg("--sha256")
            .arg(wasm_sha256)
            .env(WORKER_SETTINGS_ENV, serde_json::to_string(settings)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        // The child reads all of its input before it writes anything.
        let written = child
            .stdin
            .take()
            .context("the worker's standard input")?
            .write_all(wasm);
        let out = child.wait_with_output()?;
        written.context("handing the component to the compile worker")?;
        anyhow::ensure!(
            out.status.success(),
            "the compile worker failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

/// `kelp compile-worker`: compiles the component on standard input into the cache at
/// `cache_dir` under the engine the settings in [`WORKER_SETTINGS_ENV`] make.
pub fn run_worker(cache_dir: &Path, key_file: &Path, wasm_sha256: &str) -> Result<()> {
    use std::io::Read;
    let settings: super::RuntimeSettings = serde_json::from_str(
        &std::env::var(WORKER_SETTINGS_ENV)
            .with_context(|| format!("{WORKER_SETTINGS_ENV} is not set"))?,
    )
    .context("reading the runtime settings")?;
    let engine = super::engine::build_engine(&settings)?;
    let cache = CompileCache::open(&engine, cache_dir, key_file)?;
    let mut wasm = Vec::new();
    std::io::stdin().read_to_end(&mut wasm)?;
    cache.load_or_compile(&engine, &wasm, wasm_sha256)?;
    Ok(())
}
