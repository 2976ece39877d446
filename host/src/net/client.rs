//! The per-instance client that enforces an [`OutboundPolicy`].

use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Host;

use super::address::{canonical_ip, non_public_kind};
use super::request::{self, ParsedRequest};
use super::resolve::{PinnedAddrs, Resolve};
use super::secrets::{self, Destination, PreparedSecret, Redactor, RequestParts};
use super::{
    HttpGrant, OutboundError, OutboundPolicy, OutboundRequest, OutboundResponse, PolicyError,
    StreamingResponse,
};

/// Sends plugin HTTP requests under one instance's policy. Built once per instance so that
/// connections are pooled across calls.
pub struct OutboundClient {
    grants: Vec<HttpGrant>,
    secrets: Vec<PreparedSecret>,
    max_response_bytes: u64,
    timeout: std::time::Duration,
    resolver: Arc<dyn Resolve>,
    /// Used for requests whose grant does not allow private addresses. Its pin table only ever
    /// holds addresses that passed the public-only check.
    public: PinnedClient,
    /// Used for requests whose grant allows private addresses; present when any grant does.
    ///
    /// Two clients, because reqwest's resolver sees only the hostname, not the port, while
    /// grants can differ by port (`*` public, `box.lan:11434` private). With one shared pin
    /// table a private answer pinned for port 11434 could be picked up by a connect for port
    /// 443; keeping the tables apart means every connect uses addresses checked under the
    /// same rule as its own request.
    private: Option<PinnedClient>,
    redactor: Redactor,
}

struct PinnedClient {
    http: reqwest::Client,
    pins: Arc<PinnedAddrs>,
}

impl PinnedClient {
    fn new(user_agent: &str) -> Result<Self, PolicyError> {
        let pins = Arc::new(PinnedAddrs::default());
        let http = reqwest::Client::builder()
            .dns_resolver(pins.clone())
            // An environment proxy would make the connection go somewhere other than the
            // checked address.
            .no_proxy()
            // Following a redirect would leave the granted host; the guest gets the 3xx.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(user_agent)
            .build()
            .map_err(|e| PolicyError(format!("building the HTTP client failed: {e}")))?;
        Ok(PinnedClient { http, pins })
    }
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("grants", &self.grants)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Where a checked request must connect.
struct Target<'a> {
    client: &'a PinnedClient,
    host: String,
    port: u16,
    /// Every checked address is non-public and a matching grant approved that.
    approved_private: bool,
}

impl OutboundClient {
    /// A client for one plugin instance. Fails if a secret binding or the user agent is unusable.
    pub fn new(policy: OutboundPolicy, resolver: Arc<dyn Resolve>) -> Result<Self, PolicyError> {
        let secrets = secrets::prepare(&policy.secrets)?;
        let public = PinnedClient::new(&policy.user_agent)?;
        let private = if policy.grants.iter().any(|g| g.allow_private) {
            Some(PinnedClient::new(&policy.user_agent)?)
        } else {
            None
        };
        Ok(OutboundClient {
            grants: policy.grants,
            redactor: Redactor::new(&policy.secrets),
            secrets,
            max_response_bytes: policy.max_response_bytes,
            timeout: policy.timeout,
            resolver,
            public,
            private,
        })
    }

