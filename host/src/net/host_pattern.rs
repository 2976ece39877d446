//! Host patterns as written in grants and secret bindings.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::address::canonical_ip;

/// Which hosts (and optionally which port) a grant or a secret binding applies to.
///
/// Accepted forms: `api.x.com`, `*.x.com` (subdomains only, not `x.com` itself),
/// `api.x.com:8443`, `127.0.0.1:11434`, `[::1]:8080`, `::1`, and `*` (any host).
/// Without a port the pattern matches every port (a secret binding narrows that to the
/// default port, see [`crate::net::BoundSecret`]). Hostnames compare case-insensitively and
/// a trailing dot is ignored, so `API.X.com.` and `api.x.com` are the same host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    /// Stored lowercase, without trailing dot.
    Exact(String),
    /// The suffix after `*.`, lowercase, without trailing dot.
    Subdomains(String),
    Ip(IpAddr),
}

/// Why a host pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern '{pattern}': {reason}")]
pub struct HostPatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl HostPattern {
    /// Whether `host` (a hostname, an IPv4 literal, or an IPv6 literal with or without brackets)
    /// on `port` is covered by this pattern.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if let Ok(ip) = literal.unwrap_or(host).parse::<IpAddr>() {
            // IPv4-mapped IPv6 is the same machine as the IPv4 address: compare canonically.
            return match &self.host {
                HostMatch::Any => true,
                HostMatch::Ip(granted) => canonical_ip(*granted) == canonical_ip(ip),
                HostMatch::Exact(_) | HostMatch::Subdomains(_) => false,
            };
        }
        let host = normalise_name(host);
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(name) => host == *name,
            HostMatch::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            HostMatch::Ip(_) => false,
        }
    }

    /// The port this pattern is limited to, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// What of `approved` a manifest that requested `self` may use: `approved` — limited to
    /// the requested port when only the request names one (a stored approval `api.x.com`
    /// against a request resolved from `https://api.x.com` is `api.x.com:443`) — if `self`
    /// covers that, else nothing.
    pub fn restrict(&self, approved: &HostPattern) -> Option<HostPattern> {
        let narrowed = HostPattern {
            host: approved.host.clone(),
            port: approved.port.or(self.port),
        };
        self.covers(&narrowed).then_some(narrowed)
    }

    /// Whether every host this pattern matches is also matched by `self` — used to keep
    /// only the operator approvals that a manifest actually requested.
    pub fn covers(&self, other: &HostPattern) -> bool {
        if let Some(port) = self.port
            && other.port != Some(port)
        {
            return false;
        }
        match (&self.host, &other.host) {
            (HostMatch::Any, _) => true,
            (_, HostMatch::Any) => false,
            (HostMatch::Exact(a), HostMatch::Exact(b)) => a == b,
            (HostMatch::Ip(a), HostMatch::Ip(b)) => canonical_ip(*a) == canonical_ip(*b),
            (HostMatch::Subdomains(suffix), HostMatch::Exact(name)) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            (HostMatch::Subdomains(a), HostMatch::Subdomains(b)) => {
                a == b
                    || b.strip_suffix(a.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            _ => false,
        }
    }
}

fn normalise_name(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl FromStr for HostPattern {
    type Err = HostPatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        let err = |reason| HostPatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        let trimmed = pattern.trim();
        if trimmed.is_empty() {
            return Err(err("it is empty"));
        }
        if trimmed.contains("://") || trimmed.contains('/') {
            return Err(err(
                "write only the host (and optional port), without scheme or path",
            ));
        }
        // A bare IPv6 literal has colons but no port; accept it before splitting off a port.
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(HostPattern {
                host: HostMatch::Ip(ip),
                port: None,
            });
        }
        let (host, port) = if let Some(rest) = trimmed.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| err("unclosed '[' in IPv6 literal"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected ':port' after ']'"))?,
                ),
            };
            let ip = inside
                .parse::<IpAddr>()
                .map_err(|_| err("not an IPv6 address inside '[…]'"))?;
            (HostMatch::Ip(ip), port)
        } else {
            let (host, port) = match trimmed.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (trimmed, None),
            };
            let host = if host == "*" {
                HostMatch::Any
            } else if let Ok(ip) = host.parse::<IpAddr>() {
                HostMatch::Ip(ip)
            } else if let Some(suffix) = host.strip_prefix("*.") {
                let suffix = normalise_name(suffix);
                if !valid_hostname(&suffix) {
                    return Err(err("not a valid domain after '*.'"));
                }
                HostMatch::Subdomains(suffix)
            } else {
                if host.contains('*') {
                    return Err(err(
                        "'*' is allowed only alone or as the whole first label ('*.x.com')",
                    ));
                }
                let name = normalise_name(host);
                if !valid_hostname(&name) {
                    return Err(err("not a valid hostname"));
                }
                HostMatch::Exact(name)
            };
            (host, port)
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err("port must be a number from 1 to 65535"))?,
            ),
        };
        Ok(HostPattern { host, port })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Any => f.write_str("*")?,
            HostMatch::Exact(name) => f.write_str(name)?,
            HostMatch::Subdomains(suffix) => write!(f, "*.{suffix}")?,
            HostMatch::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostMatch::Ip(IpAddr::V6(ip)) if self.port.is_some() => write!(f, "[{ip}]")?,
            HostMatch::Ip(IpAddr::V6(ip)) => write!(f, "{ip}")?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn exact_host_matches_any_port_case_insensitively() {
        let pat = p("api.x.com");
        assert!(pat.matches("api.x.com", 443));
        assert!(pat.matches("API.X.com.", 8080));
        assert!(!pat.matches("x.com", 443));
        assert!(!pat.matches("api.x.com.evil.com", 443));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let pat = p("*.x.com");
        assert!(pat.matches("a.x.com", 443));
        assert!(pat.matches("a.b.x.com", 443));
        assert!(!pat.matches("x.com", 443));
        assert!(!pat.matches("evilx.com", 443));
    }

    #[test]
    fn ports_and_ip_literals() {
        assert!(p("api.x.com:8443").matches("api.x.com", 8443));
        assert!(!p("api.x.com:8443").matches("api.x.com", 443));
        assert!(p("127.0.0.1:11434").matches("127.0.0.1", 11434));
        assert!(p("127.0.0.1:11434").matches("[::ffff:127.0.0.1]", 11434));
        assert!(p("[::1]:8080").matches("[::1]", 8080));
        assert!(p("::1").matches("::1", 1));
        assert!(!p("127.0.0.1").matches("localhost", 80));
        assert!(p("*").matches("anything.example", 1));
        assert!(p("*").matches("10.0.0.1", 1));
        assert!(!p("*.x.com").matches("10.0.0.1", 1));
    }

    #[test]
    fn restrict_narrows_an_approval_to_the_requested_port() {
        assert_eq!(
            p("api.x.com:443").restrict(&p("api.x.com")),
            Some(p("api.x.com:443"))
        );
        assert_eq!(
            p("api.x.com").restrict(&p("api.x.com:8443")),
            Some(p("api.x.com:8443"))
        );
        assert_eq!(p("api.x.com:443").restrict(&p("api.x.com:8443")), None);
        assert_eq!(p("*").restrict(&p("a.x.com")), Some(p("a.x.com")));
        assert_eq!(p("a.x.com").restrict(&p("b.x.com")), None);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "api.x.com",
            "*.x.com",
            "api.x.com:8443",
            "[::1]:8080",
            "*",
            "::1",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn refuses_malformed_patterns() {
        for s in [
            "",
            "https://api.x.com",
            "api.x.com/v1",
            "a*.x.com",
            "api.x.com:0",
            "api.x.com:99999",
            "[::1",
            "-bad.com",
        ] {
            let e = s.parse::<HostPattern>().unwrap_err();
            assert!(e.to_string().contains("invalid host pattern"), "{s}: {e}");
        }
    }
}
