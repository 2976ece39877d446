//! What the fuzz targets share: how a target's input is split into its parameters, the
//! chunking check every streamed-body parser must pass, and writers that turn a parsed value
//! back into the text it must parse from again.
//!
//! The targets assert properties, not only "no panic": a parser that accepts something must
//! accept what it describes, and a streamed body must decode the same in every chunking — the
//! host feeds chunks as they arrive, so where a chunk ends is up to the network.

pub mod decoder;
pub mod render;

/// A streamed body and the places where the fuzzer cut it.
///
/// Layout of the fuzzer's bytes: two little-endian `u16` cut positions (each taken modulo the
/// body's length + 1), then the body.
pub struct Cut<'a> {
    pub body: &'a [u8],
    cuts: [usize; 2],
}

impl<'a> Cut<'a> {
    pub const HEADER: usize = 4;

    pub fn new(data: &'a [u8]) -> Option<Cut<'a>> {
        let (head, body) = data.split_at_checked(Self::HEADER)?;
        let at =
            |i: usize| usize::from(u16::from_le_bytes([head[i], head[i + 1]])) % (body.len() + 1);
        let mut cuts = [at(0), at(2)];
        cuts.sort_unstable();
        Some(Cut { body, cuts })
    }

    /// The body in up to three pieces, split at the fuzzer's positions (a piece may be empty:
    /// an empty chunk must change nothing either).
    pub fn pieces(&self) -> [&'a [u8]; 3] {
        let [a, b] = self.cuts;
        [&self.body[..a], &self.body[a..b], &self.body[b..]]
    }

    /// The body one byte at a time: every line ending, `\r\n` pair and UTF-8 character split.
    pub fn bytes(&self) -> impl Iterator<Item = &'a [u8]> {
        self.body.chunks(1)
    }
}

/// Asserts that `shorter` is a prefix of `longer`, naming both on failure.
pub fn assert_prefix<T: PartialEq + std::fmt::Debug>(shorter: &[T], longer: &[T], what: &str) {
    assert!(
        shorter.len() <= longer.len() && shorter == &longer[..shorter.len()],
        "{what}: {shorter:#?}\nis not a prefix of\n{longer:#?}"
    );
}
