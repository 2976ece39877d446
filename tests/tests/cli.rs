//! The `kelp` command as a new user drives it, in a directory outside the repository, against
//! a running `kelp serve`: `user add` before the first start, `login`, `plugin new`, edit one
//! line, `plugin build`, `plugin install`, `tool call`, and the administration commands around
//! them — each checked in what the running server serves. Runs the real binaries.

use std::path::Path;
use std::time::Duration;

use kelp_tests::process::{CliUser, KelpProcess};
use serde_json::{Value, json};

const KELP: &str = env!("CARGO_BIN_EXE_kelp");
const PASSWORD: &str = "admin-password";

/// A data directory with its first admin made by `kelp user add`, a `kelp serve` on it, and a
/// user signed in to it with `kelp login`. The server installs no built-in plugins (an empty
/// `--bundled` directory), so what is installed is what the test installs.
struct Site {
    server: KelpProcess,
    user: CliUser,
    http: reqwest::Client,
    token: String,
    _data: tempfile::TempDir,
    _bundled: tempfile::TempDir,
}

impl Site {
    async fn start() -> Site {
        let data = tempfile::tempdir().unwrap();
        let bundled = tempfile::tempdir().unwrap();
        let user = CliUser::new(KELP);
        let data_dir = data.path().to_str().unwrap();
        let made = user.run_with(
            &["user", "add", "admin", "--admin"],
            &[("KELP_DATA_DIR", data_dir)],
            &format!("{PASSWORD}\n"),
        );
        assert!(made.success, "{made}");
        let server = KelpProcess::start(
            KELP,
            data.path(),
            &["--bundled", bundled.path().to_str().unwrap()],
            &[],
        );
        user.login(&server.base, "admin", PASSWORD);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let login: Value = http
            .post(format!("{}/api/auth/login", server.base))
            .json(&json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Site {
            token: login["token"].as_str().unwrap().to_owned(),
            server,
            user,
            http,
            _data: data,
            _bundled: bundled,
        }
    }

    /// `instance/tool` names the server's `/api/tools` lists.
    async fn tools(&self) -> Vec<String> {
        let tools: Value = self
            .http
            .get(format!("{}/api/tools", self.server.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tools["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                format!(
                    "{}/{}",
                    t["instance"].as_str().unwrap(),
                    t["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    /// `POST /api/tools/{tool}` on the server: status and body.
    async fn call(&self, tool: &str, input: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/tools/{tool}", self.server.base))
            .bearer_auth(&self.token)
            .json(&input)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `kelp ARGS` in `cwd`, with the plugin crate's build cache outside the outer build's
    /// target directory, whose lock cargo may hold while tests run.
    fn kelp_in(&self, cwd: &Path, args: &[&str]) -> kelp_tests::process::CliOutput {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-plugin-new");
        let out = self
            .user
            .command(args, &[("CARGO_TARGET_DIR", target.to_str().unwrap())])
            .current_dir(cwd)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running kelp");
        kelp_tests::process::CliOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A package of a test component, written to a file.
    fn package(&self, name: &str, manifest: &str, wasm: &str) -> String {
        let path = self.user.home.path().join(name);
        std::fs::write(&path, kelp_tests::pack(manifest, wasm)).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_edit_build_install_call_as_a_new_user() {
    let site = Site::start().await;
    let work = tempfile::tempdir().unwrap();
    let made = site.kelp_in(work.path(), &["plugin", "new", "hello", "--kind", "tool"]);
    assert!(made.success, "{made}");
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
    // The README names what the build writes and commands that exist.
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    assert!(readme.contains("target/kelp/hello-0.1.0.kelp"), "{readme}");
    assert!(!readme.contains("publish"), "{readme}");

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

    let built = site.kelp_in(&crate_dir, &["plugin", "build"]);
    assert!(built.success, "{built}");
    let package = crate_dir.join("target/kelp/hello-0.1.0.kelp");
    assert!(package.exists(), "{built}");

    // Installed by the CLI while the server runs: the server lists and runs it at once.
    let installed = site
        .user
        .ok(&["plugin", "install", package.to_str().unwrap(), "--yes"]);
    assert!(
        installed.contains("installed local/hello 0.1.0 as instance `hello`"),
        "{installed}"
    );
    assert!(installed.contains("tool hello/greet"), "{installed}");
    assert_eq!(site.tools().await, ["hello/greet"]);
    let (status, body) = site.call("hello/greet", json!({"name": "Ada"})).await;
    assert_eq!(
        (status, body["output"].as_str()),
        (200, Some("Ahoy, Ada!")),
        "{body}"
    );
    let answer = site
        .user
        .ok(&["tool", "call", "hello/greet", r#"{"name":"Kelp"}"#]);
    assert_eq!(answer.trim(), "Ahoy, Kelp!");

    let list = site.user.ok(&["plugin", "list"]);
    assert!(
        list.contains("local/hello 0.1.0 (tool)") && list.contains("instance hello [loaded]"),
        "{list}"
    );
    let tools = site.user.ok(&["tool", "list"]);
    assert!(tools.contains("hello/greet"), "{tools}");
    let info = site.user.ok(&["plugin", "info", "local/hello"]);
    assert!(
        info.contains("local/hello 0.1.0 (tool)") && info.contains("granted: nothing"),
        "{info}"
    );
    assert_eq!(info, site.user.ok(&["plugin", "info", "hello"]));

    // A plugin without secrets says so.
    let secret = site
        .user
        .run_with(&["plugin", "secret", "hello", "TOKEN"], &[], "x\n");
    assert!(!secret.success);
    assert!(
        secret.stderr.contains("local/hello declares no secrets"),
        "{secret}"
    );

    // Disabled by the CLI: the server no longer lists or runs it.
    site.user.ok(&["plugin", "disable", "hello"]);
    assert!(site.tools().await.is_empty());
    let (status, body) = site.call("hello/greet", json!({"name": "Ada"})).await;
    assert_eq!(status, 409, "{body}");
    let refused = site
        .user
        .run(&["tool", "call", "hello/greet", r#"{"name":"Kelp"}"#]);
    assert!(!refused.success);
    assert!(refused.stderr.contains("disabled"), "{refused}");
    site.user.ok(&["plugin", "enable", "hello"]);
    assert_eq!(
        site.call("hello/greet", json!({"name": "Ada"})).await.0,
        200
    );

    // Bad input gets a clear error and a failing exit code.
    let bad = site.user.run(&["tool", "call", "hello/greet", "not json"]);
    assert!(!bad.success);
    assert!(bad.stderr.contains("not JSON"), "{bad}");
    let missing = site.user.run(&["tool", "call", "hello/nope", "{}"]);
    assert!(!missing.success);
    assert!(
        missing
            .stderr
            .contains("has no tool `nope` (it has: greet)"),
        "{missing}"
    );

    // Removed by the CLI: gone from the server.
    site.user.ok(&["plugin", "remove", "local/hello"]);
    assert!(site.tools().await.is_empty());
    assert_eq!(
        site.call("hello/greet", json!({"name": "Ada"})).await.0,
        404
    );
    let gone = site.user.run(&["tool", "call", "hello/greet", "{}"]);
    assert!(!gone.success);
    let again = site.user.run(&["plugin", "remove", "local/hello"]);
    assert!(
        !again.success && again.stderr.contains("no plugin `local/hello`"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_without_approval_refuses_when_capabilities_are_requested() {
    let site = Site::start().await;
    let manifest =
        std::fs::read_to_string(kelp_tests::components::PLUGIN_HTTP_FETCH_MANIFEST).unwrap();
    let package = site.package(
        "fetch.kelp",
        &manifest,
        kelp_tests::components::PLUGIN_HTTP_FETCH_WASM,
    );
    let out = site.user.run(&["plugin", "install", &package]);
    assert!(!out.success);
    assert!(
        out.stdout.contains("requests:") && out.stdout.contains("http:*"),
        "{out}"
    );
    assert!(out.stderr.contains("approval needed"), "{out}");
    assert!(site.user.ok(&["plugin", "list"]).trim().is_empty());

    // A grant the plugin does not ask for is named, not silently dropped.
    let out = site.user.run(&[
        "plugin",
        "install",
        &package,
        "--grant",
        "kv",
        "--grant",
        "http:example.com",
    ]);
    assert!(out.success, "{out}");
    assert!(
        out.stderr
            .contains("warning: --grant kv: kelp/http-fetch does not request this"),
        "{out}"
    );
    assert!(!out.stderr.contains("--grant http:example.com"), "{out}");
    assert!(out.stdout.contains("granted: http:example.com"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skill_without_code_is_made_built_and_installed() {
    let site = Site::start().await;
    let work = tempfile::tempdir().unwrap();
    let made = site.kelp_in(
        work.path(),
        &["plugin", "new", "tidy-notes", "--kind", "skill"],
    );
    assert!(made.success, "{made}");
    let dir = work.path().join("tidy-notes");
    assert!(dir.join("SKILL.md").exists() && !dir.join(".kelp").exists());
    let built = site.kelp_in(&dir, &["plugin", "build"]);
    assert!(built.success, "{built}");
    let package = dir.join("target/kelp/tidy-notes-0.1.0.kelp");
    let installed = site
        .user
        .ok(&["plugin", "install", package.to_str().unwrap(), "--yes"]);
    assert!(
        installed.contains("installed local/tidy-notes 0.1.0"),
        "{installed}"
    );
    let list = site.user.ok(&["plugin", "list"]);
    assert!(list.contains("local/tidy-notes 0.1.0 (skill)"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_asking_for_more_is_refused_until_approved() {
    let site = Site::start().await;
    let package = |version: &str, http: &str| {
        let text = std::fs::read_to_string(kelp_tests::components::COMPONENT_HOSTILE_MANIFEST)
            .unwrap()
            .replace("version = \"0.1.0\"", &format!("version = \"{version}\""))
            .replace("http = [\"*\"]", &format!("http = [{http}]"));
        site.package(
            &format!("hostile-{version}.kelp"),
            &text,
            kelp_tests::components::COMPONENT_HOSTILE_WASM,
        )
    };
    let first = package("0.1.0", "\"api.test\"");
    site.user.ok(&["plugin", "install", &first, "--yes"]);
    // Nothing new: upgraded without a question.
    let same = package("0.2.0", "\"api.test\"");
    let out = site.user.ok(&["plugin", "install", &same]);
    assert!(out.contains("upgrades the installed 0.1.0"), "{out}");

    let more = package("0.3.0", "\"api.test\", \"api.other.test\"");
    let out = site.user.run(&["plugin", "install", &more]);
    assert!(!out.success);
    assert!(
        out.stdout
            .contains("asks for more than the installed 0.2.0 was approved for")
            && out.stdout.contains("http:api.other.test"),
        "{out}"
    );
    assert!(out.stderr.contains("approval needed: pass --yes"), "{out}");
    let list = site.user.ok(&["plugin", "list"]);
    assert!(list.contains("test/hostile 0.2.0"), "{list}");

    site.user.ok(&["plugin", "install", &more, "--yes"]);
    let info = site.user.ok(&["plugin", "info", "test/hostile"]);
    assert!(info.contains("test/hostile 0.3.0"), "{info}");
    assert!(info.contains("http:api.other.test"), "{info}");
}

/// Without a server, commands that need one say how to name one, and leave no data
/// directory, database or key behind.
#[test]
fn commands_that_need_a_server_fail_clearly_without_one() {
    let user = CliUser::new(KELP);
    for args in [
        &["tool", "list"][..],
        &["plugin", "list"],
        &["plugin", "disable", "calc"],
        &["agent", "list"],
        &["provider", "list"],
        &["user", "list"],
        &["chat"],
    ] {
        let out = user.run(args);
        assert!(!out.success, "kelp {args:?}\n{out}");
        assert!(
            out.stderr.contains("no Kelp server configured") && out.stderr.contains("kelp login"),
            "kelp {args:?}\n{out}"
        );
        assert_eq!(out.stdout, "", "kelp {args:?}");
    }
    assert!(
        !user.default_data_dir().exists(),
        "a data directory was created"
    );

    // Named but not there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = user.run(&["tool", "list", "--url", &url, "--token", "t"]);
    assert!(!out.success);
    assert!(
        out.stderr
            .contains(&format!("could not reach Kelp at {url}")),
        "{out}"
    );
    let out = user.run_with(&["tool", "list"], &[("KELP_URL", &url)], "");
    assert!(!out.success);
    assert!(
        out.stderr.contains(&format!("not signed in to {url}")),
        "{out}"
    );
    assert!(
        !user.default_data_dir().exists(),
        "a data directory was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_a_token_of_its_own_and_logout_revokes_it() {
    let site = Site::start().await;
    let path = site.user.home.path().join(".config/kelp/login.toml");
    let stored = std::fs::read_to_string(&path).unwrap();
    assert!(stored.contains(&site.server.base), "{stored}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = stored
        .lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    // A token of its own, listed among the user's tokens.
    let tokens: Value = site
        .http
        .get(format!("{}/api/tokens", site.server.base))
        .bearer_auth(&site.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        tokens["items"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("kelp CLI"),
        "{tokens}"
    );

    // Users through the API, now that there is a server.
    let made = site
        .user
        .run_with(&["user", "add", "bob"], &[], "bob-password\n");
    assert!(made.success, "{made}");
    let users = site.user.ok(&["user", "list"]);
    assert!(
        users.contains("admin [admin]") && users.contains("bob [user]"),
        "{users}"
    );

    // A wrong password says so and keeps the stored login.
    let wrong = site.user.run_with(
        &["login", &site.server.base, "--user", "admin"],
        &[],
        "nope-nope-nope\n",
    );
    assert!(!wrong.success);
    assert!(wrong.stderr.contains("signing in to"), "{wrong}");
    assert!(path.exists());

    let out = site.user.ok(&["logout"]);
    assert!(out.contains("signed out"), "{out}");
    assert!(!path.exists());
    let revoked = site
        .http
        .get(format!("{}/api/me", site.server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401);
    let out = site.user.run(&["tool", "list"]);
    assert!(out.stderr.contains("no Kelp server configured"), "{out}");
}
