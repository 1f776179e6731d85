//! What both protocols share on the wire: sending a request under a first-byte
//! limit, turning an error response into a [`ProviderError`], and reading an SSE
//! body under a stall limit until the protocol's end marker.

use super::{
    retry_after, Piece, PieceStream, ProviderError, ProviderTarget, TimeoutKind, WireFault,
};
use crate::config::Secret;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::StreamExt;
use std::collections::VecDeque;
use std::time::Duration;

/// Reads a protocol's error body.
pub(crate) type ErrorParser = fn(&str) -> Option<WireFault>;

/// After the provider said why it stopped, trailing events (a usage chunk,
/// `[DONE]`, `message_stop`) are waited for this long at most: the answer is
/// already whole, so a server that keeps the connection open costs nothing.
const TRAILER_WAIT: Duration = Duration::from_millis(500);

/// What every adapter holds, whatever its protocol: who it is, where it sends,
/// with which credentials, connection pool and limits.
pub(crate) struct Target {
    /// Configured name, reported in routes and attempts.
    pub name: String,
    /// Model id sent in every request.
    pub model: String,
    /// The protocol's endpoint, direct or through the fault proxy.
    pub endpoint: super::Endpoint,
    /// The API key; absent for simulated or keyless local servers (Ollama, vLLM).
    pub api_key: Option<Secret>,
    /// Shared connection pool.
    pub client: reqwest::Client,
    /// First-byte and stall limits.
    pub limits: WireLimits,
}

impl Target {
    /// The protocol's endpoint at `path` below the provider's base URL.
    pub fn new(target: ProviderTarget, path: &str, client: reqwest::Client) -> Self {
        Self {
            name: target.name,
            model: target.model,
            endpoint: target.base.join(path),
            api_key: target.api_key,
            client,
            limits: target.limits,
        }
    }

    /// Sends a non-streamed request and parses its whole JSON answer.
    pub async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        error_message: ErrorParser,
    ) -> Result<T, ProviderError> {
        let response = send(request, self.limits, error_message).await?;
        read_json(response, self.limits).await
    }

    /// Sends a streamed request and decodes its SSE body with `decoder`.
    pub async fn open_stream<D: SseDecoder>(
        &self,
        request: reqwest::RequestBuilder,
        error_message: ErrorParser,
        decoder: D,
    ) -> Result<PieceStream, ProviderError> {
        let response = send(request, self.limits, error_message).await?;
        Ok(piece_stream(response, self.limits.stall, decoder))
    }
}

/// Limits an adapter enforces itself, because only it sees the response arrive.
#[derive(Clone, Copy, Debug)]
pub struct WireLimits {
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Longest silence between two chunks of a body.
    pub stall: Duration,
}

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

/// Sends the request and returns the response if its status is a success. An error
/// status is classified with the message `error_message` extracts from the body.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    limits: WireLimits,
    error_message: ErrorParser,
) -> Result<reqwest::Response, ProviderError> {
    let response = match tokio::time::timeout(limits.first_byte, request.send()).await {
        Err(_) => return Err(ProviderError::Timeout(TimeoutKind::FirstByte)),
        Ok(Err(err)) => return Err(ProviderError::from_transport(&err)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry = retry_after(response.headers());
    let body = tokio::time::timeout(limits.stall, response.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let fault = error_message(&body).unwrap_or_else(|| {
        let reason = status.canonical_reason().unwrap_or("error");
        WireFault {
            message: format!("HTTP {} {reason}", status.as_u16()),
            ..WireFault::default()
        }
    });
    Err(ProviderError::from_status(status.as_u16(), fault, retry))
}

/// Reads a whole (non-streamed) body under the stall limit and parses it as JSON.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    limits: WireLimits,
) -> Result<T, ProviderError> {
    let bytes = match tokio::time::timeout(limits.stall, response.bytes()).await {
        Err(_) => return Err(ProviderError::Timeout(TimeoutKind::Stall)),
        Ok(Err(err)) => return Err(ProviderError::from_transport(&err)),
        Ok(Ok(bytes)) => bytes,
    };
    serde_json::from_slice(&bytes).map_err(|err| ProviderError::Malformed(err.to_string()))
}

struct Reader<D> {
    events: futures::stream::BoxStream<'static, Result<Event, EventStreamError<reqwest::Error>>>,
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
                Ok(Some(Err(EventStreamError::Transport(err)))) => {
                    Err(ProviderError::from_transport(&err))
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
    stall: Duration,
    decoder: D,
) -> PieceStream {
    let reader = Reader {
        events: response.bytes_stream().eventsource().boxed(),
        decoder,
        stall,
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
