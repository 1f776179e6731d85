//! The audit writer: the request path only queues; one task writes.
//!
//! Records go through one bounded channel to one writer, which batches them
//! into multi-row INSERTs inside a transaction, flushed when a batch is full or
//! the flush interval has passed. Tickets go the same way and are acknowledged
//! once committed, so a customer is told a ticket number only when it is durable.
//! One writer means the audit never has two writers; WAL lets readers run beside it.
//!
//! Nothing is lost silently, and nothing grows without bound:
//! - the request path waits for room (backpressure) up to a short bound; a
//!   record that still finds the queue full, or comes from code that cannot
//!   wait, goes to one bounded overflow list that a single task feeds into the
//!   queue; only beyond that is a record dropped, counted and logged;
//! - a batch the database refuses is retried, then written row by row, and only
//!   a row that fails for good is set aside (counted, logged with its request id);
//!   while the database is unreachable the writer waits and retries, and the
//!   queue absorbs the outage;
//! - the writer is supervised: if it dies it is restarted (and counted), and the
//!   batch it held is written by its successor.
//!
//! - `worker`: the writer task and its supervisor.
//! - `sql`: the batched INSERTs and the retention over every table.

mod sql;
mod worker;

use super::{RequestRecord, Ticket};
use crate::shared::{ChatTurn, FaultChangedBy, FaultSpec, Transition};
use crate::store::Db;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

/// One thing the audit keeps.
#[derive(Clone, Debug)]
pub enum AuditRecord {
    /// A finished request and its attempts.
    Request(Box<RequestRecord>),
    /// A breaker changed state.
    Transition(Transition),
    /// A fault was set or healed.
    Fault(FaultRecord),
    /// One turn of a chat-page conversation.
    Message(MessageRecord),
    /// A ticket the last resort opened for a human agent.
    Ticket(Ticket),
}

impl AuditRecord {
    /// What the record is about, for a log line when it cannot be written.
    fn describe(&self) -> String {
        match self {
            AuditRecord::Request(r) => format!("request {}", r.id),
            AuditRecord::Transition(t) => format!("transition of {} to {}", t.provider, t.to),
            AuditRecord::Fault(f) => format!("fault change on {}", f.provider),
            AuditRecord::Message(m) => format!("message of request {}", m.request_id),
            AuditRecord::Ticket(t) => format!("ticket {} of request {}", t.id, t.request_id),
        }
    }
}

/// A fault set or healed.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Provider name.
    pub provider: String,
    /// The fault set, or `None` when healed.
    pub spec: Option<FaultSpec>,
    /// Who changed it.
    pub by: FaultChangedBy,
}

/// One turn of a chat-page conversation.
#[derive(Clone, Debug)]
pub struct MessageRecord {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// The browser's conversation id.
    pub conversation_id: String,
    /// The request this turn belongs to.
    pub request_id: String,
    /// The turn (text already redacted when configured).
    pub turn: ChatTurn,
}

/// What the writer is asked to do.
enum Command {
    /// Write this record; acknowledge (true: committed) when asked.
    Record(AuditRecord, Option<oneshot::Sender<bool>>),
    /// Delete rows older than `older_than_ms` and beyond the newest
    /// `max_rows`, and the oldest kept responses beyond `max_response_bytes`.
    Prune {
        older_than_ms: i64,
        max_rows: i64,
        max_response_bytes: i64,
    },
    /// Write everything queued before this, then acknowledge.
    Flush(oneshot::Sender<()>),
    /// Die, to prove the supervisor restarts the writer.
    Crash,
}

/// Counters the writer exposes on `/metrics`.
#[derive(Default, Debug)]
pub struct AuditCounters {
    /// Records that found the queue full and went to the overflow list.
    pub overflow: AtomicU64,
    /// Records committed.
    pub written: AtomicU64,
    /// Batches (or rows) retried after a database error.
    pub retries: AtomicU64,
    /// Rows the database refused for good, set aside and logged.
    pub rejected: AtomicU64,
    /// Records dropped because queue and overflow list were both full.
    pub dropped: AtomicU64,
    /// Times the writer died and was restarted.
    pub restarts: AtomicU64,
}

/// Settings of the writer.
#[derive(Clone, Copy, Debug)]
pub struct AuditSettings {
    /// Queue capacity in records; the overflow list holds as many again.
    pub queue: usize,
    /// Most records per batch.
    pub batch: usize,
    /// Longest a record waits for its batch to fill.
    pub flush_interval: Duration,
}

/// How long the request path waits for room in the queue before its record
/// goes to the overflow list: a writer that keeps up never makes it wait.
const ROOM_WAIT: Duration = Duration::from_millis(100);

/// What the handles, the overflow feeder and the writer share.
struct Shared {
    counters: Arc<AuditCounters>,
    /// Records that found the queue full, in order; bounded by `overflow_cap`.
    overflow: Mutex<VecDeque<(AuditRecord, Option<oneshot::Sender<bool>>)>>,
    overflow_cap: usize,
    /// Wakes the feeder when the overflow list gets a record.
    overflowed: Notify,
    /// Wakes a flush waiting for the overflow list to empty.
    drained: Notify,
    /// The feeder holds a record on its way from the overflow list to the queue.
    feeding: std::sync::atomic::AtomicBool,
    /// Wakes the writer before its batch's interval ends; the writer does not
    /// wait on the queue itself, so a record alone never wakes it.
    due: Arc<Notify>,
    /// Records that make a batch worth writing at once.
    batch: usize,
}

