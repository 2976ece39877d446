//! `.kelp` packages: a gzip'd tar holding `kelp.toml`, `plugin.wasm`, `SKILL.md`, `README.md`.
//!
//! [`read_package`] is the one strict reader shared by the host and the registry. Packages come
//! from strangers, so it refuses anything but the four regular files at top level, and it
//! counts bytes as they are inflated so a gzip bomb stops at the cap instead of after it.

use std::io::{self, Read};

use flate2::bufread::GzDecoder;
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, ManifestError, PluginKind};

mod skill;

pub use skill::{
    MAX_SKILL_COMPATIBILITY_CHARS, MAX_SKILL_DESCRIPTION_CHARS, MAX_SKILL_NAME_CHARS, Skill,
    parse_skill,
};

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "kelp.toml";
/// The component's file name.
pub const WASM_FILE: &str = "plugin.wasm";
/// The skill document's file name.
pub const SKILL_FILE: &str = "SKILL.md";
/// The readme's file name.
pub const README_FILE: &str = "README.md";

const MIB: u64 = 1024 * 1024;

/// `\0asm` followed by the component-model layer/version (0x0d 0x00 0x01 0x00).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// `\0asm` followed by core module version 1.
const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Size caps applied while reading a package. Every cap is in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageLimits {
    /// The archive as uploaded or downloaded. Default 64 MiB: compression never makes a
    /// package larger than its contents' total cap by much.
    pub compressed_bytes: u64,
    /// The whole inflated tar stream (headers and padding included). Default 64 MiB.
    pub total_bytes: u64,
    /// `plugin.wasm`. Default 50 MiB: large components (an embedded interpreter) fit.
    pub wasm_bytes: u64,
    /// `kelp.toml`. Default 64 KiB: a manifest is a page of text.
    pub manifest_bytes: u64,
    /// `SKILL.md`. Default 1 MiB: it is fed to a model, so must stay prompt-sized.
    pub skill_bytes: u64,
    /// `README.md`. Default 1 MiB.
    pub readme_bytes: u64,
}

impl Default for PackageLimits {
    fn default() -> Self {
        PackageLimits {
            compressed_bytes: 64 * MIB,
            total_bytes: 64 * MIB,
            wasm_bytes: 50 * MIB,
            manifest_bytes: 64 * 1024,
            skill_bytes: MIB,
            readme_bytes: MIB,
        }
    }
}

impl PackageLimits {
    fn cap_for(&self, file: &str) -> u64 {
        match file {
            MANIFEST_FILE => self.manifest_bytes,
            WASM_FILE => self.wasm_bytes,
            SKILL_FILE => self.skill_bytes,
            _ => self.readme_bytes,
        }
    }
}

/// A package that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    /// The parsed `kelp.toml`.
    pub manifest: Manifest,
    /// `kelp.toml` as written, for display and re-parsing.
    pub manifest_text: String,
    /// `plugin.wasm`, a WebAssembly component.
    pub wasm: Option<Vec<u8>>,
    /// `SKILL.md`, split into its front matter and body.
    pub skill: Option<Skill>,
    /// `README.md`.
    pub readme: Option<String>,
    /// Hex SHA-256 of the archive bytes: the content address in the registry.
    pub digest: String,
    /// Hex SHA-256 of `plugin.wasm`, signed in the release statement.
    pub wasm_sha256: Option<String>,
    /// Hex SHA-256 of `kelp.toml`, signed in the release statement.
    pub manifest_sha256: String,
}

