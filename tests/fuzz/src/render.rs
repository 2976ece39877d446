//! Writers that turn a parsed value back into text, for round-trip properties: what a parser
//! accepted must be expressible, and must parse back to the same value.

use kelp_registry::manifest::{Manifest, SecretPosition};
use kelp_registry::package::Skill;
use toml::{Table, Value};

/// `kelp.toml` for `manifest`. Panics on a value TOML cannot hold: the parser should never
/// have accepted one.
pub fn manifest_toml(manifest: &Manifest) -> String {
    let mut root = Table::new();
    let put = |table: &mut Table, key: &str, value: Value| {
        table.insert(key.to_owned(), value);
    };
    put(&mut root, "name", manifest.name.to_string().into());
    put(&mut root, "version", manifest.version.to_string().into());
    put(&mut root, "kind", manifest.kind.as_str().into());
    put(
        &mut root,
        "description",
        manifest.description.clone().into(),
    );
    if let Some(license) = &manifest.license {
        put(&mut root, "license", license.clone().into());
    }
    if let Some(wit) = &manifest.wit {
        put(&mut root, "wit", wit.to_string().into());
    }

    let caps = &manifest.capabilities;
    let mut capabilities = Table::new();
    put(
        &mut capabilities,
        "http",
        Value::Array(caps.http.iter().cloned().map(Value::from).collect()),
    );
    put(&mut capabilities, "kv", caps.kv.into());
    put(
        &mut capabilities,
        "workspace",
        caps.workspace.to_string().into(),
    );
    let mut secrets = Vec::new();
    for secret in &caps.secrets {
        let mut s = Table::new();
        put(&mut s, "name", secret.name.clone().into());
        match &secret.position {
            SecretPosition::UrlPathPrefix(url) => {
                put(&mut s, "url-path-prefix", url.clone().into());
            }
            position => {
                let host = secret.host.clone().expect("a validated secret has a host");
                put(&mut s, "host", host.into());
                match position {
                    SecretPosition::Header { name, format } => {
                        put(&mut s, "header", name.clone().into());
                        put(&mut s, "format", format.clone().into());
                    }
                    SecretPosition::Query(q) => put(&mut s, "query", q.clone().into()),
                    SecretPosition::FormField(f) => put(&mut s, "form-field", f.clone().into()),
                    SecretPosition::UrlPathPrefix(_) => unreachable!(),
                }
            }
        }
        secrets.push(Value::Table(s));
    }
    put(&mut capabilities, "secrets", Value::Array(secrets));
    put(&mut root, "capabilities", Value::Table(capabilities));

    if let Some(schema) = &manifest.config_schema {
        put(&mut root, "config", json_to_toml(schema));
    }

    let mut limits = Table::new();
    for (key, value) in [
        ("timeout-ms", manifest.limits.timeout_ms),
        ("memory-mb", manifest.limits.memory_mb),
        ("log-bytes", manifest.limits.log_bytes),
        ("output-bytes", manifest.limits.output_bytes),
    ] {
        if let Some(value) = value {
            let value = i64::try_from(value).expect("a limit TOML could hold");
            put(&mut limits, key, value.into());
        }
    }
    put(&mut root, "limits", Value::Table(limits));

    toml::to_string(&root).expect("a TOML table serialises")
}

fn json_to_toml(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => panic!("the config schema holds a null, which TOML cannot write"),
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().expect("a JSON number")),
        },
        J::String(s) => Value::String(s.clone()),
        J::Array(a) => Value::Array(a.iter().map(json_to_toml).collect()),
        J::Object(o) => Value::Table(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_toml(v)))
                .collect(),
        ),
    }
}

/// `SKILL.md` for `skill`, every value double-quoted and each optional field written only
/// when it is set (an empty `metadata` or `allowed-tools` is the same as none).
pub fn skill_md(skill: &Skill) -> String {
    let mut out = format!(
        "---\nname: {}\ndescription: {}\n",
        quote(&skill.name),
        quote(&skill.description)
    );
    if let Some(license) = &skill.license {
        out.push_str(&format!("license: {}\n", quote(license)));
    }
    if let Some(compatibility) = &skill.compatibility {
        out.push_str(&format!("compatibility: {}\n", quote(compatibility)));
    }
    if !skill.metadata.is_empty() {
        out.push_str("metadata:\n");
        for (key, value) in &skill.metadata {
            out.push_str(&format!("  {}: {}\n", quote(key), quote(value)));
        }
    }
    if !skill.allowed_tools.is_empty() {
        out.push_str("allowed-tools:\n");
        for tool in &skill.allowed_tools {
            out.push_str(&format!("  - {}\n", quote(tool)));
        }
    }
    out.push_str("---\n");
    out.push_str(&skill.body);
    out
}

/// A YAML double-quoted scalar. Every control character, and every other character libyaml
/// reads as a line break or a byte-order mark, is escaped (`\uXXXX`): written raw, a line
/// break would be folded into a space and a tab could be trimmed, so the value would not
/// read back the same.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
