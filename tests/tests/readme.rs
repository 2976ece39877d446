//! The README's "Try it" section, run as a new user pastes it: every `sh` block in order in
//! one shell (the Try-it block at once, while the server is still starting), the Python
//! example with the real `openai` client, the CLI and plugin blocks, and the piped `kelp chat`
//! the README describes — on a fresh data directory and a home directory of its own.
//!
//! Only what cannot run here is replaced: `scripts/serve.sh` (a release build) starts the
//! `kelp` this suite built, `scripts/stand-in.sh` is the same stand-in model served in
//! process, the ports are free ones instead of 7777 and 8000, and `/tmp` is a temporary
//! directory. Every other line runs as written.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kelp_tests::process::free_port;
use kelp_tests::vendor::{Flavor, stand_in};

const KELP: &str = env!("CARGO_BIN_EXE_kelp");

/// The fenced blocks of `text` in order: (language, body).
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        // A fence may be indented (a block inside a numbered step); its lines are by as much.
        let indent = line.len() - line.trim_start().len();
        if let Some(lang) = line.trim_start().strip_prefix("```")
            && !lang.is_empty()
        {
            let mut body = String::new();
            for line in lines.by_ref() {
                if line.trim_start().starts_with("```") {
                    break;
                }
                let cut = line.len() - line.trim_start().len();
                body.push_str(&line[cut.min(indent)..]);
                body.push('\n');
            }
            out.push((lang.trim().to_owned(), body));
        }
    }
    out
}

/// Kills the shell's whole process group (the server and anything else it left running in
/// the background) when the test ends, passing or not.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        // `--`: without it procps' kill reads `-PGID` as an option, not as a group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .status();
    }
}

