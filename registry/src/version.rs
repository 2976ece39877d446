//! Package versions and the requirements installs resolve.
//!
//! Versions are semver, with one restriction for releases: no build metadata. Semver gives
//! `1.0.0+a` and `1.0.0+b` equal precedence, so both could be published as two different
//! releases that no requirement, lock or downgrade check can tell apart.
//!
//! Requirements read as Cargo's (`^1.2`, `~1.2`, `>=1, <2`, `*`, pre-releases matched only
//! when a comparator names one) with one exception that users of `install name@1.2.3` expect:
//! a bare version is exact. `VersionReq::parse("1.2.3")` means `^1.2.3`, which would install
//! 1.9.0 for someone who asked for 1.2.3.

use semver::{Version, VersionReq};

/// Why a version or requirement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// A released version carries `+build` metadata.
    #[error(
        "version `{0}` has build metadata (`+…`); a release cannot carry it, because semver \
         orders `1.0.0+a` and `1.0.0+b` as equal: publish `{1}` or a new version instead"
    )]
    BuildMetadata(String, String),
    /// Not a semver version.
    #[error("`{input}` is not a semver version: {reason}")]
    BadVersion {
        /// What was given.
        input: String,
        /// The semver parser's reason.
        reason: String,
    },
    /// Not a version requirement.
    #[error(
        "`{input}` is not a version requirement ({reason}); write e.g. `1.2.3` (exactly), \
         `^1.2`, `~1.2`, `>=1, <2` or `*`"
    )]
    BadRequirement {
        /// What was given.
        input: String,
        /// The semver parser's reason.
        reason: String,
    },
}

/// Refuses a version that cannot be a release: one with build metadata. Used by
/// [`Manifest::parse`](crate::manifest::Manifest::parse) for `version`, so no package can
/// carry one, and by publishing for the version a release statement names.
pub fn check_release_version(version: &Version) -> Result<(), VersionError> {
    if version.build.is_empty() {
        return Ok(());
    }
    let without = Version {
        build: semver::BuildMetadata::EMPTY,
        ..version.clone()
    };
    Err(VersionError::BuildMetadata(
        version.to_string(),
        without.to_string(),
    ))
}

/// Parses a release version: semver without build metadata.
pub fn parse_release_version(input: &str) -> Result<Version, VersionError> {
    let version = Version::parse(input).map_err(|e| VersionError::BadVersion {
        input: input.to_owned(),
        reason: e.to_string(),
    })?;
    check_release_version(&version)?;
    Ok(version)
}

/// Parses what follows `@` in `install name@req`. A comparator written without an operator
/// is exact as far as it is spelled (`1.2.3` is `=1.2.3`; `1.2` is `=1.2`, any 1.2.x), as
/// npm reads it; every other form keeps its semver meaning. Wildcards (`1.*`, `*`) are left
/// as they are: they already say how much may vary.
pub fn parse_requirement(input: &str) -> Result<VersionReq, VersionError> {
    // semver reads `=1.0.0+a` and ignores the `+a`; releases carry none, so say so instead.
    if input.contains('+') {
        return Err(VersionError::BadRequirement {
            input: input.to_owned(),
            reason: "build metadata (`+…`) never names a release".into(),
        });
    }
    let exact: Vec<String> = input
        .split(',')
        .map(|comparator| {
            let comparator = comparator.trim();
            // Only the `major.minor.patch` part can hold a wildcard: `1.0.0-x.1` is a
            // pre-release, not a range.
            let core = comparator.split('-').next().unwrap_or_default();
            let wildcard = core.split('.').any(|part| matches!(part, "*" | "x" | "X"));
            let bare = comparator.starts_with(|c: char| c.is_ascii_digit()) && !wildcard;
            if bare {
                format!("={comparator}")
            } else {
                comparator.to_owned()
            }
        })
        .collect();
    VersionReq::parse(&exact.join(", ")).map_err(|e| VersionError::BadRequirement {
        input: input.to_owned(),
        reason: e.to_string(),
    })
}

