//! Reading an SSE body into answer pieces, whatever the protocol: under a stall
//! limit, until the protocol's end marker or its finish reason, and within size
//! caps (one line or event, the whole stream), so a hostile provider can neither
//! stall nor bloat the gateway.

use super::wire::WireLimits;
use super::{Piece, PieceStream, ProviderError, TimeoutKind};
use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
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
pub(crate) trait SseDecoder: Send + 'static {
    /// Interprets one event, appending what it carries to `out` (an event may carry
    /// text and the finish reason at once, or nothing); an `Err` ends the stream
    /// with that failure.
    fn decode(&mut self, event: &Event, out: &mut Vec<Piece>) -> Result<Flow, ProviderError>;
}

/// Why the bytes of a stream stopped.
#[derive(Debug, thiserror::Error)]
enum BytesError {
    /// The connection failed.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// A cap was reached.
    #[error("{0}")]
    TooLarge(String),
}

/// Counts a stream's bytes as they pass: the whole stream, the current line and
/// the current event (up to a blank line), failing the stream past a cap. The
/// SSE parser buffers a line until its end, so without this an endless line
/// would grow without bound.
struct Capped<S> {
    inner: S,
    limits: WireLimits,
    total: usize,
    line: usize,
    event: usize,
    /// The previous byte ended a line (`\n`, ignoring `\r`).
    after_newline: bool,
    failed: bool,
}

impl<S> Capped<S> {
    fn tally(&mut self, chunk: &[u8]) -> Result<(), BytesError> {
        self.total += chunk.len();
        if self.total > self.limits.max_stream {
            return Err(BytesError::TooLarge(format!(
                "the stream is larger than {} bytes",
                self.limits.max_stream
            )));
        }
        for &byte in chunk {
            match byte {
                b'\n' => {
                    if self.after_newline {
                        self.event = 0;
                    }
                    self.after_newline = true;
                    self.line = 0;
                }
                b'\r' => {}
                _ => {
                    self.after_newline = false;
                    self.line += 1;
                    self.event += 1;
                }
            }
            if self.line > self.limits.max_event || self.event > self.limits.max_event {
                return Err(BytesError::TooLarge(format!(
                    "an event is larger than {} bytes",
                    self.limits.max_event
                )));
            }
        }
        Ok(())
    }
}

impl<S> Stream for Capped<S>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    type Item = Result<Bytes, BytesError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match self.tally(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(err) => {
                    self.failed = true;
                    Poll::Ready(Some(Err(err)))
                }
            },
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }
}

struct Reader<D> {
    events: futures::stream::BoxStream<'static, Result<Event, EventStreamError<BytesError>>>,
    decoder: D,
    stall: Duration,
    /// Pieces decoded but not yet handed out.
    ready: VecDeque<Piece>,
    /// The protocol's end marker arrived (`Some(Ok)`), or the stream failed.
    ended: Option<Result<(), ProviderError>>,
    /// The provider said why it stopped: the answer is whole, whatever follows.
    finished: bool,
    /// Scratch buffer for one event's pieces.
    scratch: Vec<Piece>,
}

impl<D: SseDecoder> Reader<D> {
    /// Reads events until a piece is ready or the stream ends.
    async fn fill(&mut self) {
        while self.ready.is_empty() && self.ended.is_none() {
            let wait = if self.finished {
                self.stall.min(TRAILER_WAIT)
            } else {
                self.stall
            };
            let event = match tokio::time::timeout(wait, self.events.next()).await {
                Err(_) => Err(ProviderError::Timeout(TimeoutKind::Stall)),
                Ok(None) => Err(ProviderError::Malformed(
                    "stream ended before its end marker".into(),
                )),
                Ok(Some(Err(EventStreamError::Transport(BytesError::Transport(err))))) => {
                    Err(ProviderError::from_transport(&err))
                }
                Ok(Some(Err(EventStreamError::Transport(BytesError::TooLarge(why))))) => {
                    Err(ProviderError::Malformed(why))
                }
                Ok(Some(Err(err))) => Err(ProviderError::Malformed(err.to_string())),
                Ok(Some(Ok(event))) => Ok(event),
            };
            let flow = event.and_then(|event| self.decoder.decode(&event, &mut self.scratch));
            for piece in self.scratch.drain(..) {
                match piece {
                    // Empty text carries nothing; consumers count on every Text having some.
                    Piece::Text(text) if text.is_empty() => {}
                    // Text after the finish reason would make the "whole" answer a lie.
                    Piece::Text(_) if self.finished => {}
                    Piece::Finish(_) if self.finished => {}
                    Piece::Finish(reason) => {
                        self.finished = true;
                        self.ready.push_back(Piece::Finish(reason));
                    }
                    piece => self.ready.push_back(piece),
                }
            }
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::End) => self.ended = Some(Ok(())),
                // The provider already said the answer is complete (some
                // OpenAI-compatible servers close without `[DONE]`): what comes
                // after it cannot break the answer.
                Err(_) if self.finished => self.ended = Some(Ok(())),
                Err(err) => self.ended = Some(Err(err)),
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
    let bytes = Capped {
        inner: response.bytes_stream(),
        limits,
        total: 0,
        line: 0,
        event: 0,
        after_newline: false,
        failed: false,
    };
    let reader = Reader {
        events: bytes.eventsource().boxed(),
        decoder,
        stall: limits.stall,
        ready: VecDeque::new(),
        ended: None,
        finished: false,
        scratch: Vec::new(),
    };
    futures::stream::unfold(reader, |mut reader| async move {
        reader.fill().await;
        if let Some(piece) = reader.ready.pop_front() {
            return Some((Ok(piece), reader));
        }
        match reader.ended.take() {
            Some(Err(err)) => {
                // Report the failure once; the next poll ends the stream.
                reader.ended = Some(Ok(()));
                Some((Err(err), reader))
            }
            _ => None,
        }
    })
    .boxed()
}
