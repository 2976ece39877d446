//! `read_package` (`.kelp` archives from strangers): it never accepts an archive over its
//! caps, what it accepts is what the archive holds, and an accepted package packs again into
//! one that reads back the same.
//!
//! Layout of the fuzzer's bytes: one mode byte, then the payload. Bits 0 and 2 of the mode say
//! what the payload is: the archive itself (0); a tar stream, gzip'd here so that the fuzzer
//! reaches the tar checks without forging gzip checksums (1); or entries, written here as tar
//! headers with valid checksums so that it varies names, types, sizes and contents freely (4,
//! see [`tar_of_entries`]). Bit 1: the default limits, or limits small enough for the fuzzer
//! to reach each one.

#![no_main]

use std::io::{Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use kelp_registry::manifest::{Manifest, PluginKind};
use kelp_registry::package::{PackageLimits, read_package, write_package};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const SMALL: PackageLimits = PackageLimits {
    compressed_bytes: 4096,
    total_bytes: 6144,
    wasm_bytes: 1024,
    manifest_bytes: 1024,
    skill_bytes: 1024,
    readme_bytes: 512,
};

/// `\0asm` and the component-model layer/version.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A tar stream of the entries in `payload`, each `[type, name length, name…, size (u16 LE),
/// data…]`: the type byte as tar's (below `b'0'` a regular file), the name's bytes unchecked,
/// the size declared as given even where fewer bytes remain.
fn tar_of_entries(mut payload: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    while let [kind, name_len, rest @ ..] = payload {
        let name_len = usize::from(*name_len % 101).min(rest.len());
        let (name, rest) = rest.split_at(name_len);
        let Some((size, rest)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let size = usize::from(u16::from_le_bytes(*size));
        let (data, rest) = rest.split_at(size.min(rest.len()));
        payload = rest;

        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        let kind = if *kind < b'0' { b'0' } else { *kind };
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    tar.resize(tar.len() + 1024, 0);
    tar
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let archive = if mode & 4 != 0 {
        gzip(&tar_of_entries(payload))
    } else if mode & 1 != 0 {
        gzip(payload)
    } else {
        payload.to_vec()
    };
    let limits = if mode & 2 == 0 {
        PackageLimits::default()
    } else {
        SMALL
    };

    let Ok(package) = read_package(&archive, &limits) else {
        return;
    };

    // Within every cap, counted here independently of the reader.
    assert!(archive.len() as u64 <= limits.compressed_bytes);
    let mut inflated = Vec::new();
    flate2::bufread::GzDecoder::new(&archive[..])
        .take(limits.total_bytes + 1)
        .read_to_end(&mut inflated)
        .expect("an accepted archive inflates");
    assert!(
        inflated.len() as u64 <= limits.total_bytes,
        "accepted an archive that inflates to {} bytes, over the {}-byte cap",
        inflated.len(),
        limits.total_bytes
    );
    assert!(package.manifest_text.len() as u64 <= limits.manifest_bytes);
    assert!(
        package
            .wasm
            .as_ref()
            .is_none_or(|w| w.len() as u64 <= limits.wasm_bytes)
    );
    assert!(
        package
            .readme
            .as_ref()
            .is_none_or(|r| r.len() as u64 <= limits.readme_bytes)
    );
    assert!(
        package
            .skill
            .as_ref()
            .is_none_or(|s| s.body.len() as u64 <= limits.skill_bytes)
    );

    // What it says about the contents is true of them.
    assert_eq!(package.digest, hex::encode(Sha256::digest(&archive)));
    assert_eq!(
        package.manifest_sha256,
        hex::encode(Sha256::digest(package.manifest_text.as_bytes()))
    );
    assert_eq!(
        Manifest::parse(&package.manifest_text).as_ref(),
        Ok(&package.manifest)
    );
    match &package.wasm {
        Some(wasm) => {
            assert!(wasm.starts_with(&COMPONENT_HEADER));
            assert_eq!(
                package.wasm_sha256.as_deref(),
                Some(hex::encode(Sha256::digest(wasm)).as_str())
            );
        }
        None => {
            assert_eq!(package.manifest.kind, PluginKind::Skill);
            assert_eq!(package.wasm_sha256, None);
        }
    }
    if package.manifest.kind == PluginKind::Skill {
        assert!(package.skill.is_some(), "a skill package without SKILL.md");
    }

    // Packed again, it reads back the same.
    let skill_md = package.skill.as_ref().map(kelp_fuzz::render::skill_md);
    if skill_md
        .as_ref()
        .is_some_and(|s| s.len() as u64 > PackageLimits::default().skill_bytes)
    {
        return; // quoting grew it past the cap, which is not the reader's doing
    }
    let repacked = write_package(
        &package.manifest_text,
        package.wasm.as_deref(),
        skill_md.as_deref(),
        package.readme.as_deref(),
    )
    .unwrap_or_else(|e| panic!("an accepted package does not pack again: {e}"));
    let again = read_package(&repacked, &PackageLimits::default()).unwrap();
    assert_eq!(again.manifest, package.manifest);
    assert_eq!(again.wasm, package.wasm);
    assert_eq!(again.skill, package.skill);
    assert_eq!(again.readme, package.readme);
});
