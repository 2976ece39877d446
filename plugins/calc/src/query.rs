//! A small JSON path language: `.a.b[0].c`, `["key with dots"]`, `[-1]` (from the end) and
//! `[*]` / `.*` (every element of an array or value of an object).
//!
//! Without a wildcard the result is the one value found; with one, it is the array of every
//! match, and elements lacking the rest of the path are skipped rather than failing the query.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
    All,
}

fn parse(path: &str) -> Result<Vec<Step>, String> {
    let chars: Vec<char> = path.trim().chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let key: String = chars[start..i].iter().collect();
                match key.as_str() {
                    // A lone `.` (the whole document) or a trailing one.
                    "" if i == chars.len() || start == 1 => {}
                    "" => return Err(format!("empty key at position {}", start + 1)),
                    "*" => steps.push(Step::All),
                    _ => steps.push(Step::Key(key)),
                }
            }
            '[' => {
                let start = i + 1;
                let close = if chars.get(start) == Some(&'"') {
                    // Quoted key: find the closing quote, allowing `\"` inside.
                    let mut j = start + 1;
                    while j < chars.len() && chars[j] != '"' {
                        j += if chars[j] == '\\' { 2 } else { 1 };
                    }
                    j + 1
                } else {
                    (start..chars.len())
                        .find(|&j| chars[j] == ']')
                        .unwrap_or(chars.len())
                };
                if chars.get(close) != Some(&']') {
                    return Err(format!("unclosed `[` at position {}", i + 1));
                }
                let inner: String = chars[start..close].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if inner.starts_with('"') {
                    let key: String = serde_json::from_str(inner)
                        .map_err(|e| format!("bad quoted key at position {}: {e}", start + 1))?;
                    steps.push(Step::Key(key));
                } else {
                    let index = inner.parse::<i64>().map_err(|_| {
                        format!(
                            "expected an index, `*` or a quoted key inside `[]` at position {}, found `{inner}`",
                            start + 1
                        )
                    })?;
                    steps.push(Step::Index(index));
                }
                i = close + 1;
            }
            _ if i == 0 => {
                // Tolerate a path without the leading dot: `a.b`.
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                steps.push(Step::Key(chars[start..i].iter().collect()));
            }
            c => return Err(format!("unexpected `{c}` at position {}", i + 1)),
        }
    }
    Ok(steps)
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn render(steps: &[Step]) -> String {
    if steps.is_empty() {
        return ".".into();
    }
    steps
        .iter()
        .map(|step| match step {
            Step::Key(key) => format!(".{key}"),
            Step::Index(i) => format!("[{i}]"),
            Step::All => "[*]".into(),
        })
        .collect()
}

fn step<'a>(value: &'a Value, step: &Step) -> Result<Vec<&'a Value>, String> {
    match (step, value) {
        (Step::Key(key), Value::Object(map)) => map
            .get(key)
            .map(|v| vec![v])
            .ok_or_else(|| format!("no key `{key}`")),
        (Step::Index(index), Value::Array(items)) => {
            let len = items.len() as i64;
            let at = if *index < 0 { len + index } else { *index };
            usize::try_from(at)
                .ok()
                .and_then(|at| items.get(at))
                .map(|v| vec![v])
                .ok_or_else(|| format!("index {index} out of range (length {len})"))
        }
        (Step::All, Value::Array(items)) => Ok(items.iter().collect()),
        (Step::All, Value::Object(map)) => Ok(map.values().collect()),
        (Step::Key(key), other) => Err(format!("cannot take key `{key}` of {}", describe(other))),
        (Step::Index(i), other) => Err(format!("cannot index [{i}] into {}", describe(other))),
        (Step::All, other) => Err(format!("cannot take [*] of {}", describe(other))),
    }
}

/// Evaluates `path` against `document`.
pub fn query(document: &Value, path: &str) -> Result<Value, String> {
    let steps = parse(path)?;
    let wildcard = steps.contains(&Step::All);
    let mut current = vec![document];
    for (n, s) in steps.iter().enumerate() {
        let mut next = Vec::new();
        for value in current {
            match step(value, s) {
                Ok(found) => next.extend(found),
                Err(_) if wildcard => {}
                Err(why) => return Err(format!("{why} at `{}`", render(&steps[..n]))),
            }
        }
        current = next;
    }
    if wildcard {
        Ok(Value::Array(current.into_iter().cloned().collect()))
    } else {
        Ok(current.first().map(|v| (*v).clone()).unwrap_or(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "a": { "b": [ { "c": 1 }, { "c": 2 }, { "d": 3 } ] },
            "dotted.key": true,
            "list": [10, 20, 30]
        })
    }

    #[test]
    fn paths() {
        assert_eq!(query(&doc(), ".a.b[0].c"), Ok(json!(1)));
        assert_eq!(query(&doc(), "a.b[1].c"), Ok(json!(2)));
        assert_eq!(query(&doc(), ".list[-1]"), Ok(json!(30)));
        assert_eq!(query(&doc(), "[\"dotted.key\"]"), Ok(json!(true)));
        assert_eq!(query(&doc(), "."), Ok(doc()));
        assert_eq!(query(&doc(), ""), Ok(doc()));
    }

    #[test]
    fn wildcards_collect_and_skip_missing() {
        assert_eq!(query(&doc(), ".a.b[*].c"), Ok(json!([1, 2])));
        assert_eq!(query(&doc(), ".list.*"), Ok(json!([10, 20, 30])));
    }

    #[test]
    fn errors_name_where() {
        assert_eq!(
            query(&doc(), ".a.x.y"),
            Err("no key `x` at `.a`".to_string())
        );
        assert_eq!(
            query(&doc(), ".list[5]"),
            Err("index 5 out of range (length 3) at `.list`".to_string())
        );
        assert_eq!(
            query(&doc(), ".list.a"),
            Err("cannot take key `a` of an array at `.list`".to_string())
        );
        assert!(
            query(&doc(), ".a[x]")
                .unwrap_err()
                .contains("expected an index")
        );
        assert!(query(&doc(), ".a[0").unwrap_err().contains("unclosed"));
    }
}
