//! Package reader tests. Hostile archives are built header by header with `tar`'s low-level
//! API, because the high-level builder refuses to write most of them.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

use super::*;

const TOOL_MANIFEST: &str = r#"
name = "kelp/calc"
version = "0.1.0"
kind = "tool"
description = "A calculator."
wit = "0.1.0"
"#;

const SKILL_MANIFEST: &str = r#"
name = "kelp/writing"
version = "1.2.0"
kind = "skill"
description = "House writing style."
"#;

const SKILL_MD: &str = "---\nname: writing\ndescription: \"Use when writing \\\"prose\\\"\"\nallowed-tools:\n  - read\n---\n# Writing\nBe brief.\n";

/// A minimal valid component preamble; the host, not the package reader, checks the rest.
const COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0xaa, 0xbb];

/// One raw tar entry: the name bytes go into the header unchecked.
struct Raw<'a> {
    name: &'a [u8],
    kind: EntryType,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name: name.as_bytes(),
        kind: EntryType::Regular,
        data,
    }
}

fn tar_bytes(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..entry.name.len()].copy_from_slice(entry.name);
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(0o644);
        if entry.kind == EntryType::Symlink || entry.kind == EntryType::Link {
            header.as_old_mut().linkname[..9].copy_from_slice(b"kelp.toml");
        }
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn archive(entries: &[Raw]) -> Vec<u8> {
    gzip(&tar_bytes(entries))
}

fn read(bytes: &[u8]) -> Result<Package, PackageError> {
    read_package(bytes, &PackageLimits::default())
}

fn tool_package() -> Vec<u8> {
    write_package(TOOL_MANIFEST, Some(COMPONENT), None, Some("# Calc\n")).unwrap()
}

