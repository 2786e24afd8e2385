//! A watched policy directory: one `<tenant>.toml` per tenant, in the
//! layout [`crate::registry::policy_dir`] defines. A change is read once
//! the directory has been quiet for the debounce time (editors write in
//! parts), then validated as any new version is (world, imports,
//! `validate-config`, bundled cases) before it is activated and saved.
//!
//! A file that fails leaves the running version deciding; why is logged,
//! counted in `tollgate_policy_dir_errors_total` and shown by
//! `GET /admin/policy-dir`. A file whose component and settings are those
//! of the active version changes nothing, so a restart adds no version.
//! A deleted file changes nothing either: the last version stays active.
//!
//! A change the control store cannot keep now (Redis does not answer, or a
//! replica runs on its local copy) is not applied, since the fleet would
//! undo it unsaved: the file waits, and is tried again every second until
//! the store can keep it, without being touched again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::service::Gateway;
use super::trace::now_ms;
use crate::control::seed_key;
use crate::ids::TenantId;
use crate::registry::Candidate;
use crate::registry::cases::CasesFile;
use crate::registry::policy_dir::{TenantPolicyFile, read_component, tenant_files};

/// One file's last outcome, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileStatus {
    pub file: String,
    pub tenant: String,
    /// `active` (its version decides), `unchanged`, `refused` (the file is
    /// wrong) or `waiting` (the control store cannot keep a change now).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at_ms: u64,
}

