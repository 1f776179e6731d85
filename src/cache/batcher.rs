//! Micro-batching of embeddings: the questions waiting for the model at one
//! moment are taken together, after an optional window that lets a burst gather
//! (none by default), up to a maximum batch. One worker thread owns the model;
//! a question that arrives while a batch is embedded waits for the next, which
//! takes everyone waiting then, so under load a lookup waits for one batch, not
//! a queue of separate turns. The same question asked by many at once is
//! embedded once, and each distinct question in its own model run
//! (`Embedder::embed` says why not one run for the batch).
//!
//! The queue is bounded: a question that finds it full is not embedded (the
//! cache treats it as a miss and the question goes to the providers), so the
//! model never becomes a line customers stand in.

use super::embedder::{Embedder, EmbedderError};
use std::collections::HashMap;
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
            // No window: an idle model starts at once. Waiting for company buys
            // nothing when every distinct question has its own run, and waiting
            // 0.5 ms only added 0.5 ms to every lookup at low load; under load the
            // queue fills while the model runs and batches form anyway.
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
    /// Batches taken from the queue.
    pub batches: std::sync::atomic::AtomicU64,
    /// Model runs: the distinct questions of each batch.
    pub model_runs: std::sync::atomic::AtomicU64,
    /// Questions answered with a vector.
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
        // The same question asked by many at once (the usual one during an
        // outage) is embedded once for all of them.
        let mut distinct: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
        let mut texts: Vec<&str> = Vec::with_capacity(batch.len());
        let slots: Vec<usize> = batch
            .iter()
            .map(|job| {
                *distinct.entry(job.text.as_str()).or_insert_with(|| {
                    texts.push(job.text.as_str());
                    texts.len() - 1
                })
            })
            .collect();
        let result = embedder.embed(&texts);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .model_runs
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        match result {
            Ok(vectors) => {
                counters
                    .embedded
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (job, slot) in batch.into_iter().zip(slots) {
                    let _ = job.reply.send(Ok(vectors[slot].clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmbedderConfig;
    use std::sync::atomic::Ordering::Relaxed;

    /// Runs against the real model that `make models` installs (part of `make test`).
    #[tokio::test]
    async fn questions_waiting_together_are_answered_together_and_a_repeat_once() {
        let embedder =
            Arc::new(Embedder::load(&EmbedderConfig::default()).expect("run `make models` first"));
        let (popular, other) = ("Where is my order?", "How do I reset my password?");
        let alone = embedder.embed(&[popular, other]).unwrap();
        // The batch is full with the ninth question, so it is taken at once; the
        // long window only keeps the first eight from being taken without it.
        let batcher = Batcher::start(
            embedder,
            BatchSettings {
                max_batch: 9,
                window: Duration::from_secs(60),
                max_waiting: 16,
            },
        );
        let asked: Vec<&str> = std::iter::repeat_n(popular, 8).chain([other]).collect();
        let vectors = futures::future::join_all(asked.iter().map(|q| batcher.embed(q))).await;
        for (question, vector) in asked.iter().zip(vectors) {
            let expected = if *question == popular {
                &alone[0]
            } else {
                &alone[1]
            };
            assert_eq!(&vector.unwrap(), expected, "{question:?}");
        }
        let c = batcher.counters();
        assert_eq!(c.batches.load(Relaxed), 1);
        assert_eq!(
            c.model_runs.load(Relaxed),
            2,
            "the repeated question ran once"
        );
        assert_eq!(c.embedded.load(Relaxed), 9);
    }
}
