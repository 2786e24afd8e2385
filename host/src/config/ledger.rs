//! `[ledger]`: where the books are kept and when a charge counts as safe.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// redb on disk: survives a crash with no settled charge lost.
    #[default]
    Durable,
    Memory,
    /// Redis or Valkey, shared by every replica: see `[ledger.redis]`.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LedgerConfig {
    pub store: StoreKind,
    pub path: PathBuf,
    /// A hold not settled or released by then is returned.
    pub reservation_ttl_ms: u64,
    /// When the durable store acknowledges a settle.
    pub commit: CommitMode,
    /// With `commit = "write"`, the longest time between checkpoints: what
    /// an OS crash or power cut can lose.
    pub checkpoint_ms: u64,
    /// With `store = "redis"`: where the fleet's ledger lives.
    pub redis: RedisConfig,
}

/// `[ledger.redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`; `rediss://` for TLS.
    pub url: String,
    /// Before every key, so deployments can share one Redis.
    pub key_prefix: String,
    /// The most one ledger operation waits for Redis.
    pub timeout_ms: u64,
    /// How long a settle retries before its charge is kept in the process
    /// and written when Redis answers again.
    pub retry_ms: u64,
    /// What a replica does while Redis does not answer.
    pub failure_mode: RedisFailureMode,
    /// With `fail-open-with-allowance`: what each tenant may spend per
    /// replica and outage, in US dollars as a decimal string.
    pub allowance_usd: String,
    /// The local file that keeps, until Redis has them, the calls admitted
    /// on the allowance (`fail-open-with-allowance`) and, in either mode,
    /// the outcomes of calls Redis held that could not be written, so that
    /// a replica killed during an outage charges them when it starts again.
    /// One per replica, on a volume that outlives the process. Relative to
    /// `tollgate.toml`.
    pub journal: PathBuf,
    /// How long a replica that stops renewing its lease (killed, lost, cut
    /// off from Redis) keeps its holds before another replica adopts and
    /// charges them.
    pub lease_ms: u64,
}

/// `[ledger.redis] failure-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RedisFailureMode {
    /// Refuse calls with a 503 `ServiceUnavailableException`: no budget is
    /// ever passed.
    #[default]
    FailClosed,
    /// Admit calls up to `allowance-usd` per tenant and replica; their
    /// charges are written when Redis answers again.
    FailOpenWithAllowance,
}

impl RedisConfig {
    /// The local allowance, or `None` to fail closed.
    pub fn allowance(&self) -> Result<Option<crate::money::NanoUsd>, String> {
        match self.failure_mode {
            RedisFailureMode::FailClosed => Ok(None),
            RedisFailureMode::FailOpenWithAllowance => crate::money::NanoUsd::parse_usd(&self.allowance_usd)
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "{:?} is not an amount of US dollars; write it as a decimal string, e.g. \"0.50\"",
                        self.allowance_usd
                    )
                }),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "tollgate".into(),
            timeout_ms: 500,
            retry_ms: 2_000,
            failure_mode: RedisFailureMode::FailClosed,
            allowance_usd: "0.10".into(),
            journal: PathBuf::from("tollgate-data/allowance-journal.jsonl"),
            lease_ms: 10_000,
        }
    }
}

/// When the durable store acknowledges a settle (`[ledger] commit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CommitMode {
    /// After the fsync of its batch: survives a power cut.
    #[default]
    Fsync,
    /// After its batch is written to the write-ahead log: survives any
    /// crash of the process; a power cut can lose `checkpoint-ms` of settles.
    Write,
}

/// Bounds of `[ledger] checkpoint-ms`.
pub const CHECKPOINT_MS: std::ops::RangeInclusive<u64> = 1..=60_000;

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            store: StoreKind::Durable,
            path: PathBuf::from("tollgate-data/ledger.redb"),
            reservation_ttl_ms: crate::ledger::LedgerSettings::default().reservation_ttl_ms,
            commit: CommitMode::Fsync,
            checkpoint_ms: 100,
            redis: RedisConfig::default(),
        }
    }
}

impl LedgerConfig {
    /// The first setting out of its bounds, as (key, problem).
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if !CHECKPOINT_MS.contains(&self.checkpoint_ms) {
            return Err((
                "ledger.checkpoint-ms",
                format!(
                    "{} is outside {} to {} ms; it bounds what a power cut can lose with commit = \"write\"",
                    self.checkpoint_ms,
                    CHECKPOINT_MS.start(),
                    CHECKPOINT_MS.end()
                ),
            ));
        }
        if self.store == StoreKind::Redis {
            if !(1..=60_000).contains(&self.redis.timeout_ms) {
                return Err((
                    "ledger.redis.timeout-ms",
                    format!("{} is outside 1 to 60000 ms", self.redis.timeout_ms),
                ));
            }
            if !(1_500..=600_000).contains(&self.redis.lease_ms) {
                return Err((
                    "ledger.redis.lease-ms",
                    format!(
                        "{} is outside 1500 to 600000 ms; a replica renews its lease every 500 ms",
                        self.redis.lease_ms
                    ),
                ));
            }
            if self.redis.retry_ms > 600_000 {
                return Err((
                    "ledger.redis.retry-ms",
                    format!("{} is above 600000 ms", self.redis.retry_ms),
                ));
            }
            if let Err(problem) = self.redis.allowance() {
                return Err(("ledger.redis.allowance-usd", problem));
            }
            if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}']) {
                return Err((
                    "ledger.redis.key-prefix",
                    format!(
                        "{:?} must be non-empty and free of braces (they would break the per-tenant hash tag)",
                        self.redis.key_prefix
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(text: &str) -> LedgerConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn redis_settings_are_checked_with_the_key_named() {
        let fine = ledger("store = \"redis\"\n[redis]\nurl = \"rediss://:pw@cache:6380\"\n");
        assert_eq!(fine.check(), Ok(()));
        assert_eq!(fine.redis.allowance(), Ok(None), "fail-closed by default");

        let open = ledger(
            "store = \"redis\"\n[redis]\nfailure-mode = \"fail-open-with-allowance\"\nallowance-usd = \"0.25\"\n",
        );
        assert_eq!(open.redis.allowance(), Ok(Some(crate::money::NanoUsd::from_cents(25))));

        for (text, key) in [
            (
                "[redis]\nfailure-mode = \"fail-open-with-allowance\"\nallowance-usd = \"0.1.2\"",
                "allowance-usd",
            ),
            ("[redis]\nkey-prefix = \"a{b}\"", "key-prefix"),
            ("[redis]\ntimeout-ms = 0", "timeout-ms"),
        ] {
            let config = ledger(&format!("store = \"redis\"\n{text}\n"));
            let (named, _) = config.check().expect_err(text);
            assert_eq!(named, format!("ledger.redis.{key}"));
        }
        // Only a Redis ledger reads them.
        let durable = ledger("[redis]\ntimeout-ms = 0\n");
        assert_eq!(durable.check(), Ok(()));
        assert!(
            toml::from_str::<LedgerConfig>("[redis]\nurll = \"x\"\n").is_err(),
            "unknown keys are refused"
        );
    }
}