#[test]
fn round_trip_tool() {
    let bytes = tool_package();
    let package = read(&bytes).unwrap();
    assert_eq!(package.manifest.name.to_string(), "kelp/calc");
    assert_eq!(package.manifest_text, TOOL_MANIFEST);
    assert_eq!(package.wasm.as_deref(), Some(COMPONENT));
    assert_eq!(package.readme.as_deref(), Some("# Calc\n"));
    assert_eq!(package.skill, None);
    assert_eq!(package.digest, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(
        package.wasm_sha256,
        Some(hex::encode(Sha256::digest(COMPONENT)))
    );
    assert_eq!(
        package.manifest_sha256,
        hex::encode(Sha256::digest(TOOL_MANIFEST))
    );
}

#[test]
fn round_trip_skill_without_wasm() {
    let bytes = write_package(SKILL_MANIFEST, None, Some(SKILL_MD), None).unwrap();
    let package = read(&bytes).unwrap();
    assert_eq!(package.wasm, None);
    assert_eq!(package.wasm_sha256, None);
    let skill = package.skill.unwrap();
    assert_eq!(skill.name, "writing");
    assert_eq!(skill.description, "Use when writing \"prose\"");
    assert_eq!(skill.allowed_tools, ["read"]);
    assert_eq!(skill.body, "# Writing\nBe brief.\n");
}

#[test]
fn written_packages_are_deterministic() {
    assert_eq!(
        read(&tool_package()).unwrap().digest,
        read(&tool_package()).unwrap().digest
    );
    let other = write_package(TOOL_MANIFEST, Some(COMPONENT), None, None).unwrap();
    assert_ne!(
        read(&other).unwrap().digest,
        read(&tool_package()).unwrap().digest
    );
}

#[test]
fn leading_dot_slash_is_accepted() {
    let bytes = archive(&[
        file("./kelp.toml", TOOL_MANIFEST.as_bytes()),
        file("./plugin.wasm", COMPONENT),
    ]);
    assert!(read(&bytes).is_ok());
}

#[test]
fn refuses_symlink_and_hardlink() {
    for kind in [EntryType::Symlink, EntryType::Link] {
        let bytes = archive(&[
            Raw {
                name: b"kelp.toml",
                kind,
                data: b"",
            },
            file("plugin.wasm", COMPONENT),
        ]);
        assert!(
            matches!(read(&bytes), Err(PackageError::NotRegularFile { .. })),
            "{kind:?}"
        );
    }
}

#[test]
fn refuses_directory_device_and_fifo() {
    for kind in [EntryType::Directory, EntryType::Char, EntryType::Fifo] {
        let bytes = archive(&[
            Raw {
                name: b"x",
                kind,
                data: b"",
            },
            file("kelp.toml", TOOL_MANIFEST.as_bytes()),
            file("plugin.wasm", COMPONENT),
        ]);
        let err = read(&bytes).unwrap_err();
        assert!(
            matches!(err, PackageError::NotRegularFile { .. }),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn refuses_pax_and_gnu_long_name_headers() {
    for kind in [EntryType::XHeader, EntryType::GNULongName] {
        let record: &[u8] = if kind == EntryType::XHeader {
            b"18 path=kelp.toml\n"
        } else {
            b"kelp.toml\0"
        };
        let bytes = archive(&[
            Raw {
                name: b"././@LongLink",
                kind,
                data: record,
            },
            file("innocent", TOOL_MANIFEST.as_bytes()),
            file("plugin.wasm", COMPONENT),
        ]);
        let err = read(&bytes).unwrap_err();
        assert!(
            matches!(err, PackageError::NotRegularFile { .. }),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn refuses_parent_and_nested_paths() {
    for name in [
        "../kelp.toml",
        "../x",
        "a/kelp.toml",
        "./a/kelp.toml",
        "/kelp.toml",
        "a\\kelp.toml",
    ] {
        let bytes = archive(&[
            file(name, TOOL_MANIFEST.as_bytes()),
            file("plugin.wasm", COMPONENT),
        ]);
        let err = read(&bytes).unwrap_err();
        assert!(matches!(err, PackageError::BadPath { .. }), "{name}: {err}");
    }
}

#[test]
fn refuses_unknown_file() {
    let bytes = archive(&[
        file("kelp.toml", TOOL_MANIFEST.as_bytes()),
        file("plugin.wasm", COMPONENT),
        file("install.sh", b"rm -rf /"),
    ]);
    let err = read(&bytes).unwrap_err();
    assert!(
        matches!(err, PackageError::UnknownFile(ref f) if f == "install.sh"),
        "{err}"
    );
}

#[test]
fn refuses_duplicate_manifest() {
    for second in ["kelp.toml", "./kelp.toml"] {
        let bytes = archive(&[
            file("kelp.toml", TOOL_MANIFEST.as_bytes()),
            file("plugin.wasm", COMPONENT),
            file(second, TOOL_MANIFEST.as_bytes()),
        ]);
        let err = read(&bytes).unwrap_err();
        assert!(
            matches!(err, PackageError::Duplicate(ref f) if f == "kelp.toml"),
            "{err}"
        );
    }
}

#[test]
fn refuses_missing_manifest() {
    let bytes = archive(&[file("plugin.wasm", COMPONENT)]);
    let err = read(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            PackageError::Missing {
                file: "kelp.toml",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn refuses_tool_without_wasm() {
    let bytes = archive(&[file("kelp.toml", TOOL_MANIFEST.as_bytes())]);
    let err = read(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            PackageError::Missing {
                file: "plugin.wasm",
                ..
            }
        ),
        "{err}"
    );
    assert!(write_package(TOOL_MANIFEST, None, None, None).is_err());
}

#[test]
fn refuses_invalid_manifest_with_its_field() {
    let bad = TOOL_MANIFEST.replace("kind = \"tool\"", "kind = \"widget\"");
    let err = write_package(&bad, Some(COMPONENT), None, None).unwrap_err();
    assert!(
        matches!(&err, PackageError::Manifest(m) if m.field() == Some("kind")),
        "{err}"
    );
    let bytes = archive(&[
        file("kelp.toml", &[0xff, 0xfe]),
        file("plugin.wasm", COMPONENT),
    ]);
    assert!(matches!(
        read(&bytes),
        Err(PackageError::NotUtf8("kelp.toml"))
    ));
}

#[test]
fn refuses_core_module() {
    let core = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    let err = write_package(TOOL_MANIFEST, Some(&core), None, None).unwrap_err();
    assert!(matches!(err, PackageError::CoreModule), "{err}");
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component")
    );
    let err = write_package(TOOL_MANIFEST, Some(b"MZ\x90\0not wasm"), None, None).unwrap_err();
    assert!(matches!(err, PackageError::NotComponent(_)), "{err}");
}

#[test]
fn skill_with_wasm_needs_wit() {
    let err = write_package(SKILL_MANIFEST, Some(COMPONENT), Some(SKILL_MD), None).unwrap_err();
    assert!(
        matches!(&err, PackageError::Manifest(m) if m.field() == Some("wit")),
        "{err}"
    );
    let with_wit = format!("{SKILL_MANIFEST}wit = \"0.1.0\"\n");
    assert!(write_package(&with_wit, Some(COMPONENT), Some(SKILL_MD), None).is_ok());
}

#[test]
fn refuses_oversized_wasm() {
    let limits = PackageLimits {
        wasm_bytes: 8,
        ..PackageLimits::default()
    };
    let err = read_package(&tool_package(), &limits).unwrap_err();
    assert!(
        matches!(err, PackageError::FileTooLarge { ref file, size: 10, cap: 8 } if file == "plugin.wasm"),
        "{err}"
    );
    assert!(err.to_string().contains("plugin.wasm") && err.to_string().contains('8'));
}

#[test]
fn refuses_oversized_archive() {
    let limits = PackageLimits {
        compressed_bytes: 16,
        ..PackageLimits::default()
    };
    let err = read_package(&tool_package(), &limits).unwrap_err();
    assert!(
        matches!(err, PackageError::CompressedTooLarge { cap: 16, .. }),
        "{err}"
    );
}

/// A tar stream followed by `zeros` MiB of zeros, gzip'd: a few hundred KiB on the wire.
fn gzip_with_zeros(tar: &[u8], zeros: usize) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(tar).unwrap();
    let mib = vec![0u8; 1024 * 1024];
    for _ in 0..zeros {
        gz.write_all(&mib).unwrap();
    }
    gz.finish().unwrap()
}

#[test]
fn gzip_bomb_in_a_file_stops_at_its_header() {
    // A header declaring 100 MiB of wasm; the zeros that follow are never inflated.
    let mut header = Header::new_gnu();
    header.set_path("plugin.wasm").unwrap();
    header.set_size(100 * 1024 * 1024);
    header.set_cksum();
    let bomb = gzip_with_zeros(header.as_bytes(), 100);
    assert!(bomb.len() < 1024 * 1024);
    let err = read(&bomb).unwrap_err();
    assert!(
        matches!(err, PackageError::FileTooLarge { cap, .. } if cap == 50 * MIB),
        "{err}"
    );
}

#[test]
fn gzip_bomb_after_the_archive_stops_at_the_total_cap() {
    let tar = tar_bytes(&[
        file("kelp.toml", TOOL_MANIFEST.as_bytes()),
        file("plugin.wasm", COMPONENT),
    ]);
    let bomb = gzip_with_zeros(&tar, 100);
    assert!(bomb.len() < 1024 * 1024);
    let err = read(&bomb).unwrap_err();
    assert!(
        matches!(err, PackageError::TotalTooLarge { cap } if cap == 64 * MIB),
        "{err}"
    );
}

#[test]
fn refuses_data_hidden_after_the_archive() {
    let mut tar = tar_bytes(&[
        file("kelp.toml", TOOL_MANIFEST.as_bytes()),
        file("plugin.wasm", COMPONENT),
    ]);
    tar.extend_from_slice(b"hidden");
    assert!(matches!(read(&gzip(&tar)), Err(PackageError::TrailingData)));

    let mut bytes = tool_package();
    bytes.extend_from_slice(&gzip(b"second member"));
    assert!(matches!(read(&bytes), Err(PackageError::TrailingData)));
}

#[test]
fn refuses_non_gzip() {
    assert!(matches!(
        read(b"PK\x03\x04 a zip file"),
        Err(PackageError::NotGzip)
    ));
    assert!(matches!(read(b""), Err(PackageError::NotGzip)));
    let not_tar = gzip(&[0x42; 2048]);
    assert!(matches!(read(&not_tar), Err(PackageError::Corrupt(_))));
}

#[test]
fn refuses_truncated_archive() {
    let bytes = tool_package();
    for len in [10, bytes.len() / 2, bytes.len() - 1] {
        let err = read(&bytes[..len]).unwrap_err();
        assert!(matches!(err, PackageError::Corrupt(_)), "{len}: {err}");
    }
}

#[test]
fn refuses_skill_without_front_matter() {
    for skill_md in [
        "# Writing\nBe brief.\n",
        "---\nname: writing\n# no closing line\n",
    ] {
        let err = write_package(SKILL_MANIFEST, None, Some(skill_md), None).unwrap_err();
        assert!(
            matches!(err, PackageError::SkillFrontMatter(_)),
            "{skill_md:?}: {err}"
        );
    }
    let err = write_package(
        SKILL_MANIFEST,
        None,
        Some("---\nname: writing\n---\nbody\n"),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, PackageError::SkillField { field, .. } if field == "description"),
        "{err}"
    );
    let err = write_package(SKILL_MANIFEST, None, None, None).unwrap_err();
    assert!(
        matches!(
            err,
            PackageError::Missing {
                file: "SKILL.md",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn front_matter_values_may_be_quoted() {
    let skill =
        parse_skill("---\r\nname: 'writing'\r\ndescription: 'it''s: with colon'\r\n---\r\nbody")
            .unwrap();
    assert_eq!(skill.name, "writing");
    assert_eq!(skill.description, "it's: with colon");
    assert_eq!(skill.body, "body");
}