/// What the watcher has seen, shared with the admin API.
pub struct WatchStatus {
    dir: Mutex<Option<PathBuf>>,
    files: Mutex<BTreeMap<String, FileStatus>>,
    /// Counts the outcomes recorded, so a client can wait for the next one.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Default for WatchStatus {
    fn default() -> Self {
        WatchStatus {
            dir: Mutex::default(),
            files: Mutex::default(),
            generation: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl WatchStatus {
    pub fn dir(&self) -> Option<PathBuf> {
        self.dir.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn files(&self) -> Vec<FileStatus> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// How many outcomes have been recorded.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Resolves once more than `seen` outcomes have been recorded.
    pub async fn changed_after(&self, seen: u64) {
        let mut generation = self.generation.subscribe();
        let _ = generation.wait_for(|g| *g > seen).await;
    }

    fn set(&self, status: FileStatus) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(status.file.clone(), status);
        self.generation.send_modify(|g| *g += 1);
    }
}

/// The running watcher; dropping it stops watching.
pub struct PolicyWatch {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for PolicyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the directory once, then watches it.
pub async fn start(gateway: Gateway, dir: PathBuf, debounce: Duration) -> Result<PolicyWatch, String> {
    if !dir.is_dir() {
        return Err(format!(
            "policy-dir.path {} is not a directory; create it, or remove [policy-dir]",
            dir.display()
        ));
    }
    *gateway.policy_watch().dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir.clone());
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Any event is a reason to read the directory again; what changed is found by content.
        if event.is_ok() {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    let scanner = Arc::new(Mutex::new(Scanner {
        gateway,
        dir,
        seen: HashMap::new(),
        waiting: HashSet::new(),
    }));
    scan(&scanner).await;
    let task = tokio::spawn(async move {
        loop {
            let waiting = !scanner.lock().unwrap_or_else(|p| p.into_inner()).waiting.is_empty();
            let woke = if waiting {
                // A file waits for the store: read again on a change, or after a while.
                tokio::time::timeout(STORE_RETRY, rx.recv()).await.unwrap_or(Some(()))
            } else {
                rx.recv().await
            };
            if woke.is_none() {
                return;
            }
            // Wait for a quiet spell, so a file written in parts is read once.
            while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
            scan(&scanner).await;
        }
    });
    Ok(PolicyWatch {
        _watcher: watcher,
        task,
    })
}

/// Reads the directory off the async workers (it compiles).
async fn scan(scanner: &Arc<Mutex<Scanner>>) {
    let scanner = Arc::clone(scanner);
    let scanned = tokio::task::spawn_blocking(move || scanner.lock().unwrap_or_else(|p| p.into_inner()).scan()).await;
    if let Err(e) = scanned {
        tracing::error!(error = %e, "the policy directory scan failed; the next change reads it again");
    }
}

/// How often a file waiting for the control store is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);

struct Scanner {
    gateway: Gateway,
    dir: PathBuf,
    /// File → fingerprint of what was last applied or refused.
    seen: HashMap<PathBuf, String>,
    /// Files whose change the control store could not keep: tried again
    /// though unchanged.
    waiting: HashSet<PathBuf>,
}

/// Why a file's policy is not active.
enum NotApplied {
    /// The file is wrong: it stays refused until it changes.
    Refused(String),
    /// The control store cannot keep a change now; nothing changed.
    Waiting(String),
}

impl From<String> for NotApplied {
    fn from(why: String) -> Self {
        NotApplied::Refused(why)
    }
}

impl Scanner {
    fn scan(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            tracing::error!(dir = %self.dir.display(), "cannot read the policy directory");
            return;
        };
        // A waiting file that was deleted waits no more: its last version stays.
        self.waiting.retain(|path| path.exists());
        for path in tenant_files(entries) {
            self.file(&path);
        }
    }

    fn file(&mut self, path: &Path) {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let read = read_file(path);
        let fingerprint = match &read {
            Ok(file) => file.fingerprint.clone(),
            Err(why) => format!("error: {why}"),
        };
        let retrying = self.waiting.remove(path);
        if self.seen.get(path) == Some(&fingerprint) && !retrying {
            return;
        }
        self.seen.insert(path.to_path_buf(), fingerprint);
        let outcome = read
            .map_err(NotApplied::Refused)
            .and_then(|file| self.apply(&stem, path, file, retrying));
        let file = path.display().to_string();
        let status = match outcome {
            Ok((outcome, version)) => FileStatus {
                file,
                tenant: stem,
                outcome: outcome.into(),
                version: Some(version),
                error: None,
                at_ms: now_ms(),
            },
            Err(NotApplied::Waiting(why)) => {
                self.waiting.insert(path.to_path_buf());
                if retrying {
                    // Said once per outage; the retries are quiet.
                    return;
                }
                tracing::warn!(
                    file = %path.display(),
                    why = crate::text::escape_controls(&why).as_ref(),
                    "a policy file waits: the control store cannot keep a change now, so nothing changed; \
                     it is applied once the store answers"
                );
                FileStatus {
                    file,
                    tenant: stem,
                    outcome: "waiting".into(),
                    version: None,
                    error: Some(why),
                    at_ms: now_ms(),
                }
            }
            Err(NotApplied::Refused(why)) => {
                tracing::error!(
                    file = %path.display(),
                    why = crate::text::escape_controls(&why).as_ref(),
                    "a policy file was refused; the running version keeps deciding"
                );
                self.gateway
                    .metrics()
                    .policy_dir_errors
                    .get_or_create(&super::metrics::TenantLabel {
                        tenant: crate::text::clip(&stem, 64),
                    })
                    .inc();
                FileStatus {
                    file,
                    tenant: stem,
                    outcome: "refused".into(),
                    version: None,
                    error: Some(why),
                    at_ms: now_ms(),
                }
            }
        };
        self.gateway.policy_watch().set(status);
    }

    /// Validates and activates one file's policy; the outcome and version.
    /// `retrying` a file that waited: its version may be active unsaved.
    fn apply(
        &self,
        stem: &str,
        path: &Path,
        file: ReadFile,
        retrying: bool,
    ) -> Result<(&'static str, String), NotApplied> {
        let tenant = TenantId::new(stem).map_err(|e| format!("the file name must be a tenant id: {e}"))?;
        if self.gateway.profile(&tenant).is_none() {
            return Err(format!(
                "no tenant {tenant} in this gateway; create it first (tollgate admin tenant create {tenant})"
            )
            .into());
        }
        let lifecycle = self.gateway.lifecycle();
        let not_kept = |e: crate::control::ControlError| NotApplied::Waiting(format!("{e}; nothing changed"));
        let registry = self.gateway.registry();
        let settings = file.policy.settings();
        if let Some(active) = registry.active(&tenant) {
            let same = seed_key(active.component().digest(), active.settings())
                == seed_key(&crate::engine::artifact_cache::content_digest(&file.wasm), &settings);
            if same && retrying {
                // Active but maybe not saved when the store went away: save it now.
                lifecycle.save(&tenant).map_err(not_kept)?;
                return Ok(("active", active.id().to_string()));
            }
            if same {
                return Ok(("unchanged", active.id().to_string()));
            }
        }
        // Asked before anything takes effect or takes a version number: a
        // change the fleet would undo unsaved is not made.
        lifecycle.check_writable().map_err(not_kept)?;
        let staged = registry
            .stage(
                &tenant,
                Candidate::Wasm(&file.wasm),
                settings,
                &path.display().to_string(),
                file.cases.as_ref(),
            )
            .map_err(|e| e.to_string())?;
        lifecycle.keep_component(&file.wasm).map_err(not_kept)?;
        let _changing = lifecycle.changing(&tenant);
        let id = registry.activate_staged(staged).map_err(|e| e.to_string())?;
        lifecycle.save(&tenant).map_err(|e| {
            NotApplied::Waiting(format!(
                "activated {id} here but could not save it ({e}); saved once the store answers"
            ))
        })?;
        tracing::info!(tenant = %tenant, version = %id, file = %path.display(), "activated a policy from the watched directory");
        Ok(("active", id.to_string()))
    }
}

/// A tenant file with what it names, read whole.
struct ReadFile {
    policy: TenantPolicyFile,
    wasm: Vec<u8>,
    cases: Option<CasesFile>,
    fingerprint: String,
}

fn read_file(path: &Path) -> Result<ReadFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let policy: TenantPolicyFile = toml::from_str(&text).map_err(|e| e.to_string())?;
    let base = path.parent().unwrap_or(Path::new("."));
    let (_, wasm) = read_component(&policy, base)?;
    let cases_text = match &policy.cases {
        Some(cases) => {
            let cases_path = base.join(cases);
            Some((
                std::fs::read_to_string(&cases_path)
                    .map_err(|e| format!("cases: cannot read {}: {e}", cases_path.display()))?,
                cases_path,
            ))
        }
        None => None,
    };
    let mut hash = Sha256::new();
    hash.update(text.as_bytes());
    hash.update(&wasm);
    let cases = match &cases_text {
        Some((text, path)) => {
            hash.update(text.as_bytes());
            Some(CasesFile::parse(text, &path.display().to_string()).map_err(|e| format!("cases: {e}"))?)
        }
        None => None,
    };
    Ok(ReadFile {
        policy,
        wasm,
        cases,
        fingerprint: hex::encode(hash.finalize()),
    })
}
