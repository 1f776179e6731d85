//! An incremental parser of `text/event-stream`, bounded: bytes go in as they
//! arrive, whole events come out. Each byte is scanned once (a line split across
//! reads is not re-parsed from its start), and a line or an event larger than
//! the cap is an error rather than a buffer that grows as long as a provider
//! keeps sending.

use std::collections::VecDeque;

/// One server-sent event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Event {
    /// The `event:` field, empty when absent.
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Why the bytes are not an event stream this parser will hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    /// A line or an event is larger than the cap.
    #[error("an event is larger than {0} bytes")]
    TooLarge(usize),
    /// A line is not UTF-8.
    #[error("the stream is not UTF-8")]
    NotUtf8,
}

/// The parser's state between reads.
pub(crate) struct Parser {
    /// Bytes of the line not yet ended.
    partial: Vec<u8>,
    /// The event being assembled.
    event: Event,
    /// Whether it has a `data:` line (an event without one is not dispatched).
    has_data: bool,
    /// Bytes of the event being assembled, for the cap.
    event_bytes: usize,
    /// The cap on one line and on one event.
    max_event: usize,
    /// Whole events not yet taken.
    ready: VecDeque<Event>,
    /// The last byte seen was a `\r`: a `\n` right after it ends no extra line.
    after_cr: bool,
    /// An event handed back once read, whose buffers the next event reuses: a
    /// stream is dozens of events of about the same size.
    spare: Option<Event>,
}

impl Parser {
    /// A parser holding at most `max_event` bytes of one line or event.
    pub fn new(max_event: usize) -> Self {
        Self {
            partial: Vec::new(),
            event: Event::default(),
            has_data: false,
            event_bytes: 0,
            max_event,
            ready: VecDeque::new(),
            after_cr: false,
            spare: None,
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), ParseError> {
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        // memchr scans a word at a time; a byte-at-a-time search for the line
        // end was the largest cost of relaying a stream.
        while let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) {
            let (line, rest) = bytes.split_at(end);
            if self.partial.is_empty() {
                self.line(line)?;
            } else {
                self.grow(line)?;
                let line = std::mem::take(&mut self.partial);
                self.line(&line)?;
            }
            // A line ends with \n, \r or \r\n; a \r at the end of this read may
            // be followed by the \n of the next.
            bytes = match rest {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, tail @ ..] => tail,
                [] => &[],
            };
        }
        self.grow(bytes)
    }

    /// The next whole event, if one is ready.
    pub fn next_event(&mut self) -> Option<Event> {
        self.ready.pop_front()
    }

    /// Takes back an event that has been read, to reuse its buffers.
    pub fn recycle(&mut self, mut event: Event) {
        event.event.clear();
        event.data.clear();
        self.spare = Some(event);
    }

    fn grow(&mut self, bytes: &[u8]) -> Result<(), ParseError> {
        if self.partial.len() + bytes.len() > self.max_event {
            return Err(ParseError::TooLarge(self.max_event));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), ParseError> {
        if line.is_empty() {
            // A blank line dispatches the event (if it carried data).
            let next = self.spare.take().unwrap_or_default();
            let event = std::mem::replace(&mut self.event, next);
            if std::mem::take(&mut self.has_data) {
                self.ready.push_back(event);
            } else {
                self.recycle(event);
            }
            self.event_bytes = 0;
            return Ok(());
        }
        self.event_bytes += line.len();
        if self.event_bytes > self.max_event {
            return Err(ParseError::TooLarge(self.max_event));
        }
        if line[0] == b':' {
            return Ok(()); // a comment (keep-alive)
        }
        // Split on bytes and check only the values kept: a field this parser
        // ignores need not be text.
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        let text = || std::str::from_utf8(value).map_err(|_| ParseError::NotUtf8);
        match field {
            b"data" => {
                let value = text()?;
                if self.has_data {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
                self.has_data = true;
            }
            b"event" => {
                let value = text()?;
                self.event.event.clear();
                self.event.event.push_str(value);
            }
            // `id` and `retry` mean nothing to an answer; unknown fields are ignored.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(chunks: &[&[u8]]) -> Result<Vec<Event>, ParseError> {
        let mut parser = Parser::new(1024);
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk)?;
            while let Some(event) = parser.next_event() {
                // Handed back as the reader does: the next event reuses its buffers.
                events.push(event.clone());
                parser.recycle(event);
            }
        }
        Ok(events)
    }

    fn event(name: &str, data: &str) -> Event {
        Event {
            event: name.into(),
            data: data.into(),
        }
    }

    #[test]
    fn reads_the_fields_the_spec_names_across_any_split() {
        let stream =
            b": ping\r\nevent: delta\r\ndata: one\r\ndata:two\r\nid: 7\r\n\r\ndata: [DONE]\n\n";
        let expected = vec![event("delta", "one\ntwo"), event("", "[DONE]")];
        assert_eq!(parse(&[stream]), Ok(expected.clone()));
        for at in 0..stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(parse(&[a, b]), Ok(expected.clone()), "split at {at}");
        }
        // Lone \r line ends, and an event without data is not dispatched.
        assert_eq!(
            parse(&[b"event: x\r\r", b"data: y\r\r"]),
            Ok(vec![event("", "y")])
        );
    }

    #[test]
    fn an_endless_line_or_event_is_an_error_not_a_growing_buffer() {
        let mut parser = Parser::new(1024);
        let block = [b'x'; 100];
        let mut result = Ok(());
        for _ in 0..20 {
            result = parser.push(&block);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ParseError::TooLarge(1024)));
        assert!(parser.partial.len() <= 1024);
        let lines: Vec<u8> = b"data: aaaaaaaaaa\n".repeat(200);
        assert_eq!(parse(&[&lines]), Err(ParseError::TooLarge(1024)));
        assert_eq!(parse(&[b"data: \xff\xfe\n\n"]), Err(ParseError::NotUtf8));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..10)) {
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let _ = parse(&refs);
        }

        #[test]
        fn events_round_trip_however_the_stream_is_split(
            events in proptest::collection::vec(("[a-z_]{0,8}", "[ -~]{0,40}"), 1..10),
            split in 1usize..50,
        ) {
            let mut stream = String::new();
            for (name, data) in &events {
                if !name.is_empty() {
                    stream.push_str(&format!("event: {name}\n"));
                }
                stream.push_str(&format!("data: {data}\n\n"));
            }
            let bytes = stream.as_bytes();
            let chunks: Vec<&[u8]> = bytes.chunks(split).collect();
            let parsed = parse(&chunks).unwrap();
            let expected: Vec<Event> = events.iter().map(|(n, d)| event(n, d)).collect();
            prop_assert_eq!(parsed, expected);
        }
    }
}
