//! CommonMark, as a model writes it, in the HTML that Telegram's `parse_mode: "HTML"` reads.
//!
//! Telegram refuses a whole message whose HTML it cannot read: a tag it does not know, a tag
//! left open, a bare `<` or `&`. So every piece of text is escaped, and every tag written here
//! is closed, since each opens on a parser's start event and closes on the matching end event.
//! Telegram settles the nesting it does not allow by dropping formatting; the cases that would
//! make no sense are written as plain text here instead (a link or code inside a link, a quote
//! inside a quote, bold inside bold). Headings become bold lines, lists become lines with `•`
//! or their numbers, and what Telegram has no form for (tables, raw HTML) stays the text it
//! was written as.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

/// `markdown` as Telegram HTML.
pub fn from_markdown(markdown: &str) -> String {
    let mut writer = Writer::default();
    for event in Parser::new_ext(markdown, Options::ENABLE_STRIKETHROUGH) {
        writer.event(event);
    }
    writer.out
}

#[derive(Default)]
struct Writer {
    out: String,
    /// Line breaks owed before the next text: 1 between list items, 2 between blocks.
    breaks: usize,
    /// A list item's marker or a quote's tag was just written: the block inside it starts
    /// right there.
    at_block_start: bool,
    /// What each open element closes with (`""` if it opened no tag), innermost last.
    open: Vec<&'static str>,
    /// The open lists, innermost last: the next number of an ordered one, `None` for bullets.
    lists: Vec<Option<u64>>,
    /// Inside a code block: text as it is, no tags.
    in_code_block: bool,
    /// How many links (or images) are open: Telegram takes no link or code inside a link.
    links: usize,
    /// How many quotes are open: Telegram takes no quote inside a quote.
    quotes: usize,
}

impl Writer {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            // Raw HTML the model wrote is shown, not obeyed.
            Event::Text(text) | Event::Html(text) | Event::InlineHtml(text) => self.text(&text),
            Event::Code(code) => {
                if self.links > 0 || self.in_code_block {
                    self.text(&code);
                } else {
                    self.flush();
                    self.out.push_str("<code>");
                    escape_into(&mut self.out, &code, false);
                    self.out.push_str("</code>");
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                self.flush();
                self.out.push('\n');
            }
            Event::Rule => {
                self.block(2);
                self.flush();
                self.out.push_str("———");
                self.block(2);
            }
            // Math, footnotes and task lists are not enabled; their text would come as text.
            _ => {}
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        let close = match tag {
            Tag::Paragraph | Tag::HtmlBlock => {
                self.block(2);
                ""
            }
            Tag::Heading { .. } => {
                self.block(2);
                self.open_tag("b")
            }
            Tag::BlockQuote(_) => {
                self.block(2);
                self.quotes += 1;
                if self.quotes == 1 {
                    self.flush();
                    self.out.push_str("<blockquote>");
                    self.at_block_start = true;
                    "</blockquote>"
                } else {
                    ""
                }
            }
            Tag::CodeBlock(kind) => {
                self.block(2);
                self.flush();
                self.in_code_block = true;
                let info = match &kind {
                    CodeBlockKind::Fenced(info) => info.as_ref(),
                    CodeBlockKind::Indented => "",
                };
                match language(info) {
                    Some(language) => {
                        self.out
                            .push_str(&format!("<pre><code class=\"language-{language}\">"));
                        "</code></pre>"
                    }
                    None => {
                        self.out.push_str("<pre>");
                        "</pre>"
                    }
                }
            }
            Tag::List(first) => {
                self.block(if self.lists.is_empty() { 2 } else { 1 });
                self.lists.push(first);
                ""
            }
            Tag::Item => {
                self.block(1);
                self.flush();
                let depth = self.lists.len().saturating_sub(1);
                self.out.push_str(&"  ".repeat(depth));
                match self.lists.last_mut() {
                    Some(Some(number)) => {
                        self.out.push_str(&format!("{number}. "));
                        *number += 1;
                    }
                    _ => self.out.push_str("• "),
                }
                self.at_block_start = true;
                ""
            }
            Tag::Emphasis => self.open_tag("i"),
            Tag::Strong => self.open_tag("b"),
            Tag::Strikethrough => self.open_tag("s"),
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                self.links += 1;
                if self.links == 1 && !self.in_code_block && is_linkable(&dest_url) {
                    self.flush();
                    self.out.push_str("<a href=\"");
                    escape_into(&mut self.out, &dest_url, true);
                    self.out.push_str("\">");
                    "</a>"
                } else {
                    ""
                }
            }
            // Not enabled (tables, footnotes, ...): their text still comes as text.
            _ => "",
        };
        self.open.push(close);
    }

    fn end(&mut self, tag: TagEnd) {
        if tag == TagEnd::CodeBlock && self.out.ends_with('\n') {
            // The block's last line ends with a newline that only closes the fence.
            self.out.pop();
        }
        let close = self.open.pop().unwrap_or_default();
        self.out.push_str(close);
        match tag {
            TagEnd::Paragraph | TagEnd::HtmlBlock | TagEnd::Heading(_) => self.block(2),
            TagEnd::BlockQuote(_) => {
                self.quotes -= 1;
                self.block(2);
            }
            TagEnd::CodeBlock => {
                self.in_code_block = false;
                self.block(2);
            }
            TagEnd::List(_) => {
                self.lists.pop();
                self.block(if self.lists.is_empty() { 2 } else { 1 });
            }
            TagEnd::Item => self.block(1),
            TagEnd::Link | TagEnd::Image => self.links -= 1,
            _ => {}
        }
    }

    /// Opens `<name>` unless it is open already or Telegram would refuse it here; returns what
    /// closes it.
    fn open_tag(&mut self, name: &'static str) -> &'static str {
        let (open, close) = match name {
            "b" => ("<b>", "</b>"),
            "i" => ("<i>", "</i>"),
            "s" => ("<s>", "</s>"),
            _ => unreachable!("no tag {name}"),
        };
        if self.in_code_block || self.open.contains(&close) {
            return "";
        }
        self.flush();
        self.out.push_str(open);
        close
    }

    fn text(&mut self, text: &str) {
        self.flush();
        escape_into(&mut self.out, text, false);
    }

    /// A block starts or ends here: at least `breaks` line breaks before the next text.
    fn block(&mut self, breaks: usize) {
        if !self.at_block_start {
            self.breaks = self.breaks.max(breaks);
        }
    }

    /// Writes the line breaks owed, before text or an opening tag.
    fn flush(&mut self) {
        if !self.out.is_empty() {
            for _ in 0..self.breaks {
                self.out.push('\n');
            }
        }
        self.breaks = 0;
        self.at_block_start = false;
    }
}

