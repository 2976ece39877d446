//! Embeds into the `kelp` binary:
//! - the SDK, its templates and the WIT contract, so that `kelp plugin new` can write a crate
//!   that builds anywhere — outside this repository and with no network but the crate registry;
//! - the first-party plugins (`plugins/`), built here for wasm32-wasip2, so that a `kelp`
//!   installed the ordinary way (`cargo install --path host`) serves tools and providers on
//!   its first start, with no package files beside it and no network.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

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
    first_party(&repo, &mut code);
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}

/// Builds `plugins/` for wasm32-wasip2 and writes `FIRST_PARTY_PLUGINS`: each member's
/// `kelp.toml`, component and README. They are packed into `.kelp` packages at run time, by
/// the same writer `kelp plugin build` uses.
fn first_party(repo: &Path, code: &mut String) {
    let root = repo.join("plugins");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-env-changed=KELP_GUEST_TARGET_DIR");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // The same directory the test suite's build script builds guests in, so one build of the
    // plugins serves both; a directory of its own because the outer cargo holds the lock on
    // its target directory while this runs.
    let guest_target = match std::env::var_os("KELP_GUEST_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => out_dir
            .ancestors()
            .nth(4)
            .expect("OUT_DIR is <target>/<profile>/build/<pkg>/out")
            .join("guests"),
    };
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--target", WASM_TARGET, "--locked"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &guest_target)
        // The outer build's flags and wrappers (clippy, coverage) are for the host target.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .expect("running cargo to build the first-party plugins");
    assert!(
        status.success(),
        "building the first-party plugins (plugins/) for {WASM_TARGET} failed; \
         is the target installed? `rustup target add {WASM_TARGET}`"
    );
    code.push_str(
        "\n/// The first-party plugins (`plugins/`), built for wasm32-wasip2 when this binary was.\n",
    );
    code.push_str("pub static FIRST_PARTY_PLUGINS: &[FirstPartyPlugin] = &[\n");
    for member in members(&root) {
        let dir = root.join(&member);
        let wasm = guest_target
            .join(WASM_TARGET)
            .join("release")
            .join(format!("kelp_plugin_{}.wasm", member.replace('-', "_")));
        assert!(wasm.exists(), "expected {}", wasm.display());
        let readme = dir.join("README.md");
        let readme = if readme.exists() {
            format!("Some(include_str!({:?}))", readme.to_string_lossy())
        } else {
            "None".to_owned()
        };
        writeln!(
            code,
            "    FirstPartyPlugin {{ dir: {member:?}, manifest: include_str!({:?}), wasm: include_bytes!({:?}), readme: {readme} }},",
            dir.join("kelp.toml").to_string_lossy(),
            wasm.to_string_lossy(),
        )
        .unwrap();
    }
    code.push_str("];\n");
}

/// The member directories of the plugins workspace, read from its `Cargo.toml`.
fn members(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let start = text.find("members").expect("workspace members");
    let list = &text[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Adds the wasm32-wasip2 target through rustup when it is missing, so that a machine with
/// only the Rust toolchain builds `kelp`. Without rustup (a distro toolchain) the build
/// reports the missing target itself.
fn ensure_wasm_target() {
    let Ok(output) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return;
    };
    if !String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        println!("cargo:warning=installing the {WASM_TARGET} target with rustup");
        let _ = Command::new("rustup")
            .args(["target", "add", WASM_TARGET])
            .status();
    }
}
