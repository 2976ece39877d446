//! `kelp serve` as a separate process, for tests that need a real process (bundled plugins at
//! start, `kill -9`). It runs the `kelp` binary built in this crate (same code as host/).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `kelp serve`; killed when dropped.
pub struct KelpProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for KelpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl KelpProcess {
    /// Starts `kelp serve` on a free loopback port with `data` as its data directory and
    /// `extra` arguments and environment, and waits until it listens.
    pub fn start(kelp: &str, data: &Path, args: &[&str], env: &[(&str, &str)]) -> KelpProcess {
        let port = free_port();
        let mut command = Command::new(kelp);
        command
            .arg("serve")
            .args(args)
            .env("KELP_DATA_DIR", data)
            .env("KELP_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("starting kelp serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .expect("kelp serve exited before serving")
                .unwrap();
            if line.contains("kelp is serving") {
                break;
            }
        }
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        KelpProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SIGKILL: no shutdown, no flush — what a crash or an OOM kill does.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A person at a shell running the `kelp` CLI: a home directory of their own (so what
/// `kelp login` stores, and any data directory a command would create, lands in it and can
/// be checked), and no `KELP_*` variables from the test's environment.
pub struct CliUser {
    pub kelp: String,
    pub home: tempfile::TempDir,
}

/// What a `kelp` command printed and how it ended.
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "success: {}\nstdout:\n{}\nstderr:\n{}",
            self.success, self.stdout, self.stderr
        )
    }
}

impl CliUser {
    pub fn new(kelp: &str) -> CliUser {
        CliUser {
            kelp: kelp.to_owned(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `kelp ARGS` with `env` set, `stdin` piped in, in `cwd` (default: the home directory).
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(&self.kelp);
        command.args(args).current_dir(self.home.path());
        for (key, _) in std::env::vars() {
            if key.starts_with("KELP_") || key.starts_with("XDG_") {
                command.env_remove(key);
            }
        }
        command.env("HOME", self.home.path());
        for (k, v) in env {
            command.env(k, v);
        }
        command
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> CliOutput {
        use std::io::Write;
        let mut child = self
            .command(args, env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kelp");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        CliOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> CliOutput {
        self.run_with(args, &[], "")
    }

    /// `kelp ARGS` that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.success, "kelp {args:?} failed\n{out}");
        out.stdout
    }

    /// `kelp login URL --user NAME` with the password piped in.
    pub fn login(&self, url: &str, user: &str, password: &str) {
        let out = self.run_with(
            &["login", url, "--user", user],
            &[],
            &format!("{password}\n"),
        );
        assert!(out.success, "kelp login failed\n{out}");
    }

    /// The data directory a command would use by default (`~/.local/share/kelp`).
    pub fn default_data_dir(&self) -> std::path::PathBuf {
        self.home.path().join(".local/share/kelp")
    }
}
