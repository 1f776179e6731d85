//! What both protocols share on the wire: where an adapter sends and with which
//! limits, sending a request under a first-byte limit, and reading a body whole
//! within a size cap, turning an error response into a [`ProviderError`].
//!
//! Every byte a provider sends is bounded: an error body is read up to
//! `max_error_body` (the rest is ignored), a whole answer up to `max_body`
//! (beyond it the attempt is malformed), and a stream as `sse.rs` says.

use super::sse::{piece_stream, SseDecoder};
use super::{
    retry_after, Completion, PieceStream, ProviderError, ProviderTarget, TimeoutKind, WireFault,
};
use crate::config::Secret;
use futures::StreamExt;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use std::time::Duration;

/// Reads a protocol's error body.
pub(crate) type ErrorParser = fn(&str) -> Option<WireFault>;

/// Limits an adapter enforces itself, because only it sees the response arrive.
#[derive(Clone, Copy, Debug)]
pub struct WireLimits {
    /// From sending a streamed request to the response head.
    pub first_byte: Duration,
    /// From sending a non-streamed request to the response head, which a
    /// provider sends only once it has written the whole answer: a 300-token
    /// answer takes real models several seconds, so the first-byte limit of a
    /// stream would fail every long answer. The attempt's own limit.
    pub whole_answer: Duration,
    /// Longest silence between two chunks of a body.
    pub stall: Duration,
    /// Longest silence of a stream before its first content: a reasoning model
    /// is silent while it thinks, which the first-token limit bounds, not the
    /// stall limit. Never shorter than `stall`.
    pub first_token: Duration,
    /// Most bytes of an error body read for its message.
    pub max_error_body: usize,
    /// Most bytes of a whole (non-streamed) answer.
    pub max_body: usize,
    /// Most bytes of one SSE line or event.
    pub max_event: usize,
    /// Most bytes of a whole streamed answer, every event counted.
    pub max_stream: usize,
}

impl WireLimits {
    /// Limits with these timeouts (`first_byte` for whole answers too) and the
    /// default size caps (1 MiB error bodies, 8 MiB answers, 1 MiB events, 8 MiB
    /// streams).
    pub const fn with_timeouts(first_byte: Duration, stall: Duration) -> Self {
        Self {
            first_byte,
            whole_answer: first_byte,
            stall,
            first_token: stall,
            max_error_body: 1 << 20,
            max_body: 8 << 20,
            max_event: 1 << 20,
            max_stream: 8 << 20,
        }
    }
}

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
    /// Timeouts and size caps.
    pub limits: WireLimits,
    /// The key's header, built once rather than formatted for every request;
    /// `None` without a key, or for a key no header can carry (the request then
    /// carries it as given and fails as it is sent).
    auth: Option<(HeaderName, HeaderValue)>,
}

/// How a protocol presents its key.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyHeader {
    /// `Authorization: Bearer <key>` (OpenAI).
    Bearer,
    /// The key alone in this header (Anthropic's `x-api-key`).
    Named(&'static str),
}

impl Target {
    /// The protocol's endpoint at `path` below the provider's base URL, its key
    /// presented as `key_header` says.
    pub fn new(
        target: ProviderTarget,
        path: &str,
        client: reqwest::Client,
        key_header: KeyHeader,
    ) -> Self {
        let auth = target.api_key.as_ref().and_then(|key| {
            let (name, value) = match key_header {
                KeyHeader::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                KeyHeader::Named(name) => (HeaderName::from_static(name), key.expose().to_string()),
            };
            let mut value = HeaderValue::from_str(&value).ok()?;
            value.set_sensitive(true);
            Some((name, value))
        });
        Self {
            name: target.name,
            model: target.model,
            endpoint: target.base.join(path),
            api_key: target.api_key,
            client,
            limits: target.limits,
            auth,
        }
    }

    /// A POST to the endpoint in force, with the key.
    pub fn post(&self, key_header: KeyHeader) -> reqwest::RequestBuilder {
        let builder = match self.endpoint.parsed() {
            Some(url) => self.client.post(url),
            None => self.client.post(self.endpoint.url()),
        };
        match (&self.auth, &self.api_key) {
            (Some((name, value)), _) => builder.header(name.clone(), value.clone()),
            // A key no header can carry: reqwest reports it as the request is sent.
            (None, Some(key)) => match key_header {
                KeyHeader::Bearer => builder.bearer_auth(key.expose()),
                KeyHeader::Named(name) => builder.header(name, key.expose()),
            },
            (None, None) => builder,
        }
    }

