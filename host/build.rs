//! Embeds the SDK, its templates and the WIT contract into the `kelp` binary, so that
//! `kelp plugin new` can write a crate that builds anywhere — outside this repository and
//! with no network but the crate registry.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "target" || name.starts_with('.') || name == "Cargo.lock" {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).expect("under root").to_owned());
        }
    }
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_owned();
    let mut files = Vec::new();
    for top in ["sdk", "wit"] {
        collect(&repo, &repo.join(top), &mut files);
        println!("cargo:rerun-if-changed={}", repo.join(top).display());
    }
    let mut code = String::from(
        "/// Files of the SDK (`sdk/…`) and the WIT contract (`wit/…`), by repository path.\n",
    );
    code.push_str("pub static EMBEDDED_FILES: &[(&str, &[u8])] = &[\n");
    for file in &files {
        let rel = file.to_string_lossy().replace('\\', "/");
        let abs = repo.join(file);
        writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.to_string_lossy()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}
