//! Secret bindings: where the host inserts a secret into a guest's request, the check that the
//! guest did not write one itself, and redaction for logs.

use std::borrow::Cow;

use url::Url;
use url::form_urlencoded;

use super::host_pattern::HostPattern;
use super::{OutboundError, PolicyError};

/// Where in a request the host inserts a secret. The guest never chooses: the manifest binds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretPosition {
    /// Header `name` set to `format` with its single `{}` replaced by the value
    /// (e.g. `authorization` / `Bearer {}`).
    Header {
        /// Header name.
        name: String,
        /// Header value template containing exactly one `{}`.
        format: String,
    },
    /// A URL prefix containing one `{}` in its path, e.g. `https://api.telegram.org/bot{}/`.
    /// The guest writes the URL without the `{}` (`https://api.telegram.org/bot/getMe`); a URL
    /// starting with that stripped prefix gets the value inserted as a path segment.
    UrlPathPrefix(String),
    /// Query parameter of this name appended to the URL.
    Query(String),
    /// Field of this name appended to an `application/x-www-form-urlencoded` body.
    FormField(String),
}

/// One secret of a plugin instance and the one position it is bound to.
#[derive(Clone, PartialEq, Eq)]
pub struct BoundSecret {
    /// The secret's name from the manifest (shown in redactions and errors, never the value).
    pub name: String,
    /// Requests to which hosts receive it. `None` only for [`SecretPosition::UrlPathPrefix`],
    /// whose prefix already names the host. A pattern without a port binds the default port
    /// of the request's scheme (443, or 80 for plain HTTP), never any other.
    pub host: Option<HostPattern>,
    /// The binding names an `https://` URL (`{config.base_url}` set to one): never sent over
    /// plain HTTP, not even to an address approved as private.
    pub require_https: bool,
    /// Where it goes.
    pub position: SecretPosition,
    /// The value itself.
    pub value: String,
}

impl std::fmt::Debug for BoundSecret {
    // The value must not reach logs through a stray `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundSecret")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("position", &self.position)
            .field("require_https", &self.require_https)
            .field("value", &"[REDACTED]")
            .finish()
    }
}

/// A binding checked once at construction, with the URL prefix pre-parsed.
#[derive(Debug)]
pub(crate) struct PreparedSecret {
    secret: BoundSecret,
    /// For `UrlPathPrefix`: the normalised URL prefix without `{}`, and the byte offset in it
    /// where the encoded value goes.
    path_prefix: Option<(String, usize)>,
}

/// The request parts that secrets are inserted into.
pub(crate) struct RequestParts<'a> {
    pub url: &'a mut Url,
    pub headers: &'a mut Vec<(String, String)>,
    pub body: &'a mut Option<Vec<u8>>,
}

pub(crate) fn prepare(secrets: &[BoundSecret]) -> Result<Vec<PreparedSecret>, PolicyError> {
    secrets.iter().map(prepare_one).collect()
}

fn prepare_one(secret: &BoundSecret) -> Result<PreparedSecret, PolicyError> {
    let err = |reason: String| PolicyError(format!("secret '{}': {reason}", secret.name));
    if secret.value.is_empty() {
        return Err(err("the value is empty".into()));
    }
    let mut path_prefix = None;
    match &secret.position {
        SecretPosition::Header { name, format } => {
            if format.matches("{}").count() != 1 {
                return Err(err(format!(
                    "header format '{format}' must contain exactly one '{{}}'"
                )));
            }
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(err(format!("'{name}' is not a valid header name")));
            }
            if super::request::is_forbidden_header(name) {
                return Err(err(format!("header '{name}' is set only by the host")));
            }
            let value = format.replacen("{}", &secret.value, 1);
            if reqwest::header::HeaderValue::from_str(&value).is_err() {
                return Err(err("the value cannot be sent in a header".into()));
            }
        }
        SecretPosition::Query(name) | SecretPosition::FormField(name) if name.is_empty() => {
            return Err(err("the field name is empty".into()));
        }
        SecretPosition::Query(_) | SecretPosition::FormField(_) => {}
        SecretPosition::UrlPathPrefix(prefix) => {
            path_prefix = Some(prepare_path_prefix(prefix).map_err(err)?);
        }
    }
    let needs_host = !matches!(secret.position, SecretPosition::UrlPathPrefix(_));
    if needs_host && secret.host.is_none() {
        return Err(err(
            "a header, query or form-field secret must name its host".into(),
        ));
    }
    Ok(PreparedSecret {
        secret: secret.clone(),
        path_prefix,
    })
}

