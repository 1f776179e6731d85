//! The embedding model's queue and its workers: one thread per model session,
//! each taking the waiting questions as soon as it is free and embedding them in
//! one model run. A lookup waits for the run it joins and the runs ahead of it,
//! shared between the sessions, never for a window to close: at low load a
//! question runs alone at once, and under load, while every worker is busy, the
//! questions that arrive meanwhile wait together and go into the next run
//! (micro-batching without a timer). A run takes the oldest question, others of
//! similar length up to [`BatchSettings::max_batch`] and about 256 tokens in all
//! (a run is padded to its longest question, so a short one beside a long one
//! pays for the long one), and every other lookup of a text it holds, which is
//! embedded once for all of them (the usual case during an outage: many
//! customers asking the same thing). A question's vector does not depend on its
//! company (`Embedder::embed` says why).
//!
//! The queue is bounded: a question that finds it full is not embedded (the
//! cache treats it as a miss and the question goes to the providers), so the
//! model never becomes a line customers stand in.

use super::embedder::{Embedder, EmbedderError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// How many questions may wait, and how many share a run.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    /// Most questions waiting for a worker (beyond those being embedded).
    pub max_waiting: usize,
    /// Most distinct questions in one model run. On the 2-core machine a run of
    /// 4 short questions costs each about 0.7 of a run of its own and larger
    /// runs gain little more, while a longer run holds up whoever arrives
    /// during it: at 16 clients, 3, 4, 6 and 8 gave the same p99 within the
    /// noise, and 4 keeps a run short (`README.md`, "Layer 0").
    pub max_batch: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_waiting: 64,
            max_batch: 4,
        }
    }
}

/// Most text in one run of several questions, as questions x the longest one's
/// bytes: about 256 tokens, as much as one question may have. It keeps a shared
/// run from holding up the questions behind it for long, and bounds the memory
/// a run needs by that of the longest single question.
const MAX_RUN_BYTES: usize = 1024;

/// Whether texts of `a` and `b` bytes may share a padded run: neither more than
/// twice the other, give or take 32 bytes (about 8 tokens, which costs little).
fn similar_length(a: usize, b: usize) -> bool {
    a.max(b) <= 2 * a.min(b) + 32
}

/// What a waiting question is sent back.
type Reply = Result<Vec<f32>, EmbedderError>;

/// One question waiting for its vector.
struct Job {
    text: String,
    reply: oneshot::Sender<Reply>,
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
    /// Model runs, each for one or more distinct questions.
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
    max_batch: usize,
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

