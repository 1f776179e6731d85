//! The breaker decision on the request path: admitting a call while CLOSED, and
//! rejecting one while OPEN (the cost of skipping a failing provider).

use chaosai::gateway::breaker::{Admission, Breaker, BreakerConfig};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn decisions(c: &mut Criterion) {
    let now = Instant::now();
    let config = BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(3600),
        max_open_for: Duration::from_secs(3600),
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
            breaker.on_failure(admission, "server_error", None, now);
        }
        assert_eq!(breaker.admit(now).0, Admission::Reject);
    }
    c.bench_function("breaker reject (open)", |b| {
        b.iter(|| black_box(open.lock().unwrap().admit(black_box(Instant::now()))))
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
