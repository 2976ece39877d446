//! `kelp/http-fetch`: fetch a web page through the host and return it as readable text.

mod html;
mod url;

use kelp_sdk::http::{HttpError, Request, Response};
use kelp_sdk::tool::{Tool, ToolError, ToolOutput, ToolSpec};
use serde::Deserialize;
use serde_json::{Value, json};

/// The host returns redirects instead of following them so that it re-checks every hop against
/// the grants; five is what browsers' "too many redirects" allows in practice for real sites.
const MAX_REDIRECTS: usize = 5;
const DEFAULT_MAX_CHARS: usize = 20_000;

struct HttpFetch;

#[derive(Deserialize)]
struct Input {
    url: String,
    max_chars: Option<usize>,
}

fn host_error(err: HttpError, url: &str) -> ToolError {
    match err {
        HttpError::Denied(what) => ToolError::Denied(format!(
            "the http capability does not allow {url}: {what} (ask the operator to approve the host)"
        )),
        HttpError::InvalidRequest(why) => ToolError::InvalidInput(format!("{url}: {why}")),
        other => ToolError::Failed(format!("{url}: {other}")),
    }
}

/// Follows redirects itself, each hop as a separate request through the host.
fn fetch(start: &str) -> Result<(String, Response), ToolError> {
    let mut url = start.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let response = Request::get(&url)
            .header(
                "accept",
                "text/html, text/*;q=0.9, application/json;q=0.9, */*;q=0.1",
            )
            .send()
            .map_err(|err| host_error(err, &url))?;
        let location = response.header("location");
        match (response.status, location) {
            (301 | 302 | 303 | 307 | 308, Some(location)) => {
                url = url::resolve(&url, location)
                    .filter(|next| url::is_http(next))
                    .ok_or_else(|| {
                        ToolError::failed(format!(
                            "{url} redirected to an unusable location `{location}`"
                        ))
                    })?;
            }
            _ => return Ok((url, response)),
        }
    }
    Err(ToolError::failed(format!(
        "{start}: more than {MAX_REDIRECTS} redirects (last: {url})"
    )))
}

fn is_textual(mime: &str) -> bool {
    mime.starts_with("text/")
        || matches!(
            mime,
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/rss+xml"
                | "application/atom+xml"
                | "application/x-ndjson"
                | "application/yaml"
                | "application/x-yaml"
                | "application/toml"
        )
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
}

/// The readable text of `response`, or why it has none.
fn readable(response: &Response) -> Result<String, ToolError> {
    let content_type = response.header("content-type").unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = &response.body;
    // Servers that send no content type get sniffed: NUL bytes never occur in text.
    let textual = if mime.is_empty() {
        !body.contains(&0) && std::str::from_utf8(body).is_ok()
    } else {
        is_textual(&mime)
    };
    if !textual {
        return Err(ToolError::failed(format!(
            "the response is binary ({}, {} bytes); http_fetch returns text only",
            if mime.is_empty() {
                "unknown type"
            } else {
                &mime
            },
            body.len()
        )));
    }
    let text = response.text();
    let looks_html = mime == "text/html"
        || mime == "application/xhtml+xml"
        || (mime.is_empty()
            && text.trim_start().get(..15).is_some_and(|s| {
                s.to_ascii_lowercase().starts_with("<!doctype html")
                    || s.to_ascii_lowercase().starts_with("<html")
            }));
    Ok(if looks_html {
        html::to_text(&text)
    } else {
        text
    })
}

fn truncate(text: String, max_chars: usize) -> (String, bool) {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => (text[..cut].to_owned(), true),
        None => (text, false),
    }
}

impl Tool for HttpFetch {
    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "http_fetch",
            "Fetch a URL with GET and return its readable text (HTML is converted to text with \
             headings and paragraphs; scripts, styles and navigation are dropped). Follows up to \
             5 redirects. Only hosts the operator approved are reachable; binary content is \
             refused.",
            json!({
                "type": "object",
                "properties": {
                    "url": { "type": "string", "description": "Absolute http:// or https:// URL." },
                    "max_chars": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Truncate the text to this many characters (default 20000)."
                    }
                },
                "required": ["url"],
                "additionalProperties": false
            }),
        )]
    }

    fn call(name: &str, input: Value) -> Result<ToolOutput, ToolError> {
        if name != "http_fetch" {
            return Err(ToolError::unknown_tool(name));
        }
        let input: Input = serde_json::from_value(input)?;
        if !url::is_http(&input.url) {
            return Err(ToolError::invalid(format!(
                "`{}` is not an absolute http:// or https:// URL",
                input.url
            )));
        }
        let (final_url, response) = fetch(&input.url)?;
        let (text, truncated) = truncate(
            readable(&response)?,
            input.max_chars.unwrap_or(DEFAULT_MAX_CHARS),
        );
        Ok(json!({
            "url": final_url,
            "status": response.status,
            "content_type": response.header("content-type"),
            "text": text,
            "truncated": truncated,
        })
        .into())
    }
}

kelp_sdk::export_tool!(HttpFetch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_is_refused_and_html_converted() {
        let png = Response::new(200, vec![0x89, b'P', b'N', b'G', 0])
            .with_header("content-type", "image/png");
        assert!(
            matches!(readable(&png), Err(ToolError::Failed(m)) if m.contains("binary (image/png"))
        );
        let page = Response::new(200, "<h2>Hi</h2><p>there &amp; back</p>")
            .with_header("content-type", "text/html; charset=utf-8");
        assert_eq!(readable(&page).unwrap(), "## Hi\n\nthere & back");
        let json = Response::new(200, "{\"a\":1}").with_header("content-type", "application/json");
        assert_eq!(readable(&json).unwrap(), "{\"a\":1}");
    }

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("héllo".into(), 2), ("hé".into(), true));
        assert_eq!(truncate("hi".into(), 2), ("hi".into(), false));
    }
}
