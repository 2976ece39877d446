//! What the server determines about a request before any route sees it: who the client is
//! (the TCP peer, or the address a trusted reverse proxy reports).

use std::net::IpAddr;

use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::HeaderName;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};

/// `[http]` settings of `kelp serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// The header a trusted reverse proxy puts the client's address in (`x-forwarded-for`,
    /// whose last entry is taken, or `x-real-ip`). Unset: the TCP peer is the client.
    pub client_address_header: Option<String>,
    /// Peers (addresses or `address/prefix` networks) whose `client_address_header` is
    /// believed.
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            client_address_header: None,
            trusted_proxies: vec!["127.0.0.1".into(), "::1".into()],
        }
    }
}

/// [`HttpSettings`], checked and parsed once at start.
#[derive(Debug)]
pub struct HttpPolicy {
    client_address_header: Option<HeaderName>,
    trusted_proxies: Vec<(IpAddr, u8)>,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy::new(&HttpSettings::default()).expect("the defaults are valid")
    }
}

impl HttpPolicy {
    pub fn new(settings: &HttpSettings) -> Result<HttpPolicy> {
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
        Ok(HttpPolicy {
            client_address_header,
            trusted_proxies,
        })
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
        ClientInfo {
            address: canonical(reported.unwrap_or(peer)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(header: Option<&str>, trusted: &[&str]) -> HttpPolicy {
        HttpPolicy::new(&HttpSettings {
            client_address_header: header.map(str::to_owned),
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn a_proxy_header_is_believed_only_from_a_trusted_peer() {
        let request = |xff: &str| {
            axum::http::Request::builder()
                .header("x-forwarded-for", xff)
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
        let seen = p.client(&request("203.0.113.7"), stranger);
        assert_eq!(seen.address, stranger);
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
