//! The ledger's invariants under random operation mixes (checked against a
//! model) and under many threads at once, for the memory and durable stores:
//! admission never overshoots the budget, `reserved` is the sum of the open
//! reservations and `spent` the sum of the settled charges.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, DurableStore, Ledger, LedgerError, LedgerSettings, LedgerStore, MemoryStore, Period, PeriodTotals,
    ReservationId, ReserveError, ReserveRequest, TenantLimits,
};
use tollgate_host::money::NanoUsd;

/// 2025-06-15T12:00:00Z: a whole month of room around the test's clock.
const T0: u64 = 1_749_988_800_000;
const TTL: u64 = 30_000;

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        cost: u64,
    },
    /// Settle the n-th open reservation (mod count) for `percent` of its hold (up to 150%).
    Settle {
        n: usize,
        percent: u64,
    },
    Release {
        n: usize,
    },
    Advance {
        ms: u64,
    },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..400).prop_map(|cost| Op::Reserve { cost }),
        3 => (any::<usize>(), 0u64..=150).prop_map(|(n, percent)| Op::Settle { n, percent }),
        1 => any::<usize>().prop_map(|n| Op::Release { n }),
        2 => (0u64..20_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Sweep),
    ]
}

/// What the ledger should hold, computed the obvious way.
#[derive(Default)]
struct Model {
    open: BTreeMap<ReservationId, (u64, u64)>, // id → (cost, expires_at)
    spent: u64,
}

impl Model {
    fn drop_expired(&mut self, now: u64) {
        self.open.retain(|_, (_, expires)| *expires > now);
    }
    fn reserved(&self) -> u64 {
        self.open.values().map(|(cost, _)| cost).sum()
    }
    fn nth(&self, n: usize) -> Option<(ReservationId, u64)> {
        let len = self.open.len();
        (len > 0)
            .then(|| self.open.iter().nth(n % len).map(|(id, (cost, _))| (*id, *cost)))
            .flatten()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_mixes_keep_the_books_exact(ops in proptest::collection::vec(op(), 1..120)) {
        let limit = 1_000;
        let ledger = Ledger::new(MemoryStore::new(), LedgerSettings { reservation_ttl_ms: TTL });
        let t = TenantId::new("prop").unwrap();
        ledger.set_limits(&t, TenantLimits::monthly(NanoUsd(limit)));
        let mut model = Model::default();
        let mut now = T0;
        for op in ops {
            model.drop_expired(now);
            match op {
                Op::Reserve { cost } => {
                    let fits = model.spent + model.reserved() + cost <= limit;
                    match ledger.reserve(&t, ReserveRequest { cost: NanoUsd(cost), tokens: 1, now_ms: now, ceiling: None }) {
                        Ok(r) => {
                            prop_assert!(fits);
                            model.open.insert(r.id, (cost, now + TTL));
                        }
                        Err(ReserveError::Budget { limit: l, spent, reserved, requested, .. }) => {
                            prop_assert!(!fits);
                            prop_assert_eq!((l.0, spent.0, reserved.0, requested.0), (limit, model.spent, model.reserved(), cost));
                        }
                        Err(other) => prop_assert!(false, "unexpected {other}"),
                    }
                }
                Op::Settle { n, percent } => {
                    if let Some((id, cost)) = model.nth(n) {
                        let charge = cost * percent / 100;
                        let s = ledger.settle(&t, id, Actual { cost: NanoUsd(charge), tokens: 1 }, now).unwrap();
                        prop_assert_eq!((s.held.0, s.charged.0), (cost, charge));
                        model.open.remove(&id);
                        model.spent += charge;
                        // Closing twice is refused, never charged twice.
                        let again = ledger.settle(&t, id, Actual { cost: NanoUsd(1), tokens: 1 }, now);
                        prop_assert!(again.is_err());
                    }
                }
                Op::Release { n } => {
                    if let Some((id, cost)) = model.nth(n) {
                        prop_assert_eq!(ledger.release(&t, id, now).unwrap().held.0, cost);
                        model.open.remove(&id);
                        prop_assert!(ledger.release(&t, id, now).is_err());
                    }
                }
                Op::Advance { ms } => now += ms,
                Op::Sweep => {
                    ledger.expire(now).unwrap();
                }
            }
            model.drop_expired(now);
            let s = ledger.snapshot(&t, now).unwrap();
            prop_assert_eq!(s.reserved.0, model.reserved());
            prop_assert_eq!(s.open_reservations, model.open.len());
            prop_assert_eq!(s.spent.0, model.spent);
        }
    }
}

/// A small deterministic generator, one per thread.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Eight threads reserve random amounts against a few small daily budgets and
/// settle (never above the hold), release or abandon them while the clock
/// advances (across midnights too) and sweeps run; a checker thread watches
/// the snapshots.
fn hammer<S: LedgerStore + 'static>(ledger: Arc<Ledger<S>>, ops_per_thread: u64) {
    const THREADS: u64 = 8;
    const LIMIT: u64 = 100_000;
    let tenants: Vec<TenantId> = (0..3).map(|i| TenantId::new(&format!("t{i}")).unwrap()).collect();
    for t in &tenants {
        ledger.set_limits(t, daily(LIMIT));
    }
    let clock = Arc::new(AtomicU64::new(T0));
    let settled: Arc<Vec<AtomicU64>> = Arc::new(tenants.iter().map(|_| AtomicU64::new(0)).collect());
    // A settle after its hold expired still charges (the call ran), and may pass
    // the budget by that much: each settle adds its charge here first and takes
    // it back once the ledger says it was not late.
    let late_allowance: Arc<Vec<AtomicU64>> = Arc::new(tenants.iter().map(|_| AtomicU64::new(0)).collect());
    let open: Arc<Mutex<Vec<BTreeMap<ReservationId, u64>>>> = Arc::new(Mutex::new(vec![BTreeMap::new(); 3]));
    let done = Arc::new(AtomicBool::new(false));

