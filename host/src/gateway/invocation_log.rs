//! One JSON line per call, in the shape of Bedrock's model-invocation log
//! (`schemaType`, `timestamp`, `requestId`, `operation`, `modelId`, token
//! counts under `input`/`output`, `requestMetadata`), so the analytics that
//! read Bedrock's logs read these too. tollgate's own fields sit under
//! `tollgate`: the decision and why, the cost in nano-dollars, the policy
//! version, the original model, and where the time went.
//!
//! Records are written by one thread, off the request path, and rotated
//! by size and time (see `log_writer`). `/admin/idle` and a clean shutdown
//! wait until every finished call's record is on disk.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::log_writer::{LogWriter, rotated_files};
use crate::config::LogConfig;
use crate::contract::CachePoint;
use crate::pricing::{LatencyMode, Price, ServedAs, ServiceTier, Usage};

pub const SCHEMA_TYPE: &str = "ModelInvocationLog";
pub const SCHEMA_VERSION: &str = "1.0";

/// One call's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    pub schema_type: String,
    pub schema_version: String,
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
    /// Bedrock's request id when the call reached it, else tollgate's.
    pub request_id: String,
    /// `Converse` or `ConverseStream`.
    pub operation: String,
    /// The model (or inference profile ARN) the call was sent to, else the one asked for.
    pub model_id: String,
    pub input: TokenCounts,
    pub output: TokenCounts,
    /// The pairs forwarded to Bedrock (the caller's, merged with tollgate's).
    pub request_metadata: Map<String, Value>,
    pub tollgate: TollgateFields,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenCounts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_token_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_token_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_token_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_input_token_count: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TollgateFields {
    pub request_id: String,
    pub tenant: String,
    /// The caller's user and use case (from its `requestMetadata`), kept
    /// for every call the gateway read, refused ones included: nothing is
    /// forwarded for those, so `requestMetadata` is empty.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub use_case: Option<String>,
    /// `admit`, `downgrade`, `throttle`, `reject`, or `invalid` for a request refused before the policy ran.
    pub decision: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Set when the policy failed and the failure mode decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_failure: Option<String>,
    /// The model the caller asked for.
    pub requested_model_id: String,
    /// The model that served the call, when it differs (a downgrade).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_model_id: Option<String>,
    pub estimated_input_tokens: u64,
    pub max_output_tokens: u64,
    /// The request's `cachePoint` blocks, in order: they price its hold and
    /// the policy sees them, so a replay needs them for refused calls too.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub cache_points: Vec<CachePoint>,
    /// The service tier and latency mode the request asked for, when not
    /// the standard ones: they price its hold, whether or not it ran.
    #[serde(skip_serializing_if = "is_standard", default)]
    pub asked: ServedAs,
    /// What was held while the call ran.
    pub reserved_nano_usd: u64,
    /// The ledger's id of that hold, when one was taken: it joins a call's
    /// record to a restored charge of the same hold (see `reconcile`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reservation: Option<u64>,
    /// What was charged (0 when nothing reached the model).
    pub cost_nano_usd: u64,
    /// `usage` (the response's figures), `reservation` (none were reported:
    /// the hold was charged), `released` (nothing was charged) or `none`.
    pub charged_from: String,
    /// The call outlived its reservation's TTL: it was charged after the hold expired.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub hold_expired: bool,
    /// HTTP status sent to the caller.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Caller pairs left out of `requestMetadata`, with why.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub dropped_metadata: Vec<String>,
    /// How a charge from usage was priced: enough to reproduce it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub billing: Option<Billing>,
    /// Why the hold was charged instead of the usage, when it was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub billing_note: Option<String>,
    /// The tenant's shadow policy's verdict on this call, when it has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shadow: Option<super::shadowing::ShadowFields>,
    pub latency: Latency,
}

fn is_standard(asked: &ServedAs) -> bool {
    *asked == ServedAs::default()
}

