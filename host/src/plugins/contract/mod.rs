//! The `kelp:plugin` contract versions this host serves: which versions a component imports
//! and exports — read from the binary, before anything is compiled, by
//! `kelp_registry::contract`, which the registry shares — checked against what this host
//! serves and what the manifest says; the bindings of each version; and one face over them
//! for the rest of the host (`dispatch`).
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

use anyhow::Result;
use kelp_registry::manifest::Manifest;
use semver::Version;

/// Contract versions this host can load. A released version is frozen; a new one is added
/// beside it (with its own bindings module), never edited in place.
pub const SUPPORTED_CONTRACTS: &[Version] = &[Version::new(0, 1, 0), Version::new(0, 2, 0)];

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

/// The `kelp:plugin` interfaces a component names at its top level, as the registry reads
/// them, checked here against the versions this host serves.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContractUse(kelp_registry::contract::ContractUse);

impl ContractUse {
    /// Reads the component's top-level imports and exports (nested modules and components
    /// are not the plugin's contract).
    pub fn read(wasm: &[u8]) -> Result<ContractUse> {
        Ok(ContractUse(kelp_registry::contract::ContractUse::read(
            wasm,
        )?))
    }

    /// Checks the component against this host ([`SUPPORTED_CONTRACTS`]) and its manifest:
    /// one contract version throughout, a supported one, equal to the manifest's `wit`, and
    /// the export its kind requires.
    pub fn check(&self, manifest: &Manifest) -> Result<Version> {
        Ok(self.0.check(manifest, SUPPORTED_CONTRACTS)?)
    }
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
        let uses = |version: &str| {
            super::ContractUse(kelp_registry::contract::ContractUse {
                imports: [("host".to_owned(), version.parse().unwrap())].into(),
                exports: [("channel".to_owned(), version.parse().unwrap())].into(),
            })
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
