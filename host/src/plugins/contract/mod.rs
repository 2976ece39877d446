//! The `kelp:plugin` contract versions this host serves: which versions a component imports
//! and exports — read from the binary, before anything is compiled — checked against what
//! this host serves and what the manifest says; the bindings of each version; and one face
//! over them for the rest of the host (`dispatch`).
//!
//! - `v0_1_0.rs` — the released 0.1.0, bound from its frozen copy in `host/wit/0.1.0`
//! - `v0_2_0.rs` — the current version, bound from `wit/`
//! - `convert.rs` — conversions every version shares, written once
//! - `dispatch.rs` — tool and provider components of any served version
//! - `channel.rs` — channel components (0.2.0 on) and their conversions

pub(crate) mod channel;
mod convert;
pub(crate) mod dispatch;
mod v0_1_0;
pub(crate) mod v0_2_0;

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use kelp_registry::manifest::{Manifest, PluginKind};
use semver::Version;
use wasmparser::{Encoding, Parser, Payload};

/// Contract versions this host can load. A released version is frozen; a new one is added
/// beside it (with its own bindings module), never edited in place.
pub const SUPPORTED_CONTRACTS: &[&str] = &["0.1.0", "0.2.0"];

const PACKAGE: &str = "kelp:plugin/";

/// Adds the host imports of every served version to `linker` (`host@0.1.0` and `host@0.2.0`
/// are different import names, so both live in one linker).
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<super::state::CallState>,
) -> wasmtime::Result<()> {
    use super::state::CallState;
    use wasmtime::component::HasSelf;
    v0_1_0::ToolPlugin::add_to_linker::<CallState, HasSelf<CallState>>(linker, |state| state)?;
    v0_2_0::ToolPlugin::add_to_linker::<CallState, HasSelf<CallState>>(linker, |state| state)?;
    Ok(())
}

/// The `kelp:plugin` interfaces a component names at its top level.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContractUse {
    /// `(interface, version)` pairs the component imports, e.g. `("host", 0.1.0)`.
    pub imports: BTreeSet<(String, Version)>,
    /// `(interface, version)` pairs it exports, e.g. `("tool", 0.1.0)`.
    pub exports: BTreeSet<(String, Version)>,
}

