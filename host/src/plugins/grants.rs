//! What a plugin instance may do: the intersection of what its manifest asks for and what the
//! operator approved for that instance. Every host import asks the `GrantSet`.

use kelp_registry::manifest::{Capabilities, Manifest, WorkspaceAccess};
use serde::{Deserialize, Serialize};

use crate::net::{HostPattern, HttpGrant};

/// The operator's approval for one instance, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Approval {
    /// Host patterns approved for outbound HTTP.
    pub http: Vec<ApprovedHost>,
    pub kv: bool,
    pub workspace: WorkspaceAccess,
}

/// One approved host. `private` must be set explicitly for a host that resolves to a loopback,
/// private or link-local address (a local Ollama at 127.0.0.1:11434, a LAN service): that is
/// the one deliberate step that lets a plugin reach inside the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovedHost {
    pub host: String,
    #[serde(default)]
    pub private: bool,
}

impl Approval {
    /// Parses CLI/API approval items: `http:HOST[:PORT]`, `http-private:HOST[:PORT]`, `kv`,
    /// `workspace:read|write`.
    pub fn add_item(&mut self, item: &str) -> anyhow::Result<()> {
        if item == "kv" {
            self.kv = true;
        } else if let Some(host) = item.strip_prefix("http:") {
            host.parse::<HostPattern>()
                .map_err(|e| anyhow::anyhow!("grant `{item}`: {e}"))?;
            self.http.push(ApprovedHost {
                host: host.to_owned(),
                private: false,
            });
        } else if let Some(host) = item.strip_prefix("http-private:") {
            host.parse::<HostPattern>()
                .map_err(|e| anyhow::anyhow!("grant `{item}`: {e}"))?;
            self.http.push(ApprovedHost {
                host: host.to_owned(),
                private: true,
            });
        } else if let Some(mode) = item.strip_prefix("workspace:") {
            self.workspace = match mode {
                "read" => WorkspaceAccess::Read,
                "write" => WorkspaceAccess::Write,
                "none" => WorkspaceAccess::None,
                other => anyhow::bail!(
                    "grant `{item}`: workspace access is read, write or none, not `{other}`"
                ),
            };
        } else {
            anyhow::bail!(
                "unknown grant `{item}`; use http:HOST, http-private:HOST, kv or workspace:read|write"
            );
        }
        Ok(())
    }

    /// Approves everything the manifest asks for (`--yes`), with config references resolved.
    /// Never approves private addresses: those always take an explicit `http-private:` grant.
    pub fn everything_requested(caps: &Capabilities, config: &serde_json::Value) -> Approval {
        Approval {
            http: caps
                .http
                .iter()
                .filter_map(|p| resolve_config_ref(p, config))
                .map(|host| ApprovedHost {
                    host,
                    private: false,
                })
                .collect(),
            kv: caps.kv,
            workspace: caps.workspace,
        }
    }
}

/// What a new version of an installed plugin asks for beyond what the installed version did:
/// the part of an upgrade no operator has reviewed. Instances keep their approvals across an
/// upgrade, so without this a new version could move a secret to another header, parameter or
/// host its approvals happen to cover, or ask for more, and get it unseen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityChanges {
    /// Host patterns the installed version did not request.
    pub http: Vec<String>,
    /// `kv`, newly requested.
    pub kv: bool,
    /// More workspace access than the installed version requested: (before, now).
    pub workspace: Option<(WorkspaceAccess, WorkspaceAccess)>,
    /// Secrets that now go somewhere else, or are new: (name, where before, where now).
    pub secrets: Vec<(String, Option<String>, String)>,
}

impl CapabilityChanges {
    pub fn between(old: &Capabilities, new: &Capabilities) -> CapabilityChanges {
        let placement = super::installed::describe_position;
        CapabilityChanges {
            http: new
                .http
                .iter()
                .filter(|h| !old.http.contains(h))
                .cloned()
                .collect(),
            kv: new.kv && !old.kv,
            workspace: (new.workspace > old.workspace).then_some((old.workspace, new.workspace)),
            // A secret that moved would go where nobody approved. So would a newly declared
            // one: a value stored for that name earlier (an older version declared it) is
            // still there.
            secrets: new
                .secrets
                .iter()
                .filter_map(|now| {
                    // A secret may be bound at several positions: this one is new only if
                    // none of the installed version's positions of the name is the same.
                    let now_at = placement(now);
                    let mut before = old.secrets.iter().filter(|b| b.name == now.name);
                    if before.clone().any(|b| placement(b) == now_at) {
                        return None;
                    }
                    Some((now.name.clone(), before.next().map(placement), now_at))
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == CapabilityChanges::default()
    }

    /// One line per change, for the operator.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.http.iter().map(|h| format!("http:{h}")).collect();
        if self.kv {
            out.push("kv".into());
        }
        if let Some((before, now)) = self.workspace {
            out.push(format!("workspace:{now} (was {before})"));
        }
        for (name, before, now) in &self.secrets {
            out.push(match before {
                Some(before) => format!("secret {name} now goes to the {now} (was the {before})"),
                None => format!("secret {name} (new) goes to the {now}"),
            });
        }
        out
    }

    /// `approval` with the changes approved, for an instance with `config` (defaults filled
    /// in) of a plugin whose installed version asked for `installed`. New hosts are approved
    /// as `--yes` approves them (never as private addresses). New hosts and more workspace
    /// access are approved only where the instance had approved all the installed version
    /// asked of that capability, so an instance an operator narrowed stays narrowed.
    pub fn approve(
        &self,
        mut approval: Approval,
        installed: &Capabilities,
        config: &serde_json::Value,
    ) -> Approval {
        let had_every_host = installed
            .http
            .iter()
            .filter_map(|p| resolve_config_ref(p, config))
            .all(|host| approval.http.iter().any(|a| a.host == host));
        if had_every_host {
            for host in self
                .http
                .iter()
                .filter_map(|p| resolve_config_ref(p, config))
            {
                if !approval.http.iter().any(|a| a.host == host) {
                    approval.http.push(ApprovedHost {
                        host,
                        private: false,
                    });
                }
            }
        }
        approval.kv |= self.kv;
        if let Some((before, now)) = self.workspace
            && approval.workspace >= before
        {
            approval.workspace = approval.workspace.max(now);
        }
        approval
    }
}

/// Refusal of an upgrade whose new capabilities were not approved.
#[derive(Debug, thiserror::Error)]
#[error(
    "{plugin} {version} asks for more than the installed {installed} was approved for: {}. \
     Nothing was changed; {installed} keeps running. To upgrade, approve this for every instance \
     of the plugin: `kelp plugin install --yes`, or `approve=requested` on POST /api/plugins",
    changes.join("; ")
)]
pub struct ApprovalNeeded {
    pub plugin: String,
    pub version: String,
    pub installed: String,
    pub changes: Vec<String>,
}

