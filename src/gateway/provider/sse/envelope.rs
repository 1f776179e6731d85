//! The envelope a provider repeats around the text of every plain text chunk.
//!
//! A streamed answer is dozens of JSON objects that differ in little but one
//! string: OpenAI's chunks repeat the id, the creation time, the model, the
//! fingerprint and the choice around each token, Anthropic's deltas their type
//! and block index. Parsing each whole was half of
//! what relaying a chunk cost. Once a chunk has been parsed and found to carry
//! nothing but one text, the bytes around that text are kept; a later chunk made
//! of the very same bytes around one JSON string is that chunk with another text,
//! so only the string is read. Anything else (a finish reason, a tool call, a
//! changed field, a string that does not end where the envelope resumes) is not
//! the same bytes and goes through the full parse.
//!
//! A provider may also vary a string that means nothing to the answer in every
//! chunk: OpenAI's stream obfuscation pads each chunk with random characters in
//! an `obfuscation` field. The decoder names such a string when it learns, and
//! any JSON string is accepted in its place.
//!
//! Why this is exact: a JSON document tokenises the same up to a string's opening
//! quote (the bytes before end at a `:` or whitespace, which no token continues),
//! and from its closing quote on; so replacing whole string literals by others
//! changes those values and nothing else.

use serde::Deserialize;
use std::borrow::Cow;

/// A JSON string borrowed from the event unless it holds escapes: what repeats
/// in every chunk is not copied, and a borrowed text is one an envelope can
/// learn from.
#[derive(Deserialize)]
pub(crate) struct Borrowed<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl<'a> Borrowed<'a> {
    /// The string, if it was borrowed.
    pub fn slice(&self) -> Option<&'a str> {
        match self.0 {
            Cow::Borrowed(text) => Some(text),
            Cow::Owned(_) => None,
        }
    }
}

/// One varying string of an envelope.
#[derive(Clone, Copy)]
enum Hole {
    /// The text the chunk carries.
    Text,
    /// A string the chunk's meaning does not depend on.
    Ignored,
}

/// A learned envelope: the fixed bytes of a text-only chunk around its holes.
#[derive(Default)]
pub(crate) struct Envelope {
    /// The bytes before the first hole, between holes, and after the last (one
    /// more than `holes`; empty until a chunk is learned).
    fixed: Vec<String>,
    /// The holes, in the order they appear.
    holes: Vec<Hole>,
}

/// The byte range of `part` in `data` without the quotes around it, if `part` is
/// a slice of `data` between two quotes.
fn span(data: &str, part: &str) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
    let end = start + part.len();
    let bytes = data.as_bytes();
    (start > 0 && end < bytes.len() && bytes[start - 1] == b'"' && bytes[end] == b'"')
        .then_some((start - 1, end + 1))
}

/// The end (after the closing quote) of the JSON string literal starting at `at`.
fn literal_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        let found = i + memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[found] == b'"' {
            return Some(found + 1);
        }
        // An escape: the byte after the backslash cannot end the string.
        i = found + 2;
    }
}

/// Whether the inside of a string literal needs no unescaping (and has none of
/// the control characters JSON forbids there).
fn plain(inner: &str) -> bool {
    inner.bytes().all(|b| b >= 0x20 && b != b'\\')
}

impl Envelope {
    /// Learns the envelope of `data`, a chunk whose only meaning is the text
    /// `text`; `ignored` is a string of the chunk its meaning does not depend
    /// on. Each must be borrowed from `data` between the quotes of its JSON
    /// string (so unescaped). Returns whether it was learned; a string that is
    /// not such a slice of `data` teaches nothing.
    pub fn learn(&mut self, data: &str, text: &str, ignored: Option<&str>) -> bool {
        let Some(text) = span(data, text) else {
            return false;
        };
        let mut holes = vec![(text, Hole::Text)];
        if let Some(ignored) = ignored {
            match span(data, ignored) {
                Some(span) => holes.push((span, Hole::Ignored)),
                None => return false,
            }
        }
        holes.sort_by_key(|((start, _), _)| *start);
        if holes.windows(2).any(|w| w[0].0 .1 > w[1].0 .0) {
            return false;
        }
        // Relearned after every chunk parsed whole (with a provider whose chunks
        // never repeat, every chunk): the buffers are reused, not reallocated.
        self.fixed.resize_with(holes.len() + 1, String::new);
        self.holes.clear();
        let mut at = 0;
        for (fixed, ((start, end), hole)) in self.fixed.iter_mut().zip(holes) {
            fixed.clear();
            fixed.push_str(&data[at..start]);
            self.holes.push(hole);
            at = end;
        }
        let last = self.fixed.last_mut().expect("one more than the holes");
        last.clear();
        last.push_str(&data[at..]);
        true
    }

    /// Forgets the envelope: the decoder's state changed, so it may mean
    /// something else now.
    pub fn forget(&mut self) {
        self.fixed.clear();
        self.holes.clear();
    }

