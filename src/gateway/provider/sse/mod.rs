//! Reading an SSE body into answer pieces, whatever the protocol: under a stall
//! limit, until the protocol's end marker or its finish reason, and within size
//! caps (one line or event, the whole stream), so a hostile provider can neither
//! stall nor bloat the gateway.
//!
//! - `parser`: the bounded, incremental `text/event-stream` parser.
//! - `envelope`: the bytes a provider repeats around each text chunk, so that
//!   only the text of a repeated chunk is read.

mod envelope;
mod parser;

use super::wire::WireLimits;
use super::{Piece, PieceStream, ProviderError, TimeoutKind};
#[cfg(test)]
pub(crate) use envelope::testing;
pub(crate) use envelope::{Borrowed, Envelope};
use futures::{FutureExt, Stream, StreamExt};
pub(crate) use parser::Event;
use parser::Parser;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// After the provider said why it stopped, trailing events (a usage chunk,
/// `[DONE]`, `message_stop`) are waited for this long at most: the answer is
/// already whole, so a server that keeps the connection open costs nothing.
const TRAILER_WAIT: Duration = Duration::from_millis(500);

/// Whether a stream goes on after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// More events follow.
    Continue,
    /// The protocol's explicit end of the answer.
    End,
}

/// Decodes one protocol's SSE events.
pub(crate) trait SseDecoder: Send + Unpin + 'static {
    /// Interprets one event, appending what it carries to `out` (an event may carry
    /// text and the finish reason at once, or nothing); an `Err` ends the stream
    /// with that failure.
    fn decode(&mut self, event: &Event, out: &mut Vec<Piece>) -> Result<Flow, ProviderError>;
}

struct Reader<D> {
    /// The body's bytes as they arrive.
    bytes: futures::stream::BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>,
    /// Bytes into events.
    parser: Parser,
    decoder: D,
    limits: WireLimits,
    /// Bytes received so far, for the whole stream's cap.
    received: usize,
    /// Pieces decoded but not yet handed out.
    ready: VecDeque<Piece>,
    /// The protocol's end marker arrived (`Some(Ok)`, for good), or the stream
    /// failed (`Some(Err)`, reported once, then `Some(Ok)`).
    ended: Option<Result<(), ProviderError>>,
    /// The provider said why it stopped: the answer is whole, whatever follows.
    finished: bool,
    /// A content piece arrived: silences are stalls from now on.
    started: bool,
    /// Scratch buffer for one event's pieces.
    scratch: Vec<Piece>,
    /// When the wait for the next bytes becomes a stall; set when a wait starts.
    limit: Option<tokio::time::Instant>,
    /// The stall timer. Moved only when it fires early (bytes came meanwhile) or
    /// must fire sooner, not for every chunk: a timer per chunk cost more than
    /// parsing it.
    stall: Pin<Box<tokio::time::Sleep>>,
    /// The waker the stall timer holds, until it is moved: the same task waits
    /// between almost every two chunks, and a timer that already holds its waker
    /// is only asked whether it fired, not registered again.
    stall_waker: Option<Waker>,
}

