//! Ledger throughput: reserve+settle pairs per second for the in-memory store
//! and the durable (redb) store, and the cost of a snapshot.
//!
//! The durable store's settle returns only once its charge is on disk, so one
//! thread is bound by the disk's fsync latency; concurrent settles share a
//! commit (group commit), so the durable figures are measured with many
//! threads, as a gateway with many calls in flight would drive it.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate_host::accounting::Accounting;
use tollgate_host::alerts::{AlertSettings, Alerts};
use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, DurableStore, Ledger, LedgerSettings, LedgerStore, MemoryStore, ReserveRequest, TenantLimits,
};
use tollgate_host::money::NanoUsd;

/// 2025-06-15T12:00:00Z; the clock stays in one period and one minute.
const T0: u64 = 1_749_988_800_000;
const TENANTS: usize = 16;

fn tenants() -> Vec<TenantId> {
    (0..TENANTS)
        .map(|i| TenantId::new(&format!("bench-{i}")).unwrap())
        .collect()
}

fn ledger<S: LedgerStore>(store: S) -> Ledger<S> {
    let ledger = Ledger::new(store, LedgerSettings::default());
    for t in tenants() {
        // Room for every pair a run makes.
        ledger.set_limits(&t, TenantLimits::monthly(NanoUsd(u64::MAX / 4)));
    }
    ledger
}

fn pair<S: LedgerStore>(ledger: &Ledger<S>, t: &TenantId) {
    let r = ledger
        .reserve(
            t,
            ReserveRequest {
                cost: NanoUsd(30_000),
                tokens: 2_000,
                now_ms: T0,
                ceiling: None,
            },
        )
        .unwrap();
    let s = ledger
        .settle(
            t,
            r.id,
            Actual {
                cost: NanoUsd(12_345),
                tokens: 900,
            },
            T0,
        )
        .unwrap();
    black_box(s);
}

/// Run `iters` pairs spread over `threads` threads (tenants round-robin); the wall time.
fn pairs_on_threads<S: LedgerStore>(ledger: &Ledger<S>, threads: usize, iters: u64) -> Duration {
    let tenants = tenants();
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|w| {
                let (tenants, start) = (&tenants, &start);
                let share = iters / threads as u64 + u64::from((w as u64) < iters % threads as u64);
                scope.spawn(move || {
                    let t = &tenants[w % TENANTS];
                    start.wait();
                    for _ in 0..share {
                        pair(ledger, t);
                    }
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for w in workers {
            w.join().unwrap();
        }
        began.elapsed()
    })
}

fn memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger/memory");
    group.throughput(Throughput::Elements(1));
    let ledger = ledger(MemoryStore::new());
    let t = &tenants()[0];
    group.bench_function("reserve+settle/1 thread", |b| b.iter(|| pair(&ledger, t)));
    group.bench_function("reserve+settle/2 threads", |b| {
        b.iter_custom(|iters| pairs_on_threads(&ledger, 2, iters))
    });
    group.finish();
}

fn durable(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("tollgate-ledger-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = ledger(DurableStore::open(dir.join("ledger.redb")).unwrap());
    let mut group = c.benchmark_group("ledger/durable");
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    for threads in [1, 16, 64, 256, 512] {
        group.bench_function(format!("reserve+settle/{threads} threads"), |b| {
            b.iter_custom(|iters| pairs_on_threads(&ledger, threads, iters))
        });
    }
    group.finish();
    drop(ledger);
    let _ = std::fs::remove_dir_all(&dir);
}

fn snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger/snapshot");
    let memory = ledger(MemoryStore::new());
    let dir = std::env::temp_dir().join(format!("tollgate-ledger-bench-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let durable = ledger(DurableStore::open(dir.join("ledger.redb")).unwrap());
    let t = &tenants()[0];
    // A tenant with calls in flight.
    for _ in 0..100 {
        memory
            .reserve(
                t,
                ReserveRequest {
                    cost: NanoUsd(10),
                    tokens: 10,
                    now_ms: T0,
                    ceiling: None,
                },
            )
            .unwrap();
        durable
            .reserve(
                t,
                ReserveRequest {
                    cost: NanoUsd(10),
                    tokens: 10,
                    now_ms: T0,
                    ceiling: None,
                },
            )
            .unwrap();
    }
    group.bench_function("memory", |b| b.iter(|| black_box(memory.snapshot(t, T0).unwrap())));
    group.bench_function("durable", |b| b.iter(|| black_box(durable.snapshot(t, T0).unwrap())));
    // What a policy sees: the ledger's figures plus indicators and alert
    // levels, built in one call on the request path.
    let accounting = Accounting::new(memory, Arc::new(Alerts::new(AlertSettings::default()).unwrap()));
    for minute in 0..600 {
        accounting
            .alerts()
            .record_spend(t, T0 - minute * 60_000, NanoUsd(1_000_000));
    }
    group.bench_function("tenant-state", |b| {
        b.iter(|| black_box(accounting.tenant_state(t, "pro", T0).unwrap()))
    });
    group.finish();
    drop(durable);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, memory, durable, snapshot);
criterion_main!(benches);
