//! HTML to readable text: what a person would read on the page, with headings and paragraph
//! breaks kept and page furniture (scripts, styles, navigation) dropped. Not a conforming HTML
//! parser; it only has to be robust against whatever the web serves.

/// Elements whose content is never readable text.
const SKIPPED: &[&str] = &[
    "script", "style", "nav", "noscript", "template", "svg", "iframe", "object", "canvas",
];

/// Elements that start and end a block of text.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "blockquote",
    "pre",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "form",
    "fieldset",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "title",
    "body",
    "html",
];

struct Writer {
    out: String,
    // Pending whitespace is written lazily, so that runs collapse and blocks never start or end
    // with a space.
    pending_space: bool,
    pending_breaks: usize,
    in_pre: usize,
}

impl Writer {
    fn text(&mut self, text: &str) {
        for c in text.chars() {
            if self.in_pre > 0 {
                if c == '\n' {
                    self.out.push('\n');
                    continue;
                }
            } else if c.is_whitespace() {
                self.pending_space = true;
                continue;
            }
            self.flush();
            self.out.push(c);
        }
    }

    fn flush(&mut self) {
        if self.pending_breaks > 0 {
            if !self.out.is_empty() {
                let have = self.out.chars().rev().take_while(|&c| c == '\n').count();
                for _ in have..self.pending_breaks {
                    self.out.push('\n');
                }
            }
            self.pending_breaks = 0;
            self.pending_space = false;
        } else if self.pending_space {
            if !self.out.is_empty() && !self.out.ends_with('\n') {
                self.out.push(' ');
            }
            self.pending_space = false;
        }
    }

    fn breaks(&mut self, n: usize) {
        self.pending_breaks = self.pending_breaks.max(n);
    }
}

fn tag_name(tag: &str) -> (bool, String) {
    let closing = tag.starts_with('/');
    let name: String = tag
        .trim_start_matches('/')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (closing, name.to_ascii_lowercase())
}

/// Converts an HTML document to text.
pub fn to_text(html: &str) -> String {
    let mut w = Writer {
        out: String::new(),
        pending_space: false,
        pending_breaks: 0,
        in_pre: 0,
    };
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let Some(lt) = html[i..].find('<').map(|p| p + i) else {
            w.text(&decode_entities(&html[i..]));
            break;
        };
        w.text(&decode_entities(&html[i..lt]));
        let rest = &html[lt..];
        if rest.starts_with("<!--") {
            i = rest.find("-->").map_or(html.len(), |p| lt + p + 3);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            break;
        };
        let tag = &rest[1..gt];
        i = lt + gt + 1;
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let (closing, name) = tag_name(tag);
        if name.is_empty() {
            // A `<` that does not open a tag is text.
            w.text("<");
            i = lt + 1;
            continue;
        }
        if !closing && SKIPPED.contains(&name.as_str()) && !tag.ends_with('/') {
            let end = format!("</{name}");
            i = lower[i..]
                .find(&end)
                .and_then(|p| lower[i + p..].find('>').map(|q| i + p + q + 1))
                .unwrap_or(html.len());
            continue;
        }
        match name.as_str() {
            "br" => {
                w.out.push('\n');
                w.pending_space = false;
            }
            "hr" => w.breaks(2),
            "li" if !closing => {
                w.breaks(1);
                w.flush();
                w.out.push_str("- ");
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                w.breaks(2);
                if !closing {
                    w.flush();
                    let level = usize::from(name.as_bytes()[1] - b'0');
                    w.out.push_str(&"#".repeat(level));
                    w.out.push(' ');
                }
            }
            "td" | "th" if !closing => w.pending_space = true,
            "pre" => {
                w.breaks(2);
                if closing {
                    w.in_pre = w.in_pre.saturating_sub(1);
                } else {
                    w.in_pre += 1;
                }
            }
            "tr" | "dt" | "dd" => w.breaks(1),
            _ if BLOCKS.contains(&name.as_str()) => w.breaks(2),
            _ => {}
        }
    }
    w.out.trim().to_owned()
}

/// Decodes character references: numeric ones and the named ones common in prose.
pub fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .char_indices()
            .take(10)
            .find(|&(_, c)| c == ';' || !(c.is_ascii_alphanumeric() || c == '#'))
            .filter(|&(_, c)| c == ';')
            .map(|(p, _)| p + 1);
        let decoded = end.and_then(|end| {
            let name = &rest[1..end];
            let c = if let Some(num) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                u32::from_str_radix(num, 16).ok().and_then(char::from_u32)
            } else if let Some(num) = name.strip_prefix('#') {
                num.parse().ok().and_then(char::from_u32)
            } else {
                named(name)
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn named(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "euro" => '€',
        "pound" => '£',
        "deg" => '°',
        "middot" => '·',
        "bull" => '•',
        "times" => '×',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_headings_and_paragraphs_drops_furniture() {
        let html = r#"<!DOCTYPE html><html><head><title>T</title>
            <style>body { color: red }</style><script>alert("<p>x</p>")</script></head>
            <body><nav><a href="/">Home</a></nav>
            <h1>Main   title</h1><p>First <b>para</b>graph.</p>
            <p>Second<br>line</p><!-- hidden -->
            <ul><li>one</li><li>two</li></ul></body></html>"#;
        assert_eq!(
            to_text(html),
            "T\n\n# Main title\n\nFirst paragraph.\n\nSecond\nline\n\n- one\n- two"
        );
    }

    #[test]
    fn decodes_entities() {
        assert_eq!(
            decode_entities("a &amp; b &lt;c&gt; &#65;&#x42; &mdash; &unknown; & x"),
            "a & b <c> AB — &unknown; & x"
        );
    }

    #[test]
    fn preformatted_text_keeps_newlines() {
        assert_eq!(to_text("<pre>a\n  b</pre>"), "a\n  b");
    }

    #[test]
    fn stray_less_than_is_text() {
        assert_eq!(to_text("<p>1 < 2</p>"), "1 < 2");
    }
}
