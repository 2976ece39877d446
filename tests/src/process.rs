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

fn free_port() -> u16 {
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