fn prepare_path_prefix(prefix: &str) -> Result<(String, usize), String> {
    let bad = |why: &str| format!("url-path-prefix '{prefix}' {why}");
    let (before, after) = prefix.split_once("{}").ok_or_else(|| bad("has no '{}'"))?;
    if after.contains("{}") {
        return Err(bad("has more than one '{}'"));
    }
    if after.contains(['?', '#']) {
        return Err(bad("must end within the path"));
    }
    let url =
        Url::parse(&format!("{before}{after}")).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("must be an http(s) URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain credentials"));
    }
    let normalised = url.as_str().to_owned();
    // Parsing may normalise the scheme and host, but must leave the text after `{}` as written,
    // or the insertion offset below would be wrong.
    let at = normalised
        .len()
        .checked_sub(after.len())
        .filter(|at| normalised[*at..] == *after)
        .ok_or_else(|| bad("is not in normal form after the '{}'"))?;
    let path_start = normalised.len() - url[url::Position::BeforePath..].len();
    if at <= path_start {
        return Err(bad("must have '{}' inside the path, after the first '/'"));
    }
    Ok((normalised, at))
}

/// Refuses a request in which the guest wrote any secret value (raw or percent-encoded) in the
/// URL, a header, or the body: such a guest is trying to move a value it should not know.
pub(crate) fn refuse_guest_written_secrets(
    secrets: &[PreparedSecret],
    url: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<(), OutboundError> {
    let mut places: Vec<(&str, Cow<'_, [u8]>)> = vec![("url", Cow::Borrowed(url.as_bytes()))];
    for (name, value) in headers {
        places.push(("header name", Cow::Borrowed(name.as_bytes())));
        places.push(("header", Cow::Borrowed(value.as_bytes())));
    }
    if let Some(body) = body {
        places.push(("body", Cow::Borrowed(body)));
    }
    for (place, haystack) in places {
        // Checking decoded forms too catches `%41` for `A` and `+` for space.
        let decoded = percent_decode(&haystack, false);
        let form_decoded = percent_decode(&haystack, true);
        for prepared in secrets {
            let needle = prepared.secret.value.as_bytes();
            if [&haystack[..], &decoded, &form_decoded]
                .iter()
                .any(|h| contains(h, needle))
            {
                return Err(OutboundError::Denied(format!(
                    "http: the request's {place} contains the value of secret '{}'; secrets are \
                     inserted only by the host, at the position the manifest binds them to",
                    prepared.secret.name
                )));
            }
        }
    }
    Ok(())
}

/// Where a checked request goes, as far as secrets are concerned.
pub(crate) struct Destination<'a> {
    /// The request's scheme is `https`.
    pub https: bool,
    pub host: &'a str,
    /// The port connected to (the scheme's default when the URL names none).
    pub port: u16,
    /// Every address the host resolved to is loopback, private or link-local, and a grant
    /// matching the request approved such addresses explicitly (`http-private:`).
    pub approved_private: bool,
}

impl Destination<'_> {
    fn default_port(&self) -> u16 {
        if self.https { 443 } else { 80 }
    }
}

