//! The two limits around a streamed answer's source: the answer's deadline and
//! the server's grace period at shutdown.
//!
//! The source is polled first and the two timers only when it has nothing
//! ready: polling all three in a random order (`select!`) registered two wakers
//! and drew a random number for every piece of every answer. A source that is
//! never pending still meets both: the clock is read for every piece (once the
//! deadline's timer is set, it is asked instead), and the grace period is
//! looked at every [`ENDING_CHECK`] pieces.
//!
//! A streamed answer's source is pending between almost every two pieces (the
//! HTTP client hands a body over one chunk at a time), and the task waiting on
//! it is the same each time. The timers already hold that task's waker, so
//! they are only asked whether they fired: registering both again cost a lock
//! and a timer-wheel visit per piece.

use futures::future::{BoxFuture, Fuse};
use futures::{FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::task::coop::unconstrained;
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
    /// The same flag as `ending` watches, to see news of it without polling
    /// `ending`.
    ending_news: tokio::sync::watch::Receiver<bool>,
    /// The waker both timers were last registered with.
    registered: Option<Waker>,
    /// Pieces the source had ready in a row, without a wait.
    ready_in_a_row: u32,
}

impl Bounds {
    /// Bounds ending at `deadline`, or when `ending` turns `true` (or its sender
    /// goes away: the server is going away too).
    pub fn new(deadline: Instant, ending: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            ending_news: ending.clone(),
            registered: None,
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
            if next.is_some() && self.past_deadline() {
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
        if self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            if self.deadline.is_elapsed() {
                return Poll::Ready(Bounded::PastDeadline);
            }
            // A closed sender is news too: the server is going away.
            if !self.ending_news.has_changed().unwrap_or(true) {
                return Poll::Pending;
            }
            self.ending_news.mark_unchanged();
        }
        // Outside the task's budget: a timer polled once the budget is spent
        // registers nothing, and would then never be asked again.
        if unconstrained(self.deadline.as_mut())
            .poll_unpin(cx)
            .is_ready()
        {
            return Poll::Ready(Bounded::PastDeadline);
        }
        if unconstrained(&mut self.ending).poll_unpin(cx).is_ready() {
            return Poll::Ready(Bounded::Ending);
        }
        self.registered = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether the deadline has passed. Once the timer holds a waker it is asked,
    /// not the clock: a clock read per piece was most of what a bound cost.
    fn past_deadline(&self) -> bool {
        if self.registered.is_some() {
            self.deadline.is_elapsed()
        } else {
            Instant::now() >= self.deadline.deadline()
        }
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
    async fn a_source_that_waited_once_then_never_again_still_meets_the_deadline() {
        let (mut bounds, _tx) = limited(Duration::from_secs(2));
        let mut source = futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "first"
        })
        .chain(futures::stream::repeat("token"))
        .boxed();
        assert_eq!(bounds.next(&mut source).await, Bounded::Next(Some("first")));
        assert_eq!(bounds.next(&mut source).await, Bounded::Next(Some("token")));
        tokio::time::advance(Duration::from_secs(2)).await;
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
    async fn a_grace_period_that_begins_during_a_wait_cuts_it() {
        let (mut bounds, tx) = limited(Duration::from_secs(60));
        let mut source = futures::stream::pending::<&str>();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(true).unwrap();
            // Held open: the news itself, not a closed channel, must end the wait.
            tokio::time::sleep(Duration::from_secs(600)).await;
        });
        let started = Instant::now();
        assert_eq!(bounds.next(&mut source).await, Bounded::Ending);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    /// Spends the current task's whole coop budget, as an answer whose source
    /// had many pieces ready may have before it waits.
    fn spend_budget(cx: &mut Context<'_>) {
        while let Poll::Ready(progress) = tokio::task::coop::poll_proceed(cx) {
            progress.made_progress();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_begun_with_the_budget_spent_still_meets_the_deadline() {
        let (mut bounds, _tx) = limited(Duration::from_secs(2));
        let mut source = futures::stream::pending::<&str>();
        let first = futures::future::poll_fn(|cx| {
            spend_budget(cx);
            Poll::Ready(bounds.poll_next(&mut source, cx))
        })
        .await;
        assert!(first.is_pending());
        let started = Instant::now();
        let next = tokio::time::timeout(Duration::from_secs(10), bounds.next(&mut source)).await;
        assert_eq!(next, Ok(Bounded::PastDeadline));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    /// A waker that counts its wakes.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl futures::task::ArcWake for Counting {
        fn wake_by_ref(this: &std::sync::Arc<Self>) {
            this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_moved_to_another_task_wakes_that_task() {
        let (mut bounds, _tx) = limited(Duration::from_secs(2));
        let mut source = futures::stream::pending::<&str>();
        let first = std::sync::Arc::new(Counting(Default::default()));
        let second = std::sync::Arc::new(Counting(Default::default()));
        for waker in [&first, &second] {
            let waker = futures::task::waker(waker.clone());
            let poll = bounds.poll_next(&mut source, &mut Context::from_waker(&waker));
            assert!(poll.is_pending());
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        tokio::task::yield_now().await;
        let wakes = |c: &Counting| c.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            wakes(&second),
            1,
            "the task now waiting is woken at the deadline"
        );
        assert_eq!(wakes(&first), 0);
        let waker = futures::task::waker(second.clone());
        assert_eq!(
            bounds.poll_next(&mut source, &mut Context::from_waker(&waker)),
            Poll::Ready(Bounded::PastDeadline)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_ends_after_the_deadline_has_still_ended_whole() {
        let (mut bounds, _tx) = limited(Duration::from_secs(2));
        let mut source = futures::stream::empty::<&str>();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(bounds.next(&mut source).await, Bounded::Next(None));
    }
}
