//! What the server checks about a request before any route sees it: the name the client
//! addressed (`Host`, against DNS rebinding) and who the client is (the TCP peer, or the
//! address a trusted reverse proxy reports).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};

/// `[http]` settings of `kelp serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Host names clients use to reach this server besides IP addresses and `localhost`,
    /// e.g. the public name behind a reverse proxy. A request naming any other host in
    /// `Host` is refused (421), which stops DNS rebinding; `"*"` accepts any name.
    pub public_hosts: Vec<String>,
    /// The header a trusted reverse proxy puts the client's address in (`x-forwarded-for`,
    /// whose last entry is taken, or `x-real-ip`). Unset: the TCP peer is the client.
    pub client_address_header: Option<String>,
    /// Peers (addresses or `address/prefix` networks) whose `client_address_header` and
    /// `x-forwarded-proto` are believed.
    pub trusted_proxies: Vec<String>,
    /// Event streams (SSE, streamed `/v1/chat/completions`, WebSockets) one user may hold
    /// open on this host.
    pub max_streams_per_user: usize,
    /// Seconds between checks that an open stream's credential is still valid: how soon a
    /// stream notices a logout, revocation or deactivation made on another host.
    pub stream_recheck_s: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            public_hosts: Vec::new(),
            client_address_header: None,
            trusted_proxies: vec!["127.0.0.1".into(), "::1".into()],
            max_streams_per_user: 16,
            stream_recheck_s: 10,
        }
    }
}

/// [`HttpSettings`], checked and parsed once at start.
#[derive(Debug)]
pub struct HttpPolicy {
    public_hosts: Vec<String>,
    any_host: bool,
    client_address_header: Option<HeaderName>,
    trusted_proxies: Vec<(IpAddr, u8)>,
    pub max_streams_per_user: usize,
    pub stream_recheck: Duration,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy::new(&HttpSettings::default()).expect("the defaults are valid")
    }
}

impl HttpPolicy {
    pub fn new(settings: &HttpSettings) -> Result<HttpPolicy> {
        let mut public_hosts = Vec::new();
        let mut any_host = false;
        for name in &settings.public_hosts {
            let name = name.trim().to_ascii_lowercase();
            if name == "*" {
                any_host = true;
                continue;
            }
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
            if !valid {
                bail!(
                    "http.public_hosts: `{name}` is not a host name (list names without scheme or port)"
                );
            }
            public_hosts.push(name);
        }
        let client_address_header = settings
            .client_address_header
            .as_deref()
            .map(|h| HeaderName::try_from(h.trim()))
            .transpose()
            .context("http.client_address_header is not a header name")?;
        let trusted_proxies = settings
            .trusted_proxies
            .iter()
            .map(|p| parse_network(p).with_context(|| format!("http.trusted_proxies: `{p}`")))
            .collect::<Result<_>>()?;
        if settings.max_streams_per_user == 0 {
            bail!("http.max_streams_per_user must be at least 1");
        }
        if settings.stream_recheck_s == 0 {
            bail!("http.stream_recheck_s must be at least 1");
        }
        Ok(HttpPolicy {
            public_hosts,
            any_host,
            client_address_header,
            trusted_proxies,
            max_streams_per_user: settings.max_streams_per_user,
            stream_recheck: Duration::from_secs(settings.stream_recheck_s),
        })
    }

    /// Whether `host` (a `Host` value: name or address, optional port) names this server.
    /// DNS rebinding works through a name the attacker controls, so IP addresses and
    /// `localhost` (which no DNS answer can redirect) pass on any port — a port other than
    /// the bound one means port forwarding (a container), not an attack — and other names
    /// pass only when configured.
    fn allows_host(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        self.any_host
            || name == "localhost"
            || name.parse::<IpAddr>().is_ok()
            || self.public_hosts.contains(&name)
    }

    /// Whether a browser's `Origin` is this server's own: the host the request was sent to
    /// (`Host`), or one of the public names (a proxy may rewrite `Host`).
    pub fn is_own_origin(&self, origin: &str, host: Option<&str>) -> bool {
        let Some(authority) = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
        else {
            return false;
        };
        if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
            return true;
        }
        host_name(authority).is_some_and(|name| self.public_hosts.contains(&name))
    }

    fn trusts(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.trusted_proxies
            .iter()
            .any(|(net, prefix)| in_network(peer, *net, *prefix))
    }

    /// Who sent `parts`: the address the trusted proxy reports, else the TCP peer.
    fn client(&self, parts: &Parts, peer: IpAddr) -> ClientInfo {
        let trusted = self.trusts(peer);
        let reported = self
            .client_address_header
            .as_ref()
            .filter(|_| trusted)
            .and_then(|name| {
                // A proxy appends the address it saw; earlier entries are the client's own
                // claims.
                let last = parts.headers.get_all(name).iter().next_back()?;
                let last = last.to_str().ok()?.rsplit(',').next()?.trim();
                last.parse::<IpAddr>().ok()
            });
        let https = trusted
            && parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        ClientInfo {
            address: canonical(reported.unwrap_or(peer)),
            https,
        }
    }
}

