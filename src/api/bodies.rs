//! What a conversation's body may hold, and how many large ones are held at
//! once.
//!
//! A customer's screenshot, sent inline as a data URL, makes a question
//! megabytes long, so the two routes that take a conversation accept far
//! larger bodies than the rest of the server. Many connections sending such
//! bodies at once would then be gigabytes in memory (the body, its parsed
//! copy and each provider's request are all alive until the answer ends). So
//! every body larger than the small limit draws its size from one budget of
//! bytes for as long as its request lives: a body declared too large for what
//! is left is refused before a byte of it is read, with a 503 and
//! `Retry-After` the OpenAI SDKs retry by themselves; a chunked body without
//! a declared length draws as it arrives. Small bodies, nearly every
//! request, never touch the budget.
//!
//! The other bounds on a body live here too: the deadline by which any
//! route's body must have arrived whole ([`body_deadline`]), and the count of
//! JSON values a large one may hold before it is parsed.

use super::{error::ApiError, AppState};
use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use hyper::body::{Body as _, Frame, SizeHint};
use std::future::Future as _;
use std::{
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a caller refused for want of room is told to wait: large bodies
/// in flight are read in well under this on any link that could send them.
const RETRY_AFTER_S: &str = "1";

/// The limits on conversation bodies and the budget the large ones share.
#[derive(Debug)]
pub struct BodyLimits {
    /// What a body may hold without drawing on the budget.
    free: usize,
    /// The largest body taken at all.
    limit: usize,
    /// Bytes of large bodies that may still be taken, one permit a byte.
    budget: Arc<Semaphore>,
    /// Large bodies refused for want of room.
    refused: AtomicU64,
}

impl BodyLimits {
    /// Limits for bodies of up to `limit` bytes, those above `free` sharing
    /// `budget` bytes (`free ≤ limit ≤ budget`, and `limit` fits in a `u32`:
    /// the configuration checks both).
    pub fn new(free: usize, limit: usize, budget: usize) -> Self {
        Self {
            free,
            limit,
            budget: Arc::new(Semaphore::new(budget.min(Semaphore::MAX_PERMITS))),
            refused: AtomicU64::new(0),
        }
    }

    /// Bytes of the budget not held by any request now.
    pub fn available(&self) -> usize {
        self.budget.available_permits()
    }

    /// Large bodies refused so far for want of room.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    fn too_large(&self) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            code: Some("request_too_large"),
            param: None,
            message: format!(
                "request body is larger than the configured limit of {} bytes",
                self.limit
            ),
            headers: None,
        }
    }

    /// `size` more bytes for `hold`, or the 503 saying there is no room now.
    fn draw(&self, hold: &mut BodyHold, size: usize) -> Result<(), ApiError> {
        let size = u32::try_from(size).map_err(|_| self.too_large())?;
        match self.budget.clone().try_acquire_many_owned(size) {
            Ok(permit) => {
                match &mut hold.0 {
                    Some(held) => held.merge(permit),
                    None => hold.0 = Some(permit),
                }
                Ok(())
            }
            Err(_) => {
                self.refused.fetch_add(1, Relaxed);
                let mut headers = HeaderMap::new();
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
                Err(ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    kind: "server_error",
                    code: Some("server_busy"),
                    param: None,
                    message: "the gateway is reading as many large request bodies as it may hold at once; retry shortly".into(),
                    headers: Some(Box::new(headers)),
                })
            }
        }
    }

    /// Reads `request`'s body under these limits.
    async fn read(&self, mut request: Request) -> Result<ConversationBody, ApiError> {
        // The `Content-Length` as hyper read and checked it.
        let declared = request
            .body()
            .size_hint()
            .exact()
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let mut hold = BodyHold(None);
        // Drawn before the first byte is read: a refused client sending
        // `Expect: 100-continue` never uploads at all.
        let admitted = refuse_encoded(request.headers()).and_then(|()| match declared {
            Some(size) if size > self.limit => Err(self.too_large()),
            Some(size) if size > self.free => self.draw(&mut hold, size),
            _ => Ok(()),
        });
        if let Err(refusal) = admitted {
            let asks_first = request
                .headers()
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            if !asks_first {
                drain(request.body_mut(), declared).await;
            }
            return Err(refusal);
        }
        let mut body = request.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = next_frame(&mut body).await {
            let frame = frame.map_err(unreadable)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let had = bytes.len();
            let has = had + data.len();
            let refused = if has > self.limit {
                Err(self.too_large())
            } else if declared.is_none() && has > self.free {
                // Past the free size a chunked body holds all it has read.
                let drawn = if had > self.free { had } else { 0 };
                self.draw(&mut hold, has - drawn)
            } else {
                Ok(())
            };
            if let Err(refusal) = refused {
                drain(&mut body, None).await;
                return Err(refusal);
            }
            if bytes.is_empty() {
                // Nearly every body arrives in one piece: kept as it came.
                if body.is_end_stream() {
                    return Ok(ConversationBody { bytes: data, hold });
                }
                // A declared size is within the limit and, past the free size,
                // already drawn from the budget: room for it all at once saves
                // the regrowths.
                bytes.reserve(declared.unwrap_or(0).max(data.len()));
            }
            bytes.extend_from_slice(&data);
        }
        if bytes.len() > self.free {
            values_within(&bytes, MAX_VALUES)?;
        }
        Ok(ConversationBody {
            bytes: Bytes::from(bytes),
            hold,
        })
    }
}