    /// The text of `data` if it is the learned envelope with JSON strings in its holes.
    pub fn text(&self, data: &str) -> Option<String> {
        let (last, fixed) = self.fixed.split_last()?;
        let bytes = data.as_bytes();
        let mut at = 0;
        let mut text = None;
        for (fixed, hole) in fixed.iter().zip(&self.holes) {
            if !bytes.get(at..)?.starts_with(fixed.as_bytes()) {
                return None;
            }
            at += fixed.len();
            let end = literal_end(bytes, at)?;
            let literal = data.get(at..end)?;
            let inner = &literal[1..literal.len() - 1];
            match (hole, plain(inner)) {
                (Hole::Text, true) => text = Some(inner.to_string()),
                (Hole::Text, false) => text = Some(serde_json::from_str::<String>(literal).ok()?),
                (Hole::Ignored, true) => {}
                (Hole::Ignored, false) => {
                    serde_json::from_str::<serde::de::IgnoredAny>(literal).ok()?;
                }
            }
            at = end;
        }
        (bytes.get(at..)? == last.as_bytes()).then_some(())?;
        text
    }
}

/// What the decoders' tests hold the envelope to: the same events decoded with
/// it and parsed whole, one by one, mean the same.
#[cfg(test)]
pub(crate) mod testing {
    use super::super::super::{Piece, ProviderError};
    use super::super::{Event, SseDecoder};
    use proptest::prelude::*;

    /// Each event's pieces (or failure), decoded in order by `decoder`; `before`
    /// runs before each (to make it forget its envelope, so each is parsed whole).
    pub fn per_event<D: SseDecoder>(
        mut decoder: D,
        events: &[String],
        before: impl Fn(&mut D),
    ) -> Vec<Result<Vec<Piece>, String>> {
        events
            .iter()
            .map(|data| {
                before(&mut decoder);
                let mut out = Vec::new();
                let event = Event {
                    event: String::new(),
                    data: data.clone(),
                };
                decoder
                    .decode(&event, &mut out)
                    .map(|_| out)
                    .map_err(|e: ProviderError| e.to_string())
            })
            .collect()
    }

    /// A string where a chunk carries one: tricky characters as JSON, or, now and
    /// then, bytes that are not one JSON string.
    pub fn json_string() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z \"\\\\\n\u{e9}\u{1F600}]{0,6}".prop_map(|t| serde_json::to_string(&t).unwrap()),
            1 => "[\"a-z\\\\,:{}\\[\\] 0-9]{0,10}",
            // A quoted string around an escape, valid or not.
            1 => "\"[a-z]{0,3}\\\\[a-zA-Z0-9\"\\\\]?[a-z]{0,3}\"",
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An envelope learned from `before` + `"x"` + `after`.
    fn learned(before: &str, after: &str) -> Envelope {
        let data = format!("{before}\"x\"{after}");
        let mut envelope = Envelope::default();
        let start = before.len() + 1;
        assert!(envelope.learn(&data, &data[start..start + 1], None));
        envelope
    }

    #[test]
    fn only_the_same_bytes_around_one_string_are_read() {
        let envelope = learned(r#"{"id":"a","delta":{"content":"#, r#"},"n":1}"#);
        let chunk = |middle: &str| format!(r#"{{"id":"a","delta":{{"content":{middle}}},"n":1}}"#);
        assert_eq!(
            envelope.text(&chunk(r#""Hello""#)).as_deref(),
            Some("Hello")
        );
        assert_eq!(
            envelope.text(&chunk(r#""say \"hi\"\n""#)).as_deref(),
            Some("say \"hi\"\n")
        );
        assert_eq!(envelope.text(&chunk(r#""é""#)).as_deref(), Some("é"));
        // Not one string: a second key, a number, null, a string cut short, a
        // control character, an escape that is not one.
        for middle in [
            r#""a","content":"b""#,
            "1",
            "null",
            r#""a"#,
            r#""a\"#,
            "\"\t\"",
            r#""\q""#,
        ] {
            assert_eq!(envelope.text(&chunk(middle)), None, "{middle}");
        }
        // Another envelope.
        assert_eq!(
            envelope.text(r#"{"id":"b","delta":{"content":"Hello"},"n":1}"#),
            None
        );
    }

    #[test]
    fn an_ignored_string_may_differ_in_every_chunk() {
        let data = r#"{"delta":{"content":"x"},"obfuscation":"k3J"}"#;
        let mut envelope = Envelope::default();
        assert!(envelope.learn(data, &data[21..22], Some(&data[40..43])));
        assert_eq!(
            envelope
                .text(r#"{"delta":{"content":"Hi"},"obfuscation":"Qx81zA"}"#)
                .as_deref(),
            Some("Hi")
        );
        assert_eq!(
            envelope
                .text(r#"{"delta":{"content":"Hi"},"obfuscation":"\u0041"}"#)
                .as_deref(),
            Some("Hi")
        );
        for hostile in [
            r#"{"delta":{"content":"Hi"},"obfuscation":"a","usage":{}}"#,
            r#"{"delta":{"content":"Hi"},"obfuscation":1}"#,
            r#"{"delta":{"content":"Hi"},"obfuscation":"\x"}"#,
        ] {
            assert_eq!(envelope.text(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn a_text_that_is_not_a_slice_between_quotes_teaches_nothing() {
        let data = r#"{"content":"abc"}"#;
        let mut envelope = Envelope::default();
        let copy = String::from("abc");
        assert!(
            !envelope.learn(data, &copy, None),
            "a copy, not a slice of data"
        );
        assert!(
            !envelope.learn(data, &data[12..14], None),
            "not up to the closing quote"
        );
        assert!(
            !envelope.learn(data, &data[12..15], Some(&data[12..15])),
            "holes overlap"
        );
        assert_eq!(envelope.text(data), None);
        assert!(envelope.learn(data, &data[12..15], None));
        assert_eq!(
            envelope.text(r#"{"content":"xyz"}"#).as_deref(),
            Some("xyz")
        );
    }
}