impl<D: SseDecoder> Reader<D> {
    /// Interprets one event, queueing what it carries.
    fn absorb(&mut self, event: &Event) {
        let flow = self.decoder.decode(event, &mut self.scratch);
        for piece in self.scratch.drain(..) {
            match piece {
                // Empty text carries nothing; consumers count on every Text having some.
                Piece::Text(text) if text.is_empty() => {}
                // Content after the finish reason would make the "whole" answer a lie.
                Piece::Text(_) if self.finished => {}
                Piece::Finish(_) | Piece::ToolCall(_) if self.finished => {}
                Piece::Finish(reason) => {
                    self.finished = true;
                    self.ready.push_back(Piece::Finish(reason));
                }
                piece => {
                    self.started |= piece.is_content();
                    self.ready.push_back(piece);
                }
            }
        }
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::End) => self.ended = Some(Ok(())),
            Err(err) => self.fail(err),
        }
    }

    /// Ends the stream with `err`, unless the answer is already whole: the
    /// provider said it is complete (some OpenAI-compatible servers close without
    /// `[DONE]`), so what comes after it cannot break it.
    fn fail(&mut self, err: ProviderError) {
        self.ended = Some(if self.finished { Ok(()) } else { Err(err) });
    }

    /// Waits for the next bytes and feeds them to the parser, under the stall limit.
    fn poll_bytes(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProviderError>> {
        let limit = match self.limit {
            Some(limit) => limit,
            None => {
                let wait = if self.finished {
                    self.limits.stall.min(TRAILER_WAIT)
                } else if self.started {
                    self.limits.stall
                } else {
                    self.limits.stall.max(self.limits.first_token)
                };
                let limit = tokio::time::Instant::now() + wait;
                if self.stall.deadline() > limit {
                    self.stall.as_mut().reset(limit);
                    self.stall_waker = None;
                }
                *self.limit.insert(limit)
            }
        };
        let chunk = loop {
            match self.bytes.poll_next_unpin(cx) {
                Poll::Ready(next) => break next,
                Poll::Pending => {}
            }
            let holds_waker = self
                .stall_waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()));
            if holds_waker && !self.stall.is_elapsed() {
                return Poll::Pending;
            }
            // Outside the task's budget: polled once the budget is spent, the
            // timer would register nothing and never be asked again.
            match tokio::task::coop::unconstrained(self.stall.as_mut()).poll_unpin(cx) {
                Poll::Pending => {
                    self.stall_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(()) if tokio::time::Instant::now() >= limit => {
                    return Poll::Ready(Err(ProviderError::Timeout(TimeoutKind::Stall)))
                }
                // Set for an earlier wait: bytes came meanwhile.
                Poll::Ready(()) => {
                    self.stall.as_mut().reset(limit);
                    self.stall_waker = None;
                }
            }
        };
        self.limit = None;
        let chunk = match chunk {
            None => {
                return Poll::Ready(Err(ProviderError::Malformed(
                    "stream ended before its end marker".into(),
                )))
            }
            Some(Err(err)) => return Poll::Ready(Err(ProviderError::from_transport(&err))),
            Some(Ok(chunk)) => chunk,
        };
        self.received += chunk.len();
        if self.received > self.limits.max_stream {
            return Poll::Ready(Err(ProviderError::Malformed(format!(
                "the stream is larger than {} bytes",
                self.limits.max_stream
            ))));
        }
        Poll::Ready(
            self.parser
                .push(&chunk)
                .map_err(|err| ProviderError::Malformed(err.to_string())),
        )
    }
}

