//! `kelp.toml`, the plugin manifest.
//!
//! The TOML is read into private raw structs that reject unknown keys, then every field is
//! validated and converted into the public types below. A [`Manifest`] value therefore always
//! satisfies the rules; there is no way to build one from unvalidated input (the public types
//! implement `Serialize` for API output but, apart from [`PluginName`] and [`PluginKind`], not
//! `Deserialize`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted `description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Longest accepted namespace or name part of a [`PluginName`].
pub const MAX_NAME_PART_CHARS: usize = 64;

/// Why a `kelp.toml` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not TOML, a missing required key, a value of the wrong type, or an unknown key
    /// (the message from the TOML reader names the key and shows the line).
    #[error("kelp.toml is not a valid manifest: {0}")]
    Syntax(String),
    /// A key was present with the right type but a value the rules refuse.
    #[error("kelp.toml field `{field}`: {message}")]
    Invalid {
        /// Path of the offending field, e.g. `capabilities.secrets[1].host`.
        field: String,
        /// What is wrong and, where it helps, what would be accepted.
        message: String,
    },
}

impl ManifestError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ManifestError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The offending field for [`ManifestError::Invalid`]; `None` for syntax errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            ManifestError::Invalid { field, .. } => Some(field),
            ManifestError::Syntax(_) => None,
        }
    }
}

/// A validated plugin manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// `namespace/name`, the registry identity.
    pub name: PluginName,
    /// The package version.
    pub version: semver::Version,
    /// What the plugin is.
    pub kind: PluginKind,
    /// One-paragraph summary shown in search results; non-empty, at most 500 characters.
    pub description: String,
    /// SPDX expression, not checked beyond being non-empty.
    pub license: Option<String>,
    /// The WIT contract version the component was built against. Always present for tool,
    /// provider and channel; a skill needs it only when it ships `plugin.wasm` (the package
    /// reader checks that, as only it knows whether the wasm is there).
    pub wit: Option<semver::Version>,
    /// What the plugin asks to be granted.
    pub capabilities: Capabilities,
    /// JSON Schema for the instance configuration (`[config]`), always a JSON object.
    pub config_schema: Option<serde_json::Value>,
    /// Limits the plugin asks for; the host may only use them to lower its own maxima.
    pub limits: RequestedLimits,
    /// `[provider]`: what the host needs to know about a provider's vendor API beyond the
    /// plugin's calls (only for `kind = "provider"`).
    pub provider: ProviderInfo,
    /// `[channel]`: what the host needs to know to receive a channel's webhooks (only for
    /// `kind = "channel"`).
    pub channel: ChannelManifest,
    /// Words a registry search matches (`[a-z0-9-]`, 1–32 characters, at most 16, unique).
    pub tags: Vec<String>,
    /// The project's page, an `https://` or `http://` URL.
    pub homepage: Option<String>,
    /// Where the source lives, an `https://` or `http://` URL.
    pub repository: Option<String>,
}

/// `[channel]` of a channel plugin's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelManifest {
    /// How the host authenticates a webhook delivery before the plugin sees it; `None`: the
    /// platform signs nothing, and the channel can only poll.
    pub webhook_auth: Option<WebhookAuth>,
}

/// `webhook-auth = { secret, header, scheme }`: the header of a delivery that proves it
/// comes from the platform. The host checks it in constant time and strips it; the plugin
/// never sees the header or the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookAuth {
    /// The instance secret it is checked against (`^[A-Z][A-Z0-9_]{0,63}$`). It need not be
    /// bound to an outbound position as well, but may be (Telegram's `setWebhook` sends it).
    pub secret: String,
    /// The header, lowercased.
    pub header: String,
    pub scheme: WebhookScheme,
}

/// What the webhook header holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookScheme {
    /// The secret itself (Telegram's `X-Telegram-Bot-Api-Secret-Token`).
    Token,
    /// `sha256=<hex>` (or bare hex) of HMAC-SHA256 over the body, keyed by the secret.
    HmacSha256,
}

/// `[provider]` of a provider plugin's manifest.
///
/// The plugin contract is sans-IO and its `models()` answers without asking anyone, so a
/// server's own model list (a local vLLM, Ollama or llama.cpp) is fetched by the host: the
/// manifest says where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderInfo {
    /// `models-url`: where a `GET` lists the server's models, e.g.
    /// `{config.base_url}/models`; `{config.KEY}` is replaced by the instance's config value.
    /// The answer is read as `{"data": [{"id"}]}` (OpenAI, Anthropic, vLLM, llama.cpp) or
    /// `{"models": [{"name"}]}` (Ollama).
    pub models_url: Option<String>,
    /// `models-headers`: headers that request needs (e.g. `anthropic-version`).
    pub models_headers: Vec<(String, String)>,
}

/// `namespace/name`, each part lowercase kebab case (`[a-z0-9]+(-[a-z0-9]+)*`), 1 to 64 chars.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginName {
    namespace: String,
    name: String,
}

