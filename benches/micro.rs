//! Criterion micro-benchmarks of the request path's hot decisions: the breaker
//! (admitting a call while CLOSED, rejecting one while OPEN), the HNSW search at
//! 10k entries, and embedding one short question.

use chaosai::cache::index::VectorIndex;
use chaosai::cache::Embedder;
use chaosai::config::EmbedderConfig;
use chaosai::gateway::breaker::{Admission, Breaker, BreakerConfig};
use chaosai::shared::AttemptOutcome;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::vectors;

mod support;

fn breaker(c: &mut Criterion) {
    let now = Instant::now();
    let config = BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(3600),
        max_open_for: Duration::from_secs(3600),
        probe: chaosai::shared::ProbeMode::Background,
    };
    // The cascade holds each breaker in a mutex; measure the decision as it runs there.
    let closed = Mutex::new(Breaker::new(config, now));
    c.bench_function("breaker admit + success (closed)", |b| {
        b.iter(|| {
            let mut breaker = closed.lock().unwrap();
            let (admission, _) = breaker.admit(black_box(Instant::now()));
            black_box(breaker.on_success(admission, Instant::now()))
        })
    });
    let open = Mutex::new(Breaker::new(config, now));
    {
        let mut breaker = open.lock().unwrap();
        for _ in 0..3 {
            let (admission, _) = breaker.admit(now);
            breaker.on_failure(admission, AttemptOutcome::ServerError, None, now);
        }
        assert_eq!(breaker.admit(now).0, Admission::Reject);
    }
    c.bench_function("breaker reject (open)", |b| {
        b.iter(|| black_box(open.lock().unwrap().admit(black_box(Instant::now()))))
    });
}

fn index(c: &mut Criterion) {
    let data = vectors(10_000);
    let index = VectorIndex::new(10_000);
    let items: Vec<(Vec<f32>, usize)> = data
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| (v, i))
        .collect();
    index.insert_many(&items);
    let mut i = 0;
    c.bench_function("hnsw search k=8 (10k entries)", |b| {
        b.iter(|| {
            i = (i + 7919) % data.len();
            black_box(index.search(&data[i], 8))
        })
    });
}

fn embedder(c: &mut Criterion) {
    let Ok(embedder) = Embedder::load(&EmbedderConfig::default()) else {
        eprintln!("embedding model missing: run `make models`; skipping the embedder bench");
        return;
    };
    c.bench_function("embed one short question", |b| {
        b.iter(|| black_box(embedder.embed(&["How do I reset my password?"]).unwrap()))
    });
}

criterion_group!(benches, breaker, index, embedder);
criterion_main!(benches);