/// Handle to the writer; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    /// The queue.
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl AuditWriter {
    /// Starts the writer (under its supervisor) on `pool`.
    pub fn start(pool: Db, settings: AuditSettings) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let shared = Arc::new(Shared {
            counters: Arc::new(AuditCounters::default()),
            overflow: Mutex::new(VecDeque::new()),
            overflow_cap: settings.queue.max(1),
            overflowed: Notify::new(),
            drained: Notify::new(),
            feeding: std::sync::atomic::AtomicBool::new(false),
            due: Arc::new(Notify::new()),
            batch: settings.batch.max(1),
        });
        let writer = Self { tx, shared };
        tokio::spawn(writer.clone().feed_overflow());
        let task = tokio::spawn(worker::supervise(
            pool,
            rx,
            settings,
            writer.shared.counters.clone(),
            writer.shared.due.clone(),
        ));
        (writer, task)
    }

    /// The writer's counters.
    pub fn counters(&self) -> &Arc<AuditCounters> {
        &self.shared.counters
    }

    /// Records in the queue.
    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Wakes the writer if a batch's worth is queued.
    fn nudge_if_full(&self) {
        if self.queued() >= self.shared.batch {
            self.shared.due.notify_one();
        }
    }

    /// Records queued and not yet handed to the writer (queue and overflow list).
    pub fn backlog(&self) -> usize {
        self.queued() + self.overflow().len()
    }

    fn overflow(
        &self,
    ) -> std::sync::MutexGuard<'_, VecDeque<(AuditRecord, Option<oneshot::Sender<bool>>)>> {
        self.shared
            .overflow
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a record, waiting briefly for room if the queue is full.
    pub async fn write(&self, record: AuditRecord) {
        self.send(record, None).await;
    }

    async fn send(&self, record: AuditRecord, ack: Option<oneshot::Sender<bool>>) {
        match self
            .tx
            .send_timeout(Command::Record(record, ack), ROOM_WAIT)
            .await
        {
            Ok(()) => self.nudge_if_full(),
            Err(mpsc::error::SendTimeoutError::Timeout(Command::Record(record, ack))) => {
                self.overflowed(record, ack)
            }
            Err(_) => tracing::error!("audit writer stopped: record not written"),
        }
    }

    /// Queues a record without waiting (for code that cannot: drop handlers,
    /// breaker transitions).
    pub fn enqueue(&self, record: AuditRecord) {
        match self.tx.try_send(Command::Record(record, None)) {
            Ok(()) => self.nudge_if_full(),
            Err(mpsc::error::TrySendError::Full(Command::Record(record, ack))) => {
                self.overflowed(record, ack)
            }
            Err(_) => tracing::error!("audit writer stopped: record not written"),
        }
    }

    /// Puts a record that found the queue full on the overflow list, or drops it
    /// (counted, logged) when that is full too.
    fn overflowed(&self, record: AuditRecord, ack: Option<oneshot::Sender<bool>>) {
        let counters = &self.shared.counters;
        let mut overflow = self.overflow();
        if overflow.len() >= self.shared.overflow_cap {
            drop(overflow);
            let dropped = counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(dropped, record = %record.describe(), "audit queue and overflow full: record dropped");
            return;
        }
        overflow.push_back((record, ack));
        drop(overflow);
        let n = counters.overflow.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                overflow = n,
                "audit queue full: records wait on the overflow list"
            );
        }
        self.shared.overflowed.notify_one();
    }

    /// Moves overflowed records into the queue as room appears, in order.
    async fn feed_overflow(self) {
        let feeding = &self.shared.feeding;
        loop {
            let next = {
                let mut overflow = self.overflow();
                let next = overflow.pop_front();
                feeding.store(next.is_some(), Ordering::Release);
                next
            };
            match next {
                Some((record, ack)) => {
                    let sent = self.tx.send(Command::Record(record, ack)).await;
                    feeding.store(false, Ordering::Release);
                    self.nudge_if_full();
                    if sent.is_err() {
                        return;
                    }
                }
                None => {
                    self.shared.drained.notify_waiters();
                    // Wakes at once if a record arrived since the pop.
                    self.shared.overflowed.notified().await;
                }
            }
        }
    }

    /// Whether every overflowed record has reached the queue.
    fn overflow_drained(&self) -> bool {
        self.overflow().is_empty() && !self.shared.feeding.load(Ordering::Acquire)
    }

    /// Stores a ticket through the writer; returns once it is committed (`true`)
    /// or known not to be (`false`).
    pub async fn ticket(&self, ticket: Ticket) -> bool {
        let (ack, committed) = oneshot::channel();
        self.send(AuditRecord::Ticket(ticket), Some(ack)).await;
        committed.await.unwrap_or(false)
    }

    /// Asks the writer to apply retention between batches: it is the audit's
    /// only writer, so pruning never contends with audit inserts.
    pub fn prune(&self, older_than_ms: i64, max_rows: i64, max_response_bytes: i64) {
        let _ = self.tx.try_send(Command::Prune {
            older_than_ms,
            max_rows,
            max_response_bytes,
        });
        self.shared.due.notify_one();
    }

    /// Waits until everything queued so far is written, overflowed records included.
    pub async fn flush(&self) {
        loop {
            let drained = self.shared.drained.notified();
            if self.overflow_drained() {
                break;
            }
            // The feeder says when the list is empty; it may also just have
            // handed a record over, so look again at least every millisecond.
            let _ = tokio::time::timeout(Duration::from_millis(1), drained).await;
        }
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Flush(ack)).await.is_ok() {
            self.shared.due.notify_one();
            let _ = done.await;
        }
    }

    /// Kills the writer task, to prove that its supervisor restarts it and that
    /// no record is lost on the way. Not for production use.
    #[doc(hidden)]
    pub async fn crash_writer(&self) {
        let _ = self.tx.send(Command::Crash).await;
        self.shared.due.notify_one();
    }
}