/// Why a package was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The archive itself exceeds the compressed cap.
    #[error("package is {size} bytes, over the {cap}-byte cap for a compressed package")]
    CompressedTooLarge {
        /// Archive size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The bytes do not start with the gzip magic.
    #[error("package is not a gzip'd tar archive (no gzip header)")]
    NotGzip,
    /// The gzip or tar stream is damaged or ends early.
    #[error("package archive is corrupt or truncated: {0}")]
    Corrupt(String),
    /// Inflating would exceed the total cap.
    #[error("package inflates to more than the {cap}-byte cap for its total contents")]
    TotalTooLarge {
        /// The cap.
        cap: u64,
    },
    /// One file exceeds its cap.
    #[error("`{file}` is {size} bytes, over its {cap}-byte cap")]
    FileTooLarge {
        /// The file.
        file: String,
        /// Its size as declared in the archive.
        size: u64,
        /// The cap for that file.
        cap: u64,
    },
    /// An entry is not a regular file (directory, link, device, fifo, pax/GNU header, …).
    #[error("archive entry `{path}` is a {kind}; a package holds only regular files")]
    NotRegularFile {
        /// The entry's raw path.
        path: String,
        /// What it is instead.
        kind: String,
    },
    /// An entry's path has a directory part, `..`, or is not UTF-8.
    #[error("archive entry `{path}` is not allowed: {reason}")]
    BadPath {
        /// The entry's raw path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry is not one of the four known files.
    #[error(
        "unexpected file `{0}`; a package holds only kelp.toml, plugin.wasm, SKILL.md and README.md"
    )]
    UnknownFile(String),
    /// A file appears twice.
    #[error("`{0}` appears more than once in the archive")]
    Duplicate(String),
    /// A required file is absent.
    #[error("package has no `{file}`: {reason}")]
    Missing {
        /// The missing file.
        file: &'static str,
        /// Why it is needed.
        reason: String,
    },
    /// A text file is not UTF-8.
    #[error("`{0}` is not valid UTF-8")]
    NotUtf8(&'static str),
    /// `kelp.toml` was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// `plugin.wasm` is a core module.
    #[error(
        "plugin.wasm is a core WebAssembly module, not a component; build for wasm32-wasip2 \
         or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    /// `plugin.wasm` is not WebAssembly, or an unknown version of it.
    #[error("plugin.wasm is not a WebAssembly component: {0}")]
    NotComponent(&'static str),
    /// `SKILL.md` lacks usable front matter: no `---` lines, not YAML, not a mapping.
    #[error("SKILL.md front matter: {0}")]
    SkillFrontMatter(String),
    /// A `SKILL.md` front matter field was refused.
    #[error("SKILL.md front matter field `{field}`: {message}")]
    SkillField {
        /// The field, e.g. `name` or `metadata.version`.
        field: String,
        /// What is wrong and, where it helps, what would be accepted.
        message: String,
    },
    /// Bytes follow the end of the gzip stream or the tar archive.
    #[error("package has data after the end of its archive")]
    TrailingData,
    /// Writing the archive failed.
    #[error("could not write package: {0}")]
    Write(#[source] io::Error),
}

/// Counts inflated bytes and fails the read as soon as the total cap is passed, so a bomb
/// costs at most `cap` bytes of inflation. `exceeded` tells the cap apart from real I/O
/// errors after the tar reader has wrapped the error in its own message.
struct CappedReader<R> {
    inner: R,
    read: u64,
    cap: u64,
    exceeded: bool,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Allow one byte past the cap so that reaching exactly the cap is not an error.
        let allowed = (self.cap - self.read).saturating_add(1);
        let len = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        self.read += n as u64;
        if self.read > self.cap {
            self.exceeded = true;
            return Err(io::Error::other("decompressed size cap exceeded"));
        }
        Ok(n)
    }
}

/// The raw contents of the four files, before any checks on their contents.
#[derive(Default)]
struct Files {
    manifest: Option<Vec<u8>>,
    wasm: Option<Vec<u8>>,
    skill: Option<Vec<u8>>,
    readme: Option<Vec<u8>>,
}

impl Files {
    fn slot(&mut self, file: &str) -> &mut Option<Vec<u8>> {
        match file {
            MANIFEST_FILE => &mut self.manifest,
            WASM_FILE => &mut self.wasm,
            SKILL_FILE => &mut self.skill,
            _ => &mut self.readme,
        }
    }
}

/// Reads and checks a `.kelp` archive. Nothing is written anywhere; the contents are returned
/// in memory only if every check passes.
pub fn read_package(bytes: &[u8], limits: &PackageLimits) -> Result<Package, PackageError> {
    if bytes.len() as u64 > limits.compressed_bytes {
        return Err(PackageError::CompressedTooLarge {
            size: bytes.len() as u64,
            cap: limits.compressed_bytes,
        });
    }
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(PackageError::NotGzip);
    }

    let mut stream = CappedReader {
        inner: GzDecoder::new(bytes),
        read: 0,
        cap: limits.total_bytes,
        exceeded: false,
    };
    let result = read_entries(&mut stream, limits).and_then(|files| {
        ensure_only_padding_follows(&mut stream)?;
        Ok(files)
    });
    let files = match result {
        Ok(files) => files,
        Err(_) if stream.exceeded => {
            return Err(PackageError::TotalTooLarge {
                cap: limits.total_bytes,
            });
        }
        Err(e) => return Err(e),
    };
    // The bufread decoder consumes exactly one gzip member; anything left over is not part of
    // the package yet would be part of its digest.
    if !stream.inner.into_inner().is_empty() {
        return Err(PackageError::TrailingData);
    }

    check_contents(bytes, files)
}

