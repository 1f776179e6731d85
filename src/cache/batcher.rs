//! The embedding model's queue and its workers: one thread per model session,
//! each taking the oldest waiting question as soon as it is free, so a lookup
//! waits for the questions ahead of it, shared between the sessions, and never
//! for a whole batch to finish. When a worker takes a question it also takes
//! every other lookup waiting with the same text (the usual case during an
//! outage: many customers asking the same thing), which is embedded once for
//! all of them. Questions are not put into one model run together: with the
//! int8 model a question's vector would then depend on its company
//! (`Embedder::embed` says why).
//!
//! The queue is bounded: a question that finds it full is not embedded (the
//! cache treats it as a miss and the question goes to the providers), so the
//! model never becomes a line customers stand in.

use super::embedder::{Embedder, EmbedderError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// How many questions may wait.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    /// Most questions waiting for a worker (beyond those being embedded).
    pub max_waiting: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self { max_waiting: 64 }
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
    /// The workers are gone (the process is shutting down).
    #[error("the embedding workers stopped")]
    Stopped,
}

/// Counts of the workers' work, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct BatchCounters {
    /// Model runs: one per distinct question taken.
    pub model_runs: AtomicU64,
    /// Questions answered with a vector.
    pub embedded: AtomicU64,
}

/// What the front and the workers share.
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a question arrives or the queue closes.
    arrived: Condvar,
    max_waiting: usize,
    counters: BatchCounters,
}

struct QueueState {
    waiting: VecDeque<Job>,
    /// False once the front is dropped: the workers finish what waits and stop.
    open: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest waiting question with every other lookup of the same text,
    /// once one waits; `None` once the queue is closed and empty.
    fn take(&self) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            if let Some(first) = state.waiting.pop_front() {
                let mut same = vec![first];
                let mut rest = VecDeque::with_capacity(state.waiting.len());
                for job in state.waiting.drain(..) {
                    if job.text == same[0].text {
                        same.push(job);
                    } else {
                        rest.push_back(job);
                    }
                }
                state.waiting = rest;
                return Some(same);
            }
            if !state.open {
                return None;
            }
            state = self.arrived.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The front of the workers: hands questions over and awaits their vectors.
pub struct Batcher {
    queue: Arc<Queue>,
}

impl Batcher {
    /// Starts one worker thread per session of `embedder`.
    pub fn start(embedder: Arc<Embedder>, settings: BatchSettings) -> Self {
        let batcher = Self::idle(settings);
        batcher.spawn_workers(embedder);
        batcher
    }

    /// A queue without workers yet: questions wait until they start.
    fn idle(settings: BatchSettings) -> Self {
        Self {
            queue: Arc::new(Queue {
                state: Mutex::new(QueueState {
                    waiting: VecDeque::new(),
                    open: true,
                }),
                arrived: Condvar::new(),
                max_waiting: settings.max_waiting.max(1),
                counters: BatchCounters::default(),
            }),
        }
    }

    fn spawn_workers(&self, embedder: Arc<Embedder>) {
        for session in 0..embedder.sessions() {
            let (queue, embedder) = (self.queue.clone(), embedder.clone());
            std::thread::Builder::new()
                .name(format!("chaosai-embed-{session}"))
                .spawn(move || work(&embedder, session, &queue))
                .expect("an embedding thread starts");
        }
    }

    /// The vector of `text`, from the next free session.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, BatchError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut state = self.queue.lock();
            if !state.open {
                return Err(BatchError::Stopped);
            }
            if state.waiting.len() >= self.queue.max_waiting {
                return Err(BatchError::Busy);
            }
            state.waiting.push_back(Job {
                text: text.to_string(),
                reply,
            });
        }
        self.queue.arrived.notify_one();
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(BatchError::Stopped),
        }
    }

    /// What the workers have done.
    pub fn counters(&self) -> &BatchCounters {
        &self.queue.counters
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.queue.lock().open = false;
        self.queue.arrived.notify_all();
    }
}

/// A worker: one question (and its repeats) at a time on its own session,
/// until the queue closes.
fn work(embedder: &Embedder, session: usize, queue: &Queue) {
    while let Some(mut same) = queue.take() {
        // A caller that went away does not need its vector.
        same.retain(|job| !job.reply.is_closed());
        let Some(first) = same.first() else {
            continue;
        };
        let result = embedder.embed_with(session, &first.text);
        queue.counters.model_runs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(vector) => {
                queue
                    .counters
                    .embedded
                    .fetch_add(same.len() as u64, Ordering::Relaxed);
                for job in same {
                    let _ = job.reply.send(Ok(vector.clone()));
                }
            }
            Err(err) => {
                let message = err.to_string();
                for job in same {
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

    fn embedder() -> Arc<Embedder> {
        Arc::new(Embedder::load(&EmbedderConfig::default()).expect("run `make models` first"))
    }

    /// Runs against the real model that `make models` installs (part of `make test`).
    #[tokio::test]
    async fn a_question_many_ask_at_once_is_embedded_once_for_all() {
        let embedder = embedder();
        let (popular, other) = ("Where is my order?", "How do I reset my password?");
        let alone = embedder.embed(&[popular, other]).unwrap();
        let batcher = Batcher::idle(BatchSettings { max_waiting: 16 });
        let asked: Vec<&str> = std::iter::repeat_n(popular, 4)
            .chain([other])
            .chain(std::iter::repeat_n(popular, 4))
            .collect();
        let all = futures::future::join_all(asked.iter().map(|q| batcher.embed(q)));
        let mut all = std::pin::pin!(all);
        // Every question is queued before any worker runs.
        assert!(futures::poll!(&mut all).is_pending());
        batcher.spawn_workers(embedder);
        let vectors = all.await;
        for (question, vector) in asked.iter().zip(vectors) {
            let expected = if *question == popular {
                &alone[0]
            } else {
                &alone[1]
            };
            assert_eq!(&vector.unwrap(), expected, "{question:?}");
        }
        let c = batcher.counters();
        assert_eq!(
            c.model_runs.load(Relaxed),
            2,
            "the repeated question ran once"
        );
        assert_eq!(c.embedded.load(Relaxed), 9);
    }

    #[tokio::test]
    async fn a_full_queue_turns_the_next_question_away_at_once() {
        let batcher = Batcher::idle(BatchSettings { max_waiting: 2 });
        let first = batcher.embed("one");
        let second = batcher.embed("two");
        let mut waiting = std::pin::pin!(futures::future::join(first, second));
        assert!(futures::poll!(&mut waiting).is_pending());
        assert!(matches!(
            batcher.embed("three").await,
            Err(BatchError::Busy)
        ));
    }
}