/// Polled in place: an `async` step per piece (as `unfold` makes) rebuilt and
/// moved its state for every chunk of every answer.
impl<D: SseDecoder> Stream for Reader<D> {
    type Item = Result<Piece, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(piece) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(piece)));
            }
            if let Some(ended) = this.ended.as_mut() {
                // A failure is reported once; every later poll ends the stream.
                return Poll::Ready(std::mem::replace(ended, Ok(())).err().map(Err));
            }
            if let Some(event) = this.parser.next_event() {
                this.absorb(&event);
                this.parser.recycle(event);
                continue;
            }
            match this.poll_bytes(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => this.fail(err),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Turns an SSE response into a [`PieceStream`] using `decoder` for the protocol.
pub(crate) fn piece_stream<D: SseDecoder>(
    response: reqwest::Response,
    limits: WireLimits,
    decoder: D,
) -> PieceStream {
    let stall = Box::pin(tokio::time::sleep(limits.stall));
    Reader {
        bytes: response.bytes_stream().boxed(),
        parser: Parser::new(limits.max_event),
        decoder,
        limits,
        received: 0,
        ready: VecDeque::new(),
        ended: None,
        finished: false,
        started: false,
        scratch: Vec::new(),
        limit: None,
        stall,
        stall_waker: None,
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::provider::FinishReason;
    use proptest::prelude::*;

    /// OpenAI's chunks, the simplest decoder, over the shared reader.
    struct Chunks;

    impl SseDecoder for Chunks {
        fn decode(&mut self, event: &Event, out: &mut Vec<Piece>) -> Result<Flow, ProviderError> {
            if event.data == "[DONE]" {
                return Ok(Flow::End);
            }
            let value: serde_json::Value = serde_json::from_str(&event.data)
                .map_err(|e| ProviderError::Malformed(e.to_string()))?;
            if let Some(text) = value["t"].as_str() {
                out.push(Piece::Text(text.to_string()));
            }
            if value["f"].as_bool() == Some(true) {
                out.push(Piece::Finish(FinishReason::Stop));
            }
            Ok(Flow::Continue)
        }
    }

    fn limits() -> WireLimits {
        let mut limits = WireLimits::with_timeouts(Duration::from_secs(5), Duration::from_secs(5));
        limits.max_event = 4096;
        limits.max_stream = 64 * 1024;
        limits
    }

    /// Decodes `chunks` as one response body, arriving in those pieces.
    fn decode(chunks: Vec<Vec<u8>>) -> Vec<Result<Piece, ProviderError>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let body = reqwest::Body::wrap_stream(futures::stream::iter(
                chunks.into_iter().map(Ok::<_, std::io::Error>),
            ));
            let response = reqwest::Response::from(axum::http::Response::new(body));
            piece_stream(response, limits(), Chunks).collect().await
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn arbitrary_bytes_never_panic_and_end_in_one_failure_at_most(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..12)
        ) {
            let items = decode(chunks);
            let failures = items.iter().filter(|i| i.is_err()).count();
            prop_assert!(failures <= 1);
            if failures == 1 {
                prop_assert!(items.last().unwrap().is_err(), "a failure ends the stream");
            }
        }

        #[test]
        fn valid_streams_round_trip_however_they_are_split(
            texts in proptest::collection::vec("[a-zA-Z0-9 .,!?]{1,20}", 1..20),
            splits in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let mut body = String::new();
            for text in &texts {
                body.push_str(&format!("data: {}\n\n", serde_json::json!({"t": text})));
            }
            body.push_str("data: {\"f\": true}\n\ndata: [DONE]\n\n");
            let bytes = body.into_bytes();
            let mut chunks = Vec::new();
            let mut at = 0;
            for size in splits.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + size).min(bytes.len());
                chunks.push(bytes[at..end].to_vec());
                at = end;
            }
            let pieces: Vec<Piece> = decode(chunks).into_iter().map(Result::unwrap).collect();
            let mut expected: Vec<Piece> = texts.iter().cloned().map(Piece::Text).collect();
            expected.push(Piece::Finish(FinishReason::Stop));
            prop_assert_eq!(pieces, expected);
        }
    }

    /// The pieces of a body whose chunks come after the given pauses (on the
    /// paused clock), then a finish and `[DONE]` after `last_pause`.
    /// A response whose body is what `rx` receives, as it arrives.
    fn body(
        rx: futures::channel::mpsc::UnboundedReceiver<Result<Vec<u8>, std::io::Error>>,
    ) -> reqwest::Response {
        reqwest::Response::from(axum::http::Response::new(reqwest::Body::wrap_stream(rx)))
    }

    /// Whether a stream's pieces end in a stall.
    fn stalled(pieces: &[Result<Piece, ProviderError>]) -> bool {
        matches!(
            pieces.last(),
            Some(Err(ProviderError::Timeout(TimeoutKind::Stall)))
        )
    }

    async fn paced(pauses: &[u64], last_pause: u64) -> Vec<Result<Piece, ProviderError>> {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
        let pauses = pauses.to_vec();
        tokio::spawn(async move {
            for (i, pause) in pauses.into_iter().enumerate() {
                tokio::time::sleep(Duration::from_secs(pause)).await;
                let event = format!("data: {}\n\n", serde_json::json!({"t": i.to_string()}));
                let _ = tx.unbounded_send(Ok(event.into_bytes()));
            }
            tokio::time::sleep(Duration::from_secs(last_pause)).await;
            let _ = tx.unbounded_send(Ok(b"data: {\"f\": true}\n\ndata: [DONE]\n\n".to_vec()));
        });
        let response = body(rx);
        piece_stream(response, limits(), Chunks).collect().await
    }

    #[tokio::test(start_paused = true)]
    async fn every_wait_has_the_whole_stall_limit_and_no_more() {
        // Each pause is under the 5 s limit, though together they pass it many times.
        let pieces = paced(&[4, 4, 1, 4, 4, 4], 4).await;
        assert_eq!(pieces.len(), 7, "{pieces:?}");
        assert!(pieces.iter().all(Result::is_ok), "{pieces:?}");
        // A pause over the limit after many short ones is a stall.
        let started = tokio::time::Instant::now();
        let pieces = paced(&[1, 4, 1], 6).await;
        assert_eq!(pieces.len(), 4, "{pieces:?}");
        assert!(stalled(&pieces), "{pieces:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn before_its_first_content_a_stream_has_the_first_token_limit_after_it_the_stall_limit()
    {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
        tokio::spawn(async move {
            // The head's first event carries no content; a model then thinks.
            let _ = tx.unbounded_send(Ok(b"data: {}\n\n".to_vec()));
            tokio::time::sleep(Duration::from_secs(20)).await;
            let _ = tx.unbounded_send(Ok(b"data: {\"t\": \"a\"}\n\n".to_vec()));
            tokio::time::sleep(Duration::from_secs(6)).await;
            let _ = tx.unbounded_send(Ok(b"data: {\"t\": \"b\"}\n\n".to_vec()));
        });
        let response = body(rx);
        let mut patient = limits();
        patient.first_token = Duration::from_secs(30);
        let started = tokio::time::Instant::now();
        let pieces: Vec<_> = piece_stream(response, patient, Chunks).collect().await;
        assert!(
            matches!(pieces.first(), Some(Ok(Piece::Text(t))) if t == "a"),
            "{pieces:?}"
        );
        assert!(stalled(&pieces), "{pieces:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_begun_with_the_budget_spent_still_stalls_out() {
        let (_tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
        let response = body(rx);
        let mut pieces = piece_stream(response, limits(), Chunks);
        // The task's coop budget is spent (many pieces were ready) when the wait begins.
        let first = futures::future::poll_fn(|cx| {
            while let Poll::Ready(progress) = tokio::task::coop::poll_proceed(cx) {
                progress.made_progress();
            }
            Poll::Ready(pieces.poll_next_unpin(cx))
        })
        .await;
        assert!(first.is_pending());
        let started = tokio::time::Instant::now();
        let next = tokio::time::timeout(Duration::from_secs(60), pieces.next()).await;
        assert!(
            matches!(
                next,
                Ok(Some(Err(ProviderError::Timeout(TimeoutKind::Stall))))
            ),
            "{next:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn an_endless_line_or_stream_is_cut_at_its_cap() {
        // A line that never ends.
        let line = vec![b'x'; 10_000];
        let items = decode(vec![b"data: ".to_vec(), line]);
        assert!(
            matches!(items.last(), Some(Err(ProviderError::Malformed(m))) if m.contains("event")),
            "{items:?}"
        );
        // Many small valid events past the stream's cap.
        let event = format!("data: {}\n\n", serde_json::json!({"t": "word"}));
        let items = decode(vec![event.repeat(4_000).into_bytes()]);
        assert!(
            matches!(items.last(), Some(Err(ProviderError::Malformed(m))) if m.contains("stream")),
            "{items:?}"
        );
    }
}
