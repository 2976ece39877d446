//! Incremental parsers for streamed response bodies, for [`Decoder`](crate::provider::Decoder)
//! implementations.
//!
//! The host hands a decoder the body in chunks of arbitrary size: a chunk may end in the middle
//! of a line, of a `\r\n` pair or of a UTF-8 character. These parsers buffer the incomplete tail
//! and return only complete items.

/// One Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, when the event carried one.
    pub id: Option<String>,
}

/// Parses a `text/event-stream` body (the WHATWG Server-Sent Events format) incrementally.
///
/// Lines may end in `\n`, `\r\n` or `\r`; lines starting with `:` are comments; several `data:`
/// lines join with `\n`; an event is complete at a blank line, and [`finish`](Self::finish)
/// also returns a last event that the server did not terminate with one.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    // A chunk that ended in `\r` may be followed by the `\n` of the same line ending.
    skip_lf: bool,
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Parses `chunk` and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            if std::mem::take(&mut self.skip_lf) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\n' => self.end_line(&mut events),
                b'\r' => {
                    self.end_line(&mut events);
                    self.skip_lf = true;
                }
                _ => self.line.push(byte),
            }
        }
        events
    }

    /// Ends the stream: returns the event still being built, if it has data.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut events);
        }
        self.dispatch(&mut events);
        self.skip_lf = false;
        events
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let mut line = std::mem::take(&mut self.line);
        if !self.started {
            self.started = true;
            if line.starts_with("\u{feff}".as_bytes()) {
                line.drain(..3);
            }
        }
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            // The spec ignores ids containing NUL: they could not be sent back in a header.
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let id = self.id.take();
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        events.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id,
        });
    }
}

/// Splits a newline-delimited body (NDJSON, JSON Lines) into lines incrementally.
///
/// Returns each complete line without its `\n` or `\r\n`, skipping blank lines; parse each with
/// `serde_json::from_str`.
#[derive(Debug, Default)]
pub struct NdjsonParser {
    line: Vec<u8>,
}

impl NdjsonParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        NdjsonParser::default()
    }

    /// Parses `chunk` and returns the lines it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in chunk {
            if byte == b'\n' {
                self.take_line(&mut lines);
            } else {
                self.line.push(byte);
            }
        }
        lines
    }

    /// Ends the stream: returns the last line if it had no final newline.
    pub fn finish(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        self.take_line(&mut lines);
        lines
    }

    fn take_line(&mut self, lines: &mut Vec<String>) {
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        if !text.trim().is_empty() {
            lines.push(text.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn sse_single_event() {
        let mut p = SseParser::new();
        let events = p.feed(b"data: hello\n\n");
        assert_eq!(
            events,
            vec![SseEvent {
                event: None,
                data: "hello".into(),
                id: None
            }]
        );
    }

    #[test]
    fn sse_event_id_and_type() {
        let mut p = SseParser::new();
        let events = p.feed(b"event: content_block_delta\nid: 7\ndata: {\"a\":1}\n\n");
        assert_eq!(events[0].event.as_deref(), Some("content_block_delta"));
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[0].data, "{\"a\":1}");
    }

    #[test]
    fn sse_crlf_and_cr_line_endings() {
        let mut p = SseParser::new();
        let events = p.feed(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n");
        assert_eq!(data(&events), ["a", "b", "c"]);
    }

    #[test]
    fn sse_crlf_split_between_chunks() {
        let mut p = SseParser::new();
        let mut events = p.feed(b"data: a\r");
        events.extend(p.feed(b"\n\r"));
        events.extend(p.feed(b"\ndata: b\r\n\r\n"));
        assert_eq!(data(&events), ["a", "b"]);
    }

    #[test]
    fn sse_comments_are_ignored() {
        let mut p = SseParser::new();
        let events = p.feed(b": keep-alive\n\n:another\ndata: x\n\n");
        assert_eq!(data(&events), ["x"]);
    }

    #[test]
    fn sse_multi_line_data() {
        let mut p = SseParser::new();
        let events = p.feed(b"data: one\ndata:two\ndata\n\n");
        assert_eq!(data(&events), ["one\ntwo\n"]);
    }

    #[test]
    fn sse_event_split_byte_by_byte() {
        let input = "event: delta\ndata: héllo wörld\n\ndata: [DONE]\n\n";
        let mut p = SseParser::new();
        let mut events = Vec::new();
        for byte in input.as_bytes() {
            events.extend(p.feed(std::slice::from_ref(byte)));
        }
        assert_eq!(data(&events), ["héllo wörld", "[DONE]"]);
        assert_eq!(events[0].event.as_deref(), Some("delta"));
        assert_eq!(events[1].event, None, "the event type does not carry over");
    }

    #[test]
    fn sse_finish_flushes_unterminated_event() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: last").is_empty());
        assert_eq!(data(&p.finish()), ["last"]);
        assert!(p.finish().is_empty());
    }

    #[test]
    fn sse_event_without_data_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: ping\n\n").is_empty());
        assert!(p.finish().is_empty());
    }

    #[test]
    fn sse_strips_only_one_space_and_leading_bom() {
        let mut p = SseParser::new();
        let events = p.feed("\u{feff}data:  two spaces\n\n".as_bytes());
        assert_eq!(data(&events), [" two spaces"]);
    }

    #[test]
    fn ndjson_lines_across_chunks() {
        let mut p = NdjsonParser::new();
        let mut lines = p.feed(b"{\"a\":1}\n{\"b\":");
        lines.extend(p.feed(b"2}\r\n\n  \n{\"c\""));
        lines.extend(p.feed(b":3}"));
        lines.extend(p.finish());
        assert_eq!(lines, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[test]
    fn ndjson_utf8_split_inside_character() {
        let bytes = "{\"t\":\"ü\"}\n".as_bytes();
        let mut p = NdjsonParser::new();
        let mut lines = p.feed(&bytes[..7]);
        lines.extend(p.feed(&bytes[7..]));
        assert_eq!(lines, ["{\"t\":\"ü\"}"]);
    }
}