/// Runs one shell block of the README as the new user (the same home, `kelp` on the PATH, the
/// server's address); its standard output, after it succeeded.
fn run_block(body: &str, work: &Path, bin: &Path, home: &Path, env: &[(&str, &str)]) -> String {
    let mut shell = Command::new("bash");
    shell
        .arg("-ec")
        .arg(body)
        .current_dir(work)
        .env("HOME", home)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .envs(env.iter().copied());
    for (key, _) in std::env::vars() {
        if key.starts_with("KELP_") || key.starts_with("XDG_") {
            shell.env_remove(key);
        }
    }
    let out = shell.output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{body}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// "Talk to your agent on Telegram", step by step as written, against a fake Bot API (the one
/// thing replaced: the plugin's `api_base`, with the grant a loopback address needs). The
/// user's messages are the fake's updates; the pairing code is the one the bot sent.
async fn telegram_steps(section: &str, work: &Path, bin: &Path, home: &Path, kelp_addr: &str) {
    use kelp_tests::telegram::FakeTelegram;
    const TOKEN: &str = "123456789:AAreadme-token";
    let fake = FakeTelegram::start(TOKEN).await;
    let blocks: Vec<String> = blocks(section)
        .into_iter()
        .map(|(lang, body)| {
            assert_eq!(
                lang, "sh",
                "a {lang} block in the Telegram section: run it here too"
            );
            body
        })
        .collect();
    let [add, pair] = &blocks[..] else {
        panic!("the Telegram section has two blocks: add, then status and approve")
    };
    let url = format!("http://{kelp_addr}");
    let env = [("KELP_URL", url.as_str()), ("TELEGRAM_BOT_TOKEN", TOKEN)];
    let add = add.replace(
        "kelp channel add telegram --agent helper",
        &format!(
            "kelp channel add telegram --agent helper --instance-config '{{\"api_base\": \"{}\"}}' \
             --grant http-private:{}",
            fake.api_base(),
            fake.addr()
        ),
    );
    let added = tokio::task::block_in_place(|| run_block(&add, work, bin, home, &env));
    let id = added
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no channel id in `{added}`"))
        .to_owned();
    // "Write to your bot": a stranger gets a pairing code.
    fake.push_private_text(4242, "hello bot");
    kelp_tests::agent::eventually("the pairing code", || async {
        !fake.texts_in(4242).is_empty()
    })
    .await;
    let note = fake.texts_in(4242).remove(0);
    let code = note
        .split_whitespace()
        .last()
        .unwrap()
        .trim_end_matches('.')
        .to_owned();
    let pair = pair
        .replace(
            "kelp channel status ID",
            &format!("kelp channel status {id}"),
        )
        .replace("CODE", &code);
    let shown = tokio::task::block_in_place(|| run_block(&pair, work, bin, home, &env));
    assert!(shown.contains(&format!("(code {code})")), "{shown}");
    assert!(shown.contains("approved chat 4242"), "{shown}");
    // From then on the agent (the stand-in model, which calls calc) answers that chat.
    fake.push_private_text(4242, "What is 6*7?");
    kelp_tests::agent::eventually("the agent's answer on Telegram", || async {
        fake.texts_in(4242).iter().any(|t| t.contains("42"))
    })
    .await;
}

/// A Python with the `openai` client, in a virtualenv kept between runs; `None` when the
/// machine has no Python 3.
fn python_with_openai() -> Option<String> {
    Command::new("python3").arg("--version").output().ok()?;
    let home = std::env::var("HOME").expect("HOME");
    let venv = Path::new(&home).join(".cache/kelp-readme-python");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "openai==2.*"])
            .status()
            .unwrap();
        assert!(installed.success(), "pip install openai failed");
    }
    Some(python.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_works_as_pasted() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let start = readme.find("## Try it").expect("a Try it section");
    let telegram_at = readme
        .find("## Talk to your agent on Telegram")
        .expect("a Telegram section");
    let end = readme.find("## Layout").expect("a Layout section");
    let section = &readme[start..telegram_at];
    let telegram_section = &readme[telegram_at..end];

    let (kelp_port, model_port) = (free_port(), free_port());
    let kelp_addr = format!("127.0.0.1:{kelp_port}");
    let model_addr = format!("127.0.0.1:{model_port}");
    let stand_in = stand_in::start(Flavor::OpenAi, &model_addr).await;

    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let data = work.path().join("data");
    let tmp = work.path().join("tmp");
    let bin = work.path().join("bin");
    let scripts = work.path().join("scripts");
    for dir in [&home, &tmp, &bin, &scripts] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::os::unix::fs::symlink(KELP, bin.join("kelp")).unwrap();
    // The server takes a moment to start, as after serve.sh's build: the block must wait.
    std::fs::write(
        scripts.join("serve.sh"),
        format!(
            "sleep 1\nexec env KELP_BIND={kelp_addr} {KELP} serve --data-dir {}\n",
            data.display()
        ),
    )
    .unwrap();
    // The stand-in is already serving (in this process).
    std::fs::write(scripts.join("stand-in.sh"), "exit 0\n").unwrap();
    let plugin_target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-plugin-new");

    let mut script = String::from("set -x\n");
    let mut python = None;
    for (lang, body) in blocks(section) {
        let body = body
            .replace("127.0.0.1:7777", &kelp_addr)
            .replace("127.0.0.1:8000", &model_addr)
            .replace("cd /tmp ", &format!("cd {} ", tmp.display()));
        match lang.as_str() {
            "sh" if body.contains("kelp chat --agent helper") => {
                // The block for OpenAI itself (a real key, an interactive chat); the piped
                // chat the README describes under it is run below instead.
            }
            "sh" => script.push_str(&body),
            "python" => python = Some(body),
            other => panic!("a {other} block in Try it: run it here too"),
        }
    }
    // Under the chat block: piped, stdout carries only the answer.
    let chat_out = work.path().join("chat.out");
    script.push_str(&format!(
        "echo 'What is 6*7?' | kelp chat --agent helper > {0}\necho \"chat: $(cat {0})\"\n",
        chat_out.display()
    ));
    let python = python.expect("the Python example");

    let mut shell = Command::new("bash");
    shell
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("HOME", &home)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("KELP_URL", format!("http://{kelp_addr}"))
        .env("CARGO_TARGET_DIR", &plugin_target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::piped())
        // Files, not pipes: the server the block starts in the background keeps its copy of
        // them open after the shell is done.
        .stdout(std::fs::File::create(work.path().join("shell.out")).unwrap())
        .stderr(std::fs::File::create(work.path().join("shell.err")).unwrap());
    for (key, _) in std::env::vars() {
        if key.starts_with("KELP_") && key != "KELP_URL" || key.starts_with("XDG_") {
            shell.env_remove(key);
        }
    }
    std::os::unix::process::CommandExt::process_group(&mut shell, 0);
    let mut child = shell.spawn().expect("bash");
    let group = Group(child.id());
    // `kelp login` asks for the password; a piped one is read from stdin.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"change-me-now\n")
        .unwrap();
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let stdout = std::fs::read_to_string(work.path().join("shell.out")).unwrap();
    let stderr = std::fs::read_to_string(work.path().join("shell.err")).unwrap();
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    for (what, expected) in [
        ("the health check the block waits for", "\"status\":\"ok\""),
        ("setup", "\"role\":\"admin\""),
        ("the calc tool: 2 * (3 + 4) ^ 2", "98"),
        ("the streamed ask", "7006652"),
        ("kelp tool list", "calc/calc"),
        ("kelp tool call calc: sqrt(2) * 10", "14.14"),
        ("the written plugin, built and installed", "Ada"),
        ("piped chat", "chat: The calc tool says: 42."),
    ] {
        assert!(
            stdout.contains(expected),
            "{what}: no `{expected}` in the output\n{all}"
        );
    }
    let chat = std::fs::read_to_string(&chat_out).unwrap();
    assert_eq!(
        chat.trim(),
        "The calc tool says: 42.",
        "piped, stdout holds only the answer\n{all}"
    );
    telegram_steps(telegram_section, work.path(), &bin, &home, &kelp_addr).await;
    // The Python example, with the token the block exported.
    let Some(python_bin) = python_with_openai() else {
        // The suite's only requirement is the Rust toolchain; without Python the example
        // cannot run at all, and that is said rather than passed over in silence.
        eprintln!("NOT RUN: the README's Python example (this machine has no python3)");
        return;
    };
    let login = reqwest::Client::new()
        .post(format!("http://{kelp_addr}/api/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": "change-me-now"}))
        .send()
        .await
        .unwrap();
    let login: serde_json::Value = login.json().await.unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let example = python.replace("127.0.0.1:7777", &kelp_addr);
    let mut py = Command::new(python_bin)
        .arg("-")
        .env("TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin
        .take()
        .unwrap()
        .write_all(example.as_bytes())
        .unwrap();
    let out = tokio::task::spawn_blocking(move || py.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("42"),
        "the Python example: {printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(stand_in);
    // The server the block started in the background goes with the shell's group.
    drop(group);
    let mut gone = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(&kelp_addr).is_err() {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gone, "the README's server outlived the test");
}
