//! Flags in a skill's text (`SKILL.md`) that try to make the agent or the user fetch and run
//! code, reach for credentials, open a shell to somewhere else, or hide what they do — what
//! the malicious skills found on other agent registries did (`curl … | bash` in the
//! instructions). A skill's text is untrusted: hosts show these flags before installing it,
//! and the registry shows them on the package.
//!
//! These are heuristics over each line, lowercased, not a sandbox: they catch the forms seen
//! in the wild and say which line and why; a determined author can phrase around them, which
//! is why the text itself is always shown too. Ordinary commands (`git status`, `cargo
//! build`, `curl … | jq`) are not flagged. The corpus in `skill_risk/corpus` measures both
//! error rates (see the test).

use serde::Serialize;

/// One flagged line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Which rule (a short kebab-case name).
    pub rule: &'static str,
    /// What the rule means, for people.
    pub why: &'static str,
    /// The line number, from 1.
    pub line: usize,
    /// The line, trimmed and cut to 200 characters.
    pub excerpt: String,
}

/// Commands that fetch something from the network.
const FETCHERS: &[&str] = &[
    "curl ",
    "wget ",
    "iwr ",
    "invoke-webrequest",
    "invoke-restmethod",
    "irm ",
    "fetch(",
];
/// Interpreters that run what they are given.
const RUNNERS: &[&str] = &[
    "sh",
    "bash",
    "zsh",
    "dash",
    "ksh",
    "python",
    "python3",
    "perl",
    "ruby",
    "node",
    "iex",
    "pwsh",
    "powershell",
    "sudo sh",
    "sudo bash",
    "sudo -e bash",
    "sudo python",
];

fn pipes_into_runner(line: &str) -> bool {
    line.split('|').skip(1).any(|stage| {
        let command = stage.trim_start();
        RUNNERS.iter().any(|runner| {
            command == *runner
                || command.starts_with(&format!("{runner} "))
                || command.starts_with(&format!("{runner}\t"))
                || command.starts_with(&format!("{runner})"))
                || command.starts_with(&format!("{runner}`"))
        })
    })
}

fn fetches(line: &str) -> bool {
    FETCHERS.iter().any(|f| line.contains(f))
}

struct Rule {
    name: &'static str,
    why: &'static str,
    matches: fn(&str) -> bool,
}

const RULES: &[Rule] = &[
    Rule {
        name: "pipe-to-shell",
        why: "downloads code and runs it at once",
        matches: |l| fetches(l) && pipes_into_runner(l),
    },
    Rule {
        name: "run-downloaded",
        why: "runs the output of a download",
        matches: |l| {
            (l.contains("<(curl")
                || l.contains("<(wget")
                || l.contains("$(curl")
                || l.contains("$(wget")
                || l.contains("`curl")
                || l.contains("`wget"))
                && ["sh", "bash", "eval", "source", "python", "."]
                    .iter()
                    .any(|r| {
                        l.contains(&format!("{r} <("))
                            || l.contains(&format!("{r} \"$("))
                            || l.contains(&format!("{r} $("))
                            || l.contains(&format!("{r} -c"))
                    })
        },
    },
    Rule {
        name: "download-then-execute",
        why: "saves a download and then executes it",
        matches: |l| {
            fetches(l)
                && (l.contains(" -o ")
                    || l.contains(" -o")
                    || l.contains(" > ")
                    || l.contains("-outfile"))
                && (l.contains("chmod +x")
                    || l.contains("&& ./")
                    || l.contains("; ./")
                    || l.contains("&& sh ")
                    || l.contains("&& bash ")
                    || l.contains("start-process"))
        },
    },
    Rule {
        name: "decode-and-run",
        why: "decodes hidden text and runs it",
        matches: |l| {
            (l.contains("base64 -d")
                || l.contains("base64 --decode")
                || l.contains("frombase64string")
                || l.contains("b64decode"))
                && (pipes_into_runner(l)
                    || l.contains("exec(")
                    || l.contains("eval(")
                    || l.contains("iex"))
        },
    },
    Rule {
        name: "powershell-remote-code",
        why: "PowerShell fetching and evaluating code",
        matches: |l| {
            (l.contains("downloadstring") || l.contains("downloadfile"))
                || (l.contains("invoke-expression") && fetches(l))
                || (l.contains("iex")
                    && (l.contains("irm ") || l.contains("iwr ") || l.contains("net.webclient")))
        },
    },
    Rule {
        name: "reverse-shell",
        why: "opens a shell to another machine",
        matches: |l| {
            l.contains("/dev/tcp/")
                || l.contains("nc -e")
                || l.contains("ncat -e")
                || l.contains("bash -i >&")
                || l.contains("mkfifo /tmp/")
        },
    },
    Rule {
        name: "credential-access",
        why: "reads or sends credentials or secrets",
        matches: |l| {
            l.contains("~/.ssh/id_")
                || l.contains(".ssh/id_rsa")
                || l.contains(".aws/credentials")
                || l.contains("/etc/shadow")
                || l.contains(".netrc")
                || l.contains("keychain dump")
                || ((l.contains("printenv") || l.contains("env |") || l.contains("$env:"))
                    && fetches(l))
                || (l.contains("api key")
                    && (l.contains("send") || l.contains("post"))
                    && l.contains("http"))
        },
    },
    Rule {
        name: "hide-from-user",
        why: "tells the agent to override its instructions or hide actions from the user",
        matches: |l| {
            l.contains("ignore all previous instructions")
                || l.contains("ignore previous instructions")
                || l.contains("ignore the above instructions")
                || l.contains("ignore your instructions")
                || l.contains("do not tell the user")
                || l.contains("don't tell the user")
                || l.contains("without telling the user")
                || l.contains("without asking the user")
                || l.contains("never mention this")
                || l.contains("silently run")
        },
    },
];

/// Flags a parsed skill: its description (line 0) and its instructions (lines counted from
/// the first line of the body).
pub fn flag_parsed(skill: &crate::package::Skill) -> Vec<Flag> {
    let mut flags: Vec<Flag> = flag_skill(&skill.description)
        .into_iter()
        .map(|flag| Flag { line: 0, ..flag })
        .collect();
    flags.extend(flag_skill(&skill.body));
    flags
}

/// Flags `text` (a whole `SKILL.md`, front matter and body), line by line.
pub fn flag_skill(text: &str) -> Vec<Flag> {
    let mut flags = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lower = line.to_lowercase();
        for rule in RULES {
            if (rule.matches)(&lower) {
                flags.push(Flag {
                    rule: rule.name,
                    why: rule.why,
                    line: i + 1,
                    excerpt: line.trim().chars().take(200).collect(),
                });
            }
        }
    }
    flags
}

#[cfg(test)]
mod tests;
