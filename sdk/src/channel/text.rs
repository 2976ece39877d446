//! Message lengths as platforms count them.
//!
//! Telegram, Slack, Discord and others limit a message's length in UTF-16 code units (what
//! JavaScript's `length` counts), not in bytes or characters: a character outside the Basic
//! Multilingual Plane, such as most emoji, counts 2.

/// The length of `text` in UTF-16 code units.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// How good a place to cut is; later variants are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Break {
    Word,
    Sentence,
    Line,
    Paragraph,
}

/// Full stops that end a sentence without a space after them (Chinese, Japanese).
const WIDE_SENTENCE_ENDS: [char; 3] = ['。', '！', '？'];

/// Splits `text` into parts of at most `max_utf16_units` UTF-16 code units each, for platforms
/// that limit a message's length (see [`Info::max_text_units`](super::Info::max_text_units)).
///
/// Each part ends at the last paragraph break (a blank line) that fits; failing that, at the
/// last line break; then after the last sentence; then at the last whitespace; and only when a
/// stretch has none of these, at the last character that fits — never inside a character, so
/// a part may be one unit short of the limit. The whitespace at a cut is dropped; nothing else
/// is, so the parts joined with the whitespace put back are `text` again. No part is empty,
/// and an empty text has no parts. A text that fits is its only part, as it is.
///
/// A limit below 2 counts as 2, so that every character fits in a part.
pub fn split_text(text: &str, max_utf16_units: usize) -> Vec<String> {
    let max = max_utf16_units.max(2);
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some((end, next)) = cut(rest, max) {
        // A cut at 0 only skips whitespace the text starts with.
        if end > 0 {
            parts.push(rest[..end].to_owned());
        }
        rest = &rest[next..];
    }
    if !rest.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

/// Where to cut `text` if it is longer than `max` units: the part is `text[..end]` and the rest
/// starts at `next` (the whitespace between the two is dropped).
fn cut(text: &str, max: usize) -> Option<(usize, usize)> {
    // The longest prefix that fits, in bytes.
    let mut fits = 0;
    let mut units = 0;
    for c in text.chars() {
        units += c.len_utf16();
        if units > max {
            break;
        }
        fits += c.len_utf8();
    }
    if fits == text.len() {
        return None;
    }

    let mut best: Option<(Break, usize, usize)> = None;
    let mut consider = |kind: Break, end: usize, next: usize| {
        // Ties go to the later place, so that the part is as long as it can be.
        if best.is_none_or(|(best_kind, _, _)| kind >= best_kind) {
            best = Some((kind, end, next));
        }
    };
    let mut after_sentence = false;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if at > fits {
            break;
        }
        if c.is_whitespace() {
            // The run of whitespace is dropped whole, so the part may end before it even when
            // the run goes on past the limit.
            let mut newlines = usize::from(c == '\n');
            let mut next = at + c.len_utf8();
            while let Some(&(after, w)) = chars.peek() {
                if !w.is_whitespace() {
                    break;
                }
                newlines += usize::from(w == '\n');
                next = after + w.len_utf8();
                chars.next();
            }
            let kind = match newlines {
                0 if after_sentence => Break::Sentence,
                0 => Break::Word,
                1 => Break::Line,
                _ => Break::Paragraph,
            };
            consider(kind, at, next);
            after_sentence = false;
            continue;
        }
        let end = at + c.len_utf8();
        if WIDE_SENTENCE_ENDS.contains(&c) && end <= fits {
            consider(Break::Sentence, end, end);
        }
        after_sentence = match c {
            '.' | '!' | '?' | '…' => true,
            // `He said "no." Then` ends a sentence too, as far as plain text can tell.
            '"' | '\'' | ')' | ']' | '”' | '’' | '»' => after_sentence,
            _ => WIDE_SENTENCE_ENDS.contains(&c),
        };
    }
    Some(match best {
        Some((_, end, next)) => (end, next),
        None => (fits, fits),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_in_utf16_units() {
        assert_eq!(utf16_len(""), 0);
        assert_eq!(utf16_len("abc"), 3);
        // Two bytes, three bytes: one unit each. Four bytes: a surrogate pair.
        assert_eq!(utf16_len("é€"), 2);
        assert_eq!(utf16_len("😀"), 2);
        assert_eq!(utf16_len("a😀b"), 4);
    }

    #[test]
    fn a_text_that_fits_is_its_only_part() {
        assert_eq!(split_text("", 10), Vec::<String>::new());
        assert_eq!(split_text("hello", 5), ["hello"]);
        assert_eq!(split_text("  spaced  \n", 20), ["  spaced  \n"]);
    }

    #[test]
    fn paragraphs_before_lines_before_sentences_before_words() {
        let text = "First paragraph.\n\nSecond one. Still\nsecond and more";
        assert_eq!(
            split_text(text, 40),
            ["First paragraph.", "Second one. Still\nsecond and more"]
        );
        // A blank line may hold spaces, and a run of whitespace is dropped whole.
        assert_eq!(
            split_text("One two.\n  \n\tThree four five", 20),
            ["One two.", "Three four five"]
        );
        let text = "Line one. Still line one\nline two here";
        assert_eq!(
            split_text(text, 30),
            ["Line one. Still line one", "line two here"]
        );
        let text = "It rained. We stayed in and read all day";
        assert_eq!(
            split_text(text, 20),
            ["It rained.", "We stayed in and", "read all day"]
        );
        assert_eq!(
            split_text("She said \"no.\" Then she left the room", 20),
            ["She said \"no.\"", "Then she left the", "room"]
        );
        // A closing bracket alone ends no sentence: the last space that fits wins.
        assert_eq!(
            split_text("see (this) and that thing", 14),
            ["see (this) and", "that thing"]
        );
    }

    #[test]
    fn a_word_that_ends_at_the_limit_is_kept_whole() {
        assert_eq!(split_text("abcd efgh", 4), ["abcd", "efgh"]);
        assert_eq!(split_text("abcd\n\n\nefgh", 4), ["abcd", "efgh"]);
    }

    #[test]
    fn whitespace_running_past_the_limit_is_dropped() {
        let text = format!("abc{}def", " ".repeat(50));
        assert_eq!(split_text(&text, 5), ["abc", "def"]);
        let text = format!("{}abc def", "\n".repeat(50));
        assert_eq!(split_text(&text, 5), ["abc", "def"]);
        assert_eq!(split_text(&" ".repeat(50), 5), Vec::<String>::new());
    }

    #[test]
    fn hard_cuts_only_between_characters() {
        assert_eq!(split_text("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        // Each emoji is two units: two do not fit in three, and none is cut in half.
        assert_eq!(split_text("😀😀😀", 3), ["😀", "😀", "😀"]);
        assert_eq!(split_text("a😀b😀", 2), ["a", "😀", "b", "😀"]);
        assert_eq!(split_text("ééééé", 2), ["éé", "éé", "é"]);
        // Below 2, every character still fits in a part of its own.
        assert_eq!(split_text("😀x", 1), ["😀", "x"]);
        assert_eq!(split_text("ab", 0), ["ab"]);
    }

    #[test]
    fn wide_full_stops_end_sentences_without_a_space() {
        assert_eq!(
            split_text("今天天气很好。我们去公园吧。", 8),
            ["今天天气很好。", "我们去公园吧。"]
        );
    }

    /// Checks what a user of the parts relies on, whatever the text.
    fn check(text: &str, max: usize) {
        let parts = split_text(text, max);
        let mut rest = text;
        for (i, part) in parts.iter().enumerate() {
            assert!(!part.is_empty(), "{text:?} at {max}: empty part");
            assert!(
                utf16_len(part) <= max,
                "{text:?} at {max}: {part:?} is too long"
            );
            // Whitespace at a cut is dropped, which for an over-long text may be whitespace it
            // starts with.
            if i > 0 || !rest.starts_with(part.as_str()) {
                assert!(!part.starts_with(char::is_whitespace), "{part:?}");
                rest = rest.trim_start();
            }
            if i + 1 < parts.len() {
                assert!(!part.ends_with(char::is_whitespace), "{part:?}");
            }
            rest = rest.strip_prefix(part.as_str()).unwrap_or_else(|| {
                panic!("{text:?} at {max}: {part:?} is not what comes next in {rest:?}")
            });
        }
        assert!(
            rest.chars().all(char::is_whitespace),
            "{text:?} at {max}: {rest:?} was lost"
        );
    }

    #[test]
    fn parts_fit_and_give_the_text_back() {
        // Texts of words, sentences, lines, paragraphs, emoji and long unbroken runs, from a
        // fixed seed so that a failure repeats.
        let pieces = [
            "a",
            "word",
            "longerword",
            "é",
            "😀",
            "今天",
            "。",
            ".",
            "!",
            "?\"",
            " ",
            " ",
            " ",
            "  ",
            "\n",
            "\n\n",
            "\t",
            "x".repeat(30).leak(),
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..400 {
            let len = next() % 60;
            let text: String = (0..len).map(|_| pieces[next() % pieces.len()]).collect();
            for max in [2, 3, 5, 8, 13, 40, 200] {
                check(&text, max);
            }
        }
    }
}
