//! Which `kelp:plugin` contract versions a component uses, read from the binary.
//!
//! Shared by the host (before it compiles a component: refusing an unsupported version with
//! a message naming both is cheaper and clearer than a link error) and the registry (which
//! refuses a release whose contract it does not know, and lists the contract in its index so
//! a host can skip releases it cannot run). Only the component's top-level imports and
//! exports are read; nothing is validated or compiled here.

use std::collections::BTreeSet;

use semver::Version;
use wasmparser::{Encoding, Parser, Payload};

use crate::manifest::{Manifest, PluginKind};

/// Prefix of every contract interface name: `kelp:plugin/<interface>@<version>`.
const PACKAGE: &str = "kelp:plugin/";

/// The oldest contract whose `channel` interface a host drives.
const FIRST_CHANNEL_CONTRACT: Version = Version::new(0, 2, 0);

/// Why a component's use of the contract was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The bytes are not a well-formed component; the message says which part.
    #[error("{0}")]
    Malformed(String),
    /// A core module instead of a component.
    #[error("plugin.wasm is a core wasm module, not a component (build for wasm32-wasip2)")]
    CoreModule,
    /// A `kelp:plugin/…` name without `@version`.
    #[error("import/export `{0}` has no version; every kelp:plugin interface is versioned")]
    Unversioned(String),
    /// A `kelp:plugin/…@…` name whose version is not semver.
    #[error("import/export `{name}` has a bad version: {reason}")]
    BadVersion {
        /// The import or export name.
        name: String,
        /// The semver parser's reason.
        reason: String,
    },
    /// The component names no contract interface at all.
    #[error(
        "{plugin}: the component neither imports nor exports any kelp:plugin interface; \
         build it against the kelp:plugin WIT (this host supports {served})"
    )]
    NoContract {
        /// The plugin, `namespace/name`.
        plugin: String,
        /// The served versions, as `kelp:plugin@0.1.0, …`.
        served: String,
    },
    /// Interfaces of different versions in one component.
    #[error("{plugin}: the component mixes kelp:plugin versions {versions}; use one")]
    Mixed {
        /// The plugin, `namespace/name`.
        plugin: String,
        /// The versions found, comma-separated.
        versions: String,
    },
    /// A version the checker does not serve.
    #[error("{plugin}: the component uses kelp:plugin@{version}, but this host supports {served}")]
    Unsupported {
        /// The plugin, `namespace/name`.
        plugin: String,
        /// The version the component uses.
        version: Version,
        /// The served versions, as `kelp:plugin@0.1.0, …`.
        served: String,
    },
    /// The manifest's `wit` disagrees with the component.
    #[error(
        "{plugin}: kelp.toml declares wit = \"{declared}\" but the component uses kelp:plugin@{version}"
    )]
    ManifestMismatch {
        /// The plugin, `namespace/name`.
        plugin: String,
        /// `wit` in `kelp.toml`.
        declared: Version,
        /// What the component uses.
        version: Version,
    },
    /// A channel built against 0.1.0.
    #[error(
        "{plugin}: channel plugins need kelp:plugin@0.2.0 or later; 0.1.0's channel interface \
         was a placeholder no host drives (this component uses kelp:plugin@{version})"
    )]
    ChannelTooOld {
        /// The plugin, `namespace/name`.
        plugin: String,
        /// What the component uses.
        version: Version,
    },
    /// The component lacks the export its kind requires.
    #[error(
        "{plugin}: a {kind} plugin must export kelp:plugin/{interface}@{version}, and this component does not"
    )]
    MissingExport {
        /// The plugin, `namespace/name`.
        plugin: String,
        /// Its kind.
        kind: PluginKind,
        /// The interface it must export.
        interface: &'static str,
        /// The contract version it uses.
        version: Version,
    },
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
    pub fn read(wasm: &[u8]) -> Result<ContractUse, ContractError> {
        let mut found = ContractUse::default();
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload
                .map_err(|e| ContractError::Malformed(format!("malformed component: {e}")))?;
            match payload {
                Payload::Version { encoding, .. }
                    if depth == 0 && encoding != Encoding::Component =>
                {
                    return Err(ContractError::CoreModule);
                }
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(reader) if depth == 0 => {
                    for import in reader {
                        let import = import.map_err(|e| {
                            ContractError::Malformed(format!("malformed import: {e}"))
                        })?;
                        if let Some(item) = parse_name(import.name.name)? {
                            found.imports.insert(item);
                        }
                    }
                }
                Payload::ComponentExportSection(reader) if depth == 0 => {
                    for export in reader {
                        let export = export.map_err(|e| {
                            ContractError::Malformed(format!("malformed export: {e}"))
                        })?;
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

    /// Checks the component against the contract versions `served` (what a host can load,
    /// or what a registry knows) and its manifest: one contract version throughout, a served
    /// one, equal to the manifest's `wit`, and the export its kind requires. Returns that
    /// version.
    pub fn check(&self, manifest: &Manifest, served: &[Version]) -> Result<Version, ContractError> {
        let plugin = || manifest.name.to_string();
        let served_list = || {
            served
                .iter()
                .map(|v| format!("kelp:plugin@{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let versions = self.versions();
        let mut iter = versions.iter();
        let version = match (iter.next(), iter.next()) {
            (None, _) => {
                return Err(ContractError::NoContract {
                    plugin: plugin(),
                    served: served_list(),
                });
            }
            (Some(only), None) => only.clone(),
            (Some(_), Some(_)) => {
                return Err(ContractError::Mixed {
                    plugin: plugin(),
                    versions: versions
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        };
        if !served.contains(&version) {
            return Err(ContractError::Unsupported {
                plugin: plugin(),
                version,
                served: served_list(),
            });
        }
        if let Some(declared) = &manifest.wit
            && *declared != version
        {
            return Err(ContractError::ManifestMismatch {
                plugin: plugin(),
                declared: declared.clone(),
                version,
            });
        }
        if manifest.kind == PluginKind::Channel && version < FIRST_CHANNEL_CONTRACT {
            return Err(ContractError::ChannelTooOld {
                plugin: plugin(),
                version,
            });
        }
        let interface = match manifest.kind {
            PluginKind::Tool | PluginKind::Skill => "tool",
            PluginKind::Provider => "provider",
            PluginKind::Channel => "channel",
        };
        if !self.exports.iter().any(|(name, _)| name == interface) {
            return Err(ContractError::MissingExport {
                plugin: plugin(),
                kind: manifest.kind,
                interface,
                version,
            });
        }
        Ok(version)
    }
}

fn parse_name(name: &str) -> Result<Option<(String, Version)>, ContractError> {
    let Some(rest) = name.strip_prefix(PACKAGE) else {
        return Ok(None);
    };
    let Some((interface, version)) = rest.split_once('@') else {
        return Err(ContractError::Unversioned(name.to_owned()));
    };
    let version = Version::parse(version).map_err(|e| ContractError::BadVersion {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Some((interface.to_owned(), version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVED: &[Version] = &[Version::new(0, 1, 0), Version::new(0, 2, 0)];

    fn manifest(kind: &str, wit: &str) -> Manifest {
        Manifest::parse(&format!(
            "name = \"x/p\"\nversion = \"1.0.0\"\nkind = \"{kind}\"\n\
             description = \"A plugin.\"\nwit = \"{wit}\"\n"
        ))
        .unwrap()
    }

    fn uses(imports: &[(&str, &str)], exports: &[(&str, &str)]) -> ContractUse {
        let set = |items: &[(&str, &str)]| {
            items
                .iter()
                .map(|(i, v)| ((*i).to_owned(), v.parse().unwrap()))
                .collect()
        };
        ContractUse {
            imports: set(imports),
            exports: set(exports),
        }
    }

    /// A component binary with the given top-level import and export names, written by hand
    /// so the registry's tests need no wasm toolchain: each import is an instance of an empty
    /// instance type, each export re-exports the import at the same index.
    fn component(imports: &[&str], exports: &[&str]) -> Vec<u8> {
        fn leb(mut n: usize, out: &mut Vec<u8>) {
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(byte);
                    return;
                }
                out.push(byte | 0x80);
            }
        }
        fn name(s: &str, out: &mut Vec<u8>) {
            leb(s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
            out.push(id);
            leb(body.len(), out);
            out.extend_from_slice(body);
        }
        let mut wasm = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        // Type section (7): one empty instance type (0x42, no declarations).
        section(7, &[0x01, 0x42, 0x00], &mut wasm);
        // Import section (10): `0x00 name`, extern desc instance (0x05) of type 0.
        let mut body = Vec::new();
        leb(imports.len(), &mut body);
        for import in imports {
            body.push(0x00);
            name(import, &mut body);
            body.extend_from_slice(&[0x05, 0x00]);
        }
        section(10, &body, &mut wasm);
        // Export section (11): `0x00 name`, sort instance (0x05), index i, no type ascription.
        let mut body = Vec::new();
        leb(exports.len(), &mut body);
        for (i, export) in exports.iter().enumerate() {
            body.push(0x00);
            name(export, &mut body);
            body.push(0x05);
            leb(i, &mut body);
            body.push(0x00);
        }
        section(11, &body, &mut wasm);
        wasm
    }

    #[test]
    fn reads_top_level_imports_and_exports() {
        let wasm = component(
            &["kelp:plugin/host@0.2.0", "wasi:io/streams@0.2.0"],
            &["kelp:plugin/tool@0.2.0"],
        );
        let found = ContractUse::read(&wasm).unwrap();
        assert_eq!(found, uses(&[("host", "0.2.0")], &[("tool", "0.2.0")]));
        assert_eq!(
            found.check(&manifest("tool", "0.2.0"), SERVED).unwrap(),
            Version::new(0, 2, 0)
        );
    }

    #[test]
    fn refuses_what_is_not_a_component() {
        let core = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
        assert_eq!(ContractUse::read(&core), Err(ContractError::CoreModule));
        assert!(matches!(
            ContractUse::read(b"not wasm at all"),
            Err(ContractError::Malformed(_))
        ));
        let unversioned = component(&["kelp:plugin/host"], &[]);
        assert_eq!(
            ContractUse::read(&unversioned),
            Err(ContractError::Unversioned("kelp:plugin/host".into()))
        );
        let bad = component(&["kelp:plugin/host@one"], &[]);
        assert!(matches!(
            ContractUse::read(&bad),
            Err(ContractError::BadVersion { .. })
        ));
    }

    #[test]
    fn check_names_the_plugin_and_both_versions() {
        let tool = manifest("tool", "0.2.0");
        let err = uses(&[], &[]).check(&tool, SERVED).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x/p: the component neither imports nor exports any kelp:plugin interface; build it \
             against the kelp:plugin WIT (this host supports kelp:plugin@0.1.0, kelp:plugin@0.2.0)"
        );

        let err = uses(&[("host", "0.1.0")], &[("tool", "0.2.0")])
            .check(&tool, SERVED)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x/p: the component mixes kelp:plugin versions 0.1.0, 0.2.0; use one"
        );

        let err = uses(&[], &[("tool", "0.3.0")])
            .check(&manifest("tool", "0.3.0"), SERVED)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x/p: the component uses kelp:plugin@0.3.0, but this host supports \
             kelp:plugin@0.1.0, kelp:plugin@0.2.0"
        );

        let err = uses(&[], &[("tool", "0.1.0")])
            .check(&tool, SERVED)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x/p: kelp.toml declares wit = \"0.2.0\" but the component uses kelp:plugin@0.1.0"
        );

        let err = uses(&[("host", "0.2.0")], &[])
            .check(&manifest("provider", "0.2.0"), SERVED)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x/p: a provider plugin must export kelp:plugin/provider@0.2.0, and this component does not"
        );
    }

    #[test]
    fn a_channel_needs_0_2_0() {
        let err = uses(&[("host", "0.1.0")], &[("channel", "0.1.0")])
            .check(&manifest("channel", "0.1.0"), SERVED)
            .unwrap_err();
        assert!(matches!(err, ContractError::ChannelTooOld { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("channel plugins need kelp:plugin@0.2.0"),
            "{err}"
        );
    }

    #[test]
    fn a_skill_exports_tool() {
        let skill = manifest("skill", "0.1.0");
        assert_eq!(
            uses(&[], &[("tool", "0.1.0")])
                .check(&skill, SERVED)
                .unwrap(),
            Version::new(0, 1, 0)
        );
    }
}