/// Whether `secret`'s binding names this destination (its host pattern, or its URL prefix).
fn binding_applies(prepared: &PreparedSecret, to: &Destination<'_>, url: &Url) -> bool {
    let secret = &prepared.secret;
    match (&secret.position, &secret.host) {
        (SecretPosition::UrlPathPrefix(_), _) => prepared
            .path_prefix
            .as_ref()
            .is_some_and(|(prefix, _)| url.as_str().starts_with(prefix.as_str())),
        // A pattern without a port would otherwise match every port of the host: a service
        // on another port of the same machine is not the one the key was issued for.
        (_, Some(pattern)) => {
            pattern.matches(to.host, to.port)
                && (pattern.port().is_some() || to.port == to.default_port())
        }
        (_, None) => false,
    }
}

/// Refuses to put a secret on the wire in the clear: plain HTTP is allowed only to an address
/// the operator approved as private (a model server on this machine or the LAN), and never
/// for a binding made for an `https://` URL.
fn check_transport(secret: &BoundSecret, to: &Destination<'_>) -> Result<(), OutboundError> {
    if to.https || (to.approved_private && !secret.require_https) {
        return Ok(());
    }
    let why = if secret.require_https {
        "its binding names an https:// URL"
    } else {
        "plain http is allowed only to an address approved as private (http-private:)"
    };
    Err(OutboundError::Denied(format!(
        "http: secret '{}' is sent only over https ({why}); this request to '{}:{}' is plain \
         http",
        secret.name, to.host, to.port
    )))
}

/// Inserts every secret whose binding applies to this request.
pub(crate) fn insert_secrets(
    secrets: &[PreparedSecret],
    to: &Destination<'_>,
    parts: RequestParts<'_>,
) -> Result<(), OutboundError> {
    for prepared in secrets {
        let secret = &prepared.secret;
        if !binding_applies(prepared, to, parts.url) {
            continue;
        }
        check_transport(secret, to)?;
        match &secret.position {
            SecretPosition::Header { name, format } => {
                if parts
                    .headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(name))
                {
                    return Err(OutboundError::Denied(format!(
                        "http: header '{name}' is set by the host from secret '{}'; the plugin \
                         must not set it",
                        secret.name
                    )));
                }
                parts
                    .headers
                    .push((name.clone(), format.replacen("{}", &secret.value, 1)));
            }
            SecretPosition::Query(name) => {
                if parts.url.query_pairs().any(|(k, _)| k == *name) {
                    return Err(OutboundError::Denied(format!(
                        "http: query parameter '{name}' is set by the host from secret '{}'; \
                         the plugin must not set it",
                        secret.name
                    )));
                }
                parts.url.query_pairs_mut().append_pair(name, &secret.value);
            }
            SecretPosition::FormField(name) => {
                if !is_form_body(parts.headers) {
                    continue;
                }
                let body = parts.body.get_or_insert_with(Vec::new);
                if form_urlencoded::parse(body).any(|(k, _)| k == *name) {
                    return Err(OutboundError::Denied(format!(
                        "http: form field '{name}' is set by the host from secret '{}'; the \
                         plugin must not set it",
                        secret.name
                    )));
                }
                if !body.is_empty() && !body.ends_with(b"&") {
                    body.push(b'&');
                }
                let field = form_urlencoded::Serializer::new(String::new())
                    .append_pair(name, &secret.value)
                    .finish();
                body.extend_from_slice(field.as_bytes());
            }
            SecretPosition::UrlPathPrefix(_) => {
                let Some((_, at)) = &prepared.path_prefix else {
                    continue;
                };
                let current = parts.url.as_str();
                let rewritten = format!(
                    "{}{}{}",
                    &current[..*at],
                    encode_path_segment(&secret.value),
                    &current[*at..]
                );
                *parts.url = Url::parse(&rewritten).map_err(|e| {
                    OutboundError::InvalidRequest(format!(
                        "http: inserting secret '{}' into the URL failed: {e}",
                        secret.name
                    ))
                })?;
            }
        }
    }
    Ok(())
}

