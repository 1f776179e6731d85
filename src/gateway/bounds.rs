//! The two limits around a streamed answer's source: the answer's deadline and
//! the server's grace period at shutdown.
//!
//! The source is polled first and the two timers only when it has nothing
//! ready: polling all three in a random order (`select!`) registered two wakers
//! and drew a random number for every piece of every answer. A source that is
//! never pending still meets both: the clock is read for every piece, and the
//! grace period is looked at every [`ENDING_CHECK`] pieces.

use futures::future::{BoxFuture, Fuse};
use futures::{FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// How many pieces a source may have ready in a row before the server's grace
/// period is looked at again.
const ENDING_CHECK: u32 = 32;

/// What the next poll of a source gave, within the bounds.
#[derive(Debug, PartialEq)]
pub(super) enum Bounded<T> {
    /// The source's next item, or `None` when it has ended.
    Next(Option<T>),
    /// The answer's deadline has passed.
    PastDeadline,
    /// The server's grace period is over.
    Ending,
}

/// The deadline and the grace period of one answer.
pub(super) struct Bounds {
    /// Fires once the answer's deadline has passed. Made once per answer: a
    /// timer made and dropped around every piece cost more than the piece.
    deadline: Pin<Box<Sleep>>,
    /// Completes when the server's grace period is over.
    ending: Fuse<BoxFuture<'static, ()>>,
    /// Pieces the source had ready in a row, without a wait.
    ready_in_a_row: u32,
}

impl Bounds {
    /// Bounds ending at `deadline`, or when `ending` turns `true` (or its sender
    /// goes away: the server is going away too).
    pub fn new(deadline: Instant, ending: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            ending: async move {
                let mut ending = ending;
                let _ = ending.wait_for(|ending| *ending).await;
            }
            .boxed()
            .fuse(),
            ready_in_a_row: 0,
        }
    }

    /// Polls `source` within the bounds.
    pub fn poll_next<S: Stream + Unpin>(
        &mut self,
        source: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Bounded<S::Item>> {
        if let Poll::Ready(next) = source.poll_next_unpin(cx) {
            // A source that has ended has ended whole, however late.
            if next.is_some() && Instant::now() >= self.deadline.deadline() {
                return Poll::Ready(Bounded::PastDeadline);
            }
            self.ready_in_a_row = self.ready_in_a_row.wrapping_add(1);
            if self.ready_in_a_row.is_multiple_of(ENDING_CHECK)
                && self.ending.poll_unpin(cx).is_ready()
            {
                return Poll::Ready(Bounded::Ending);
            }
            return Poll::Ready(Bounded::Next(next));
        }
        self.ready_in_a_row = 0;
        if self.deadline.as_mut().poll_unpin(cx).is_ready() {
            return Poll::Ready(Bounded::PastDeadline);
        }
        if self.ending.poll_unpin(cx).is_ready() {
            return Poll::Ready(Bounded::Ending);
        }
        Poll::Pending
    }

    /// [`poll_next`](Self::poll_next) as a future.
    pub async fn next<S: Stream + Unpin>(&mut self, source: &mut S) -> Bounded<S::Item> {
        futures::future::poll_fn(|cx| self.poll_next(source, cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limited(within: Duration) -> (Bounds, tokio::sync::watch::Sender<bool>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (Bounds::new(Instant::now() + within, rx), tx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_is_never_pending_still_meets_the_deadline() {
        let (mut bounds, _tx) = limited(Duration::from_secs(2));
        let mut source = futures::stream::repeat("token");
        assert_eq!(bounds.next(&mut source).await, Bounded::Next(Some("token")));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(bounds.next(&mut source).await, Bounded::PastDeadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_is_never_pending_still_meets_the_end_of_the_grace_period() {
        let (mut bounds, tx) = limited(Duration::from_secs(60));
        let mut source = futures::stream::repeat("token");
        tx.send(true).unwrap();
        let mut pieces = 0;
        while let Bounded::Next(_) = bounds.next(&mut source).await {
            pieces += 1;
            assert!(
                pieces < ENDING_CHECK,
                "the grace period was never looked at"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_source_is_cut_when_the_deadline_or_the_grace_period_ends() {
        let (mut bounds, _tx) = limited(Duration::from_secs(2));
        let mut source = futures::stream::pending::<&str>();
        let started = Instant::now();
        assert_eq!(bounds.next(&mut source).await, Bounded::PastDeadline);
        assert_eq!(started.elapsed(), Duration::from_secs(2));

        let (mut bounds, tx) = limited(Duration::from_secs(60));
        drop(tx);
        assert_eq!(bounds.next(&mut source).await, Bounded::Ending);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_ends_after_the_deadline_has_still_ended_whole() {
        let (mut bounds, _tx) = limited(Duration::from_secs(2));
        let mut source = futures::stream::empty::<&str>();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(bounds.next(&mut source).await, Bounded::Next(None));
    }
}