/// The lower-case name (or address, IPv6 without brackets) of a `Host` value, or `None` if
/// it is not one.
fn host_name(host: &str) -> Option<String> {
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let name = authority.host();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    Some(name.to_ascii_lowercase())
}

fn parse_network(text: &str) -> Result<(IpAddr, u8)> {
    let (address, prefix) = match text.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text.trim(), None),
    };
    let address: IpAddr = address.parse().context("not an IP address")?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= bits),
        None => Some(bits),
    }
    .context("not a prefix length")?;
    Ok((canonical(address), prefix))
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The client of a request, as [`client_info`] determined it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// For rate limiting: the TCP peer, or what a trusted proxy reported.
    pub address: IpAddr,
    /// A trusted proxy said the client used HTTPS, so cookies get `Secure`.
    pub https: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClientInfo>()
            .copied()
            .ok_or_else(|| ApiError::internal("the client-address layer is missing"))
    }
}

/// Records who the client is for the handlers. It runs first, from the connection's own
/// peer address, so nothing a client sends decides it unless it came through a trusted
/// proxy.
pub async fn client_info(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let client = state.http.client(&parts, peer.ip());
    parts.extensions.insert(client);
    next.run(Request::from_parts(parts, body)).await
}

/// Refuses a request whose `Host` (or HTTP/2 `:authority`) is not a name of this server.
/// Without it a web page could point a name it controls at 127.0.0.1 and talk to a
/// loopback-bound Kelp as a same-origin page: set up the first admin, guess passwords,
/// read `/metrics`.
pub async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        Some(host) if state.http.allows_host(&host) => next.run(request).await,
        host => {
            let message = match host {
                Some(host) => format!(
                    "this server does not answer to the host `{}`; its operator can add the name to http.public_hosts",
                    host.chars().take(100).collect::<String>()
                ),
                None => "the request names no host".to_owned(),
            };
            ApiError::new(StatusCode::MISDIRECTED_REQUEST, "unknown_host", message).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(header: Option<&str>, trusted: &[&str]) -> HttpPolicy {
        HttpPolicy::new(&HttpSettings {
            public_hosts: vec!["Kelp.Example.com".into()],
            client_address_header: header.map(str::to_owned),
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
            ..HttpSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn hosts_are_addresses_localhost_or_listed_names() {
        let p = policy(None, &[]);
        for ok in [
            "localhost:7777",
            "LOCALHOST",
            "127.0.0.1:7777",
            "[::1]:7777",
            "10.1.2.3",
            "kelp.example.com",
            "kelp.example.com:8443",
        ] {
            assert!(p.allows_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7777",
            "localhost.evil.example",
            "127.0.0.1.nip.io:7777",
            "user@localhost",
            "",
            "kelp.example.com.evil.example",
        ] {
            assert!(!p.allows_host(bad), "{bad}");
        }
        let any = HttpSettings {
            public_hosts: vec!["*".into()],
            ..HttpSettings::default()
        };
        assert!(
            HttpPolicy::new(&any)
                .unwrap()
                .allows_host("anything.example")
        );
        for bad in ["https://kelp.example.com", "kelp.example.com:443", ""] {
            let settings = HttpSettings {
                public_hosts: vec![bad.into()],
                ..HttpSettings::default()
            };
            assert!(HttpPolicy::new(&settings).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_the_requested_host_or_a_public_name() {
        let p = policy(None, &[]);
        assert!(p.is_own_origin("http://127.0.0.1:7777", Some("127.0.0.1:7777")));
        assert!(p.is_own_origin("https://kelp.example.com", Some("127.0.0.1:7777")));
        assert!(!p.is_own_origin("http://evil.example", Some("127.0.0.1:7777")));
        assert!(!p.is_own_origin("http://127.0.0.1:7777", Some("evil.example")));
        assert!(!p.is_own_origin("null", Some("127.0.0.1:7777")));
    }

    #[test]
    fn a_proxy_header_is_believed_only_from_a_trusted_peer() {
        let request = |xff: &str| {
            axum::http::Request::builder()
                .header("x-forwarded-for", xff)
                .header("x-forwarded-proto", "https")
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        let p = policy(Some("X-Forwarded-For"), &["10.0.0.0/8"]);
        let seen = p.client(&request("1.1.1.1, 203.0.113.7"), proxy);
        assert_eq!(seen.address, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert!(seen.https);
        let seen = p.client(&request("203.0.113.7"), stranger);
        assert_eq!(seen.address, stranger);
        assert!(!seen.https, "a stranger cannot claim HTTPS");
        // Unparsable claims fall back to the peer.
        assert_eq!(p.client(&request("not-an-ip"), proxy).address, proxy);
        // No header configured: the peer, whatever is sent.
        let p = policy(None, &["10.0.0.0/8"]);
        assert_eq!(p.client(&request("203.0.113.7"), proxy).address, proxy);
        // A v4 peer seen by a dual-stack listener matches v4 networks.
        let p = policy(Some("x-real-ip"), &["127.0.0.1"]);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let parts = axum::http::Request::builder()
            .header("x-real-ip", "203.0.113.8")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(
            p.client(&parts, mapped).address,
            "203.0.113.8".parse::<IpAddr>().unwrap()
        );
    }
}
