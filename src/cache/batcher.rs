//! Micro-batching of embeddings: the questions waiting for the model at one
//! moment go into one ONNX run. One worker thread owns the model's turn; a
//! question that arrives while a run is going waits for the next, which takes
//! everyone waiting then (up to a maximum batch), after an optional window that
//! lets a burst gather (none by default). Under load a paraphrase lookup then
//! waits for one run of a batch instead of a queue of single runs.
//!
//! The queue is bounded: a question that finds it full is not embedded (the
//! cache treats it as a miss and the question goes to the providers), so the
//! model never becomes a line customers stand in.

use super::embedder::{Embedder, EmbedderError};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How the batcher gathers questions.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    /// Most questions in one run.
    pub max_batch: usize,
    /// How long the first question of a batch waits for others to join.
    pub window: Duration,
    /// Most questions waiting (beyond the running batch).
    pub max_waiting: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_batch: 32,
            // No window: an idle model starts at once. Measured on this CPU a batch
            // costs nearly as much per question as single runs (`make bench`: 317
            // questions/s one at a time, 210-221 in padded batches of 8 or 32), so
            // waiting 0.5 ms for company only added 0.5 ms to every lookup at low
            // load; under load the queue fills while the model runs and batches
            // form anyway.
            window: Duration::ZERO,
            max_waiting: 64,
        }
    }
}

/// One question waiting for its vector.
struct Job {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedderError>>,
}

/// Why a question got no vector.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Too many questions are waiting already.
    #[error("the embedding queue is full")]
    Busy,
    /// The model failed.
    #[error(transparent)]
    Model(#[from] EmbedderError),
    /// The worker is gone (the process is shutting down).
    #[error("the embedding worker stopped")]
    Stopped,
}

/// Counts of the batcher's work, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct BatchCounters {
    /// ONNX runs.
    pub runs: std::sync::atomic::AtomicU64,
    /// Questions embedded.
    pub embedded: std::sync::atomic::AtomicU64,
}

/// The front of the worker: hands questions over and awaits their vectors.
pub struct Batcher {
    jobs: SyncSender<Job>,
    counters: Arc<BatchCounters>,
}

impl Batcher {
    /// Starts the worker thread for `embedder`.
    pub fn start(embedder: Arc<Embedder>, settings: BatchSettings) -> Self {
        let (jobs, queue) = sync_channel(settings.max_waiting.max(1));
        let counters = Arc::new(BatchCounters::default());
        let worker_counters = counters.clone();
        std::thread::Builder::new()
            .name("chaosai-embed".into())
            .spawn(move || work(&embedder, &queue, settings, &worker_counters))
            .expect("the embedding thread starts");
        Self { jobs, counters }
    }

    /// The vector of `text`, embedded with whatever else is waiting.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, BatchError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            text: text.to_string(),
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(BatchError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(BatchError::Stopped),
        }
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(BatchError::Stopped),
        }
    }

    /// What the worker has done.
    pub fn counters(&self) -> &BatchCounters {
        &self.counters
    }
}

/// The worker: one batch at a time, until every sender is gone.
fn work(
    embedder: &Embedder,
    queue: &Receiver<Job>,
    settings: BatchSettings,
    counters: &BatchCounters,
) {
    use std::sync::atomic::Ordering;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        let until = Instant::now() + settings.window;
        while batch.len() < settings.max_batch {
            // Everyone already waiting joins at once; then the window lets a burst gather.
            if let Ok(job) = queue.try_recv() {
                batch.push(job);
                continue;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match queue.recv_timeout(left) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // A caller that went away does not need its vector.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let texts: Vec<&str> = batch.iter().map(|job| job.text.as_str()).collect();
        let result = embedder.embed(&texts);
        counters.runs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(vectors) => {
                counters
                    .embedded
                    .fetch_add(vectors.len() as u64, Ordering::Relaxed);
                for (job, vector) in batch.into_iter().zip(vectors) {
                    let _ = job.reply.send(Ok(vector));
                }
            }
            Err(err) => {
                let message = err.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(EmbedderError::Runtime(message.clone())));
                }
            }
        }
    }
}
