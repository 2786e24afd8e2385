//! The recorded calls of an invocation log, streamed: each log's rotated
//! files first (oldest first), then the log itself, one line at a time,
//! parsed on a thread of its own so reading overlaps deciding. Nothing is
//! held beyond a few batches, whatever the size of the log.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tollgate_host::gateway::invocation_log::BilledTokens;
use tollgate_host::gateway::log_writer::rotated_files;
use tollgate_host::pricing::{LatencyMode, ServedAs, ServiceTier};
use tollgate_host::{CachePoint, Operation};

/// Calls handed over per batch; large enough that the channel costs nothing per call.
const BATCH: usize = 1024;
/// Batches parsed ahead of the decisions.
const AHEAD: usize = 8;

/// Caller metadata keys read as the end user, first match wins (as the gateway reads them).
const USER_KEYS: [&str; 4] = ["tollgate-user", "user", "user-id", "userId"];
/// Caller metadata keys read as the use case, first match wins.
const USE_CASE_KEYS: [&str; 4] = ["tollgate-use-case", "use-case", "useCase", "use_case"];

/// What the live gateway did with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    Downgrade,
    Throttle,
    Reject,
}

impl Verdict {
    pub fn parse(name: &str) -> Option<Verdict> {
        Some(match name {
            "admit" => Verdict::Admit,
            "downgrade" => Verdict::Downgrade,
            "throttle" => Verdict::Throttle,
            "reject" => Verdict::Reject,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Admit => "admit",
            Verdict::Downgrade => "downgrade",
            Verdict::Throttle => "throttle",
            Verdict::Reject => "reject",
        }
    }

    /// The call went on to the model.
    pub fn forwarded(self) -> bool {
        matches!(self, Verdict::Admit | Verdict::Downgrade)
    }
}

/// How the live call was charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargedFrom {
    /// From the response's usage.
    Usage,
    /// The hold itself (no usage was reported).
    Reservation,
    /// Nothing (refused, or the upstream provably never ran it).
    Nothing,
}

/// One recorded call, as much of it as a replay needs.
#[derive(Debug, Clone)]
pub struct LoggedCall {
    pub request_id: String,
    pub tenant: String,
    /// When the call started (the record's timestamp).
    pub at_ms: u64,
    /// When it was charged: its start plus its total time.
    pub ends_ms: u64,
    pub operation: Operation,
    /// `None`: the call never reached the policy (an invalid request, an
    /// unknown or disabled tenant).
    pub verdict: Option<Verdict>,
    pub requested_model: String,
    /// The model that served it, when a downgrade changed it.
    pub served_model: Option<String>,
    pub estimated_input_tokens: u64,
    pub max_output_tokens: u64,
    /// The request's cache points (none in logs written before they were kept).
    pub cache_points: Vec<CachePoint>,
    pub cost: u64,
    pub charged_from: ChargedFrom,
    /// The billed token counts, when the call was charged from usage.
    pub usage: Option<BilledTokens>,
    pub service_tier: ServiceTier,
    pub latency: LatencyMode,
    /// The region the call was priced in, when the record says.
    pub region: Option<String>,
    pub user: String,
    pub use_case: String,
    /// The forwarded pairs other than tollgate's own.
    pub metadata: Vec<(String, String)>,
}

impl LoggedCall {
    /// The model the live call was served by (asked for, or downgraded to).
    pub fn served(&self) -> &str {
        self.served_model.as_deref().unwrap_or(&self.requested_model)
    }
}

/// The fields of a record a replay reads; strings borrowed from the line where they can be.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw<'a> {
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(borrow, default)]
    request_metadata: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    #[serde(borrow)]
    tollgate: RawTollgate<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTollgate<'a> {
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    /// The caller's user and use case, logged for refused calls too.
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    use_case: Option<Cow<'a, str>>,
    #[serde(borrow)]
    decision: Cow<'a, str>,
    #[serde(borrow, default)]
    policy_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    requested_model_id: Cow<'a, str>,
    #[serde(borrow, default)]
    served_model_id: Option<Cow<'a, str>>,
    estimated_input_tokens: u64,
    max_output_tokens: u64,
    #[serde(default)]
    cache_points: Vec<CachePoint>,
    #[serde(default)]
    asked: Option<ServedAs>,
    cost_nano_usd: u64,
    #[serde(borrow)]
    charged_from: Cow<'a, str>,
    #[serde(borrow, default)]
    billing: Option<RawBilling<'a>>,
    #[serde(default)]
    latency: RawLatency,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBilling<'a> {
    #[serde(borrow)]
    region: Cow<'a, str>,
    #[serde(default)]
    service_tier: ServiceTier,
    #[serde(default)]
    latency: LatencyMode,
    #[serde(default)]
    usage: Option<BilledTokens>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawLatency {
    #[serde(default)]
    total_ms: u64,
}