fn read_entries<R: Read>(stream: &mut R, limits: &PackageLimits) -> Result<Files, PackageError> {
    let mut archive = tar::Archive::new(stream);
    let mut files = Files::default();
    // Raw mode hands pax and GNU extension headers to us as entries instead of silently
    // applying them, so a long-name header can never rename the entry after it.
    let entries = archive.entries().map_err(corrupt)?.raw(true);
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        let raw_path = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();

        let entry_type = entry.header().entry_type();
        if !entry_type.is_file() {
            return Err(PackageError::NotRegularFile {
                path: raw_path,
                kind: describe_entry_type(entry_type),
            });
        }
        let file = known_file_name(&raw_path)?;
        let slot = files.slot(file);
        if slot.is_some() {
            return Err(PackageError::Duplicate(file.to_owned()));
        }

        // Trust the declared size only to refuse early; the read below is bounded by it and
        // by the total cap, and a short read is caught by comparing lengths.
        let size = entry.header().size().map_err(corrupt)?;
        let cap = limits.cap_for(file);
        if size > cap {
            return Err(PackageError::FileTooLarge {
                file: file.to_owned(),
                size,
                cap,
            });
        }
        let mut data = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut data).map_err(corrupt)?;
        if data.len() as u64 != size {
            return Err(PackageError::Corrupt(format!(
                "`{file}` ends after {} of its {size} bytes",
                data.len()
            )));
        }
        *slot = Some(data);
    }
    Ok(files)
}

/// After the end-of-archive blocks, tar writers pad with zeros to a record size. Anything
/// else is smuggled data; reading it to the end also makes gzip verify its CRC.
fn ensure_only_padding_follows<R: Read>(stream: &mut R) -> Result<(), PackageError> {
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).map_err(corrupt)?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(PackageError::TrailingData);
        }
    }
}

fn corrupt(e: io::Error) -> PackageError {
    PackageError::Corrupt(e.to_string())
}

fn describe_entry_type(t: tar::EntryType) -> String {
    use tar::EntryType as E;
    match t {
        E::Directory => "directory".into(),
        E::Symlink => "symbolic link".into(),
        E::Link => "hard link".into(),
        E::Char | E::Block => "device".into(),
        E::Fifo => "fifo".into(),
        E::XHeader | E::XGlobalHeader => "pax extension header".into(),
        E::GNULongName | E::GNULongLink => "GNU long-name header".into(),
        E::GNUSparse => "sparse file".into(),
        other => format!("entry of type {:?}", other.as_byte() as char),
    }
}

/// Maps an entry path to one of the four file names. A single leading `./` is accepted
/// because `tar -C dir .` writes it.
fn known_file_name(raw_path: &str) -> Result<&'static str, PackageError> {
    let bad = |reason| PackageError::BadPath {
        path: raw_path.to_owned(),
        reason,
    };
    let path = raw_path.strip_prefix("./").unwrap_or(raw_path);
    if path.split(['/', '\\']).any(|part| part == "..") {
        return Err(bad("`..` is not allowed"));
    }
    if path.contains(['/', '\\']) {
        return Err(bad("files must be at the top level"));
    }
    [MANIFEST_FILE, WASM_FILE, SKILL_FILE, README_FILE]
        .into_iter()
        .find(|known| *known == path)
        .ok_or_else(|| PackageError::UnknownFile(raw_path.to_owned()))
}