/// The newest of `versions` that `requirement` matches, if any. Pre-releases match only a
/// requirement that names a pre-release of the same `major.minor.patch` (semver's rule), so
/// `^1.2` never installs `1.3.0-beta.1` by surprise.
pub fn newest_matching<'a, I>(requirement: &VersionReq, versions: I) -> Option<&'a Version>
where
    I: IntoIterator<Item = &'a Version>,
{
    versions
        .into_iter()
        .filter(|v| requirement.matches(v))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &[&str]) -> Vec<Version> {
        list.iter().map(|v| Version::parse(v).unwrap()).collect()
    }

    fn newest(req: &str, list: &[&str]) -> Option<String> {
        let all = versions(list);
        let req = parse_requirement(req).unwrap();
        newest_matching(&req, &all).map(ToString::to_string)
    }

    const PUBLISHED: &[&str] = &[
        "1.2.2",
        "1.2.3",
        "1.2.9",
        "1.3.0-beta.1",
        "1.4.0",
        "2.0.0-rc.1",
        "2.0.0",
        "2.1.0",
    ];

    #[test]
    fn build_metadata_is_refused_in_releases() {
        let err = parse_release_version("1.0.0+a").unwrap_err();
        assert_eq!(
            err,
            VersionError::BuildMetadata("1.0.0+a".into(), "1.0.0".into())
        );
        assert!(err.to_string().contains("publish `1.0.0`"), "{err}");
        assert!(parse_release_version("1.0.0-rc.1+build.5").is_err());
        assert_eq!(
            parse_release_version("1.0.0-rc.1").unwrap(),
            Version::parse("1.0.0-rc.1").unwrap()
        );
        assert!(matches!(
            parse_release_version("1.0"),
            Err(VersionError::BadVersion { .. })
        ));
    }

    #[test]
    fn a_bare_version_is_exact() {
        assert_eq!(newest("1.2.3", PUBLISHED).as_deref(), Some("1.2.3"));
        assert_eq!(
            parse_requirement("1.2.3").unwrap(),
            VersionReq::parse("=1.2.3").unwrap()
        );
        // Spelled partly: exact as far as spelled.
        assert_eq!(newest("1.2", PUBLISHED).as_deref(), Some("1.2.9"));
        assert_eq!(newest("1", PUBLISHED).as_deref(), Some("1.4.0"));
        assert_eq!(newest(" 2.1.0 ", PUBLISHED).as_deref(), Some("2.1.0"));
        assert_eq!(newest("1.2.4", PUBLISHED), None);
        assert_eq!(newest("=1.2.3", PUBLISHED).as_deref(), Some("1.2.3"));
    }

    #[test]
    fn operators_keep_their_semver_meaning() {
        assert_eq!(newest("^1.2", PUBLISHED).as_deref(), Some("1.4.0"));
        assert_eq!(newest("^1.2.3", PUBLISHED).as_deref(), Some("1.4.0"));
        assert_eq!(newest("~1.2", PUBLISHED).as_deref(), Some("1.2.9"));
        assert_eq!(newest("~1.2.3", PUBLISHED).as_deref(), Some("1.2.9"));
        assert_eq!(newest(">=1, <2", PUBLISHED).as_deref(), Some("1.4.0"));
        assert_eq!(
            newest(">=1.2.3, <1.2.9", PUBLISHED).as_deref(),
            Some("1.2.3")
        );
        assert_eq!(newest("*", PUBLISHED).as_deref(), Some("2.1.0"));
        assert_eq!(newest("1.*", PUBLISHED).as_deref(), Some("1.4.0"));
        assert_eq!(newest("1.2.*", PUBLISHED).as_deref(), Some("1.2.9"));
        assert_eq!(newest("^3", PUBLISHED), None);
    }

    #[test]
    fn pre_releases_match_only_when_named() {
        // Ranges that span a pre-release skip it…
        assert_eq!(
            newest("^1.2", &["1.2.0", "1.3.0-beta.1"]).as_deref(),
            Some("1.2.0")
        );
        assert_eq!(
            newest("*", &["1.0.0", "2.0.0-rc.1"]).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(newest(">=1.3.0", &["1.3.0-beta.1"]), None);
        // …an exact one installs it, and only it…
        assert_eq!(
            newest("1.3.0-beta.1", PUBLISHED).as_deref(),
            Some("1.3.0-beta.1")
        );
        assert_eq!(
            newest("2.0.0-rc.1", PUBLISHED).as_deref(),
            Some("2.0.0-rc.1")
        );
        assert_eq!(
            newest("1.0.0-x.1", &["1.0.0-x.1", "1.0.0-x.2", "1.0.0"]).as_deref(),
            Some("1.0.0-x.1")
        );
        // …and a requirement naming a pre-release admits later ones of the same version,
        // and releases after it.
        assert_eq!(
            newest("^2.0.0-rc.1", &["2.0.0-rc.1", "2.0.0-rc.2"]).as_deref(),
            Some("2.0.0-rc.2")
        );
        assert_eq!(newest("^2.0.0-rc.1", PUBLISHED).as_deref(), Some("2.1.0"));
        assert_eq!(newest("^1.2.3", &["1.3.0-beta.1"]), None);
    }

    #[test]
    fn bad_requirements_say_what_is_accepted() {
        for bad in ["", "latest", "1.2.3.4", ">>1", "1.0.0+build"] {
            let err = parse_requirement(bad).unwrap_err();
            assert!(
                matches!(&err, VersionError::BadRequirement { input, .. } if input == bad),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("`^1.2`"), "{err}");
        }
    }
}
