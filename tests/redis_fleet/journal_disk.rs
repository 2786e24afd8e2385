//! The journal's disk refuses to grow (full, or over a size limit) while
//! Redis is away. Each test runs again in a child process whose files
//! cannot grow (`RLIMIT_FSIZE` 0, `SIGXFSZ` ignored): every write that
//! would grow a file fails with `EFBIG`, as a full disk's fail with
//! `ENOSPC`. Redis runs in the parent, out of that limit.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, LedgerError, LedgerStore, RedisSettings, RedisStore, ReserveError, ReserveRequest, StoreError, TenantLimits,
};
use tollgate_host::money::NanoUsd;

use crate::amend::wall_now;
use crate::support::redis::RedisServer;

/// The Redis URL the parent hands to its child.
const CHILD: &str = "TOLLGATE_TEST_JOURNAL_DISK_REDIS";

/// In the parent: starts Redis with a user `owner`, runs `test` of this
/// binary in a child whose files cannot grow, and asserts that it passed.
/// In the child: the Redis port.
fn redis_port(test: &str) -> Option<u16> {
    if let Ok(port) = std::env::var(CHILD) {
        return Some(port.parse().expect("a port"));
    }
    let server = RedisServer::start();
    assert_eq!(
        server.cli(&["ACL", "SETUSER", "owner", "on", ">secret", "~*", "&*", "+@all"]),
        "OK"
    );
    let mut child = Command::new(std::env::current_exe().expect("this test binary"));
    child
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, server.port.to_string());
    // SAFETY: between fork and exec only async-signal-safe calls: signal, getrlimit, setrlimit.
    unsafe {
        child.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = 0;
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = child.output().expect("run the child");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && printed.contains("1 passed"),
        "the child failed:\n{printed}"
    );
    None
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The process's log, kept in memory (a file could not grow here).
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = Buffer(Arc::clone(&buffer));
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    buffer
}

fn text(log: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&log.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

fn store(port: u16, journal: &std::path::Path, allowance: Option<NanoUsd>) -> RedisStore {
    RedisStore::connect(RedisSettings {
        url: format!("redis://owner:secret@127.0.0.1:{port}"),
        key_prefix: "disk".into(),
        timeout: Duration::from_millis(500),
        retry_for: Duration::from_millis(300),
        lease: Duration::from_secs(60),
        allowance,
        journal: Some(journal.to_owned()),
    })
    .expect("connect")
}

fn five_cents() -> ReserveRequest {
    ReserveRequest {
        cost: NanoUsd::from_cents(5),
        ceiling: None,
        tokens: 100,
        now_ms: wall_now(),
    }
}

/// A settle Redis refuses is kept; its journal entry cannot be written, so
/// it is kept in memory only: logged, and said in the store's health. Once
/// Redis is back it is written, once, and the health clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_settle_its_journal_cannot_take_is_kept_in_memory_said_and_written_once() {
    let Some(port) =
        redis_port("journal_disk::a_kept_settle_its_journal_cannot_take_is_kept_in_memory_said_and_written_once")
    else {
        return;
    };
    let log = captured_log();
    let dir = tempfile::tempdir().expect("dir");
    let journal = dir.path().join("journal.jsonl");
    let owner = store(port, &journal, None);
    let tenant = TenantId::new("acme").unwrap();
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let remote = owner.remote().unwrap();
    let held = remote.reserve(&tenant, &limits, five_cents(), 600_000).await.unwrap();

    assert_eq!(cli(port, &["ACL", "SETUSER", "owner", "-@all"]), "OK");
    let usage = Actual {
        cost: NanoUsd::from_cents(3),
        tokens: 90,
    };
    let kept = remote.settle(&tenant, &limits, held.id, usage, wall_now()).await;
    assert!(matches!(kept, Err(LedgerError::Deferred { .. })), "{kept:?}");
    assert_eq!(
        std::fs::metadata(&journal).expect("journal").len(),
        0,
        "nothing could be written"
    );
    assert!(text(&log).contains("kept in memory only"), "{}", text(&log));
    let health = owner.health().expect_err("a change is kept").to_string();
    assert!(
        health.contains("journal could not keep them") && health.contains("File too large"),
        "{health}"
    );

    assert_eq!(cli(port, &["ACL", "SETUSER", "owner", "+@all"]), "OK");
    owner.drained().await;
    let state = remote.load(&tenant, &limits, wall_now()).await.unwrap();
    assert_eq!(
        (state.spent, state.used_tokens),
        (usage.cost, 90),
        "charged its usage, once"
    );
    assert_eq!((state.reserved, state.open_reservations), (NanoUsd::ZERO, 0));
    owner.health().expect("written: healthy again");
}

/// With `fail-open-with-allowance`, a call is let through on the allowance
/// only once its hold is in the journal. The journal cannot take it: the
/// call is refused as unavailable, and its local hold given back, every
/// time (the allowance would cover 20 such holds; 25 are tried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_is_let_through_on_the_allowance_when_its_journal_cannot_take_the_hold() {
    let Some(port) =
        redis_port("journal_disk::no_call_is_let_through_on_the_allowance_when_its_journal_cannot_take_the_hold")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let journal = dir.path().join("journal.jsonl");
    let replica = store(port, &journal, Some(NanoUsd::from_usd(1)));
    let tenant = TenantId::new("acme").unwrap();
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let remote = replica.remote().unwrap();
    // Redis has the tenant's figures, as the allowance needs.
    remote.load(&tenant, &limits, wall_now()).await.unwrap();

    assert_eq!(cli(port, &["ACL", "SETUSER", "owner", "-@all"]), "OK");
    for attempt in 0..25 {
        let refused = remote.reserve(&tenant, &limits, five_cents(), 600_000).await;
        match refused {
            Err(ReserveError::Store(StoreError::Unavailable { detail, .. }))
                if detail.contains("no call is admitted on the local allowance") => {}
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    assert_eq!(std::fs::metadata(&journal).expect("journal").len(), 0);

    assert_eq!(cli(port, &["ACL", "SETUSER", "owner", "+@all"]), "OK");
    replica.drained().await;
    let state = remote.load(&tenant, &limits, wall_now()).await.unwrap();
    assert_eq!(
        (state.spent, state.reserved, state.open_reservations),
        (NanoUsd::ZERO, NanoUsd::ZERO, 0),
        "nothing was let through, nothing charged"
    );
}