/// Most JSON values (each number, string, array, object…) a large body may
/// hold. A conversation with 200 messages, 100 pictures and tools holds a few
/// thousand; parsed, each value costs 32 bytes or more, so 20 MiB of `0,`
/// would have been 300 MiB of parsed document. A screenshot is one value.
const MAX_VALUES: usize = 100_000;

/// Refuses `body` if it holds more than `max` JSON values, counted without
/// building any (and stopping at the first past `max`). Bad JSON passes: the
/// decoder names what is wrong with it.
fn values_within(body: &[u8], max: usize) -> Result<(), ApiError> {
    let seen = std::cell::Cell::new(0);
    let mut reader = serde_json::Deserializer::from_slice(body);
    match serde::de::DeserializeSeed::deserialize(Count { seen: &seen, max }, &mut reader) {
        Err(_) if seen.get() > max => Err(ApiError::invalid(
            None,
            format!("the request body holds more than {max} JSON values"),
        )),
        _ => Ok(()),
    }
}

/// Counts the values of a JSON document as it is read, building none.
#[derive(Clone, Copy)]
struct Count<'a> {
    seen: &'a std::cell::Cell<usize>,
    max: usize,
}

impl Count<'_> {
    fn one<E: serde::de::Error>(self) -> Result<(), E> {
        self.seen.set(self.seen.get() + 1);
        if self.seen.get() > self.max {
            return Err(E::custom("too many values"));
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Count<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.one()
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.one()
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.one()
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.one()
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.one()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.one()
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        self.one()?;
        while items.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut fields: A) -> Result<(), A::Error> {
        self.one()?;
        while fields.next_key::<serde::de::IgnoredAny>()?.is_some() {
            fields.next_value_seed(self)?;
        }
        Ok(())
    }
}

async fn next_frame(body: &mut Body) -> Option<Result<Frame<Bytes>, axum::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

/// Most bytes of a refused body read and thrown away.
const DRAIN_LIMIT: usize = 64 << 20;

/// Reads what a refused body still sends (up to [`DRAIN_LIMIT`], within the
/// body's deadline) and throws it away. A client that did not ask before
/// uploading is sending it now; a server that answers and closes with the
/// upload unread resets the connection, and the client reports a broken
/// connection instead of the 413 or 503 that says what to do.
async fn drain(body: &mut Body, declared: Option<usize>) {
    if declared.is_some_and(|size| size > DRAIN_LIMIT) {
        return;
    }
    let mut left = DRAIN_LIMIT;
    while let Some(Ok(frame)) = next_frame(body).await {
        if let Ok(data) = frame.into_data() {
            let Some(rest) = left.checked_sub(data.len()) else {
                return;
            };
            left = rest;
        }
    }
}

/// A compressed body is refused by name, before it is read or holds any of
/// the budget, rather than read as garbage JSON.
fn refuse_encoded(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("(not text)").trim();
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(ApiError::unsupported_encoding(encoding));
        }
    }
    Ok(())
}

/// Why a body could not be read: it came too slowly (the server's body
/// timeout, a 408) or the connection broke.
fn unreadable(err: axum::Error) -> ApiError {
    let inner = err.into_inner();
    if inner.is::<DeadlinePassed>() {
        return ApiError::late_body();
    }
    ApiError::invalid(None, format!("the request body could not be read: {inner}"))
}

/// A request body that had not arrived whole when its time was up.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct DeadlinePassed(Duration);

/// `request`, its body due whole within `timeout` of now (its head's
/// arrival). A per-read timeout would let a body trickled a byte at a time
/// hold its connection for days.
pub fn body_deadline(request: Request, timeout: Duration) -> Request {
    let due = Instant::now() + timeout;
    request.map(|body| {
        Body::new(Deadline {
            body,
            due,
            timeout,
            timer: None,
        })
    })
}