    /// The next run, once a question waits: the oldest question and up to
    /// `max_batch - 1` other texts of similar length, in the order they came and
    /// within [`MAX_RUN_BYTES`], each with every lookup of the same text. `None`
    /// once the queue is closed and empty.
    fn take(&self) -> Option<Vec<Vec<Job>>> {
        let mut state = self.lock();
        loop {
            if let Some(first) = state.waiting.pop_front() {
                let length = first.text.len();
                let mut longest = length;
                let mut run: Vec<Vec<Job>> = vec![vec![first]];
                let mut rest = VecDeque::with_capacity(state.waiting.len());
                for job in state.waiting.drain(..) {
                    let padded = (run.len() + 1) * longest.max(job.text.len());
                    if let Some(same) = run.iter_mut().find(|same| same[0].text == job.text) {
                        same.push(job);
                    } else if run.len() < self.max_batch
                        && similar_length(length, job.text.len())
                        && padded <= MAX_RUN_BYTES
                    {
                        longest = longest.max(job.text.len());
                        run.push(vec![job]);
                    } else {
                        rest.push_back(job);
                    }
                }
                state.waiting = rest;
                return Some(run);
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
                max_batch: settings.max_batch.max(1),
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

/// A worker: one run at a time on its own session, until the queue closes.
fn work(embedder: &Embedder, session: usize, queue: &Queue) {
    while let Some(mut run) = queue.take() {
        // A caller that went away does not need its vector.
        for same in &mut run {
            same.retain(|job| !job.reply.is_closed());
        }
        run.retain(|same| !same.is_empty());
        if run.is_empty() {
            continue;
        }
        let texts: Vec<&str> = run.iter().map(|same| same[0].text.as_str()).collect();
        let result = embedder.embed_with(session, &texts);
        queue.counters.model_runs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(vectors) => {
                let asked = run.iter().map(Vec::len).sum::<usize>();
                queue
                    .counters
                    .embedded
                    .fetch_add(asked as u64, Ordering::Relaxed);
                for (same, vector) in run.into_iter().zip(vectors) {
                    for job in same {
                        let _ = job.reply.send(Ok(vector.clone()));
                    }
                }
            }
            Err(err) => {
                let message = err.to_string();
                for job in run.into_iter().flatten() {
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
    async fn questions_waiting_together_share_one_run_and_a_repeat_is_embedded_once() {
        let embedder = embedder();
        let (popular, other) = ("Where is my order?", "How do I reset my password?");
        let alone = |text| embedder.embed(&[text]).unwrap().remove(0);
        let (popular_alone, other_alone) = (alone(popular), alone(other));
        let batcher = Batcher::idle(BatchSettings {
            max_waiting: 16,
            max_batch: 8,
        });
        let asked: Vec<&str> = std::iter::repeat_n(popular, 4)
            .chain([other])
            .chain(std::iter::repeat_n(popular, 4))
            .collect();
        let all = futures::future::join_all(asked.iter().map(|q| batcher.embed(q)));
        let mut all = std::pin::pin!(all);
        // Every question is queued before any worker runs.
        assert!(futures::poll!(&mut all).is_pending());
        batcher.spawn_workers(embedder.clone());
        let vectors = all.await;
        for (question, vector) in asked.iter().zip(vectors) {
            let expected = if *question == popular {
                &popular_alone
            } else {
                &other_alone
            };
            assert_eq!(&vector.unwrap(), expected, "{question:?} as alone");
        }
        let c = batcher.counters();
        assert_eq!(c.model_runs.load(Relaxed), 1, "one run for both texts");
        assert_eq!(c.embedded.load(Relaxed), 9);
    }

    fn queue_with(max_batch: usize, texts: &[&str]) -> (Batcher, Vec<oneshot::Receiver<Reply>>) {
        let batcher = Batcher::idle(BatchSettings {
            max_waiting: 64,
            max_batch,
        });
        let mut receivers = Vec::new();
        for text in texts {
            let (reply, receiver) = oneshot::channel();
            batcher.queue.lock().waiting.push_back(Job {
                text: text.to_string(),
                reply,
            });
            receivers.push(receiver);
        }
        (batcher, receivers)
    }

    fn texts(run: &[Vec<Job>]) -> Vec<Vec<&str>> {
        run.iter()
            .map(|same| same.iter().map(|job| job.text.as_str()).collect())
            .collect()
    }

    #[test]
    fn a_run_takes_the_oldest_then_others_of_similar_length_up_to_the_limit() {
        let long = "Hello, I ordered a blue jacket three weeks ago and it still has not arrived, the tracking page says it left the warehouse but nothing since, what can I do?";
        let (batcher, _receivers) = queue_with(
            2,
            &[
                "Where is my order?",
                long,
                "Where is my order?",
                "How do I reset my password?",
                "Do you ship abroad?",
            ],
        );
        let queue = &batcher.queue;
        assert_eq!(
            texts(&queue.take().unwrap()),
            [
                vec!["Where is my order?", "Where is my order?"],
                vec!["How do I reset my password?"]
            ],
            "the repeat joins its text; the long question waits for a run of its own"
        );
        assert_eq!(texts(&queue.take().unwrap()), [vec![long]], "oldest first");
        assert_eq!(texts(&queue.take().unwrap()), [vec!["Do you ship abroad?"]]);
        assert!(queue.lock().waiting.is_empty());
    }

    #[test]
    fn a_run_of_long_questions_holds_about_one_longest_question_of_text() {
        let long: Vec<String> = (0..3)
            .map(|i| format!("{i} {}", "why ".repeat(100)))
            .collect();
        let asked: Vec<&str> = long.iter().map(String::as_str).collect();
        let (batcher, _receivers) = queue_with(4, &asked);
        let queue = &batcher.queue;
        assert_eq!(texts(&queue.take().unwrap()), [[asked[0]], [asked[1]]]);
        assert_eq!(texts(&queue.take().unwrap()), [[asked[2]]]);
    }

    #[test]
    fn lengths_are_similar_within_twice_and_a_few_tokens() {
        assert!(similar_length(10, 52));
        assert!(!similar_length(10, 53));
        assert!(similar_length(100, 232));
        assert!(!similar_length(233, 100));
    }

    #[tokio::test]
    async fn a_full_queue_turns_the_next_question_away_at_once() {
        let batcher = Batcher::idle(BatchSettings {
            max_waiting: 2,
            ..Default::default()
        });
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
