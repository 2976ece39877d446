//! What the CLI asks of the person at the terminal: secrets, names, yes or no. Piped standard
//! input answers too, so scripts can pass a password or a key without a terminal.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// A secret (password, API key) from standard input. On a terminal: one line, asked with
/// `prompt` on stderr and not echoed. Piped: everything up to end of input, less the final
/// line end, so `printf %s "$KEY" |` and `echo "$KEY" |` both work.
pub fn read_secret(prompt: &str) -> Result<String> {
    let value = if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        let echo_off = set_echo(false);
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line);
        if echo_off {
            set_echo(true);
            // The newline the user typed was not echoed either.
            eprintln!();
        }
        read.context("reading standard input")?;
        line
    } else {
        let mut all = String::new();
        std::io::stdin()
            .read_to_string(&mut all)
            .context("reading standard input")?;
        all
    };
    Ok(value.trim_end_matches(['\n', '\r']).to_owned())
}

/// Turns the terminal's echo off or on with `stty`, which every Unix has; whether it worked.
/// Without it the secret is echoed, as `read` without `-s` would.
fn set_echo(on: bool) -> bool {
    Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(Stdio::inherit())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One line typed at the terminal, asked with `prompt`; without a terminal, fails naming
/// `flag`, the option that gives it instead.
pub fn ask_line(prompt: &str, flag: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("{flag} is needed when standard input is not a terminal");
    }
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// Asks `question` on the terminal; without one, fails naming the flag that answers it.
pub fn confirm(question: &str, flag: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("approval needed: pass {flag}");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
