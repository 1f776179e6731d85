//! What both protocols share on the wire: sending a request under a first-byte
//! limit, turning an error response into a [`ProviderError`], and reading an SSE
//! body under a stall limit until the protocol's end marker.

use super::{retry_after, DeltaStream, ProviderError, TimeoutKind};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::StreamExt;
use std::time::Duration;

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
    pub api_key: Option<String>,
    /// Shared connection pool.
    pub client: reqwest::Client,
    /// First-byte and stall limits.
    pub limits: WireLimits,
}

impl Target {
    /// The target of `config`'s provider at `path` below `base`.
    pub fn new(
        config: &crate::config::ProviderConfig,
        base: super::Endpoint,
        path: &str,
        client: reqwest::Client,
        limits: WireLimits,
    ) -> Self {
        Self {
            name: config.name.clone(),
            model: config.model.clone(),
            endpoint: base.join(path),
            api_key: config.api_key.clone(),
            client,
            limits,
        }
    }

    /// Sends a non-streamed request and parses its whole JSON answer.
    pub async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        error_message: fn(&str) -> Option<String>,
    ) -> Result<T, ProviderError> {
        let response = send(request, self.limits, error_message).await?;
        read_json(response, self.limits).await
    }

    /// Sends a streamed request and decodes its SSE body with `decoder`.
    pub async fn open_stream<D: SseDecoder>(
        &self,
        request: reqwest::RequestBuilder,
        error_message: fn(&str) -> Option<String>,
        decoder: D,
    ) -> Result<DeltaStream, ProviderError> {
        let response = send(request, self.limits, error_message).await?;
        Ok(delta_stream(response, self.limits.stall, decoder))
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

/// What one SSE event means to a protocol.
pub(crate) enum Step {
    /// Text to append to the answer.
    Delta(String),
    /// An event without content (role announcements, pings, usage).
    Nothing,
    /// The protocol's explicit end of the answer.
    End,
}

/// Decodes one protocol's SSE events.
pub(crate) trait SseDecoder: Send + 'static {
    /// Interprets one event; an `Err` ends the stream with that failure.
    fn decode(&mut self, event: &Event) -> Result<Step, ProviderError>;
}

/// Sends the request and returns the response if its status is a success. An error
/// status is classified with the message `error_message` extracts from the body.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    limits: WireLimits,
    error_message: fn(&str) -> Option<String>,
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
    let message = error_message(&body).unwrap_or_else(|| {
        let reason = status.canonical_reason().unwrap_or("error");
        format!("HTTP {} {reason}", status.as_u16())
    });
    Err(ProviderError::from_status(status.as_u16(), message, retry))
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
    finished: bool,
}

/// Turns an SSE response into a [`DeltaStream`] using `decoder` for the protocol.
pub(crate) fn delta_stream<D: SseDecoder>(
    response: reqwest::Response,
    stall: Duration,
    decoder: D,
) -> DeltaStream {
    let reader = Reader {
        events: response.bytes_stream().eventsource().boxed(),
        decoder,
        stall,
        finished: false,
    };
    futures::stream::unfold(reader, |mut reader| async move {
        while !reader.finished {
            let failure = match tokio::time::timeout(reader.stall, reader.events.next()).await {
                Err(_) => ProviderError::Timeout(TimeoutKind::Stall),
                Ok(None) => ProviderError::Malformed("stream ended before its end marker".into()),
                Ok(Some(Err(EventStreamError::Transport(err)))) => {
                    ProviderError::from_transport(&err)
                }
                Ok(Some(Err(err))) => ProviderError::Malformed(err.to_string()),
                Ok(Some(Ok(event))) => match reader.decoder.decode(&event) {
                    Ok(Step::Delta(text)) if !text.is_empty() => return Some((Ok(text), reader)),
                    Ok(Step::Delta(_)) | Ok(Step::Nothing) => continue,
                    Ok(Step::End) => return None,
                    Err(err) => err,
                },
            };
            reader.finished = true;
            return Some((Err(failure), reader));
        }
        None
    })
    .boxed()
}
