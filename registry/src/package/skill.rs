//! `SKILL.md`: YAML front matter between `---` lines, then Markdown instructions, in the
//! Agent Skills format (agentskills.io), so a skill written for another agent installs here
//! unchanged and one published here works elsewhere.
//!
//! The front matter is read with a real YAML parser: authors write block scalars (`>`, `|`),
//! quoted strings, maps and lists, and a hand-rolled subset would refuse valid skills or,
//! worse, read them differently. The fields are the format's six and no others — `name`,
//! `description`, `license`, `compatibility`, `metadata`, `allowed-tools` — as its reference
//! validator (`skills-ref`) enforces: an unknown key is refused rather than ignored, because a
//! misspelt `descripton:` silently dropped would leave the skill without what the model sees,
//! and because anything else has a home in `metadata`.

use std::collections::BTreeMap;

use serde_norway::Value;

use super::PackageError;
use crate::manifest::is_kebab;

/// Longest `name`, in characters.
pub const MAX_SKILL_NAME_CHARS: usize = 64;
/// Longest `description`, in characters: it enters every prompt of every agent using the
/// skill.
pub const MAX_SKILL_DESCRIPTION_CHARS: usize = 1024;
/// Longest `compatibility`, in characters.
pub const MAX_SKILL_COMPATIBILITY_CHARS: usize = 500;

/// The front matter keys the format defines.
const FIELDS: &[&str] = &[
    "name",
    "description",
    "license",
    "compatibility",
    "metadata",
    "allowed-tools",
];

/// A parsed `SKILL.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    /// 1–64 characters of lowercase kebab case: how the model asks for the skill.
    pub name: String,
    /// What the skill does and when to use it, as written (a block scalar keeps its line
    /// breaks); shown to the model. At most 1024 characters.
    pub description: String,
    /// A licence name or the name of a licence file.
    pub license: Option<String>,
    /// Environment requirements, at most 500 characters.
    pub compatibility: Option<String>,
    /// Properties the format does not define (`author`, `version`, …), string to string.
    pub metadata: BTreeMap<String, String>,
    /// Tools the skill expects to use (`allowed-tools`, experimental in the format), whether
    /// written as a space-separated string or a list. Kelp grants nothing from it: an agent's
    /// tools are what its owner chose.
    pub allowed_tools: Vec<String>,
    /// Everything after the closing `---` line.
    pub body: String,
}

