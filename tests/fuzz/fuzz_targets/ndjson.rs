//! `kelp_sdk::stream::NdjsonParser`: the same lines in every chunking, and the same lines as
//! splitting the whole body.

#![no_main]

use kelp_fuzz::Cut;
use kelp_sdk::stream::NdjsonParser;
use libfuzzer_sys::fuzz_target;

fn parse<'p>(pieces: impl IntoIterator<Item = &'p [u8]>) -> Vec<String> {
    let mut parser = NdjsonParser::new();
    let mut lines = Vec::new();
    for piece in pieces {
        lines.extend(parser.feed(piece));
    }
    lines.extend(parser.finish());
    assert!(parser.finish().is_empty(), "a second finish returned lines");
    lines
}

fuzz_target!(|data: &[u8]| {
    let Some(cut) = Cut::new(data) else { return };
    let whole = parse([cut.body]);
    assert_eq!(parse(cut.pieces()), whole, "cut at the fuzzer's positions");
    assert_eq!(parse(cut.bytes()), whole, "fed byte by byte");

    let reference: Vec<String> = cut
        .body
        .split(|&b| b == b'\n')
        // Trailing `\r`s are JSON whitespace; the parser drops them all, not just one.
        .map(|line| {
            String::from_utf8_lossy(line)
                .trim_end_matches('\r')
                .to_owned()
        })
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(whole, reference, "whole body vs splitting it at newlines");
});
