//! Just enough URL handling to follow redirects: resolving a `location` against the URL that
//! answered with it (RFC 3986 §5.2, without the corner cases servers do not produce).

/// Splits `url` into `scheme://authority` and the rest (path, query), dropping any fragment.
fn split(url: &str) -> Option<(&str, &str)> {
    let url = url.split('#').next().unwrap_or(url);
    let scheme_end = url.find("://")?;
    let after = scheme_end + 3;
    let path_start = url[after..]
        .find(['/', '?'])
        .map_or(url.len(), |p| after + p);
    Some((&url[..path_start], &url[path_start..]))
}

/// Whether `url` is an absolute `http(s)` URL.
pub fn is_http(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")) && split(url).is_some()
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (n, segment) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// `location` resolved against `base`; `None` when `base` is not an absolute URL.
pub fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.contains("://") {
        return Some(location.to_owned());
    }
    let (origin, rest) = split(base)?;
    if let Some(authority) = location.strip_prefix("//") {
        let scheme = &origin[..origin.find("://")?];
        return Some(format!("{scheme}://{authority}"));
    }
    let base_path = rest.split('?').next().unwrap_or("");
    let resolved = if location.is_empty() {
        rest.to_owned()
    } else if location.starts_with('?') {
        format!("{base_path}{location}")
    } else if location.starts_with('/') {
        let (path, query) = location
            .split_once('?')
            .map_or((location, None), |(p, q)| (p, Some(q)));
        with_query(remove_dot_segments(path), query)
    } else {
        let dir = base_path.rfind('/').map_or("/", |p| &base_path[..=p]);
        let (path, query) = location
            .split_once('?')
            .map_or((location, None), |(p, q)| (p, Some(q)));
        with_query(remove_dot_segments(&format!("{dir}{path}")), query)
    };
    Some(format!("{origin}{resolved}"))
}

fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_locations() {
        let base = "https://a.example/x/y/page?q=1#frag";
        assert_eq!(
            resolve(base, "https://b.example/"),
            Some("https://b.example/".into())
        );
        assert_eq!(
            resolve(base, "//c.example/p"),
            Some("https://c.example/p".into())
        );
        assert_eq!(
            resolve(base, "/root?z=2"),
            Some("https://a.example/root?z=2".into())
        );
        assert_eq!(
            resolve(base, "other"),
            Some("https://a.example/x/y/other".into())
        );
        assert_eq!(
            resolve(base, "../up"),
            Some("https://a.example/x/up".into())
        );
        assert_eq!(
            resolve(base, "?p=3"),
            Some("https://a.example/x/y/page?p=3".into())
        );
        assert_eq!(
            resolve("https://a.example", "next"),
            Some("https://a.example/next".into())
        );
        assert_eq!(resolve("not a url", "next"), None);
    }

    #[test]
    fn recognises_http_urls() {
        assert!(is_http("HTTPS://example.com"));
        assert!(!is_http("ftp://example.com/"));
        assert!(!is_http("example.com"));
    }
}