impl PluginName {
    /// The part before the slash: the publisher's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The part after the slash.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for PluginName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let Some((namespace, name)) = s.split_once('/') else {
            return Err(format!("`{s}` must be `namespace/name`"));
        };
        for (what, part) in [("namespace", namespace), ("name", name)] {
            if !is_kebab(part) || part.len() > MAX_NAME_PART_CHARS {
                return Err(format!(
                    "{what} `{part}` in `{s}` must be 1 to {MAX_NAME_PART_CHARS} characters of \
                     lowercase kebab case (a-z, 0-9, single hyphens between)"
                ));
            }
        }
        Ok(PluginName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl Serialize for PluginName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PluginName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[a-z0-9]+(-[a-z0-9]+)*`: lowercase kebab case, the rule for name parts and, with the
/// same 64-character cap, for a SKILL.md `name` (the Agent Skills format's rule).
pub(crate) fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What a plugin is; decides which WIT world the component must implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Offers tools the agent can call.
    Tool,
    /// Talks to a language model vendor.
    Provider,
    /// Connects a chat service (Telegram, …) to the agent.
    Channel,
    /// Instructions (`SKILL.md`), optionally with tools in `plugin.wasm`.
    Skill,
}

impl PluginKind {
    /// The lowercase name used in `kelp.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Tool => "tool",
            PluginKind::Provider => "provider",
            PluginKind::Channel => "channel",
            PluginKind::Skill => "skill",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PluginKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tool" => Ok(PluginKind::Tool),
            "provider" => Ok(PluginKind::Provider),
            "channel" => Ok(PluginKind::Channel),
            "skill" => Ok(PluginKind::Skill),
            other => Err(format!(
                "unknown kind `{other}`; expected tool, provider, channel or skill"
            )),
        }
    }
}

/// What the plugin asks to be granted. Absent keys ask for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Host patterns: `host`, `*.host`, either with `:port`, an IPv4 or `[IPv6]` address,
    /// `*` (any host), or `{config.KEY}` (a host taken from the instance config).
    pub http: Vec<String>,
    /// A per-instance key-value store.
    pub kv: bool,
    /// Access to the agent's workspace files.
    pub workspace: WorkspaceAccess,
    /// Secrets the host injects into outgoing requests, one entry per position (a name may
    /// have several).
    pub secrets: Vec<SecretBinding>,
}

/// How much of the workspace a plugin may touch. Ordered by how much it allows, so the
/// effective access is the `min` of requested and approved.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAccess {
    /// No access.
    #[default]
    None,
    /// Read files.
    Read,
    /// Read and write files.
    Write,
}

/// One secret and the single place in requests to a single host where the host inserts it.
/// The guest never sees the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretBinding {
    /// `^[A-Z][A-Z0-9_]{0,63}$`
    pub name: String,
    /// The host the secret may be sent to: `host[:port]` or `{config.KEY}`. Always `Some`
    /// once validated — for [`SecretPosition::UrlPathPrefix`] it is the URL's authority.
    pub host: Option<String>,
    /// Where in the request the value goes.
    pub position: SecretPosition,
}

/// Where a secret is inserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretPosition {
    /// A request header; `format` holds exactly one `{}` replaced by the value.
    Header {
        /// Header name, lowercased (header names are case-insensitive).
        name: String,
        /// e.g. `Bearer {}`; defaults to `{}`.
        format: String,
    },
    /// An absolute URL whose path holds exactly one `{}`; requests must start with it.
    UrlPathPrefix(String),
    /// A query parameter name.
    Query(String),
    /// A field of an `application/x-www-form-urlencoded` body.
    FormField(String),
}

/// Limits the plugin asks for. Each may only lower the host's maximum; the host enforces that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestedLimits {
    /// Wall-clock time per call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Linear memory, in MiB.
    pub memory_mb: Option<u64>,
    /// Log output per call, in bytes.
    pub log_bytes: Option<u64>,
    /// Result size per call, in bytes.
    pub output_bytes: Option<u64>,
}