fn structure(message: impl Into<String>) -> PackageError {
    PackageError::SkillFrontMatter(message.into())
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> PackageError {
    PackageError::SkillField {
        field: field.into(),
        message: message.into(),
    }
}

/// Splits `SKILL.md` into front matter and body and checks every field.
pub fn parse_skill(text: &str) -> Result<Skill, PackageError> {
    let (front, body) = split_front_matter(text)?;
    // One empty line stands for the opening `---`, so the line numbers in YAML errors are
    // the file's.
    let document: Value = serde_norway::from_str(&format!("\n{front}"))
        .map_err(|e| structure(format!("not valid YAML: {e}")))?;
    let mapping = match document {
        Value::Mapping(mapping) => mapping,
        Value::Null => return Err(structure("is empty; `name` and `description` are required")),
        _ => return Err(structure("must be a mapping of `key: value` lines")),
    };

    let mut name = None;
    let mut description = None;
    let mut license = None;
    let mut compatibility = None;
    let mut metadata = BTreeMap::new();
    let mut allowed_tools = Vec::new();
    for (key, value) in mapping {
        let Value::String(key) = key else {
            return Err(structure(format!(
                "key `{}` is not a string",
                short_yaml(&key)
            )));
        };
        match key.as_str() {
            "name" => name = Some(check_name(string(&key, value)?)?),
            "description" => {
                description = Some(bounded(
                    &key,
                    string(&key, value)?,
                    MAX_SKILL_DESCRIPTION_CHARS,
                )?);
            }
            "license" => license = Some(bounded(&key, string(&key, value)?, usize::MAX)?),
            "compatibility" => {
                compatibility = Some(bounded(
                    &key,
                    string(&key, value)?,
                    MAX_SKILL_COMPATIBILITY_CHARS,
                )?);
            }
            "metadata" => metadata = string_map(&key, value)?,
            "allowed-tools" => allowed_tools = tool_list(&key, value)?,
            _ => {
                return Err(field_error(
                    key,
                    format!(
                        "is not a SKILL.md field; the front matter holds only {} (put other \
                         properties under `metadata`)",
                        FIELDS
                            .iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    }
    Ok(Skill {
        name: name.ok_or_else(|| field_error("name", "is missing"))?,
        description: description.ok_or_else(|| field_error("description", "is missing"))?,
        license,
        compatibility,
        metadata,
        allowed_tools,
        body: body.to_owned(),
    })
}

/// The text between the opening and closing `---` lines, and everything after the closing
/// one. Lines may end in `\r\n`. Only an unindented `---` closes, so a block scalar (whose
/// lines are indented) cannot end the front matter early.
fn split_front_matter(text: &str) -> Result<(&str, &str), PackageError> {
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or_default();
    if first.trim_end() != "---" {
        return Err(structure("SKILL.md must start with a `---` line"));
    }
    let start = first.len();
    let mut end = start;
    for line in lines {
        if line.trim_end() == "---" {
            return Ok((&text[start..end], &text[end + line.len()..]));
        }
        end += line.len();
    }
    Err(structure("no closing `---` line"))
}

/// A YAML value on one line (as JSON, which YAML reads too), shortened for an error message.
fn short_yaml(value: &Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "?".into());
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A string value. Numbers and booleans are refused rather than turned into text: `1.10`
/// would come back as `1.1`; quoting says what was meant.
fn string(field: &str, value: Value) -> Result<String, PackageError> {
    match value {
        Value::String(s) => Ok(s),
        Value::Null => Err(field_error(field, "is empty")),
        Value::Number(_) | Value::Bool(_) => Err(field_error(
            field,
            format!(
                "must be a string, not the {} `{}`; put the value in quotes as you mean it",
                if matches!(value, Value::Bool(_)) {
                    "boolean"
                } else {
                    "number"
                },
                short_yaml(&value)
            ),
        )),
        other => Err(field_error(
            field,
            format!("must be a string, not `{}`", short_yaml(&other)),
        )),
    }
}

/// Non-blank and at most `max` characters.
fn bounded(field: &str, value: String, max: usize) -> Result<String, PackageError> {
    if value.trim().is_empty() {
        return Err(field_error(field, "is empty"));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(field_error(
            field,
            format!("is {chars} characters long; at most {max} are allowed"),
        ));
    }
    Ok(value)
}

fn check_name(name: String) -> Result<String, PackageError> {
    if name.chars().count() > MAX_SKILL_NAME_CHARS || !is_kebab(&name) {
        return Err(field_error(
            "name",
            format!(
                "`{}` must be 1 to {MAX_SKILL_NAME_CHARS} characters of lowercase letters a-z, \
                 digits and hyphens, with no hyphen at the start or end and none doubled",
                name.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(name)
}

fn string_map(field: &str, value: Value) -> Result<BTreeMap<String, String>, PackageError> {
    let Value::Mapping(mapping) = value else {
        return Err(field_error(
            field,
            "must be a map of string keys to string values",
        ));
    };
    let mut out = BTreeMap::new();
    for (key, value) in mapping {
        let Value::String(key) = key else {
            return Err(field_error(
                field,
                format!("key `{}` is not a string", short_yaml(&key)),
            ));
        };
        let value = string(&format!("{field}.{key}"), value)?;
        out.insert(key, value);
    }
    Ok(out)
}

/// `allowed-tools`: a space-separated string or a list of strings.
fn tool_list(field: &str, value: Value) -> Result<Vec<String>, PackageError> {
    match value {
        Value::String(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                bounded(
                    &format!("{field}[{i}]"),
                    string(&format!("{field}[{i}]"), item)?,
                    usize::MAX,
                )
            })
            .collect(),
        other => Err(field_error(
            field,
            format!(
                "must be a space-separated string or a list of strings, not `{}`",
                short_yaml(&other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