/// The prices and counts behind a charge from usage: `cost = ceil(sum of
/// tokens × unit price / 1,000,000)`, which `tollgate cost` recomputes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Billing {
    /// The region the call was priced in (the upstream's).
    pub region: String,
    /// The digest of the price book used (`tollgate cost --version` prints the current one).
    pub price_book: String,
    /// The catalog entry that priced it.
    pub base_model: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prefix: Option<String>,
    pub service_tier: ServiceTier,
    pub latency: LatencyMode,
    /// The prompt passed the model's long-context size.
    pub long_context: bool,
    /// Nano-dollars per million tokens, as applied.
    pub unit_prices: Price,
    /// Every usage field, the cache writes split by TTL.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<BilledTokens>,
}

/// A call's token counts as billed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BilledTokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
}

impl From<Usage> for BilledTokens {
    fn from(u: Usage) -> Self {
        BilledTokens {
            input: u.input_tokens,
            output: u.output_tokens,
            cache_read: u.cache_read_input_tokens,
            cache_write_5m: u.cache_write_5m_tokens(),
            cache_write_1h: u.cache_write_1h_input_tokens,
        }
    }
}

impl From<BilledTokens> for Usage {
    fn from(b: BilledTokens) -> Self {
        Usage {
            input_tokens: b.input,
            output_tokens: b.output,
            cache_read_input_tokens: b.cache_read,
            cache_write_input_tokens: b.cache_write_5m.saturating_add(b.cache_write_1h),
            cache_write_1h_input_tokens: b.cache_write_1h,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Policy decision, in microseconds.
    pub decision_us: u64,
    /// Everything of tollgate's before forwarding (parse, estimate, state, policy, reserve), in microseconds.
    pub gateway_us: u64,
    /// Upstream: until the whole reply (Converse) or the end of the stream, in milliseconds.
    pub upstream_ms: u64,
    pub total_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open the invocation log {path}: {source}. Check the directory exists and is writable, or change [log] invocations in tollgate.toml"
)]
pub struct LogOpenError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The JSONL file. Writes from any thread.
pub struct InvocationLog {
    path: PathBuf,
    writer: LogWriter,
}

impl InvocationLog {
    pub fn open(path: impl AsRef<Path>) -> Result<InvocationLog, LogOpenError> {
        Self::open_with(path, &LogConfig::default())
    }

    /// Opens the log with the rotation and queue settings of `settings`
    /// (its `invocations` path is not used: `path` is).
    pub fn open_with(path: impl AsRef<Path>, settings: &LogConfig) -> Result<InvocationLog, LogOpenError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| LogOpenError {
                path: path.clone(),
                source,
            })?;
        }
        let writer = LogWriter::start(path.clone(), settings).map_err(|source| LogOpenError {
            path: path.clone(),
            source,
        })?;
        Ok(InvocationLog { path, writer })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one record for the writer, blocking while the queue is full
    /// (the disk is stalled): for code outside an async runtime. A failed
    /// write is logged, never the caller's problem.
    pub fn write(&self, record: InvocationRecord) {
        self.writer.write(record);
    }

    /// Queues one record for the writer; while the queue is full, waits
    /// without holding a runtime thread.
    pub async fn append(&self, record: InvocationRecord) {
        self.writer.append(record).await;
    }

    /// The number of calls waiting for room in the queue, as a gauge that
    /// follows it (exported as `tollgate_log_waiting_calls`).
    pub fn waiting_gauge(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.writer.waiting_gauge()
    }

    /// Resolves once every record written before it is on disk.
    pub async fn flush(&self) {
        self.writer.flush().await;
    }

    /// For a shutdown: [`Self::flush`] for up to `wait`; if the disk has not
    /// taken every record by then, they go to standard error instead (see
    /// [`UNWRITTEN`](super::log_writer::UNWRITTEN)). `None` when the disk
    /// took them all, else the number printed.
    pub async fn close(&self, wait: std::time::Duration) -> Option<usize> {
        self.writer.close(wait).await
    }

    /// Reads every record of a log, the files rotated away from it first
    /// (for reports, reconciliation and tests).
    pub fn read_all(path: impl AsRef<Path>) -> std::io::Result<Vec<InvocationRecord>> {
        let path = path.as_ref();
        let mut records = Vec::new();
        for file in rotated_files(path).iter().chain(std::iter::once(&path.to_path_buf())) {
            let text = std::fs::read_to_string(file)?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                records.push(serde_json::from_str(line).map_err(std::io::Error::other)?);
            }
        }
        Ok(records)
    }
}

