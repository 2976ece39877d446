//! What a registry accepts for publishing beyond what any installable package satisfies.
//!
//! A host installs `kelp/...` (first-party plugins it ships) and `local/...` (packages built
//! or uploaded on that host) as it installs anything else; these rules apply only to
//! publishing into a registry, where a name is a claim that other hosts trust.

use crate::manifest::{Manifest, PluginName};
use crate::version::{VersionError, check_release_version};

/// Namespaces no publisher account may own, each with the reason given when it is refused.
pub const RESERVED_NAMESPACES: &[(&str, &str)] = &[
    (
        "kelp",
        "it names the first-party plugins that ship with Kelp, so a release there would pass \
         for one of them",
    ),
    (
        "local",
        "it names packages built or uploaded on one host (`kelp plugin new` writes it), which \
         never come from a registry; choose your own namespace",
    ),
];

/// Why a package cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The name's namespace is reserved.
    #[error(
        "`{name}` cannot be published: the namespace `{namespace}` is reserved, because {reason}"
    )]
    ReservedNamespace {
        /// The package name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// Why it is reserved.
        reason: &'static str,
    },
    /// The version cannot be a release.
    #[error("`{name}` cannot be published: {source}")]
    Version {
        /// The package name.
        name: String,
        /// What is wrong with the version.
        source: VersionError,
    },
}

/// Whether `namespace` is one of [`RESERVED_NAMESPACES`].
pub fn is_reserved_namespace(namespace: &str) -> bool {
    reserved_reason(namespace).is_some()
}

fn reserved_reason(namespace: &str) -> Option<&'static str> {
    RESERVED_NAMESPACES
        .iter()
        .find(|(reserved, _)| *reserved == namespace)
        .map(|(_, reason)| *reason)
}

/// Refuses a name in a reserved namespace.
pub fn check_publish_name(name: &PluginName) -> Result<(), PublishError> {
    match reserved_reason(name.namespace()) {
        Some(reason) => Err(PublishError::ReservedNamespace {
            name: name.to_string(),
            namespace: name.namespace().to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a parsed manifest for publishing: a name outside the reserved namespaces and a
/// release version (no build metadata — [`Manifest::parse`] refuses that already; checked
/// again here so the rule holds for a manifest built any other way).
pub fn check_publishable(manifest: &Manifest) -> Result<(), PublishError> {
    check_publish_name(&manifest.name)?;
    check_release_version(&manifest.version).map_err(|source| PublishError::Version {
        name: manifest.name.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str) -> Manifest {
        Manifest::parse(&format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\nkind = \"skill\"\ndescription = \"d\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn kelp_and_local_are_reserved_for_publishing() {
        assert!(is_reserved_namespace("kelp"));
        assert!(is_reserved_namespace("local"));
        assert!(!is_reserved_namespace("acme"));
        // Only the exact namespace: a publisher may be called `kelpie` or `locals`.
        assert!(!is_reserved_namespace("kelpie"));
        assert!(!is_reserved_namespace("locals"));

        for name in ["kelp/calc", "local/tidy-notes"] {
            let err = check_publishable(&manifest(name)).unwrap_err();
            assert!(
                matches!(&err, PublishError::ReservedNamespace { name: n, .. } if n == name),
                "{err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(name) && text.contains("is reserved, because"),
                "{text}"
            );
        }
        assert_eq!(check_publishable(&manifest("acme/calc")), Ok(()));
        assert_eq!(check_publishable(&manifest("kelpie/calc")), Ok(()));
    }

    #[test]
    fn reserved_names_still_parse_and_install() {
        // The reservation is for publishing only: these stay valid package names.
        for name in ["kelp/calc", "local/tidy-notes"] {
            assert_eq!(manifest(name).name.to_string(), name);
        }
    }

    #[test]
    fn a_version_with_build_metadata_is_not_publishable() {
        let mut m = manifest("acme/calc");
        m.version = semver::Version::parse("1.0.0+b").unwrap();
        let err = check_publishable(&m).unwrap_err();
        assert!(
            matches!(
                &err,
                PublishError::Version {
                    source: VersionError::BuildMetadata(..),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("build metadata"), "{err}");
    }
}
