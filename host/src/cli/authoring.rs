//! `kelp plugin new` and `kelp plugin build`: what a plugin author runs.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use kelp_registry::manifest::Manifest;
use kelp_registry::package::write_package;

use crate::embedded::EMBEDDED_FILES;
use crate::plugins::contract::ContractUse;

const WASM_TARGET: &str = "wasm32-wasip2";

/// Writes a new plugin crate from the embedded template of `kind`, with the SDK and WIT
/// beside it in `.kelp/`, so it builds with nothing but cargo and the crate registry.
pub fn new_plugin(name: &str, kind: &str, parent: Option<&Path>) -> Result<ExitCode> {
    let short = name.rsplit('/').next().unwrap_or(name);
    let valid = !short.is_empty()
        && short.len() <= 64
        && short.split('-').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !valid {
        bail!("plugin name `{short}` must be lowercase kebab-case, e.g. `hello` or `my-tool`");
    }
    let parent = match parent {
        Some(p) => p.to_owned(),
        None => std::env::current_dir()?,
    };
    let root = parent.join(short);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let crate_name = short.replace('-', "_");
    let template_prefix = format!("sdk/templates/{kind}/");
    let mut wrote_template = false;
    for (path, bytes) in EMBEDDED_FILES {
        let target = if let Some(rest) = path.strip_prefix(&template_prefix) {
            wrote_template = true;
            let text = std::str::from_utf8(bytes).context("template files are UTF-8")?;
            let text = text
                .replace("{{name}}", short)
                .replace("{{crate_name}}", &crate_name);
            write_file(&root.join(rest), text.as_bytes())?;
            continue;
        } else if path.starts_with("sdk/templates/") {
            continue;
        } else if kind == "skill" {
            // A skill without code needs neither the SDK nor the WIT.
            continue;
        } else if let Some(rest) = path.strip_prefix("sdk/") {
            root.join(".kelp/kelp-sdk").join(rest)
        } else if let Some(rest) = path.strip_prefix("wit/") {
            root.join(".kelp/wit").join(rest)
        } else {
            continue;
        };
        write_file(&target, bytes)?;
    }
    if !wrote_template {
        bail!("this kelp binary carries no template for kind `{kind}`");
    }
    if kind != "skill" {
        write_file(&root.join(".gitignore"), b"/target\n")?;
    }
    println!("created {kind} plugin `{short}` in {}", root.display());
    println!("next: cd {} && kelp plugin build", root.display());
    Ok(ExitCode::SUCCESS)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Builds the plugin in `dir` for wasm32-wasip2 and packs `kelp.toml`, the component and
/// any `SKILL.md`/`README.md` into a `.kelp` archive.
pub fn build_plugin(dir: Option<&Path>, out: Option<&Path>) -> Result<ExitCode> {
    let dir = match dir {
        Some(d) => d.to_owned(),
        None => std::env::current_dir()?,
    };
    let manifest_text = std::fs::read_to_string(dir.join("kelp.toml"))
        .with_context(|| format!("no kelp.toml in {}", dir.display()))?;
    let manifest = Manifest::parse(&manifest_text).context("kelp.toml")?;
    let wasm = if dir.join("Cargo.toml").exists() {
        let path = cargo_build(&dir)?;
        let wasm = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        ContractUse::read(&wasm)?.check(&manifest)?;
        Some(wasm)
    } else {
        None
    };
    let read_optional = |name: &str| -> Result<Option<String>> {
        let path = dir.join(name);
        if path.exists() {
            Ok(Some(std::fs::read_to_string(&path)?))
        } else {
            Ok(None)
        }
    };
    let skill = read_optional("SKILL.md")?;
    let readme = read_optional("README.md")?;
    let package = write_package(
        &manifest_text,
        wasm.as_deref(),
        skill.as_deref(),
        readme.as_deref(),
    )?;
    let out = match out {
        Some(o) => o.to_owned(),
        None => dir.join("target/kelp").join(format!(
            "{}-{}.kelp",
            manifest.name.name(),
            manifest.version
        )),
    };
    write_file(&out, &package)?;
    println!(
        "packed {} {} → {}",
        manifest.name,
        manifest.version,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `cargo build --release --target wasm32-wasip2` and returns the component's path.
fn cargo_build(dir: &Path) -> Result<PathBuf> {
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--target", WASM_TARGET])
        .current_dir(dir)
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let metadata = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .context("running cargo metadata")?;
    if !metadata.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&metadata.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&metadata.stdout)?;
    let target_dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata: no target_directory")?;
    let manifest_path = dir.join("Cargo.toml").canonicalize()?;
    let package = meta["packages"]
        .as_array()
        .and_then(|ps| {
            ps.iter().find(|p| {
                p["manifest_path"].as_str().map(Path::new) == Some(manifest_path.as_path())
            })
        })
        .context("cargo metadata: this directory's package not found")?;
    let lib = package["targets"]
        .as_array()
        .and_then(|ts| {
            ts.iter().find(|t| {
                t["crate_types"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c == "cdylib"))
            })
        })
        .context("the crate has no cdylib target; set crate-type = [\"cdylib\"] in [lib]")?;
    let lib_name = lib["name"]
        .as_str()
        .context("target name")?
        .replace('-', "_");
    Ok(PathBuf::from(target_dir)
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{lib_name}.wasm")))
}

/// Installs the wasm32-wasip2 target through rustup when it is missing. Without rustup
/// (a distro toolchain) the build reports the missing target itself.
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
        eprintln!("installing the {WASM_TARGET} target with rustup");
        let _ = Command::new("rustup")
            .args(["target", "add", WASM_TARGET])
            .status();
    }
}
