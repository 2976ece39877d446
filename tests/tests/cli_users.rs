//! `kelp user add` as an operator runs it before the server's first start: the real binary,
//! the password on standard input, then a server on the same data directory.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use kelp::api::AppState;
use kelp::plugins::{PluginRuntime, RuntimeSettings};
use kelp::store::Db;
use kelp_tests::process::CliUser;
use serde_json::{Value, json};

/// `kelp user add ARGS` by a user with no server configured, on `data_dir`.
fn user_add(data_dir: &Path, args: &[&str], password: &str) -> Output {
    let user = CliUser::new(env!("CARGO_BIN_EXE_kelp"));
    let mut child = user
        .command(&["user", "add"], &[])
        .args(args)
        .env("KELP_DATA_DIR", data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kelp");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_makes_the_first_admin_and_closes_setup() {
    let parent = tempfile::tempdir().unwrap();
    // Before the first start the data directory may not exist yet: made, and said so.
    let data = parent.path().join("kelp");
    let data = data.as_path();

    let out = user_add(data, &["root", "--admin"], "root-password\n");
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("created admin root"));
    assert!(
        text(&out.stderr).contains(&format!("created the data directory {}", data.display())),
        "{}",
        text(&out.stderr)
    );

    let again = user_add(data, &["root"], "other-password\n");
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("username `root` is taken"),
        "{}",
        text(&again.stderr)
    );
    let short = user_add(data, &["shorty"], "short\n");
    assert!(!short.status.success());
    assert!(text(&short.stderr).contains("password must be"));
    let bad = user_add(data, &["Not Valid"], "long-enough-password\n");
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("username must be"));

    let plain = user_add(data, &["bob", "--display-name", "Bob B."], "bob-password");
    assert!(plain.status.success(), "{}", text(&plain.stderr));

    // A server on the same data directory: setup is closed, and the password (without its
    // trailing newline) signs in.
    let db = Db::open_sqlite_in(data).await.unwrap();
    let runtime = PluginRuntime::new(RuntimeSettings::default(), data, db).unwrap();
    let state = AppState::new(runtime);
    let (root, _) = state
        .db()
        .user_with_password("root")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((root.role.as_str(), root.active), ("admin", true));
    let (bob, _) = state.db().user_with_password("bob").await.unwrap().unwrap();
    assert_eq!(
        (bob.role.as_str(), bob.display_name.as_str()),
        ("user", "Bob B.")
    );
    assert!(
        state
            .db()
            .user_with_password("shorty")
            .await
            .unwrap()
            .is_none()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kelp::api::serve_on(listener, state, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();

    let setup = post(
        "/api/auth/setup",
        json!({"username": "late", "password": "late-password"}),
    )
    .await
    .unwrap();
    assert_eq!(setup.status(), reqwest::StatusCode::CONFLICT);
    let login = post(
        "/api/auth/login",
        json!({"username": "root", "password": "root-password"}),
    )
    .await
    .unwrap();
    assert_eq!(login.status(), reqwest::StatusCode::OK);
    let grant: Value = login.json().await.unwrap();
    assert_eq!(grant["user"]["role"], "admin");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