fn is_form_body(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("content-type")
            && value.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    // Every provider request's whole body is searched: a vectorised search, not a comparison
    // at each offset.
    !needle.is_empty() && memchr::memmem::find(haystack, needle).is_some()
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`); malformed escapes stay as is.
/// Input with nothing to decode is returned as it is, without a copy.
fn percent_decode(input: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    let escaped = memchr::memchr(b'%', input).is_some()
        || (plus_is_space && memchr::memchr(b'+', input).is_some());
    if !escaped {
        return Cow::Borrowed(input);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Percent-encodes `value` as one path segment: RFC 3986 `pchar`s stay literal (so a Telegram
/// token's `:` arrives as written), everything else, including `/`, is escaped.
fn encode_path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Replaces secret values in text bound for logs with `[REDACTED:NAME]`.
///
/// Besides the raw value it replaces the value's query/form and path encodings, since secrets
/// reach URLs and bodies in those forms.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (needle, replacement), longest needle first so a value that contains another is
    /// replaced whole.
    needles: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for these secrets.
    pub fn new(secrets: &[BoundSecret]) -> Self {
        let mut needles = Vec::new();
        for secret in secrets.iter().filter(|s| !s.value.is_empty()) {
            let replacement = format!("[REDACTED:{}]", secret.name);
            let forms = [
                secret.value.clone(),
                form_urlencoded::byte_serialize(secret.value.as_bytes()).collect(),
                encode_path_segment(&secret.value),
            ];
            for form in forms {
                if !needles.iter().any(|(n, _)| *n == form) {
                    needles.push((form, replacement.clone()));
                }
            }
        }
        needles.sort_by_key(|(needle, _)| std::cmp::Reverse(needle.len()));
        Redactor { needles }
    }

    /// `text` with every secret value replaced; borrowed when nothing needed replacing.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (needle, replacement) in &self.needles {
            if out.contains(needle.as_str()) {
                out = Cow::Owned(out.replace(needle.as_str(), replacement));
            }
        }
        out
    }

    /// Like [`Redactor::redact`] for bytes that may not be text (a response body).
    pub fn redact_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = bytes;
        for (needle, replacement) in &self.needles {
            let needle = needle.as_bytes();
            if !contains(&out, needle) {
                continue;
            }
            let mut replaced = Vec::with_capacity(out.len());
            let mut rest = &out[..];
            while let Some(at) = memchr::memmem::find(rest, needle) {
                replaced.extend_from_slice(&rest[..at]);
                replaced.extend_from_slice(replacement.as_bytes());
                rest = &rest[at + needle.len()..];
            }
            replaced.extend_from_slice(rest);
            out = replaced;
        }
        out
    }

    /// A redactor for a body that arrives in pieces: see [`StreamRedactor`].
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor {
            redactor: self.clone(),
            pending: Vec::new(),
        }
    }

    /// Every occurrence of every needle in `bytes`, as `(start, end)`.
    fn occurrences(&self, bytes: &[u8]) -> Vec<(usize, usize)> {
        self.needles
            .iter()
            .flat_map(|(needle, _)| {
                memchr::memmem::find_iter(bytes, needle.as_bytes())
                    .map(move |at| (at, at + needle.len()))
            })
            .collect()
    }
}

/// Redacts a body that arrives in chunks, so that a secret split across two chunks is still
/// replaced: a redactor run on each chunk alone sees neither half as the secret, while the
/// reader downstream (a provider's decoder keeps its state across calls) joins them again.
///
/// Only the bytes that could be the start of a secret are held back — a suffix of what
/// arrived that is a prefix of some secret — so a stream whose events end in a newline is
/// passed on at once, and nothing is held for longer than the longest secret.
#[derive(Debug, Clone)]
pub struct StreamRedactor {
    redactor: Redactor,
    /// Arrived bytes not yet passed on: a possible partial secret at the end of the body so far.
    pending: Vec<u8>,
}

impl StreamRedactor {
    /// Takes the next chunk; returns what may be passed on now, redacted.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let cut = self.safe_cut();
        let rest = self.pending.split_off(cut);
        let ready = std::mem::replace(&mut self.pending, rest);
        self.redactor.redact_bytes(ready)
    }

    /// The end of the body: whatever was held back, redacted (a partial secret stays as is —
    /// it is not the secret).
    pub fn finish(&mut self) -> Vec<u8> {
        self.redactor
            .redact_bytes(std::mem::take(&mut self.pending))
    }

    /// Where the pending bytes can be cut so that everything before the cut can be redacted
    /// on its own: no secret crosses the cut, and nothing after it could complete one later
    /// unless it is held back.
    fn safe_cut(&self) -> usize {
        let bytes = &self.pending;
        let longest = self
            .redactor
            .needles
            .iter()
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(0);
        // The earliest position from which the rest is a proper prefix of some secret. Earlier
        // positions leave at least `longest` bytes, so a secret starting there is complete.
        let mut cut = (bytes.len().saturating_sub(longest.saturating_sub(1))..bytes.len())
            .find(|at| {
                let tail = &bytes[*at..];
                self.redactor
                    .needles
                    .iter()
                    .any(|(n, _)| n.len() > tail.len() && n.as_bytes().starts_with(tail))
            })
            .unwrap_or(bytes.len());
        // A complete secret that crosses the cut is held back whole (a secret that overlaps
        // itself, `abab` in `ababab`, can need this more than once).
        let occurrences = self.redactor.occurrences(bytes);
        while let Some(start) = occurrences
            .iter()
            .filter(|(start, end)| *start < cut && *end > cut)
            .map(|(start, _)| *start)
            .min()
        {
            cut = start;
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, position: SecretPosition, value: &str) -> BoundSecret {
        BoundSecret {
            name: name.into(),
            host: Some("api.test".parse().unwrap()),
            position,
            require_https: false,
            value: value.into(),
        }
    }

    #[test]
    fn a_secret_goes_in_the_clear_only_to_an_approved_private_address() {
        let header = SecretPosition::Header {
            name: "x-key".into(),
            format: "{}".into(),
        };
        let insert = |require_https: bool, to: Destination<'_>| {
            let mut s = secret("K", header.clone(), "v");
            s.require_https = require_https;
            let prepared = prepare(&[s]).unwrap();
            let scheme = if to.https { "https" } else { "http" };
            let mut url = Url::parse(&format!("{scheme}://api.test:{}/", to.port)).unwrap();
            let mut headers = Vec::new();
            let mut body = None;
            let parts = RequestParts {
                url: &mut url,
                headers: &mut headers,
                body: &mut body,
            };
            insert_secrets(&prepared, &to, parts).map(|()| headers)
        };
        let to = |https, port, approved_private| Destination {
            https,
            host: "api.test",
            port,
            approved_private,
        };
        let sent = vec![("x-key".to_owned(), "v".to_owned())];
        assert_eq!(insert(false, to(true, 443, false)).unwrap(), sent);
        assert_eq!(insert(false, to(false, 80, true)).unwrap(), sent);
        // A public address over plain HTTP: refused, not sent.
        let err = insert(false, to(false, 80, false)).unwrap_err();
        assert!(err.to_string().contains("sent only over https"), "{err}");
        // Bound to an https URL: not even to a private address in the clear.
        let err = insert(true, to(false, 80, true)).unwrap_err();
        assert!(err.to_string().contains("names an https:// URL"), "{err}");
        // Another port than the default one: the binding does not apply; nothing is sent.
        assert_eq!(insert(false, to(true, 8443, false)).unwrap(), vec![]);
    }

    #[test]
    fn redactor_replaces_raw_and_encoded_values() {
        let r = Redactor::new(&[
            secret("TOKEN", SecretPosition::Query("key".into()), "a b/c"),
            secret("OTHER", SecretPosition::Query("k".into()), "s3cr3t"),
        ]);
        assert_eq!(
            r.redact("x a b/c y a+b%2Fc z a%20b%2Fc s3cr3t"),
            "x [REDACTED:TOKEN] y [REDACTED:TOKEN] z [REDACTED:TOKEN] [REDACTED:OTHER]"
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn redactor_replaces_every_occurrence_in_bytes() {
        let r = Redactor::new(&[secret("K", SecretPosition::Query("k".into()), "s3cr3t")]);
        assert_eq!(
            r.redact_bytes(b"s3cr3ts3cr3t mid s3cr3\xff s3cr3t".to_vec()),
            b"[REDACTED:K][REDACTED:K] mid s3cr3\xff [REDACTED:K]".to_vec()
        );
        assert_eq!(r.redact_bytes(b"clean".to_vec()), b"clean".to_vec());
    }

    #[test]
    fn stream_redactor_catches_a_secret_split_anywhere() {
        let r = Redactor::new(&[
            secret("K", SecretPosition::Query("k".into()), "sk-abc/123"),
            secret("P", SecretPosition::Query("k".into()), "abab"),
        ]);
        let text = b"data: {\"text\": \"your key is sk-abc/123 and sk-abc%2F123\"}\n\nsk-ab ababab abababab";
        let whole = r.redact_bytes(text.to_vec());
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut stream = r.stream();
                let mut out = stream.push(&text[..a]);
                out.extend(stream.push(&text[a..b]));
                out.extend(stream.push(&text[b..]));
                out.extend(stream.finish());
                assert_eq!(out, whole, "split at {a} and {b}");
            }
        }
        assert!(!contains(&whole, b"sk-abc/123"));
        assert!(!contains(&whole, b"abab"));
    }

    #[test]
    fn stream_redactor_holds_back_only_a_possible_secret() {
        let r = Redactor::new(&[secret("K", SecretPosition::Query("k".into()), "sk-abc")]);
        let mut stream = r.stream();
        assert_eq!(stream.push(b"data: 1\n\n"), b"data: 1\n\n");
        assert_eq!(stream.push(b"key sk-a"), b"key ");
        assert_eq!(stream.push(b"bc!"), b"[REDACTED:K]!");
        assert_eq!(stream.push(b"sk"), b"");
        assert_eq!(stream.finish(), b"sk");
    }

    #[test]
    fn percent_decode_handles_edges() {
        assert_eq!(&*percent_decode(b"a%41%4", false), b"aA%4");
        assert_eq!(&*percent_decode(b"a+b%", true), b"a b%");
        assert_eq!(&*percent_decode(b"%zz", false), b"%zz");
        assert_eq!(&*percent_decode(b"a+b", false), b"a+b");
        assert!(matches!(percent_decode(b"plain", true), Cow::Borrowed(_)));
    }

    #[test]
    fn path_prefix_is_prepared_and_validated() {
        let (p, at) = prepare_path_prefix("https://API.telegram.org/bot{}/").unwrap();
        assert_eq!(p, "https://api.telegram.org/bot/");
        assert_eq!(&p[..at], "https://api.telegram.org/bot");
        assert!(prepare_path_prefix("https://{}api.x.com/").is_err());
        assert!(prepare_path_prefix("https://api.x.com/").is_err());
        assert!(prepare_path_prefix("https://api.x.com/{}/{}").is_err());
    }

    #[test]
    fn policy_refuses_bad_bindings() {
        let mut s = secret(
            "K",
            SecretPosition::Header {
                name: "x-key".into(),
                format: "no placeholder".into(),
            },
            "v",
        );
        assert!(prepare(std::slice::from_ref(&s)).is_err());
        s.position = SecretPosition::Query("key".into());
        s.host = None;
        assert!(prepare(std::slice::from_ref(&s)).is_err());
        s.host = Some("api.test".parse().unwrap());
        s.value.clear();
        assert!(prepare(&[s]).is_err());
    }

    #[test]
    fn debug_hides_the_value() {
        let s = secret("K", SecretPosition::Query("key".into()), "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
