//! Built-in synthetic customer traffic for demos: a few questions a second from a
//! set of support questions, through the same gateway as real customers, so the
//! cascade is visible without anyone typing.

use crate::gateway::{Gateway, GatewayRequest};
use crate::shared::{Surface, TrafficStatus};
use rand::seq::SliceRandom;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};

/// Questions the synthetic customers ask: mostly known topics, some odd ones.
const QUESTIONS: &[&str] = &[
    "Where is my order?",
    "How do I reset my password?",
    "Can I get a refund?",
    "How much is shipping?",
    "I was charged twice, what happened?",
    "How do I return an item?",
    "My package arrived damaged",
    "Do you ship to Canada?",
    "How do I cancel my order?",
    "Can I pause my membership?",
    "Which payment methods do you accept?",
    "How do I use a discount code?",
    "Can I talk to a human?",
    "Is the blue jacket back in stock?",
    "My blender makes a strange noise",
];

/// Counts of the questions asked.
#[derive(Default)]
struct Counts {
    asked: AtomicU64,
    in_flight: AtomicU64,
}

/// Starts and stops the synthetic traffic.
#[derive(Default)]
pub struct Traffic {
    /// The running generator, if any.
    task: Mutex<Option<JoinHandle<()>>>,
    /// The questions in flight, so a shutdown can end them.
    questions: Arc<Mutex<JoinSet<()>>>,
    /// Shared with the questions in flight.
    counts: Arc<Counts>,
}

impl Traffic {
    /// Whether traffic is running.
    pub fn running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Whether it runs, and how many questions it asked and awaits.
    pub fn status(&self) -> TrafficStatus {
        TrafficStatus {
            running: self.running(),
            asked: self.counts.asked.load(Ordering::Acquire),
            in_flight: self.counts.in_flight.load(Ordering::Acquire),
        }
    }

    /// Starts `per_second` questions a second (no-op if already running).
    pub fn start(&self, gateway: Arc<Gateway>, per_second: u32) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let every = Duration::from_millis(1000 / u64::from(per_second.max(1)));
        let counts = self.counts.clone();
        let questions = self.questions.clone();
        *task = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let question = QUESTIONS
                    .choose(&mut rand::thread_rng())
                    .copied()
                    .unwrap_or("Hello?");
                let gateway = gateway.clone();
                let counts = counts.clone();
                counts.in_flight.fetch_add(1, Ordering::AcqRel);
                counts.asked.fetch_add(1, Ordering::AcqRel);
                // Each question runs on its own, so a slow provider never slows the rate.
                let mut questions = questions.lock().unwrap_or_else(|e| e.into_inner());
                while questions.try_join_next().is_some() {}
                questions.spawn(async move {
                    let mut request = GatewayRequest::question(Surface::Traffic, question);
                    // Half the questions skip the cache, so the providers behind
                    // it keep seeing traffic and the cascade stays visible.
                    request.use_cache = rand::random::<bool>();
                    let _ = gateway.complete(request).await;
                    counts.in_flight.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }));
    }

    /// Stops the traffic (questions in flight finish).
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }

    /// Ends the questions still in flight (at shutdown, once the grace period is
    /// over); each keeps its audit row, as a disconnected caller's.
    pub fn abort_in_flight(&self) {
        self.questions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }
}