    let checker = {
        let (ledger, tenants, clock, done) = (ledger.clone(), tenants.clone(), clock.clone(), done.clone());
        let late_allowance = late_allowance.clone();
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !done.load(Ordering::Relaxed) || checks == 0 {
                for (ti, t) in tenants.iter().enumerate() {
                    let s = ledger.snapshot(t, clock.load(Ordering::Relaxed)).unwrap();
                    // Settles never exceed their holds here, so only late settles may overshoot.
                    let allowance = late_allowance[ti].load(Ordering::SeqCst);
                    assert!(s.spent.0 + s.reserved.0 <= LIMIT + allowance, "overshoot: {s:?}");
                    checks += 1;
                }
            }
            checks
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|w| {
            let (ledger, tenants, clock) = (ledger.clone(), tenants.clone(), clock.clone());
            let (settled, open, late_allowance) = (settled.clone(), open.clone(), late_allowance.clone());
            std::thread::spawn(move || {
                let mut rng = SplitMix(w + 1);
                let mut admitted = 0u64;
                for _ in 0..ops_per_thread {
                    let ti = rng.below(3) as usize;
                    let t = &tenants[ti];
                    // Now and then an hour passes: days roll over during the run.
                    let step = if rng.below(2_000) == 0 { 3_600_000 } else { rng.below(3) };
                    let now = clock.fetch_add(step, Ordering::Relaxed);
                    let cost = 1 + rng.below(3_000);
                    let request = ReserveRequest {
                        cost: NanoUsd(cost),
                        tokens: rng.below(2_000),
                        now_ms: now,
                        ceiling: None,
                    };
                    let r = match ledger.reserve(t, request) {
                        Ok(r) => r,
                        Err(ReserveError::Budget {
                            limit,
                            spent,
                            reserved,
                            requested,
                            ..
                        }) => {
                            assert!(spent.0 + reserved.0 + requested.0 > limit.0);
                            continue;
                        }
                        Err(e) => panic!("{e}"),
                    };
                    admitted += 1;
                    match rng.below(10) {
                        0..=5 => {
                            let charge = rng.below(cost / 10 + 1);
                            let now = clock.load(Ordering::Relaxed);
                            late_allowance[ti].fetch_add(charge, Ordering::SeqCst);
                            match ledger.settle(
                                t,
                                r.id,
                                Actual {
                                    cost: NanoUsd(charge),
                                    tokens: 1,
                                },
                                now,
                            ) {
                                Ok(s) => {
                                    settled[ti].fetch_add(charge, Ordering::Relaxed);
                                    if s.late {
                                        // Only another thread's clock past the expiry makes a settle late.
                                        assert!(clock.load(Ordering::Relaxed) >= r.expires_at_ms);
                                    } else {
                                        late_allowance[ti].fetch_sub(charge, Ordering::SeqCst);
                                    }
                                }
                                // Expired so long ago that the book no longer remembers it.
                                Err(LedgerError::UnknownReservation { .. }) => {
                                    assert!(clock.load(Ordering::Relaxed) >= r.expires_at_ms);
                                    late_allowance[ti].fetch_sub(charge, Ordering::SeqCst);
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                        6..=7 => {
                            let _ = ledger.release(t, r.id, clock.load(Ordering::Relaxed));
                        }
                        // Abandoned: it expires.
                        _ => {
                            open.lock().unwrap()[ti].insert(r.id, r.cost.0);
                        }
                    }
                    if rng.below(200) == 0 {
                        ledger.expire(clock.load(Ordering::Relaxed)).unwrap();
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    done.store(true, Ordering::Relaxed);
    assert!(checker.join().unwrap() > 0);
    assert!(
        admitted > ops_per_thread,
        "too few admissions to mean anything: {admitted}"
    );

    // Quiescent: the books equal the sums the threads kept.
    let now = clock.load(Ordering::Relaxed);
    let open = open.lock().unwrap();
    for (ti, t) in tenants.iter().enumerate() {
        let s = ledger.snapshot(t, now).unwrap();
        let spent_all_days: u64 = ledger.history(t).unwrap().iter().map(|p| p.spent.0).sum();
        assert_eq!(spent_all_days, settled[ti].load(Ordering::Relaxed), "{t}");
        let still_open: u64 = open[ti]
            .iter()
            .filter(|(id, _)| {
                // An abandoned reservation is open until its expiry.
                ledger.release(t, **id, now).is_ok()
            })
            .map(|(_, cost)| cost)
            .sum();
        // Everything left open was just released: both sides agree on the sum.
        let after = ledger.snapshot(t, now).unwrap();
        assert_eq!(s.reserved.0 - after.reserved.0, still_open, "{t}");
        assert_eq!(after.reserved.0, 0, "{t}");
    }
}

#[test]
fn many_threads_memory_store() {
    let ledger = Arc::new(Ledger::new(
        MemoryStore::new(),
        LedgerSettings {
            reservation_ttl_ms: 500,
        },
    ));
    hammer(ledger, 20_000);
}

fn daily(limit: u64) -> TenantLimits {
    // Tokyo's midnight is 15:00 UTC, three hours after T0.
    TenantLimits {
        period: Period::Daily,
        time_zone: chrono_tz::Asia::Tokyo,
        ..TenantLimits::monthly(NanoUsd(limit))
    }
}

/// Periods with at least one charge (only those are written to disk).
fn charged_periods<S: LedgerStore>(ledger: &Ledger<S>, t: &TenantId) -> Vec<PeriodTotals> {
    ledger.history(t).unwrap().into_iter().filter(|p| p.calls > 0).collect()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn many_threads_durable_store() {
    let dir = scratch_dir("ledger-hammer");
    let db = dir.join("ledger.redb");
    let settings = LedgerSettings {
        reservation_ttl_ms: 500,
    };
    let totals = {
        let ledger = Arc::new(Ledger::new(DurableStore::open(&db).unwrap(), settings));
        hammer(ledger.clone(), 1_500);
        let tenants: Vec<_> = (0..3).map(|i| TenantId::new(&format!("t{i}")).unwrap()).collect();
        tenants.iter().map(|t| charged_periods(&ledger, t)).collect::<Vec<_>>()
    };
    // Reopened, it holds the same totals and nothing open.
    let ledger = Ledger::new(DurableStore::open(&db).unwrap(), settings);
    for (i, before) in totals.iter().enumerate() {
        let t = TenantId::new(&format!("t{i}")).unwrap();
        ledger.set_limits(&t, daily(100_000));
        let state = ledger.snapshot(&t, T0).unwrap();
        assert_eq!(charged_periods(&ledger, &t), *before);
        assert_eq!((state.spent, state.reserved), (before[0].spent, NanoUsd::ZERO));
    }
    drop(ledger);
    std::fs::remove_dir_all(&dir).unwrap();
}
