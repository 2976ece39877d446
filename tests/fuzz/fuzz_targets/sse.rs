//! `kelp_sdk::stream::SseParser`: the same events in every chunking, and the same events as a
//! plain whole-body reading of the format, written here independently of the incremental one.

#![no_main]

use kelp_fuzz::Cut;
use kelp_sdk::stream::{SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

fn parse<'p>(pieces: impl IntoIterator<Item = &'p [u8]>) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(parser.feed(piece));
    }
    events.extend(parser.finish());
    assert!(
        parser.finish().is_empty(),
        "a second finish returned events"
    );
    events
}

/// The WHATWG rules read over the whole body at once (with the SDK's one documented
/// difference: an event the body ends inside is returned, not dropped).
fn reference(body: &[u8]) -> Vec<SseEvent> {
    let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
    let mut lines = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        lines.push(&rest[..end]);
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines.push(b"");

    let mut events = Vec::new();
    let (mut event, mut id, mut data) = (None, None, None::<String>);
    for line in lines {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push(SseEvent {
                    event: event.take(),
                    data,
                    id: id.take(),
                });
            }
            event = None;
            id = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "event" => event = Some(value.to_owned()),
            "id" if !value.contains('\0') => id = Some(value.to_owned()),
            _ => {}
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let Some(cut) = Cut::new(data) else { return };
    let whole = parse([cut.body]);
    assert_eq!(parse(cut.pieces()), whole, "cut at the fuzzer's positions");
    assert_eq!(parse(cut.bytes()), whole, "fed byte by byte");
    assert_eq!(
        whole,
        reference(cut.body),
        "whole body vs the reference reading"
    );
    for event in &whole {
        assert!(
            !event.data.contains('\r'),
            "a line ending inside data: {event:?}"
        );
    }
});