impl ApprovalNeeded {
    pub fn new(installed: &Manifest, new: &Manifest, changes: &CapabilityChanges) -> Self {
        ApprovalNeeded {
            plugin: new.name.to_string(),
            version: new.version.to_string(),
            installed: installed.version.to_string(),
            changes: changes.describe(),
        }
    }
}

/// Effective capabilities of an instance.
#[derive(Debug, Clone, Default)]
pub struct GrantSet {
    pub http: Vec<HttpGrant>,
    pub kv: bool,
    pub workspace: WorkspaceAccess,
}

impl GrantSet {
    /// Requested ∩ approved. An approved host survives only if a requested pattern covers it;
    /// the narrower (approved) pattern is what gets enforced, limited to the requested port
    /// when only the request names one.
    pub fn intersect(
        caps: &Capabilities,
        approval: &Approval,
        config: &serde_json::Value,
    ) -> GrantSet {
        let requested: Vec<HostPattern> = caps
            .http
            .iter()
            .filter_map(|p| resolve_config_ref(p, config))
            .filter_map(|p| p.parse().ok())
            .collect();
        let http = approval
            .http
            .iter()
            .filter_map(|a| {
                let approved: HostPattern = a.host.parse().ok()?;
                let pattern = requested.iter().find_map(|r| r.restrict(&approved))?;
                Some(HttpGrant {
                    pattern,
                    allow_private: a.private,
                })
            })
            .collect();
        GrantSet {
            http,
            kv: caps.kv && approval.kv,
            workspace: caps.workspace.min(approval.workspace),
        }
    }

    /// Human-readable list, for `plugin info` and denial messages.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .http
            .iter()
            .map(|g| {
                format!(
                    "http:{}{}",
                    g.pattern,
                    if g.allow_private {
                        " (private allowed)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        if self.kv {
            out.push("kv".into());
        }
        if self.workspace != WorkspaceAccess::None {
            out.push(format!("workspace:{}", self.workspace));
        }
        out
    }
}

/// Resolves `{config.KEY}` in a host pattern from the instance config. A URL value yields
/// its `host:port` — the scheme's default port when the URL names none, so that
/// `https://api.x.com` means port 443 and not every port of that host; a missing key yields
/// nothing (the capability is simply not there).
pub fn resolve_config_ref(pattern: &str, config: &serde_json::Value) -> Option<String> {
    let Some(value) = config_ref_value(pattern, config) else {
        return Some(pattern.to_owned()).filter(|_| !is_config_ref(pattern));
    };
    match url::Url::parse(value) {
        Ok(url) => {
            let host = url.host_str()?;
            Some(match url.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            })
        }
        Err(_) => Some(value.to_owned()),
    }
}

/// Whether a secret's host `pattern` is `{config.KEY}` naming an `https://` URL: the scheme
/// is part of the binding then, and the secret never goes out over plain HTTP.
pub fn config_ref_requires_https(pattern: &str, config: &serde_json::Value) -> bool {
    config_ref_value(pattern, config)
        .and_then(|value| url::Url::parse(value).ok())
        .is_some_and(|url| url.scheme() == "https")
}

fn is_config_ref(pattern: &str) -> bool {
    pattern.starts_with("{config.") && pattern.ends_with('}')
}

/// The config value a `{config.KEY}` pattern names, if it is one and the key is set.
pub(crate) fn config_ref_value<'a>(
    pattern: &str,
    config: &'a serde_json::Value,
) -> Option<&'a str> {
    let key = pattern
        .strip_prefix("{config.")
        .and_then(|r| r.strip_suffix('}'))?;
    config.get(key)?.as_str()
}