/// The language of a fenced code block (its info string's first word), if it is one a
/// `class` attribute can carry as it is.
fn language(info: &str) -> Option<&str> {
    let word = info.split_whitespace().next()?;
    word.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+#._-".contains(&b))
        .then_some(word)
}

/// Telegram links only to web pages and to its own `tg://` links; anything else (a relative
/// path, `mailto:`, `javascript:`) would make it refuse the message, so it stays text.
fn is_linkable(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["http://", "https://", "tg://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme) && lower.len() > scheme.len())
}

/// Appends `text` with `<`, `>` and `&` (and, in an attribute, `"`) as entities.
fn escape_into(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' if attribute => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn converts(markdown: &str, html: &str) {
        assert_eq!(from_markdown(markdown), html, "from {markdown:?}");
    }

    #[test]
    fn text_is_escaped_everywhere() {
        converts("a < b & c", "a &lt; b &amp; c");
        converts("**x** <y>", "<b>x</b> &lt;y&gt;");
        converts("`a<b && c>d`", "<code>a&lt;b &amp;&amp; c&gt;d</code>");
        converts(
            "```\nif a < b && c > d {}\n```",
            "<pre>if a &lt; b &amp;&amp; c &gt; d {}</pre>",
        );
        // Raw HTML is shown, not obeyed.
        converts("<b>hi</b> &amp; bye", "&lt;b&gt;hi&lt;/b&gt; &amp; bye");
        converts("<div>\nblock\n</div>", "&lt;div&gt;\nblock\n&lt;/div&gt;");
        converts("1 &lt; 2", "1 &lt; 2");
        converts("\\*not emphasis\\*", "*not emphasis*");
    }

    #[test]
    fn emphasis_code_and_links() {
        converts("*it* and _it_", "<i>it</i> and <i>it</i>");
        converts("__bold__ ~~gone~~", "<b>bold</b> <s>gone</s>");
        converts("***both***", "<i><b>both</b></i>");
        converts(
            "snake_case_name and 2*3*4",
            "snake_case_name and 2<i>3</i>4",
        );
        converts("**unclosed and `tick", "**unclosed and `tick");
        converts(
            "[the docs](https://core.telegram.org/bots/api?a=1&b=\"2\")",
            "<a href=\"https://core.telegram.org/bots/api?a=1&amp;b=&quot;2&quot;\">the docs</a>",
        );
        converts(
            "<https://example.com>",
            "<a href=\"https://example.com\">https://example.com</a>",
        );
        converts(
            "**see [this](https://x.y)**",
            "<b>see <a href=\"https://x.y\">this</a></b>",
        );
        // No code and no link inside a link.
        converts(
            "[`run` it](https://x.y)",
            "<a href=\"https://x.y\">run it</a>",
        );
        converts(
            "[![logo](https://x.y/l.png)](https://x.y)",
            "<a href=\"https://x.y\">logo</a>",
        );
        // Only web and tg:// links.
        converts("[here](./relative.md) [mail](mailto:a@b.c)", "here mail");
        converts(
            "![a cat](https://x.y/cat.png)",
            "<a href=\"https://x.y/cat.png\">a cat</a>",
        );
    }

    #[test]
    fn blocks() {
        converts("# Title\n\nSome text.", "<b>Title</b>\n\nSome text.");
        converts("## **Bold** title", "<b>Bold title</b>");
        converts("line one\nline two", "line one\nline two");
        converts(
            "```rust\nfn main() {\n    println!(\"<3\");\n}\n```",
            "<pre><code class=\"language-rust\">fn main() {\n    println!(\"&lt;3\");\n}</code></pre>",
        );
        converts("```a\"b\ncode\n```", "<pre>code</pre>");
        converts("    indented code", "<pre>indented code</pre>");
        converts(
            "> quoted **words**\n> > nested",
            "<blockquote>quoted <b>words</b>\n\nnested</blockquote>",
        );
        converts("one\n\n---\n\ntwo", "one\n\n———\n\ntwo");
        converts(
            "| a | b |\n|---|---|\n| 1 | 2 |",
            "| a | b |\n|---|---|\n| 1 | 2 |",
        );
    }

    #[test]
    fn lists_become_lines() {
        converts("- apples\n- pears", "• apples\n• pears");
        converts(
            "Intro:\n\n3. three\n4. four\n\nAfter.",
            "Intro:\n\n3. three\n4. four\n\nAfter.",
        );
        converts(
            "- fruit\n  - apples\n  - pears\n- *veg*",
            "• fruit\n  • apples\n  • pears\n• <i>veg</i>",
        );
        converts("- one\n\n- two", "• one\n\n• two");
        converts(
            "1. run:\n\n   ```sh\n   ls\n   ```",
            "1. run:\n\n<pre><code class=\"language-sh\">ls</code></pre>",
        );
    }

    /// Every sequence of up to four of these pieces converts to HTML whose tags are balanced
    /// and whose text has no bare `<`, `>` or `&`: what Telegram needs to take the message.
    #[test]
    fn tags_always_balance() {
        const PIECES: &[&str] = &[
            "*",
            "**",
            "_",
            "`",
            "```",
            "~~",
            "[",
            "](https://x.y)",
            "<",
            "&",
            "> ",
            "# ",
            "- ",
            "1. ",
            "\n",
            "\n\n",
            "a",
            " ",
            "<b>",
            "![",
            "\\",
        ];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            inputs = inputs
                .iter()
                .flat_map(|input| PIECES.iter().map(move |piece| format!("{input}{piece}")))
                .collect();
            for input in &inputs {
                let html = from_markdown(input);
                if let Err(why) = check_html(&html) {
                    panic!("{input:?} → {html:?}: {why}");
                }
            }
        }
    }

    /// Checks that `html` is text and Telegram's tags, properly nested.
    fn check_html(html: &str) -> Result<(), String> {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = html;
        while let Some(at) = rest.find(['<', '>', '&']) {
            let (_, tail) = rest.split_at(at);
            if let Some(entity) = ["&lt;", "&gt;", "&amp;", "&quot;"]
                .iter()
                .find(|e| tail.starts_with(**e))
            {
                rest = &tail[entity.len()..];
                continue;
            }
            if !tail.starts_with('<') {
                return Err(format!("bare character at {tail:?}"));
            }
            let end = tail.find('>').ok_or("a tag that does not end")?;
            let tag = &tail[1..end];
            rest = &tail[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if open.pop() != Some(name) {
                    return Err(format!("</{name}> closes nothing open"));
                }
                continue;
            }
            let name = tag.split(' ').next().unwrap_or_default();
            if !["b", "i", "s", "code", "pre", "a", "blockquote"].contains(&name) {
                return Err(format!("tag <{tag}>"));
            }
            let atomic = ["a", "code", "pre"];
            // `<pre><code class=…>` is how a code block names its language.
            let language = name == "code" && open.last() == Some(&"pre");
            if open.contains(&name)
                || (atomic.contains(&name) && !language && open.iter().any(|o| atomic.contains(o)))
                || (!language && open.iter().any(|o| ["code", "pre"].contains(o)))
            {
                return Err(format!("<{name}> inside {open:?}"));
            }
            open.push(name);
        }
        match open.last() {
            None => Ok(()),
            Some(name) => Err(format!("<{name}> left open")),
        }
    }
}