    /// The redactor for this instance's secrets, for anything logged about its requests.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Sends `req` and reads the whole body (at most `max_response_bytes`). The policy's
    /// timeout covers DNS, connect and the complete response.
    pub async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        self.send_within(req, self.timeout).await
    }

    /// [`send`](Self::send) for a request the platform holds open on purpose (a long poll
    /// asked to wait `hold`): the policy's timeout counts from the end of that wait.
    pub async fn send_held(
        &self,
        req: OutboundRequest,
        hold: std::time::Duration,
    ) -> Result<OutboundResponse, OutboundError> {
        self.send_within(req, self.timeout + hold).await
    }

    async fn send_within(
        &self,
        req: OutboundRequest,
        timeout: std::time::Duration,
    ) -> Result<OutboundResponse, OutboundError> {
        let work = async {
            let mut response = self.dispatch(req).await?;
            let cap = self.max_response_bytes;
            if response.content_length().is_some_and(|len| len > cap) {
                return Err(OutboundError::TooLarge(cap));
            }
            let status = response.status().as_u16();
            let headers = header_pairs(response.headers());
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.connection_error(e))?
            {
                if body.len() as u64 + chunk.len() as u64 > cap {
                    return Err(OutboundError::TooLarge(cap));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(OutboundResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| OutboundError::Timeout)?
    }

    /// Sends `req` and returns once the response headers arrived (the policy's timeout covers
    /// only that much); the body streams, capped in total at `max_response_bytes`.
    pub async fn send_streaming(
        &self,
        req: OutboundRequest,
    ) -> Result<StreamingResponse, OutboundError> {
        let response = tokio::time::timeout(self.timeout, self.dispatch(req))
            .await
            .map_err(|_| OutboundError::Timeout)??;
        let cap = self.max_response_bytes;
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(OutboundError::TooLarge(cap));
        }
        let status = response.status().as_u16();
        let headers = header_pairs(response.headers());
        let redactor = self.redactor.clone();
        let mut total = 0u64;
        let mut finished = false;
        let body = response
            .bytes_stream()
            .map(move |item| match item {
                Ok(chunk) => {
                    total += chunk.len() as u64;
                    if total > cap {
                        Err(OutboundError::TooLarge(cap))
                    } else {
                        Ok(chunk)
                    }
                }
                Err(e) => Err(connection_error(&redactor, e)),
            })
            // Nothing after the first error: the guest must not see a body past the cap.
            .take_while(move |item| {
                let keep = !finished;
                finished |= item.is_err();
                futures::future::ready(keep)
            })
            .boxed();
        Ok(StreamingResponse {
            status,
            headers,
            body,
        })
    }

    /// Checks, resolves, pins, inserts secrets, and sends; returns once headers arrived.
    async fn dispatch(&self, req: OutboundRequest) -> Result<reqwest::Response, OutboundError> {
        // The check runs on the guest's text, before parsing could normalise anything away.
        secrets::refuse_guest_written_secrets(
            &self.secrets,
            &req.url,
            &req.headers,
            req.body.as_deref(),
        )?;
        let ParsedRequest {
            method,
            mut url,
            mut headers,
            mut body,
        } = request::parse(req)?;
        secrets::refuse_guest_written_secrets(&self.secrets, url.as_str(), &[], None)?;

        let target = self.check_destination(&url).await?;
        let destination = Destination {
            https: url.scheme() == "https",
            host: &target.host,
            port: target.port,
            approved_private: target.approved_private,
        };
        secrets::insert_secrets(
            &self.secrets,
            &destination,
            RequestParts {
                url: &mut url,
                headers: &mut headers,
                body: &mut body,
            },
        )?;
        tracing::debug!(
            method = %method,
            url = %self.redactor.redact(url.as_str()),
            "plugin outbound request"
        );

        let mut header_map = HeaderMap::with_capacity(headers.len());
        for (name, value) in &headers {
            // Both were validated (guest headers in `request::parse`, secret headers when the
            // policy was prepared), so these conversions cannot fail.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                header_map.append(name, value);
            }
        }
        let mut request = reqwest::Request::new(method, url);
        *request.headers_mut() = header_map;
        if let Some(body) = body {
            *request.body_mut() = Some(body.into());
        }
        target
            .client
            .http
            .execute(request)
            .await
            .map_err(|e| self.connection_error(e))
    }

    /// Grant check, DNS, and the private-address check; pins the checked addresses.
    async fn check_destination(&self, url: &url::Url) -> Result<Target<'_>, OutboundError> {
        // `parse` guarantees a host and an http(s) scheme, which always has a default port.
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let shown = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let matching: Vec<&HttpGrant> = self
            .grants
            .iter()
            .filter(|g| g.pattern.matches(&host, port))
            .collect();
        if matching.is_empty() {
            let granted = if self.grants.is_empty() {
                "none".to_owned()
            } else {
                let names: Vec<String> =
                    self.grants.iter().map(|g| g.pattern.to_string()).collect();
                names.join(", ")
            };
            return Err(OutboundError::Denied(format!(
                "http: host '{shown}' is not granted to this plugin instance (granted: {granted})"
            )));
        }
        let allow_private = matching.iter().any(|g| g.allow_private);

        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        let addrs: Vec<IpAddr> = match literal {
            Some(ip) => vec![ip],
            None => {
                let resolved = self.resolver.resolve(&host, port).await.map_err(|e| {
                    OutboundError::Connection(format!("http: resolving host '{host}' failed: {e}"))
                })?;
                let mut ips: Vec<IpAddr> = Vec::with_capacity(resolved.len());
                for ip in resolved.into_iter().map(|a| canonical_ip(a.ip())) {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                ips
            }
        };
        if addrs.is_empty() {
            return Err(OutboundError::Connection(format!(
                "http: host '{host}' resolved to no address"
            )));
        }
        if !allow_private {
            for ip in &addrs {
                let canonical = canonical_ip(*ip);
                if let Some(kind) = non_public_kind(canonical) {
                    let what = if literal.is_some() {
                        format!("is a {kind} address ({canonical})")
                    } else {
                        format!("resolves to {kind} address {canonical}")
                    };
                    return Err(OutboundError::Denied(format!(
                        "http: host '{shown}' {what}; approve it explicitly as a private host \
                         to allow this"
                    )));
                }
            }
        }
        let approved_private = allow_private
            && addrs
                .iter()
                .all(|ip| non_public_kind(canonical_ip(*ip)).is_some());
        let client = match (&self.private, allow_private) {
            (Some(private), true) => private,
            _ => &self.public,
        };
        // IP literals are connected to directly by the connector; only names go through pins.
        if literal.is_none() {
            client.pins.pin(&host, addrs);
        }
        Ok(Target {
            client,
            host,
            port,
            approved_private,
        })
    }

    fn connection_error(&self, e: reqwest::Error) -> OutboundError {
        connection_error(&self.redactor, e)
    }
}

/// A reqwest error as a message with its causes, without the URL (it may hold a secret) and
/// redacted for good measure (a cause may quote the request).
fn connection_error(redactor: &Redactor, e: reqwest::Error) -> OutboundError {
    let e = e.without_url();
    let mut message = format!("http: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    OutboundError::Connection(redactor.redact(&message).into_owned())
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}