    /// Sends a non-streamed request and reads its whole answer with `whole`, the
    /// adapter's reading of a whole answer (the same one a streamed request
    /// answered whole goes through).
    ///
    /// A server that streams anyway (`text/event-stream`; some proxies always
    /// do) is read through `decoder` to the stream's own end, under the stream's
    /// limits, and its pieces make the answer: a stream cut before its end is as
    /// broken here as it would be streamed.
    pub async fn fetch_whole<D: SseDecoder>(
        &self,
        request: reqwest::RequestBuilder,
        error_message: ErrorParser,
        decoder: D,
        whole: impl FnOnce(&[u8]) -> Result<Completion, ProviderError>,
    ) -> Result<Completion, ProviderError> {
        let response = send(
            request,
            self.limits.whole_answer,
            self.limits,
            error_message,
        )
        .await?;
        if is_event_stream(response.headers()) {
            return Completion::gather(piece_stream(response, self.limits, decoder)).await;
        }
        whole(&self.read_answer(response).await?)
    }

    /// Sends a streamed request and decodes its SSE body with `decoder`.
    ///
    /// A server that ignores `stream: true` and answers with one JSON body (some
    /// OpenAI-compatible servers and proxies do) is read whole within `max_body`
    /// and made into pieces by `whole`, the adapter's reading of a whole answer:
    /// a good answer is served, not counted against the provider as a stream that
    /// never began. A JSON error object sent with a success status is a server
    /// error with the provider's own message.
    pub async fn open_stream<D: SseDecoder>(
        &self,
        request: reqwest::RequestBuilder,
        error_message: ErrorParser,
        decoder: D,
        whole: impl FnOnce(&[u8]) -> Result<Completion, ProviderError>,
    ) -> Result<PieceStream, ProviderError> {
        let response = send(request, self.limits.first_byte, self.limits, error_message).await?;
        if !is_json(response.headers()) {
            return Ok(piece_stream(response, self.limits, decoder));
        }
        let bytes = self.read_answer(response).await?;
        let completion =
            whole(&bytes).map_err(
                |err| match error_message(&String::from_utf8_lossy(&bytes)) {
                    Some(fault) => ProviderError::from_status(502, fault, None),
                    None => err,
                },
            )?;
        let pieces = completion.into_pieces().into_iter().map(Ok);
        Ok(futures::stream::iter(pieces).boxed())
    }

    /// Reads a whole answer within `max_body`.
    async fn read_answer(&self, response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
        read_capped(response, self.limits.stall, self.limits.max_body)
            .await?
            .map_err(|(cap, _)| {
                ProviderError::Malformed(format!("the answer is larger than {cap} bytes"))
            })
    }
}

/// Parses a provider's JSON answer; what does not parse is malformed.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(bytes).map_err(|err| ProviderError::Malformed(err.to_string()))
}

/// Whether a response says its body is JSON (`application/json`, any parameters).
fn is_json(headers: &reqwest::header::HeaderMap) -> bool {
    content_type_is(headers, "application/json")
}

/// Whether a response says its body is a server-sent event stream.
fn is_event_stream(headers: &reqwest::header::HeaderMap) -> bool {
    content_type_is(headers, "text/event-stream")
}

fn content_type_is(headers: &reqwest::header::HeaderMap, wanted: &str) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case(wanted))
}

/// Sends the request and returns the response if its head arrives within
/// `head_within` and its status is a success. An error status is classified
/// with what `error_message` extracts from the body.
async fn send(
    request: reqwest::RequestBuilder,
    head_within: Duration,
    limits: WireLimits,
    error_message: ErrorParser,
) -> Result<reqwest::Response, ProviderError> {
    let response = match tokio::time::timeout(head_within, request.send()).await {
        Err(_) => return Err(ProviderError::Timeout(TimeoutKind::FirstByte)),
        Ok(Err(err)) => return Err(ProviderError::from_transport(&err)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry = retry_after(response.headers());
    // The message is read from the first bytes only; a huge or endless error
    // body costs at most the cap and one stall.
    let body = match read_capped(response, limits.stall, limits.max_error_body).await {
        Ok(Ok(bytes)) | Ok(Err((_, bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let fault = error_message(&body).unwrap_or_else(|| {
        let reason = status.canonical_reason().unwrap_or("error");
        WireFault {
            message: format!("HTTP {} {reason}", status.as_u16()),
            ..WireFault::default()
        }
    });
    Err(ProviderError::from_status(status.as_u16(), fault, retry))
}

/// A body that went past its cap: the cap, and the bytes read up to it.
type OverCap = (usize, Vec<u8>);

/// Reads a whole body, each chunk within the stall limit, keeping at most `cap`
/// bytes: `Ok(Err(..))` when it was larger (reading stops there).
async fn read_capped(
    response: reqwest::Response,
    stall: Duration,
    cap: usize,
) -> Result<Result<Vec<u8>, OverCap>, ProviderError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Ok(Err((cap, Vec::new())));
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    loop {
        match tokio::time::timeout(stall, chunks.next()).await {
            Err(_) => return Err(ProviderError::Timeout(TimeoutKind::Stall)),
            Ok(None) => return Ok(Ok(body)),
            Ok(Some(Err(err))) => return Err(ProviderError::from_transport(&err)),
            Ok(Some(Ok(chunk))) => {
                let room = cap - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    return Ok(Err((cap, body)));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}
