//! The `kelp` command as a new user drives it, in a directory outside the repository:
//! `plugin new`, edit one line, `plugin build`, `plugin install`, `tool call`, and the
//! administration commands around them. Runs the real binary.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn kelp(data_dir: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(args)
        .current_dir(cwd)
        .env("KELP_DATA_DIR", data_dir)
        // The new crate's build shares a cache across runs; it is outside the outer build's
        // target directory, whose lock cargo may hold while tests run.
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-plugin-new"),
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .output()
        .expect("running kelp")
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kelp failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn new_edit_build_install_call_as_a_new_user() {
    let work = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "new", "hello", "--kind", "tool"],
    ));
    let crate_dir = work.path().join("hello");
    for file in [
        "Cargo.toml",
        "kelp.toml",
        "src/lib.rs",
        ".kelp/kelp-sdk/Cargo.toml",
        ".kelp/wit/worlds.wit",
    ] {
        assert!(crate_dir.join(file).exists(), "{file} was not written");
    }

    // Edit the one line the template points at.
    let lib = crate_dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    assert!(source.contains(r#"format!("Hello, {}!", input.name)"#));
    std::fs::write(
        &lib,
        source.replace(
            r#"format!("Hello, {}!", input.name)"#,
            r#"format!("Ahoy, {}!", input.name)"#,
        ),
    )
    .unwrap();

    let built = ok(kelp(data.path(), &crate_dir, &["plugin", "build"]));
    let package = crate_dir.join("target/kelp/hello-0.1.0.kelp");
    assert!(package.exists(), "{built}");

    let installed = ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "install", package.to_str().unwrap(), "--yes"],
    ));
    assert!(
        installed.contains("installed local/hello 0.1.0 as instance `hello`"),
        "{installed}"
    );
    assert!(installed.contains("tool hello/greet"), "{installed}");

    let answer = ok(kelp(
        data.path(),
        work.path(),
        &["tool", "call", "hello/greet", r#"{"name":"Kelp"}"#],
    ));
    assert_eq!(answer.trim(), "Ahoy, Kelp!");

    let list = ok(kelp(data.path(), work.path(), &["plugin", "list"]));
    assert!(
        list.contains("local/hello 0.1.0 (tool)") && list.contains("instance hello [enabled]"),
        "{list}"
    );
    let tools = ok(kelp(data.path(), work.path(), &["tool", "list"]));
    assert!(tools.contains("hello/greet"), "{tools}");
    let info = ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "info", "local/hello"],
    ));
    assert!(
        info.contains("\"name\": \"local/hello\"") && info.contains("granted: nothing"),
        "{info}"
    );

    ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "disable", "hello"],
    ));
    let refused = kelp(
        data.path(),
        work.path(),
        &["tool", "call", "hello/greet", r#"{"name":"Kelp"}"#],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("disabled"));
    ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "enable", "hello"],
    ));

    // Bad input gets a clear error and a failing exit code.
    let bad = kelp(
        data.path(),
        work.path(),
        &["tool", "call", "hello/greet", "not json"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not JSON"));
    let missing = kelp(
        data.path(),
        work.path(),
        &["tool", "call", "hello/nope", "{}"],
    );
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("has no tool `nope` (it has: greet)")
    );

    ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "remove", "local/hello"],
    ));
    let gone = kelp(
        data.path(),
        work.path(),
        &["tool", "call", "hello/greet", "{}"],
    );
    assert!(!gone.status.success());
}

#[test]
fn install_without_approval_refuses_when_capabilities_are_requested() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let manifest =
        std::fs::read_to_string(kelp_tests::components::PLUGIN_HTTP_FETCH_MANIFEST).unwrap();
    let package = work.path().join("fetch.kelp");
    std::fs::write(
        &package,
        kelp_tests::pack(&manifest, kelp_tests::components::PLUGIN_HTTP_FETCH_WASM),
    )
    .unwrap();
    let out = kelp(
        data.path(),
        work.path(),
        &["plugin", "install", package.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("requests:") && stdout.contains("http:*"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("approval needed"));
    let list = ok(kelp(data.path(), work.path(), &["plugin", "list"]));
    assert!(list.trim().is_empty(), "nothing installed: {list}");
}

#[test]
fn a_skill_without_code_is_made_built_and_installed() {
    let work = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "new", "tidy-notes", "--kind", "skill"],
    ));
    let dir = work.path().join("tidy-notes");
    assert!(dir.join("SKILL.md").exists() && !dir.join(".kelp").exists());
    ok(kelp(data.path(), &dir, &["plugin", "build"]));
    let package = dir.join("target/kelp/tidy-notes-0.1.0.kelp");
    let installed = ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "install", package.to_str().unwrap(), "--yes"],
    ));
    assert!(
        installed.contains("installed local/tidy-notes 0.1.0"),
        "{installed}"
    );
    let list = ok(kelp(data.path(), work.path(), &["plugin", "list"]));
    assert!(list.contains("local/tidy-notes 0.1.0 (skill)"), "{list}");
}

#[test]
fn an_upgrade_asking_for_more_is_refused_until_approved() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let package = |version: &str, http: &str| {
        let text = std::fs::read_to_string(kelp_tests::components::COMPONENT_HOSTILE_MANIFEST)
            .unwrap()
            .replace("version = \"0.1.0\"", &format!("version = \"{version}\""))
            .replace("http = [\"*\"]", &format!("http = [{http}]"));
        let path = work.path().join(format!("hostile-{version}.kelp"));
        std::fs::write(
            &path,
            kelp_tests::pack(&text, kelp_tests::components::COMPONENT_HOSTILE_WASM),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let first = package("0.1.0", "\"api.test\"");
    ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "install", &first, "--yes"],
    ));
    // Nothing new: upgraded without a question.
    let same = package("0.2.0", "\"api.test\"");
    let out = ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "install", &same],
    ));
    assert!(out.contains("upgrades the installed 0.1.0"), "{out}");

    let more = package("0.3.0", "\"api.test\", \"api.other.test\"");
    let out = kelp(data.path(), work.path(), &["plugin", "install", &more]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("asks for more than 0.2.0 was approved for:")
            && stdout.contains("http:api.other.test"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("approval needed: pass --yes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = ok(kelp(data.path(), work.path(), &["plugin", "list"]));
    assert!(list.contains("test/hostile 0.2.0"), "{list}");

    ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "install", &more, "--yes"],
    ));
    let info = ok(kelp(
        data.path(),
        work.path(),
        &["plugin", "info", "test/hostile"],
    ));
    assert!(info.contains("\"version\": \"0.3.0\""), "{info}");
    assert!(info.contains("http:api.other.test"), "{info}");
}
