//! Running a tenant's shadow policy beside the active one, off the caller's
//! path, and comparing the two once the call has ended.
//!
//! - The shadow decides on a thread of its own at the lowest OS priority
//!   (`SCHED_IDLE`), after the active decision: it runs on cores live calls
//!   leave idle, so it never delays one. At most `capacity` shadow
//!   decisions wait; past that a call is not shadowed and is counted as
//!   skipped, so shadows shed load instead of queueing behind it.
//! - The comparison waits for the call's end, when its real charge is
//!   known: the shadow's spend is priced from the same usage. Its result is
//!   written into the call's own invocation record.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::metrics::{Metrics, ShadowPair, TenantLabel};
use super::verdict_check::OwnedVerdictCheck;
use crate::contract::{Action, Request, TenantState};
use crate::engine::failure::FailureKind;
use crate::pricing::{Catalog, Metered, ServedAs, Usage};
use crate::registry::decision::Decision;
use crate::registry::{Compared, Shadow};

/// The longest a call's record waits for its shadow's decision.
const SHADOW_WAIT: Duration = Duration::from_secs(5);

/// The shadow's side of a call, in its invocation record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShadowFields {
    pub policy_version: String,
    /// The shadow's verdict, or `skipped` when it did not finish in time.
    pub decision: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub downgrade_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy_failure: Option<String>,
    pub agrees: bool,
    /// What the call would have cost under the shadow's verdict, priced
    /// from its real usage; absent when that cannot be known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cost_nano_usd: Option<u64>,
}

/// A shadow decision to run.
type Job = Box<dyn FnOnce() + Send>;

/// Bounds and starts shadow decisions.
pub(super) struct ShadowRunner {
    /// `None` when the shadow thread could not start: nothing is shadowed.
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
}

/// A shadow decision under way, waiting for its call to end. Taken once,
/// by whichever end of the call writes its record.
pub(super) type ShadowSlot = Arc<Mutex<Option<Pending>>>;

pub(super) struct Pending {
    shadow: Arc<Shadow>,
    active: Action,
    active_version: String,
    tenant: String,
    requested_model: String,
    decided: oneshot::Receiver<Decision>,
}

/// How the call ended, as far as the comparison needs.
pub(super) struct Outcome<'a> {
    /// The call reached the model (it was charged from usage or its hold).
    pub(super) ran: bool,
    pub(super) served_model: &'a str,
    pub(super) cost_nano_usd: u64,
    pub(super) usage: Option<Usage>,
    pub(super) served_as: Option<ServedAs>,
}