/// RFC 3339 UTC with milliseconds, as Bedrock's log writes it.
pub fn timestamp(now_ms: u64) -> String {
    use chrono::{Datelike, Timelike};
    let Some(t) = i64::try_from(now_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
    else {
        return String::new();
    };
    // Field by field: a strftime pattern is parsed again on every call, which
    // showed in the request path's profile.
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> InvocationRecord {
        InvocationRecord {
            schema_type: SCHEMA_TYPE.into(),
            schema_version: SCHEMA_VERSION.into(),
            timestamp: timestamp(1_714_564_800_123),
            request_id: "r-1".into(),
            operation: "Converse".into(),
            model_id: "amazon.nova-micro-v1:0".into(),
            input: TokenCounts {
                input_token_count: Some(12),
                ..TokenCounts::default()
            },
            output: TokenCounts {
                output_token_count: Some(30),
                ..TokenCounts::default()
            },
            request_metadata: Map::new(),
            tollgate: TollgateFields {
                tenant: "acme".into(),
                decision: "admit".into(),
                ..TollgateFields::default()
            },
        }
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = std::env::temp_dir().join(format!("tollgate-log-{}", std::process::id()));
        let path = dir.join("invocations.jsonl");
        let log = InvocationLog::open(&path).expect("open");
        let record = record();
        log.write(record.clone());
        log.write(record.clone());
        // Dropping the log writes what is queued.
        drop(log);
        let back = InvocationLog::read_all(&path).expect("read");
        assert_eq!(back, vec![record.clone(), record]);
        assert_eq!(back[0].timestamp, "2024-05-01T12:00:00.123Z");
        let line = std::fs::read_to_string(&path).expect("text");
        assert!(line.contains("\"schemaType\":\"ModelInvocationLog\""), "{line}");
        assert!(line.contains("\"inputTokenCount\":12"), "{line}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn timestamps_pad_every_field_and_keep_the_milliseconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_709_251_199_007), "2024-02-29T23:59:59.007Z");
        assert_eq!(timestamp(u64::MAX), "");
    }

    /// A process killed while writing leaves part of a line; the next start
    /// cuts it, so its first record starts a line and the log reads back.
    #[test]
    fn a_torn_last_line_is_cut_when_the_log_is_opened_again() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("invocations.jsonl");
        let whole = serde_json::to_string(&record()).expect("JSON");
        std::fs::write(&path, format!("{whole}\n{}", &whole[..40])).expect("write");
        let log = InvocationLog::open(&path).expect("open");
        log.write(record());
        drop(log);
        assert_eq!(InvocationLog::read_all(&path).expect("read"), vec![record(), record()]);
    }

    #[test]
    fn the_log_rotates_by_size_and_reads_back_whole() {
        let dir = std::env::temp_dir().join(format!("tollgate-log-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("invocations.jsonl");
        let line = serde_json::to_vec(&record()).expect("json").len() as u64 + 1;
        let settings = LogConfig {
            max_bytes: 2 * line,
            rotate_every: crate::config::RotateEvery::Never,
            queue: 4,
            ..LogConfig::default()
        };
        let log = InvocationLog::open_with(&path, &settings).expect("open");
        for i in 0..7 {
            let mut r = record();
            r.request_id = format!("r-{i}");
            log.write(r);
        }
        drop(log);
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 3, "{rotated:?}");
        let ids: Vec<String> = InvocationLog::read_all(&path)
            .expect("read")
            .into_iter()
            .map(|r| r.request_id)
            .collect();
        assert_eq!(
            ids,
            (0..7).map(|i| format!("r-{i}")).collect::<Vec<_>>(),
            "every record, in order"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