impl ContractUse {
    /// Parses the component's top-level import and export names. Nested modules and
    /// components are skipped: only the outer boundary is the plugin's contract.
    pub fn read(wasm: &[u8]) -> Result<ContractUse> {
        let mut found = ContractUse::default();
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload.map_err(|e| anyhow::anyhow!("malformed component: {e}"))?;
            match payload {
                Payload::Version { encoding, .. }
                    if depth == 0 && encoding != Encoding::Component =>
                {
                    bail!(
                        "plugin.wasm is a core wasm module, not a component (build for wasm32-wasip2)"
                    );
                }
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(reader) if depth == 0 => {
                    for import in reader {
                        let import =
                            import.map_err(|e| anyhow::anyhow!("malformed import: {e}"))?;
                        if let Some(item) = parse_name(import.name.name)? {
                            found.imports.insert(item);
                        }
                    }
                }
                Payload::ComponentExportSection(reader) if depth == 0 => {
                    for export in reader {
                        let export =
                            export.map_err(|e| anyhow::anyhow!("malformed export: {e}"))?;
                        if let Some(item) = parse_name(export.name.name)? {
                            found.exports.insert(item);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// Every contract version the component names.
    pub fn versions(&self) -> BTreeSet<Version> {
        self.imports
            .iter()
            .chain(&self.exports)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Checks the component against this host and its manifest: one contract version
    /// throughout, a supported one, equal to the manifest's `wit`, and the export its kind
    /// requires.
    pub fn check(&self, manifest: &Manifest) -> Result<Version> {
        let supported = SUPPORTED_CONTRACTS
            .iter()
            .map(|v| format!("kelp:plugin@{v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let versions = self.versions();
        let version = match versions.len() {
            0 => bail!(
                "{}: the component neither imports nor exports any kelp:plugin interface; \
                 build it against the kelp:plugin WIT (this host supports {supported})",
                manifest.name
            ),
            1 => versions.into_iter().next().expect("one version"),
            _ => bail!(
                "{}: the component mixes kelp:plugin versions {}; use one",
                manifest.name,
                versions
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if !SUPPORTED_CONTRACTS.contains(&version.to_string().as_str()) {
            bail!(
                "{}: the component uses kelp:plugin@{version}, but this host supports {supported}",
                manifest.name
            );
        }
        if let Some(declared) = &manifest.wit
            && *declared != version
        {
            bail!(
                "{}: kelp.toml declares wit = \"{declared}\" but the component uses kelp:plugin@{version}",
                manifest.name
            );
        }
        if manifest.kind == PluginKind::Channel && version < Version::new(0, 2, 0) {
            bail!(
                "{}: channel plugins need kelp:plugin@0.2.0 or later; 0.1.0's channel interface \
                 was a placeholder no host drives (this component uses kelp:plugin@{version})",
                manifest.name
            );
        }
        let required = match manifest.kind {
            PluginKind::Tool | PluginKind::Skill => "tool",
            PluginKind::Provider => "provider",
            PluginKind::Channel => "channel",
        };
        if !self.exports.iter().any(|(name, _)| name == required) {
            bail!(
                "{}: a {} plugin must export kelp:plugin/{required}@{version}, and this component does not",
                manifest.name,
                manifest.kind
            );
        }
        Ok(version)
    }
}

fn parse_name(name: &str) -> Result<Option<(String, Version)>> {
    let Some(rest) = name.strip_prefix(PACKAGE) else {
        return Ok(None);
    };
    let Some((interface, version)) = rest.split_once('@') else {
        bail!("import/export `{name}` has no version; every kelp:plugin interface is versioned");
    };
    let version = Version::parse(version)
        .map_err(|e| anyhow::anyhow!("import/export `{name}` has a bad version: {e}"))?;
    Ok(Some((interface.to_owned(), version)))
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The WIT files of released 0.1.0 that the host binds, and their SHA-256 as released.
    /// A change here rebinds plugins built years ago: never edit the copy, add a version.
    const FROZEN_0_1_0: &[(&str, &str)] = &[
        (
            "exports.wit",
            "92f73d755bec2b77ecbc45f244c8ed38c393aa91e06e40bc4f510aba0b43086f",
        ),
        (
            "host.wit",
            "79afd2a9b3cf8446e32199fcbc8a6d3c3d9a124b9c5259f984b875dc8d18035f",
        ),
        (
            "types.wit",
            "e284af08035423a9a95a4b8fba1f36852a50cc14839f4357b2f69f06a0fa279d",
        ),
        (
            "worlds.wit",
            "abb451d4aadddec7880cb8939edd0159bd13cb4a4b1782108b2648c710c4d02c",
        ),
    ];

    #[test]
    fn a_channel_needs_0_2_0_and_says_so() {
        let manifest = |wit: &str| {
            kelp_registry::manifest::Manifest::parse(&format!(
                "name = \"x/chat\"\nversion = \"1.0.0\"\nkind = \"channel\"\n\
                 description = \"A chat.\"\nwit = \"{wit}\"\n"
            ))
            .unwrap()
        };
        let uses = |version: &str| super::ContractUse {
            imports: [("host".to_owned(), version.parse().unwrap())].into(),
            exports: [("channel".to_owned(), version.parse().unwrap())].into(),
        };
        let refused = uses("0.1.0").check(&manifest("0.1.0")).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("channel plugins need kelp:plugin@0.2.0"),
            "{refused}"
        );
        assert_eq!(
            uses("0.2.0").check(&manifest("0.2.0")).unwrap(),
            semver::Version::new(0, 2, 0)
        );
    }

    #[test]
    fn the_frozen_0_1_0_copy_is_byte_for_byte_the_release() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/0.1.0");
        let mut found: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        let expected: Vec<&str> = FROZEN_0_1_0.iter().map(|(name, _)| *name).collect();
        assert_eq!(found, expected, "files in {}", dir.display());
        for (name, sha) in FROZEN_0_1_0 {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                *sha,
                "{name} differs from the released 0.1.0"
            );
        }
    }
}