impl ShadowRunner {
    pub(super) fn new(capacity: usize) -> ShadowRunner {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(capacity.max(1));
        let started = std::thread::Builder::new()
            .name("tollgate-shadow".into())
            .spawn(move || {
                crate::registry::lanes::lower_priority();
                while let Ok(job) = queue.recv() {
                    // A panic loses only that shadow decision; its call is recorded as skipped.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        match started {
            Ok(_) => ShadowRunner { jobs: Some(jobs) },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the shadow thread; shadow policies will not run");
                ShadowRunner { jobs: None }
            }
        }
    }

    /// Starts the shadow's decision of a call the active version decided.
    /// `None` when no capacity is free: the call is not shadowed.
    pub(super) fn start(
        &self,
        shadow: Arc<Shadow>,
        mut request: Request,
        state: TenantState,
        check: OwnedVerdictCheck,
        active: &Decision,
        metrics: &Metrics,
    ) -> Option<ShadowSlot> {
        let tenant = TenantLabel {
            tenant: active.version.tenant.as_str().to_owned(),
        };
        let (tx, decided) = oneshot::channel();
        let requested_model = request.model_id.clone();
        let version = Arc::clone(shadow.version());
        let job: Job = Box::new(move || {
            let check = check.borrow();
            let decision = version.decide_checked(&mut request, &state, &|v| check.check(v));
            let _ = tx.send(decision);
        });
        let queued = self.jobs.as_ref().is_some_and(|jobs| jobs.try_send(job).is_ok());
        if !queued {
            shadow.skipped();
            metrics.shadow_skipped.get_or_create(&tenant).inc();
            return None;
        }
        Some(Arc::new(Mutex::new(Some(Pending {
            shadow,
            active: active.action.clone(),
            active_version: active.version.to_string(),
            tenant: tenant.tenant,
            requested_model,
            decided,
        }))))
    }
}

/// Takes the pending shadow out of its slot, once.
pub(super) fn take(slot: &ShadowSlot) -> Option<Pending> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

impl Pending {
    /// Waits for the shadow's decision and compares it with the call's end.
    pub(super) async fn conclude(self, outcome: Outcome<'_>, catalog: &Catalog, metrics: &Metrics) -> ShadowFields {
        let version = self.shadow.version().id().to_string();
        let decided = tokio::time::timeout(SHADOW_WAIT, self.decided).await;
        // The shadow thread yields to every live call, so its wall-clock
        // deadline measures the machine's load, not the policy: a timeout
        // (or the breaker that timeouts open) is a call not compared, never
        // a false disagreement.
        let decided = decided.ok().and_then(Result::ok).filter(|d| {
            !matches!(
                d.failure.as_ref().map(|f| f.kind),
                Some(FailureKind::Timeout | FailureKind::Capacity | FailureKind::CircuitOpen)
            )
        });
        let decision = match decided {
            Some(decision) => decision,
            None => {
                self.shadow.skipped();
                metrics
                    .shadow_skipped
                    .get_or_create(&TenantLabel { tenant: self.tenant })
                    .inc();
                return ShadowFields {
                    policy_version: version,
                    decision: "skipped".into(),
                    reason: "the shadow decision did not finish in time".into(),
                    ..ShadowFields::default()
                };
            }
        };
        let shadow_cost = shadow_cost(&decision.action, &self.requested_model, &outcome, catalog);
        let compared = Compared {
            active: self.active,
            shadow: decision.action.clone(),
            shadow_failed: decision.failure.is_some(),
            actual_nano_usd: outcome.cost_nano_usd,
            shadow_nano_usd: shadow_cost,
        };
        self.shadow.record(&compared);
        let label = TenantLabel { tenant: self.tenant };
        metrics.shadow_decisions.get_or_create(&label).inc();
        if !compared.agrees() {
            metrics
                .shadow_disagreements
                .get_or_create(&ShadowPair {
                    tenant: label.tenant,
                    active_version: self.active_version,
                    shadow_version: version.clone(),
                    active: compared.active.name().to_owned(),
                    shadow: compared.shadow.name().to_owned(),
                })
                .inc();
        }
        ShadowFields {
            policy_version: version,
            decision: decision.action.name().to_owned(),
            reason: decision.reason,
            downgrade_to: match &decision.action {
                Action::Downgrade(model) => Some(model.clone()),
                _ => None,
            },
            policy_failure: decision.failure.as_ref().map(ToString::to_string),
            agrees: compared.agrees(),
            cost_nano_usd: shadow_cost,
        }
    }
}

/// What the call would have cost had the shadow's verdict been enforced:
/// nothing for a refusal; for a call it lets run, the real charge when the
/// model is the one that served, else the same usage priced on its model.
/// Unknown when the call never ran, or its usage is unknown.
fn shadow_cost(action: &Action, requested_model: &str, outcome: &Outcome<'_>, catalog: &Catalog) -> Option<u64> {
    let model = match action {
        Action::Throttle(_) | Action::Reject(_) => return Some(0),
        Action::Admit => requested_model,
        Action::Downgrade(target) => target.as_str(),
    };
    if !outcome.ran {
        return None;
    }
    if model == outcome.served_model {
        return Some(outcome.cost_nano_usd);
    }
    let metered = Metered {
        usage: outcome.usage?,
        served_as: outcome.served_as?,
    };
    catalog.charge(model, &metered).ok().map(|c| c.cost.get())
}