/// Parses one line of a log.
pub fn parse_line(line: &str) -> Result<LoggedCall, String> {
    let raw: Raw<'_> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let at_ms = parse_timestamp(&raw.timestamp)
        .ok_or_else(|| format!("timestamp {:?} is not RFC 3339", clip(&raw.timestamp)))?;
    let operation = match raw.operation.as_ref() {
        "ConverseStream" => Operation::ConverseStream,
        _ => Operation::Converse,
    };
    let t = raw.tollgate;
    // A verdict without a policy version came from the gateway, not a policy.
    let verdict = t.policy_version.as_ref().and_then(|_| Verdict::parse(&t.decision));
    let charged_from = match t.charged_from.as_ref() {
        "usage" => ChargedFrom::Usage,
        "reservation" => ChargedFrom::Reservation,
        _ => ChargedFrom::Nothing,
    };
    let pick = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| raw.request_metadata.get(*k))
            .map(|v| v.clone().into_owned())
            .unwrap_or_default()
    };
    let user = t.user.map_or_else(|| pick(&USER_KEYS), Cow::into_owned);
    let use_case = t.use_case.map_or_else(|| pick(&USE_CASE_KEYS), Cow::into_owned);
    let metadata = raw
        .request_metadata
        .iter()
        .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("tollgate-"))
        .map(|(k, v)| (k.clone().into_owned(), v.clone().into_owned()))
        .collect();
    let (served, usage, region) = match t.billing {
        Some(b) => (
            Some(ServedAs {
                tier: b.service_tier,
                latency: b.latency,
            }),
            b.usage,
            Some(b.region.into_owned()),
        ),
        None => (None, None, None),
    };
    // What the request asked for priced its hold; logs written before it
    // was kept say only how a charged call was served.
    let ServedAs {
        tier: service_tier,
        latency,
    } = t.asked.or(served).unwrap_or_default();
    Ok(LoggedCall {
        request_id: t.request_id.into_owned(),
        tenant: t.tenant.into_owned(),
        at_ms,
        ends_ms: at_ms.saturating_add(t.latency.total_ms),
        operation,
        verdict,
        requested_model: t.requested_model_id.into_owned(),
        served_model: t.served_model_id.map(Cow::into_owned),
        estimated_input_tokens: t.estimated_input_tokens,
        max_output_tokens: t.max_output_tokens,
        cache_points: t.cache_points,
        cost: t.cost_nano_usd,
        charged_from,
        usage,
        service_tier,
        latency,
        region,
        user,
        use_case,
        metadata,
    })
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn parse_timestamp(text: &str) -> Option<u64> {
    let time = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(time.timestamp_millis()).ok()
}