fn utf8(file: &'static str, data: Vec<u8>) -> Result<String, PackageError> {
    String::from_utf8(data).map_err(|_| PackageError::NotUtf8(file))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn check_contents(archive: &[u8], files: Files) -> Result<Package, PackageError> {
    let manifest_bytes = files.manifest.ok_or(PackageError::Missing {
        file: MANIFEST_FILE,
        reason: "every package needs a manifest".into(),
    })?;
    let manifest_sha256 = sha256_hex(&manifest_bytes);
    let manifest_text = utf8(MANIFEST_FILE, manifest_bytes)?;
    let manifest = Manifest::parse(&manifest_text)?;

    match (&files.wasm, manifest.kind) {
        (None, PluginKind::Skill) => {}
        (None, kind) => {
            return Err(PackageError::Missing {
                file: WASM_FILE,
                reason: format!("a {kind} plugin needs its component"),
            });
        }
        (Some(wasm), kind) => {
            check_component(wasm)?;
            // Manifest::parse already requires `wit` for every other kind.
            if kind == PluginKind::Skill && manifest.wit.is_none() {
                return Err(ManifestError::Invalid {
                    field: "wit".into(),
                    message: "is required for a skill that ships plugin.wasm".into(),
                }
                .into());
            }
        }
    }

    let skill = match files.skill {
        Some(data) => Some(parse_skill(&utf8(SKILL_FILE, data)?)?),
        None if manifest.kind == PluginKind::Skill => {
            return Err(PackageError::Missing {
                file: SKILL_FILE,
                reason: "a skill package needs its instructions".into(),
            });
        }
        None => None,
    };
    let readme = files.readme.map(|d| utf8(README_FILE, d)).transpose()?;

    Ok(Package {
        manifest,
        manifest_text,
        wasm_sha256: files.wasm.as_deref().map(sha256_hex),
        wasm: files.wasm,
        skill,
        readme,
        digest: sha256_hex(archive),
        manifest_sha256,
    })
}

/// Checks the preamble only; the host validates the rest when it compiles the component.
fn check_component(wasm: &[u8]) -> Result<(), PackageError> {
    if wasm.len() < 8 || wasm[..4] != COMPONENT_HEADER[..4] {
        return Err(PackageError::NotComponent(
            "it does not start with `\\0asm`",
        ));
    }
    if wasm[..8] == CORE_MODULE_HEADER {
        return Err(PackageError::CoreModule);
    }
    if wasm[..8] != COMPONENT_HEADER {
        return Err(PackageError::NotComponent(
            "unknown binary version (expected component layer 1, version 0x0d)",
        ));
    }
    Ok(())
}

/// Builds a package. The same inputs always give the same bytes (fixed order, times, modes and
/// gzip header), so a rebuilt package has the same digest. The result is checked with
/// [`read_package`] under the default limits, so what this returns is installable.
pub fn write_package(
    manifest_text: &str,
    wasm: Option<&[u8]>,
    skill_md: Option<&str>,
    readme: Option<&str>,
) -> Result<Vec<u8>, PackageError> {
    Manifest::parse(manifest_text)?;

    // Sorted by name (byte order), which is also the order readers list them in.
    let files: Vec<(&str, &[u8])> = [
        (README_FILE, readme.map(str::as_bytes)),
        (SKILL_FILE, skill_md.map(str::as_bytes)),
        (MANIFEST_FILE, Some(manifest_text.as_bytes())),
        (WASM_FILE, wasm),
    ]
    .into_iter()
    .filter_map(|(name, data)| data.map(|d| (name, d)))
    .collect();

    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    let mut builder = tar::Builder::new(gzip);
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).map_err(PackageError::Write)?;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, data).map_err(PackageError::Write)?;
    }
    let bytes = builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .map_err(PackageError::Write)?;

    read_package(&bytes, &PackageLimits::default())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
