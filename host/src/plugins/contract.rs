//! Reads which versions of the `kelp:plugin` contract a component imports and exports —
//! from the binary, before anything is compiled — and checks them against what this host
//! serves and what the manifest says.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use kelp_registry::manifest::{Manifest, PluginKind};
use semver::Version;
use wasmparser::{Encoding, Parser, Payload};

/// Contract versions this host can load. A released version is frozen; a new one is added
/// beside it (with its own bindings module), never edited in place.
pub const SUPPORTED_CONTRACTS: &[&str] = &["0.1.0"];

const PACKAGE: &str = "kelp:plugin/";

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
        let supported = SUPPORTED_CONTRACTS.join(", ");
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
                "{}: the component uses kelp:plugin@{version}, but this host supports kelp:plugin@{supported}",
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