fn clip(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Every file of the given logs, in the order they were written.
pub fn files_of(logs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for log in logs {
        let rotated = rotated_files(log);
        if rotated.is_empty() && !log.exists() {
            bail!(
                "the invocation log {} does not exist; pass the path of a tollgate invocation log ([log] \
                 invocations in tollgate.toml)",
                log.display()
            );
        }
        files.extend(rotated);
        if log.exists() {
            files.push(log.clone());
        }
    }
    Ok(files)
}

/// Batches of parsed calls, from a reader thread.
pub struct LogStream {
    batches: Receiver<Result<Vec<LoggedCall>, String>>,
    reader: Option<JoinHandle<()>>,
}

impl LogStream {
    /// Starts reading `files` in order.
    pub fn open(files: Vec<PathBuf>) -> Result<LogStream> {
        // Fail on an unreadable file now, not halfway through.
        for file in &files {
            File::open(file).with_context(|| format!("cannot open the invocation log {}", file.display()))?;
        }
        let (tx, rx) = sync_channel(AHEAD);
        let reader = std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn(move || read_all(&files, &tx))
            .context("cannot start the log reader thread")?;
        Ok(LogStream {
            batches: rx,
            reader: Some(reader),
        })
    }

    /// The next batch, `None` at the end of the last file.
    pub fn next_batch(&mut self) -> Result<Option<Vec<LoggedCall>>> {
        match self.batches.recv() {
            Ok(Ok(batch)) => Ok(Some(batch)),
            Ok(Err(message)) => bail!("{message}"),
            Err(_) => {
                if let Some(reader) = self.reader.take() {
                    reader
                        .join()
                        .map_err(|_| anyhow::anyhow!("the log reader thread failed"))?;
                }
                Ok(None)
            }
        }
    }
}

fn read_all(files: &[PathBuf], tx: &SyncSender<Result<Vec<LoggedCall>, String>>) {
    let mut batch = Vec::with_capacity(BATCH);
    for file in files {
        if let Err(message) = read_file(file, &mut batch, tx) {
            let _ = tx.send(Err(message));
            return;
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}

/// Reads one file into batches; `Err` names the file and line that could not be read.
fn read_file(
    path: &Path,
    batch: &mut Vec<LoggedCall>,
    tx: &SyncSender<Result<Vec<LoggedCall>, String>>,
) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open the invocation log {}: {e}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| format!("cannot read {} after line {number}: {e}", path.display()))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let call = parse_line(text).map_err(|e| {
            format!(
                "{} line {number} is not a tollgate invocation record ({e}); pass tollgate's own log \
                 ([log] invocations), not Bedrock's",
                path.display()
            )
        })?;
        batch.push(call);
        if batch.len() == BATCH {
            let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
            if tx.send(Ok(full)).is_err() {
                // The replay stopped early (an error of its own): nothing left to do.
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"2026-01-01T00:00:01.250Z","requestId":"r-1","operation":"ConverseStream","modelId":"amazon.nova-micro-v1:0","input":{"inputTokenCount":12},"output":{"outputTokenCount":30},"requestMetadata":{"tollgate-tenant":"acme","tollgate-user":"u-1","useCase":"chat","team":"a\"b"},"tollgate":{"requestId":"tg-1","tenant":"acme","decision":"downgrade","reason":"r","policyVersion":"acme@1","requestedModelId":"anthropic.claude-3-5-haiku-20241022-v1:0","servedModelId":"amazon.nova-micro-v1:0","estimatedInputTokens":12,"maxOutputTokens":20,"reservedNanoUsd":100,"costNanoUsd":42,"chargedFrom":"usage","status":200,"billing":{"region":"us-east-1","priceBook":"x","baseModel":"amazon.nova-micro-v1:0","serviceTier":"default","latency":"standard","longContext":false,"unitPrices":{"input":1,"output":1,"cacheRead":0,"cacheWrite":0},"usage":{"input":12,"output":30,"cacheRead":0,"cacheWrite5m":0,"cacheWrite1h":0}},"latency":{"decisionUs":5,"gatewayUs":9,"upstreamMs":3,"totalMs":4}}}"#;

    #[test]
    fn a_record_yields_the_call_as_the_policy_saw_it() {
        let call = parse_line(LINE).expect("parses");
        assert_eq!(call.tenant, "acme");
        assert_eq!(call.at_ms, 1_767_225_601_250);
        assert_eq!(call.ends_ms, 1_767_225_601_254);
        assert_eq!(call.operation, Operation::ConverseStream);
        assert_eq!(call.verdict, Some(Verdict::Downgrade));
        assert_eq!(call.served(), "amazon.nova-micro-v1:0");
        assert_eq!(call.charged_from, ChargedFrom::Usage);
        assert_eq!(call.usage.map(|u| u.output), Some(30));
        assert_eq!((call.user.as_str(), call.use_case.as_str()), ("u-1", "chat"));
        // tollgate's own pairs are not the caller's; an escaped value is kept whole.
        assert_eq!(
            call.metadata,
            vec![
                ("team".to_owned(), "a\"b".to_owned()),
                ("useCase".to_owned(), "chat".to_owned())
            ]
        );
    }

    #[test]
    fn a_call_refused_before_the_policy_has_no_verdict() {
        let line = LINE.replace(r#""decision":"downgrade""#, r#""decision":"invalid""#);
        assert_eq!(parse_line(&line).expect("parses").verdict, None);
        let line = LINE.replace(r#""policyVersion":"acme@1","#, "");
        assert_eq!(parse_line(&line).expect("parses").verdict, None);
    }

    #[test]
    fn rotated_files_come_first_and_every_line_is_read_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("invocations.jsonl");
        let with_id = |id: &str| LINE.replace(r#""requestId":"tg-1""#, &format!(r#""requestId":"{id}""#));
        let write = |name: &str, ids: &[&str]| {
            let text: String = ids.iter().map(|id| with_id(id) + "\n").collect();
            std::fs::write(dir.path().join(name), text).expect("write");
        };
        write("invocations-20260101T000000.jsonl", &["a", "b"]);
        write("invocations-20260102T000000.jsonl", &["c"]);
        write("invocations.jsonl", &["d", "e"]);
        write("other.jsonl", &["x"]);
        let files = files_of(std::slice::from_ref(&log)).expect("files");
        assert_eq!(files.len(), 3, "{files:?}");
        let mut stream = LogStream::open(files).expect("open");
        let mut ids = Vec::new();
        while let Some(batch) = stream.next_batch().expect("read") {
            ids.extend(batch.into_iter().map(|c| c.request_id));
        }
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);

        let missing = dir.path().join("none.jsonl");
        let err = files_of(&[missing]).expect_err("missing").to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn a_line_that_is_no_record_says_why() {
        let err = parse_line(r#"{"timestamp":"x"}"#).expect_err("not a record");
        assert!(err.contains("missing field"), "{err}");
        let line = LINE.replace("2026-01-01T00:00:01.250Z", "yesterday");
        assert!(parse_line(&line).expect_err("bad time").contains("RFC 3339"));
    }
}