// ---- The TOML shape. Private: only `Manifest::parse` produces public values from it. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    kind: String,
    description: String,
    license: Option<String>,
    wit: Option<String>,
    #[serde(default)]
    capabilities: RawCapabilities,
    config: Option<toml::Value>,
    #[serde(default)]
    limits: RawLimits,
    provider: Option<RawProvider>,
    channel: Option<RawChannel>,
    #[serde(default)]
    tags: Vec<String>,
    homepage: Option<String>,
    repository: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawChannel {
    webhook_auth: Option<RawWebhookAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhookAuth {
    secret: String,
    header: String,
    scheme: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawProvider {
    models_url: Option<String>,
    #[serde(default)]
    models_headers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    http: Vec<String>,
    #[serde(default)]
    kv: bool,
    workspace: Option<String>,
    #[serde(default)]
    secrets: Vec<RawSecret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSecret {
    name: String,
    host: Option<String>,
    header: Option<String>,
    format: Option<String>,
    url_path_prefix: Option<String>,
    query: Option<String>,
    form_field: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
    log_bytes: Option<u64>,
    output_bytes: Option<u64>,
}

impl Manifest {
    /// The names of the secrets an instance can be given, once each, in order: those bound
    /// to outbound positions and a channel's webhook secret.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .capabilities
            .secrets
            .iter()
            .map(|s| s.name.as_str())
            .chain(
                self.channel
                    .webhook_auth
                    .as_ref()
                    .map(|a| a.secret.as_str()),
            )
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Parses and validates `kelp.toml`. Strict: unknown keys are refused, and every
    /// refusal names the field.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;

        let name = raw
            .name
            .parse::<PluginName>()
            .map_err(|m| ManifestError::invalid("name", m))?;
        let version = parse_semver("version", &raw.version)?;
        crate::version::check_release_version(&version)
            .map_err(|e| ManifestError::invalid("version", e.to_string()))?;
        let kind = raw
            .kind
            .parse::<PluginKind>()
            .map_err(|m| ManifestError::invalid("kind", m))?;

        let description = raw.description;
        if description.trim().is_empty() {
            return Err(ManifestError::invalid("description", "must not be empty"));
        }
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ManifestError::invalid(
                "description",
                format!("is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }

        if let Some(license) = &raw.license
            && license.trim().is_empty()
        {
            return Err(ManifestError::invalid(
                "license",
                "must not be empty; leave the key out instead",
            ));
        }

        let wit = raw
            .wit
            .as_deref()
            .map(|w| parse_semver("wit", w))
            .transpose()?;
        if wit.is_none() && kind != PluginKind::Skill {
            return Err(ManifestError::invalid(
                "wit",
                format!("is required for a {kind} plugin (the contract version it was built for)"),
            ));
        }

        let config_schema = match raw.config {
            None => None,
            Some(value @ toml::Value::Table(_)) => Some(toml_to_json(value, "config")?),
            Some(_) => {
                return Err(ManifestError::invalid(
                    "config",
                    "must be a table (a JSON Schema)",
                ));
            }
        };

        let capabilities = validate_capabilities(raw.capabilities, config_schema.as_ref())?;
        let limits = validate_limits(raw.limits)?;
        let provider = validate_provider(raw.provider, kind)?;
        let channel = validate_channel(raw.channel, kind)?;
        let tags = validate_tags(raw.tags)?;
        let homepage = raw
            .homepage
            .map(|u| validate_link("homepage", u))
            .transpose()?;
        let repository = raw
            .repository
            .map(|u| validate_link("repository", u))
            .transpose()?;

        Ok(Manifest {
            name,
            version,
            kind,
            description,
            license: raw.license,
            wit,
            capabilities,
            config_schema,
            limits,
            provider,
            channel,
            tags,
            homepage,
            repository,
        })
    }
}

const MAX_TAGS: usize = 16;
const MAX_TAG_CHARS: usize = 32;
const MAX_LINK_CHARS: usize = 2048;

fn validate_tags(tags: Vec<String>) -> Result<Vec<String>, ManifestError> {
    if tags.len() > MAX_TAGS {
        return Err(ManifestError::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, tag) in tags.iter().enumerate() {
        if !is_kebab(tag) || tag.len() > MAX_TAG_CHARS {
            return Err(ManifestError::invalid(
                format!("tags[{i}]"),
                format!("`{tag}` must be 1 to {MAX_TAG_CHARS} characters of lowercase kebab case"),
            ));
        }
        if !seen.insert(tag) {
            return Err(ManifestError::invalid(
                format!("tags[{i}]"),
                format!("`{tag}` is listed twice"),
            ));
        }
    }
    Ok(tags)
}

fn validate_link(field: &str, url: String) -> Result<String, ManifestError> {
    let well_formed = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() > "https://".len()
        && url.len() <= MAX_LINK_CHARS
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !well_formed {
        return Err(ManifestError::invalid(
            field,
            format!("must be an http(s) URL of at most {MAX_LINK_CHARS} characters"),
        ));
    }
    Ok(url)
}

fn validate_channel(
    raw: Option<RawChannel>,
    kind: PluginKind,
) -> Result<ChannelManifest, ManifestError> {
    let Some(raw) = raw else {
        return Ok(ChannelManifest::default());
    };
    if kind != PluginKind::Channel {
        return Err(ManifestError::invalid(
            "channel",
            format!("only a channel plugin has a [channel] table, not a {kind}"),
        ));
    }
    let Some(auth) = raw.webhook_auth else {
        return Ok(ChannelManifest::default());
    };
    if !is_secret_name(&auth.secret) {
        return Err(ManifestError::invalid(
            "channel.webhook-auth.secret",
            format!(
                "`{}` must match ^[A-Z][A-Z0-9_]{{0,63}}$ (e.g. WEBHOOK_SECRET)",
                auth.secret
            ),
        ));
    }
    if !is_http_token(&auth.header) {
        return Err(ManifestError::invalid(
            "channel.webhook-auth.header",
            format!("`{}` is not a valid HTTP header name", auth.header),
        ));
    }
    let scheme = match auth.scheme.as_deref() {
        None | Some("token") => WebhookScheme::Token,
        Some("hmac-sha256") => WebhookScheme::HmacSha256,
        Some(other) => {
            return Err(ManifestError::invalid(
                "channel.webhook-auth.scheme",
                format!("unknown scheme `{other}`; expected token or hmac-sha256"),
            ));
        }
    };
    Ok(ChannelManifest {
        webhook_auth: Some(WebhookAuth {
            secret: auth.secret,
            header: auth.header.to_ascii_lowercase(),
            scheme,
        }),
    })
}

fn validate_provider(
    raw: Option<RawProvider>,
    kind: PluginKind,
) -> Result<ProviderInfo, ManifestError> {
    let Some(raw) = raw else {
        return Ok(ProviderInfo::default());
    };
    if kind != PluginKind::Provider {
        return Err(ManifestError::invalid(
            "provider",
            format!("only a provider plugin has a [provider] table, not a {kind}"),
        ));
    }
    if let Some(url) = &raw.models_url {
        let starts_well = ["{config.", "http://", "https://"]
            .iter()
            .any(|p| url.starts_with(p));
        if !starts_well || url.chars().any(char::is_whitespace) {
            return Err(ManifestError::invalid(
                "provider.models-url",
                "must be an http(s) URL or start with `{config.KEY}`",
            ));
        }
    }
    for name in raw.models_headers.keys() {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ManifestError::invalid(
                format!("provider.models-headers.{name}"),
                "header names are letters, digits and hyphens",
            ));
        }
    }
    Ok(ProviderInfo {
        models_url: raw.models_url,
        models_headers: raw
            .models_headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
    })
}

fn parse_semver(field: &str, s: &str) -> Result<semver::Version, ManifestError> {
    semver::Version::parse(s)
        .map_err(|e| ManifestError::invalid(field, format!("`{s}` is not a semver version: {e}")))
}

/// TOML datetimes have no JSON counterpart; serde would turn them into a private wrapper
/// object, so they become RFC 3339 strings here. `nan` and `inf` have none either, and a
/// schema that means one cannot be written in JSON: refused, naming the key.
fn toml_to_json(value: toml::Value, field: &str) -> Result<serde_json::Value, ManifestError> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
            Some(n) => J::Number(n),
            None => {
                return Err(ManifestError::invalid(
                    field,
                    format!("`{f}` has no JSON value; use a finite number"),
                ));
            }
        },
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(
            a.into_iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => J::Object(
            t.into_iter()
                .map(|(k, v)| {
                    let value = toml_to_json(v, &format!("{field}.{k}"))?;
                    Ok((k, value))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn validate_capabilities(
    raw: RawCapabilities,
    config_schema: Option<&serde_json::Value>,
) -> Result<Capabilities, ManifestError> {
    for (i, pattern) in raw.http.iter().enumerate() {
        let field = format!("capabilities.http[{i}]");
        validate_http_pattern(pattern, config_schema)
            .map_err(|m| ManifestError::invalid(&field, m))?;
    }

    let workspace = match raw.workspace.as_deref() {
        None | Some("none") => WorkspaceAccess::None,
        Some("read") => WorkspaceAccess::Read,
        Some("write") => WorkspaceAccess::Write,
        Some(other) => {
            return Err(ManifestError::invalid(
                "capabilities.workspace",
                format!("unknown access `{other}`; expected none, read or write"),
            ));
        }
    };

    // One secret may be bound at several positions (Telegram's token goes in the API's path
    // and in its file downloads' path), each entry one position; the same binding twice is a
    // mistake.
    let mut secrets: Vec<SecretBinding> = Vec::with_capacity(raw.secrets.len());
    for (i, raw_secret) in raw.secrets.into_iter().enumerate() {
        let secret = validate_secret(i, raw_secret, config_schema)?;
        if secrets.contains(&secret) {
            return Err(ManifestError::invalid(
                format!("capabilities.secrets[{i}]"),
                format!("secret `{}` is bound here twice", secret.name),
            ));
        }
        secrets.push(secret);
    }

    Ok(Capabilities {
        http: raw.http,
        kv: raw.kv,
        workspace,
        secrets,
    })
}

fn validate_secret(
    i: usize,
    raw: RawSecret,
    config_schema: Option<&serde_json::Value>,
) -> Result<SecretBinding, ManifestError> {
    let field = |key: &str| format!("capabilities.secrets[{i}].{key}");

    if !is_secret_name(&raw.name) {
        return Err(ManifestError::invalid(
            field("name"),
            format!(
                "`{}` must match ^[A-Z][A-Z0-9_]{{0,63}}$ (e.g. API_KEY)",
                raw.name
            ),
        ));
    }

    let given: Vec<&str> = [
        ("header", raw.header.is_some()),
        ("url-path-prefix", raw.url_path_prefix.is_some()),
        ("query", raw.query.is_some()),
        ("form-field", raw.form_field.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    if given.len() != 1 {
        let message = if given.is_empty() {
            "names no position; give exactly one of header, url-path-prefix, query, form-field"
                .to_owned()
        } else {
            format!(
                "names {} positions ({}); a secret goes to exactly one place",
                given.len(),
                given.join(", ")
            )
        };
        return Err(ManifestError::invalid(
            format!("capabilities.secrets[{i}]"),
            message,
        ));
    }
    if raw.format.is_some() && raw.header.is_none() {
        return Err(ManifestError::invalid(
            field("format"),
            "only applies to a header secret",
        ));
    }

    if let Some(prefix) = raw.url_path_prefix {
        if raw.host.is_some() {
            return Err(ManifestError::invalid(
                field("host"),
                "must be absent for a url-path-prefix secret: the host is the URL's",
            ));
        }
        let authority = match config_prefix(&prefix) {
            // `{config.KEY}/path{}/`: the URL's start is the instance's (a self-hosted API
            // server); the host resolves it when the instance is loaded.
            Some((reference, path)) => {
                validate_config_reference(reference, config_schema)
                    .and_then(|()| validate_prefix_path(&prefix, path))
                    .map_err(|m| ManifestError::invalid(field("url-path-prefix"), m))?;
                reference.to_owned()
            }
            None => validate_url_path_prefix(&prefix)
                .map_err(|m| ManifestError::invalid(field("url-path-prefix"), m))?,
        };
        return Ok(SecretBinding {
            name: raw.name,
            host: Some(authority),
            position: SecretPosition::UrlPathPrefix(prefix),
        });
    }

    // Header, query and form-field secrets are only ever sent to the named host; without it
    // the host could not decide where the value may go.
    let Some(host) = raw.host else {
        return Err(ManifestError::invalid(
            field("host"),
            format!("is required for a {} secret", given[0]),
        ));
    };
    validate_secret_host(&host, config_schema)
        .map_err(|m| ManifestError::invalid(field("host"), m))?;

    let position = if let Some(header) = raw.header {
        let lower = header.to_ascii_lowercase();
        if !is_http_token(&header) {
            return Err(ManifestError::invalid(
                field("header"),
                format!("`{header}` is not a valid HTTP header name"),
            ));
        }
        // These frame the request itself; a secret there would corrupt or smuggle requests.
        if matches!(
            lower.as_str(),
            "host" | "content-length" | "transfer-encoding"
        ) {
            return Err(ManifestError::invalid(
                field("header"),
                format!("`{header}` cannot carry a secret"),
            ));
        }
        let format = raw.format.unwrap_or_else(|| "{}".to_owned());
        if format.matches("{}").count() != 1 {
            return Err(ManifestError::invalid(
                field("format"),
                format!("`{format}` must contain `{{}}` exactly once"),
            ));
        }
        if format.chars().any(|c| c.is_control()) {
            return Err(ManifestError::invalid(
                field("format"),
                "must not contain control characters",
            ));
        }
        SecretPosition::Header {
            name: lower,
            format,
        }
    } else if let Some(query) = raw.query {
        validate_param_name(&query).map_err(|m| ManifestError::invalid(field("query"), m))?;
        SecretPosition::Query(query)
    } else if let Some(form_field) = raw.form_field {
        validate_param_name(&form_field)
            .map_err(|m| ManifestError::invalid(field("form-field"), m))?;
        SecretPosition::FormField(form_field)
    } else {
        unreachable!("exactly one position was checked above")
    };

    Ok(SecretBinding {
        name: raw.name,
        host: Some(host),
        position,
    })
}

fn is_secret_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z'))
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// RFC 9110 `token`.
fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Query parameter and form field names: URL-unreserved characters, so the name needs no
/// encoding and cannot smuggle a second parameter.
fn validate_param_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 {
        return Err("must be 1 to 128 characters".to_owned());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~[]".contains(&b))
    {
        return Err(format!(
            "`{s}` may only contain letters, digits and - . _ ~ [ ]"
        ));
    }
    Ok(())
}

/// An http capability pattern.
fn validate_http_pattern(
    pattern: &str,
    config_schema: Option<&serde_json::Value>,
) -> Result<(), String> {
    if pattern == "*" {
        return Ok(());
    }
    if pattern.starts_with('{') {
        return validate_config_reference(pattern, config_schema);
    }
    if pattern.contains("://") {
        return Err(format!("`{pattern}` is a URL; give the host only"));
    }
    let (wildcard, rest) = match pattern.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    validate_authority(rest, wildcard).map_err(|m| format!("`{pattern}`: {m}"))
}

/// A secret's host: one exact host (a secret must not fan out to a wildcard).
fn validate_secret_host(
    host: &str,
    config_schema: Option<&serde_json::Value>,
) -> Result<(), String> {
    if host.starts_with('{') {
        return validate_config_reference(host, config_schema);
    }
    if host == "*" || host.starts_with("*.") {
        return Err(format!(
            "`{host}` is a wildcard; a secret is bound to exactly one host"
        ));
    }
    if host.contains("://") {
        return Err(format!("`{host}` is a URL; give the host only"));
    }
    validate_authority(host, false).map_err(|m| format!("`{host}`: {m}"))
}

/// `{config.KEY}`, where KEY must be a property the `[config]` schema declares — otherwise the
/// reference could never resolve and the plugin would fail only at run time.
fn validate_config_reference(
    s: &str,
    config_schema: Option<&serde_json::Value>,
) -> Result<(), String> {
    let key = s
        .strip_prefix("{config.")
        .and_then(|r| r.strip_suffix('}'))
        .filter(|k| {
            let mut b = k.bytes();
            matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        })
        .ok_or_else(|| format!("`{s}` must be a whole reference like `{{config.base_url}}`"))?;
    let declared = config_schema
        .and_then(|schema| schema.get("properties"))
        .and_then(|props| props.get(key))
        .is_some();
    if !declared {
        return Err(format!(
            "`{s}` references config key `{key}`, which [config].properties does not declare"
        ));
    }
    Ok(())
}

/// `host[:port]` where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
/// A wildcard prefix (already stripped) only makes sense before a DNS name.
fn validate_authority(s: &str, wildcard: bool) -> Result<(), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs a closing `]`")?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("`{addr}` is not an IPv6 address"))?;
        if wildcard {
            return Err("a wildcard cannot precede an IP address".to_owned());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after `]`")?),
        };
        (None, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };

    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && matches!(port.parse::<u32>(), Ok(1..=65535));
        if !valid {
            return Err(format!("`{port}` is not a port (1-65535)"));
        }
    }

    let Some(host) = host else { return Ok(()) };
    if host.parse::<Ipv4Addr>().is_ok() {
        if wildcard {
            return Err("a wildcard cannot precede an IP address".to_owned());
        }
        return Ok(());
    }
    validate_dns_name(host)
}

fn validate_dns_name(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > 253 {
        return Err("a host name must be 1 to 253 characters".to_owned());
    }
    for label in host.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(format!(
                "`{host}` is not a lowercase host name (labels of a-z, 0-9, inner hyphens)"
            ));
        }
    }
    // URL parsers read a name ending in a numeric label as an IPv4 address; one that failed
    // to parse as such (e.g. 999.1.1.1) is neither.
    if host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "`{host}` is neither a host name nor an IPv4 address"
        ));
    }
    Ok(())
}

/// Checks an absolute http(s) URL with exactly one `{}`, inside the path; returns its
/// authority (`host[:port]`), which becomes the secret's host.
/// A url-path-prefix that starts with `{config.KEY}`: the reference and the path after it.
pub fn config_prefix(prefix: &str) -> Option<(&str, &str)> {
    if !prefix.starts_with("{config.") {
        return None;
    }
    let end = prefix.find('}')? + 1;
    Some(prefix.split_at(end))
}

/// The path after a `{config.KEY}` prefix: `/…{}…`, once, and nothing a URL's path cannot hold.
fn validate_prefix_path(url: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "`{url}`: the path after the config reference must start with `/`"
        ));
    }
    if path.matches("{}").count() != 1 {
        return Err(format!("`{url}` must contain `{{}}` exactly once"));
    }
    let without_slot = path.replacen("{}", "", 1);
    if without_slot.contains(['?', '#', '{', '}'])
        || path.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(format!(
            "`{url}` must be a plain path prefix (no query, fragment, spaces)"
        ));
    }
    Ok(())
}