/// A body due whole by `due`. Its timer is only set once a read has to wait:
/// the body of nearly every request is in hand when it is first read.
struct Deadline {
    body: Body,
    due: Instant,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let due = self.due;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(DeadlinePassed(self.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A conversation's body, read whole, and its share of the budget.
#[derive(Debug)]
pub struct ConversationBody {
    /// The body's bytes.
    pub bytes: Bytes,
    /// The budget it holds; keep it until the answer is sent.
    pub hold: BodyHold,
}

impl ConversationBody {
    /// What `answer` makes of the body, holding the body's share of the budget
    /// until that answer is sent.
    pub async fn answer<F, A>(self, answer: F) -> Result<Response, ApiError>
    where
        F: FnOnce(Bytes) -> A,
        A: std::future::Future<Output = Result<Response, ApiError>>,
    {
        let Self { bytes, hold } = self;
        Ok(hold.until_sent(answer(bytes).await?))
    }
}

impl FromRequest<AppState> for ConversationBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        state.bodies.read(request).await
    }
}

/// The budget one large body holds (nothing for a small one). The request it
/// was read for is alive, with its copies, until its answer's last byte.
#[derive(Debug)]
pub struct BodyHold(Option<OwnedSemaphorePermit>);

impl BodyHold {
    /// `response`, holding this budget until its body is sent or dropped.
    pub fn until_sent(self, response: Response) -> Response {
        let Some(permit) = self.0 else {
            return response;
        };
        response.map(|body| {
            Body::new(Held {
                body,
                _permit: permit,
            })
        })
    }
}

/// A response body and the budget its request holds until the body is done:
/// the size hint passes through, so a whole answer keeps its `Content-Length`.
struct Held {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request of `body`; a whole body's size is declared, as hyper
    /// declares a `Content-Length`, a stream's is not.
    fn request(body: Body) -> Request {
        Request::post("/v1/chat/completions").body(body).unwrap()
    }

    fn chunked(pieces: &[&'static [u8]]) -> Body {
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            pieces.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Body::from_stream(futures::stream::iter(pieces))
    }

    #[tokio::test]
    async fn small_bodies_never_touch_the_budget_and_large_ones_hold_it_until_sent() {
        let limits = BodyLimits::new(4, 10, 16);
        let small = limits.read(request(Body::from("abcd"))).await.unwrap();
        assert_eq!(&small.bytes[..], b"abcd");
        assert_eq!(limits.available(), 16);
        let large = limits
            .read(request(Body::from("abcdefghij")))
            .await
            .unwrap();
        assert_eq!(limits.available(), 6);
        // A second large body finds too little left: refused before reading.
        let refused = limits
            .read(request(Body::from("abcdefgh")))
            .await
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers.unwrap()[header::RETRY_AFTER], "1");
        // The first holds its share while its answer is being sent.
        let response = large.hold.until_sent(Response::new(Body::from("answer")));
        assert_eq!(limits.available(), 6);
        assert_eq!(response.body().size_hint().exact(), Some(6));
        let sent = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&sent[..], b"answer");
        assert_eq!(limits.available(), 16);
    }

    #[tokio::test]
    async fn a_declared_size_beyond_the_limit_is_a_413_before_reading() {
        let limits = BodyLimits::new(4, 10, 16);
        let err = limits
            .read(request(Body::from("x".repeat(11))))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.message.contains("10 bytes"), "{}", err.message);
        assert_eq!(limits.available(), 16);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_is_due_whole_by_its_deadline_however_it_trickles() {
        let timeout = Duration::from_secs(10);
        // A byte every 4 s: each read well within the timeout, the whole not.
        let trickle = futures::stream::unfold(0, |n| async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
        });
        let started = Instant::now();
        let trickled = body_deadline(request(Body::from_stream(trickle)), timeout);
        let body = axum::body::to_bytes(trickled.into_body(), usize::MAX).await;
        let err = body.unwrap_err();
        let mut causes =
            std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            });
        assert!(causes.any(|e| e.is::<DeadlinePassed>()), "{err}");
        assert_eq!(started.elapsed(), timeout);
        // A body in hand is read at once, with no timer at all.
        let whole = body_deadline(request(Body::from("whole")), timeout);
        let body = axum::body::to_bytes(whole.into_body(), usize::MAX).await;
        assert_eq!(&body.unwrap()[..], b"whole");
        assert_eq!(started.elapsed(), timeout);
    }

    #[test]
    fn values_are_counted_without_building_them_and_bad_json_is_left_to_the_decoder() {
        let doc = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": [1, 2.5, true, null]}"#;
        // The object, model, messages, the message, role, content, n and its four.
        assert!(values_within(doc, 11).is_ok());
        let err = values_within(doc, 10).unwrap_err();
        assert!(
            err.message.contains("more than 10 JSON values"),
            "{}",
            err.message
        );
        assert!(values_within(b"{\"model\": [1, 2,", 100).is_ok());
    }

    #[tokio::test]
    async fn a_chunked_body_draws_as_it_grows_and_stops_at_the_limit_or_the_budget() {
        let limits = BodyLimits::new(4, 10, 16);
        let read = limits
            .read(request(chunked(&[b"abc", b"def", b"ghi"])))
            .await
            .unwrap();
        assert_eq!(&read.bytes[..], b"abcdefghi");
        assert_eq!(limits.available(), 16 - 9);
        drop(read);
        assert_eq!(limits.available(), 16);
        let err = limits
            .read(request(chunked(&[b"abcdef", b"ghijk"])))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            limits.available(),
            16,
            "a refused body gives its share back"
        );
        let holding = limits
            .read(request(Body::from("abcdefghij")))
            .await
            .unwrap();
        let err = limits
            .read(request(chunked(&[b"abcd", b"efgh"])))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        drop(holding);
        assert_eq!(limits.available(), 16);
    }
}
