//! The envelope a provider repeats around the text of every plain text chunk.
//!
//! A streamed answer is dozens of JSON objects that differ only in one string:
//! OpenAI's chunks repeat the id, the creation time, the model, the fingerprint
//! and the choice around each token. Parsing each whole was half of what relaying
//! a chunk cost. Once a chunk has been parsed and found to carry nothing but one
//! text, the bytes before and after that text are kept; a later chunk made of the
//! very same bytes around one JSON string is that chunk with another text, so only
//! the string is read. Anything else (a finish reason, a tool call, a changed
//! field, a string that does not end where the envelope resumes) is not the same
//! bytes and goes through the full parse.
//!
//! Why this is exact: a JSON document tokenises the same up to the string's opening
//! quote (the bytes before end at a `:` or whitespace, which no token continues), and
//! from its closing quote on; so replacing one whole string literal by another
//! changes that value and nothing else.

/// A learned envelope: the bytes before and after the text of a text-only chunk.
#[derive(Default)]
pub(crate) struct Envelope {
    /// Up to the opening quote of the text (excluded).
    before: String,
    /// From after the closing quote of the text.
    after: String,
    /// Whether a chunk was learned.
    known: bool,
}

impl Envelope {
    /// Learns the envelope of `data`, a chunk whose only meaning is the text
    /// `text`, a string borrowed from `data` between the quotes of its JSON
    /// string (so unescaped). Returns whether it was learned; a `text` that is
    /// not such a slice of `data` teaches nothing.
    pub fn learn(&mut self, data: &str, text: &str) -> bool {
        let Some(start) = (text.as_ptr() as usize).checked_sub(data.as_ptr() as usize) else {
            return false;
        };
        let end = start + text.len();
        let bytes = data.as_bytes();
        if start == 0 || end >= bytes.len() || bytes[start - 1] != b'"' || bytes[end] != b'"' {
            return false;
        }
        self.before.clear();
        self.before.push_str(&data[..start - 1]);
        self.after.clear();
        self.after.push_str(&data[end + 1..]);
        self.known = true;
        true
    }

    /// The text of `data` if it is the learned envelope around one JSON string.
    pub fn text(&self, data: &str) -> Option<String> {
        if !self.known
            || data.len() < self.before.len() + self.after.len() + 2
            || !data.starts_with(&self.before)
            || !data.ends_with(&self.after)
        {
            return None;
        }
        let literal = data.get(self.before.len()..data.len() - self.after.len())?;
        let bytes = literal.as_bytes();
        // Most tokens are plain: no escape, no quote, no control character.
        if bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"' {
            let inner = &literal[1..literal.len() - 1];
            if inner.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
                return Some(inner.to_string());
            }
        }
        // One whole JSON string (escapes, surrounding whitespace), or nothing.
        serde_json::from_str::<String>(literal).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An envelope learned from `before` + `"text"` + `after`.
    fn learned(before: &str, after: &str) -> Envelope {
        let data = format!("{before}\"x\"{after}");
        let mut envelope = Envelope::default();
        let start = before.len() + 1;
        assert!(envelope.learn(&data, &data[start..start + 1]));
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
        assert_eq!(envelope.text(&chunk(r#" "é" "#)).as_deref(), Some("é"));
        // Not one string: a second key, a number, null, a string cut short.
        for middle in [
            r#""a","content":"b""#,
            "1",
            "null",
            r#""a"#,
            r#""a\"#,
            "\"\t\"",
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
    fn a_text_that_is_not_a_slice_between_quotes_teaches_nothing() {
        let data = r#"{"content":"abc"}"#;
        let mut envelope = Envelope::default();
        let copy = String::from("abc");
        assert!(!envelope.learn(data, &copy), "a copy, not a slice of data");
        assert!(
            !envelope.learn(data, &data[12..14]),
            "not up to the closing quote"
        );
        assert_eq!(envelope.text(data), None);
        assert!(envelope.learn(data, &data[12..15]));
        assert_eq!(
            envelope.text(r#"{"content":"xyz"}"#).as_deref(),
            Some("xyz")
        );
    }
}