fn validate_url_path_prefix(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` must be an absolute https:// or http:// URL"))?;
    if url.matches("{}").count() != 1 {
        return Err(format!("`{url}` must contain `{{}}` exactly once"));
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "`{url}` must be a plain path prefix (no query, fragment, spaces)"
        ));
    }
    let slash = rest
        .find('/')
        .ok_or_else(|| format!("`{url}` has no path; `{{}}` must be inside the path"))?;
    let (authority, path) = rest.split_at(slash);
    if !path.contains("{}") {
        return Err(format!("`{url}`: `{{}}` must be inside the path"));
    }
    if authority.contains('@') {
        return Err(format!("`{url}` must not contain user information"));
    }
    validate_authority(authority, false).map_err(|m| format!("`{url}`: {m}"))?;
    Ok(authority.to_owned())
}

fn validate_limits(raw: RawLimits) -> Result<RequestedLimits, ManifestError> {
    for (key, value) in [
        ("timeout-ms", raw.timeout_ms),
        ("memory-mb", raw.memory_mb),
        ("log-bytes", raw.log_bytes),
        ("output-bytes", raw.output_bytes),
    ] {
        if value == Some(0) {
            return Err(ManifestError::invalid(
                format!("limits.{key}"),
                "must be greater than 0",
            ));
        }
    }
    Ok(RequestedLimits {
        timeout_ms: raw.timeout_ms,
        memory_mb: raw.memory_mb,
        log_bytes: raw.log_bytes,
        output_bytes: raw.output_bytes,
    })
}

impl std::fmt::Display for WorkspaceAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkspaceAccess::None => "none",
            WorkspaceAccess::Read => "read",
            WorkspaceAccess::Write => "write",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "kelp/calc"
version = "0.1.0"
kind = "tool"
description = "A calculator."
license = "Apache-2.0"
wit = "0.1.0"

[capabilities]
http = ["en.wikipedia.org", "*.example.com", "api.x.com:8443", "{config.base_url}", "*", "127.0.0.1:11434", "[::1]:8080"]
kv = true
workspace = "read"
secrets = [
  { name = "API_KEY", host = "{config.base_url}", header = "Authorization", format = "Bearer {}" },
  { name = "TOKEN", url-path-prefix = "https://api.telegram.org/bot{}/" },
  { name = "KEY", host = "api.example.com", query = "key" },
  { name = "CS", host = "auth.example.com", form-field = "client_secret" },
]

[config]
type = "object"
required = ["base_url"]
[config.properties.base_url]
type = "string"
format = "uri"

[limits]
timeout-ms = 10000
memory-mb = 64
log-bytes = 65536
output-bytes = 1048576
"#;

    /// The full example with one line replaced (or, with an empty `to`, removed).
    fn variant(from: &str, to: &str) -> String {
        assert!(FULL.contains(from), "test setup: `{from}` not in FULL");
        FULL.replacen(from, to, 1)
    }

    fn invalid_field(text: &str) -> String {
        match Manifest::parse(text) {
            Err(ManifestError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn full_example_parses() {
        let m = Manifest::parse(FULL).unwrap();
        assert_eq!(m.name.to_string(), "kelp/calc");
        assert_eq!(m.name.namespace(), "kelp");
        assert_eq!(m.version, semver::Version::new(0, 1, 0));
        assert_eq!(m.kind, PluginKind::Tool);
        assert_eq!(m.wit, Some(semver::Version::new(0, 1, 0)));
        assert!(m.capabilities.kv);
        assert_eq!(m.capabilities.workspace, WorkspaceAccess::Read);
        assert_eq!(m.capabilities.http.len(), 7);
        let s = &m.capabilities.secrets;
        assert_eq!(
            s[0].position,
            SecretPosition::Header {
                name: "authorization".into(),
                format: "Bearer {}".into()
            }
        );
        assert_eq!(s[1].host.as_deref(), Some("api.telegram.org"));
        assert_eq!(s[2].position, SecretPosition::Query("key".into()));
        assert_eq!(
            s[3].position,
            SecretPosition::FormField("client_secret".into())
        );
        assert_eq!(m.limits.timeout_ms, Some(10000));
        assert_eq!(m.limits.output_bytes, Some(1048576));
        let schema = m.config_schema.as_ref().unwrap();
        assert_eq!(schema["properties"]["base_url"]["type"], "string");

        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["name"], "kelp/calc");
        assert_eq!(json["kind"], "tool");
        assert_eq!(json["version"], "0.1.0");
        assert_eq!(
            json["capabilities"]["secrets"][1]["position"]["url-path-prefix"],
            "https://api.telegram.org/bot{}/"
        );
    }

    #[test]
    fn minimal_skill_needs_no_wit() {
        let m = Manifest::parse(
            "name = \"a/b\"\nversion = \"1.0.0\"\nkind = \"skill\"\ndescription = \"d\"\n",
        )
        .unwrap();
        assert_eq!(m.wit, None);
        assert_eq!(m.capabilities, Capabilities::default());
        assert_eq!(m.limits, RequestedLimits::default());
    }

    #[test]
    fn bad_name() {
        for bad in [
            "Kelp/calc",
            "kelp",
            "kelp/calc/x",
            "kelp/-calc",
            "kelp/ca--lc",
            "/calc",
        ] {
            let text = variant("name = \"kelp/calc\"", &format!("name = \"{bad}\""));
            assert_eq!(invalid_field(&text), "name", "{bad}");
        }
        let long = format!("name = \"kelp/{}\"", "a".repeat(65));
        assert_eq!(
            invalid_field(&variant("name = \"kelp/calc\"", &long)),
            "name"
        );
    }

    #[test]
    fn bad_version() {
        let text = variant("version = \"0.1.0\"", "version = \"1.0\"");
        assert_eq!(invalid_field(&text), "version");
        let err = Manifest::parse(&text).unwrap_err().to_string();
        assert!(err.contains("`version`") && err.contains("1.0"), "{err}");
    }

    #[test]
    fn version_with_build_metadata_is_refused() {
        let text = variant("version = \"0.1.0\"", "version = \"0.1.0+build.7\"");
        assert_eq!(invalid_field(&text), "version");
        let err = Manifest::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("`version`") && err.contains("build metadata") && err.contains("`0.1.0`"),
            "{err}"
        );
        let pre = variant("version = \"0.1.0\"", "version = \"0.1.0-rc.1\"");
        assert_eq!(
            Manifest::parse(&pre).unwrap().version,
            semver::Version::parse("0.1.0-rc.1").unwrap()
        );
    }

    #[test]
    fn unknown_kind() {
        let text = variant("kind = \"tool\"", "kind = \"widget\"");
        assert_eq!(invalid_field(&text), "kind");
    }

    #[test]
    fn missing_wit_for_tool() {
        assert_eq!(invalid_field(&variant("wit = \"0.1.0\"", "")), "wit");
    }

    #[test]
    fn unknown_keys_are_named() {
        for (from, to, key) in [
            ("kv = true", "kv = true\nnetwork = true", "network"),
            ("license = ", "website = \"x\"\nlicense = ", "website"),
            ("memory-mb = 64", "memory-mb = 64\ncpu = 1", "cpu"),
            (
                "query = \"key\"",
                "query = \"key\", encode = false",
                "encode",
            ),
        ] {
            let err = Manifest::parse(&variant(from, to)).unwrap_err();
            assert!(matches!(err, ManifestError::Syntax(_)));
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn missing_description_is_named() {
        let err = Manifest::parse(&variant("description = \"A calculator.\"", "")).unwrap_err();
        assert!(err.to_string().contains("description"), "{err}");
        let empty = variant("description = \"A calculator.\"", "description = \"  \"");
        assert_eq!(invalid_field(&empty), "description");
        let long = format!("description = \"{}\"", "x".repeat(501));
        assert_eq!(
            invalid_field(&variant("description = \"A calculator.\"", &long)),
            "description"
        );
    }

    #[test]
    fn secret_with_two_positions() {
        let text = variant("query = \"key\"", "query = \"key\", header = \"x-key\"");
        assert_eq!(invalid_field(&text), "capabilities.secrets[2]");
        let err = Manifest::parse(&text).unwrap_err().to_string();
        assert!(err.contains("header") && err.contains("query"), "{err}");
    }

    #[test]
    fn secret_with_no_position() {
        let text = variant(", query = \"key\"", "");
        assert_eq!(invalid_field(&text), "capabilities.secrets[2]");
    }

    #[test]
    fn header_secret_without_host() {
        let text = variant("host = \"{config.base_url}\", ", "");
        assert_eq!(invalid_field(&text), "capabilities.secrets[0].host");
    }

    #[test]
    fn url_path_prefix_rules() {
        for bad in [
            "https://api.telegram.org/bot/",
            "https://api.telegram.org/bot{}/{}",
            "https://{}.telegram.org/bot/",
            "ftp://api.telegram.org/bot{}/",
            "https://api.telegram.org/bot{}/?x=1",
            "https://user@api.telegram.org/bot{}/",
        ] {
            let text = variant("\"https://api.telegram.org/bot{}/\"", &format!("\"{bad}\""));
            assert_eq!(
                invalid_field(&text),
                "capabilities.secrets[1].url-path-prefix",
                "{bad}"
            );
        }
        let with_host = variant(
            "url-path-prefix =",
            "host = \"api.telegram.org\", url-path-prefix =",
        );
        assert_eq!(invalid_field(&with_host), "capabilities.secrets[1].host");
    }

    #[test]
    fn a_secret_may_have_several_positions_but_not_the_same_twice() {
        let text = variant("name = \"KEY\"", "name = \"TOKEN\"");
        let m = Manifest::parse(&text).unwrap();
        let token: Vec<_> = m
            .capabilities
            .secrets
            .iter()
            .filter(|s| s.name == "TOKEN")
            .collect();
        assert_eq!(token.len(), 2);
        let twice = variant(
            "  { name = \"KEY\", host = \"api.example.com\", query = \"key\" },\n",
            "  { name = \"KEY\", host = \"api.example.com\", query = \"key\" },\n  { name = \"KEY\", host = \"api.example.com\", query = \"key\" },\n",
        );
        assert_eq!(invalid_field(&twice), "capabilities.secrets[3]");
    }

    #[test]
    fn a_url_path_prefix_may_start_at_a_config_url() {
        let text = variant(
            "url-path-prefix = \"https://api.telegram.org/bot{}/\"",
            "url-path-prefix = \"{config.base_url}/bot{}/\"",
        );
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(
            m.capabilities.secrets[1].host.as_deref(),
            Some("{config.base_url}")
        );
        for (prefix, why) in [
            ("{config.nope}/bot{}/", "an undeclared key"),
            ("{config.base_url}bot{}/", "no slash after the reference"),
            ("{config.base_url}/bot/", "no slot"),
            ("{config.base_url}/bot{}/?a", "a query"),
        ] {
            let text = variant(
                "url-path-prefix = \"https://api.telegram.org/bot{}/\"",
                &format!("url-path-prefix = \"{prefix}\""),
            );
            assert_eq!(
                invalid_field(&text),
                "capabilities.secrets[1].url-path-prefix",
                "{why}"
            );
        }
    }

    #[test]
    fn tags_links_and_the_channel_table() {
        let channel = FULL.replace("kind = \"tool\"", "kind = \"channel\"")
            + "\n[channel]\nwebhook-auth = { secret = \"HOOK\", header = \"X-Sig\", scheme = \"hmac-sha256\" }\n";
        let channel = channel.replacen(
            "license = \"Apache-2.0\"",
            "license = \"Apache-2.0\"\ntags = [\"chat\", \"telegram\"]\nhomepage = \"https://example.com\"\nrepository = \"https://example.com/src\"",
            1,
        );
        let m = Manifest::parse(&channel).unwrap();
        assert_eq!(m.tags, ["chat", "telegram"]);
        assert_eq!(m.homepage.as_deref(), Some("https://example.com"));
        assert_eq!(
            m.channel.webhook_auth,
            Some(WebhookAuth {
                secret: "HOOK".into(),
                header: "x-sig".into(),
                scheme: WebhookScheme::HmacSha256,
            })
        );
        // Only a channel has one.
        let tool = variant("wit = \"0.1.0\"", "wit = \"0.1.0\"\n[channel]\n");
        assert_eq!(invalid_field(&tool), "channel");
        for (tags, field) in [
            ("[\"Chat\"]", "tags[0]"),
            ("[\"chat\", \"chat\"]", "tags[1]"),
            ("[\"a--b\"]", "tags[0]"),
        ] {
            let text = variant(
                "wit = \"0.1.0\"",
                &format!("wit = \"0.1.0\"\ntags = {tags}"),
            );
            assert_eq!(invalid_field(&text), field, "{tags}");
        }
        let text = variant("wit = \"0.1.0\"", "wit = \"0.1.0\"\nhomepage = \"ftp://x\"");
        assert_eq!(invalid_field(&text), "homepage");
        let bad_scheme = channel.replace("hmac-sha256", "md5");
        assert_eq!(invalid_field(&bad_scheme), "channel.webhook-auth.scheme");
    }

    #[test]
    fn bad_secret_fields() {
        for (from, to, field) in [
            (
                "name = \"KEY\"",
                "name = \"key\"",
                "capabilities.secrets[2].name",
            ),
            (
                "header = \"Authorization\"",
                "header = \"Host\"",
                "capabilities.secrets[0].header",
            ),
            (
                "header = \"Authorization\"",
                "header = \"Transfer-Encoding\"",
                "capabilities.secrets[0].header",
            ),
            (
                "header = \"Authorization\"",
                "header = \"bad header\"",
                "capabilities.secrets[0].header",
            ),
            (
                "format = \"Bearer {}\"",
                "format = \"Bearer\"",
                "capabilities.secrets[0].format",
            ),
            (
                "format = \"Bearer {}\"",
                "format = \"{} {}\"",
                "capabilities.secrets[0].format",
            ),
            (
                "host = \"api.example.com\"",
                "host = \"*.example.com\"",
                "capabilities.secrets[2].host",
            ),
            (
                "query = \"key\"",
                "query = \"a&b\"",
                "capabilities.secrets[2].query",
            ),
            (
                "query = \"key\"",
                "query = \"key\", format = \"{}\"",
                "capabilities.secrets[2].format",
            ),
        ] {
            assert_eq!(invalid_field(&variant(from, to)), field, "{to}");
        }
    }

    #[test]
    fn bad_http_patterns() {
        for bad in [
            "https://example.com",
            "Example.com",
            "exa_mple.com",
            "*.*.example.com",
            "*example.com",
            "example.com:0",
            "example.com:99999",
            "example.com:",
            "*.127.0.0.1",
            "999.1.1.1",
            "[::1",
            "[nope]",
            "{config.missing}",
            "{config.base_url}/v1",
            "",
            "a..b",
        ] {
            let text = variant("\"en.wikipedia.org\"", &format!("\"{bad}\""));
            assert_eq!(invalid_field(&text), "capabilities.http[0]", "{bad:?}");
        }
    }

    #[test]
    fn bad_workspace_and_limits() {
        let text = variant("workspace = \"read\"", "workspace = \"all\"");
        assert_eq!(invalid_field(&text), "capabilities.workspace");
        let text = variant("memory-mb = 64", "memory-mb = 0");
        assert_eq!(invalid_field(&text), "limits.memory-mb");
        let err = Manifest::parse(&variant("memory-mb = 64", "memory-mb = -1")).unwrap_err();
        assert!(err.to_string().contains("memory-mb"), "{err}");
    }

    /// Found by the `manifest` fuzz target: `nan` was accepted and became `null` in the
    /// schema, so the manifest described something its own text never said.
    #[test]
    fn config_refuses_numbers_json_cannot_hold() {
        for (value, field) in [
            ("nan", "config.properties.base_url.maximum"),
            ("-inf", "config.properties.base_url.maximum"),
            ("[1.0, +inf]", "config.properties.base_url.maximum[1]"),
        ] {
            let text = variant(
                "format = \"uri\"",
                &format!("format = \"uri\"\nmaximum = {value}"),
            );
            assert_eq!(invalid_field(&text), field, "{value}");
        }
        let text = variant("format = \"uri\"", "format = \"uri\"\nmaximum = 1.5");
        let schema = Manifest::parse(&text).unwrap().config_schema.unwrap();
        assert_eq!(schema["properties"]["base_url"]["maximum"], 1.5);
    }

    #[test]
    fn plugin_name_serde_is_validated() {
        let name: PluginName = serde_json::from_str("\"kelp/calc\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"kelp/calc\"");
        assert!(serde_json::from_str::<PluginName>("\"Kelp/calc\"").is_err());
    }

    #[test]
    fn provider_table_is_read_and_checked() {
        let base = "name = \"kelp/x\"\nversion = \"0.1.0\"\nkind = \"provider\"\n\
                    description = \"x\"\nwit = \"0.1.0\"\n";
        let text = format!(
            "{base}[provider]\nmodels-url = \"{{config.base_url}}/v1/models\"\n\
             models-headers = {{ Anthropic-Version = \"2023-06-01\" }}\n"
        );
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(
            m.provider.models_url.as_deref(),
            Some("{config.base_url}/v1/models")
        );
        assert_eq!(
            m.provider.models_headers,
            vec![("anthropic-version".to_owned(), "2023-06-01".to_owned())]
        );
        let bad = format!("{base}[provider]\nmodels-url = \"ftp://x/models\"\n");
        assert_eq!(invalid_field(&bad), "provider.models-url");
        let tool = format!("{base}[provider]\n").replace("\"provider\"", "\"tool\"");
        assert_eq!(invalid_field(&tool), "provider");
        assert_eq!(
            Manifest::parse(base).unwrap().provider,
            ProviderInfo::default()
        );
    }
}
