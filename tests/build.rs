//! Builds the guest components the suite runs — first-party plugins (`plugins/`) and test
//! components (`tests/components/`) — for wasm32-wasip2, and generates constants naming each
//! built `.wasm` and its `kelp.toml`. A component that exists but does not build fails the
//! suite's build; a test cannot silently run against a stale binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_WORKSPACES: &[(&str, &str)] = &[
    ("plugins", "kelp_plugin_"),
    ("tests/components", "kelp_test_"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest_dir.parent().unwrap().to_owned();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // A target directory of their own: the outer cargo holds the lock on its own one.
    let guest_target = match std::env::var_os("KELP_GUEST_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => out_dir
            .ancestors()
            .nth(4)
            .expect("OUT_DIR is <target>/<profile>/build/<pkg>/out")
            .join("guests"),
    };
    for dir in ["sdk", "wit", "plugins", "tests/components"] {
        println!("cargo:rerun-if-changed={}", repo.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=KELP_GUEST_TARGET_DIR");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut code = String::new();
    for (workspace, prefix) in GUEST_WORKSPACES {
        let root = repo.join(workspace);
        let status = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--locked",
            ])
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &guest_target)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .status()
            .expect("running cargo for the guest components");
        assert!(
            status.success(),
            "building {workspace} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
        for member in members(&root) {
            let ident = member.replace('-', "_").to_uppercase();
            let wasm = guest_target
                .join("wasm32-wasip2/release")
                .join(format!("{prefix}{}.wasm", member.replace('-', "_")));
            assert!(wasm.exists(), "expected {}", wasm.display());
            let kind = if *workspace == "plugins" {
                "PLUGIN"
            } else {
                "COMPONENT"
            };
            writeln!(code, "/// `{workspace}/{member}` built for wasm32-wasip2.").unwrap();
            writeln!(
                code,
                "pub const {kind}_{ident}_WASM: &str = {:?};",
                wasm.to_string_lossy()
            )
            .unwrap();
            writeln!(code, "/// `{workspace}/{member}/kelp.toml`.").unwrap();
            writeln!(
                code,
                "pub const {kind}_{ident}_MANIFEST: &str = {:?};",
                root.join(&member).join("kelp.toml").to_string_lossy()
            )
            .unwrap();
        }
    }
    std::fs::write(out_dir.join("components.rs"), code).unwrap();
}

/// The member directories of a guest workspace, read from its `Cargo.toml`.
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
