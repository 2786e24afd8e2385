//! The script's answers, read back into the ledger's types. An answer that
//! does not parse is the store's error, never a panic.

use crate::ids::TenantId;
use crate::money::NanoUsd;

use crate::ledger::error::{LedgerError, ReserveError, StoreError};
use crate::ledger::limits::TenantLimits;
use crate::ledger::period::PeriodTotals;
use crate::ledger::reservation::{Released, Reservation, ReservationId, ReserveRequest, Settled};
use crate::ledger::store::{SpendSeries, TenantLedgerState};

fn malformed(store: &str, answer: &[String]) -> StoreError {
    StoreError::Remote {
        store: store.to_owned(),
        action: "a ledger operation",
        detail: format!(
            "unexpected answer {answer:?}; is another program (or an older tollgate) writing the same key prefix?"
        ),
    }
}

/// Field `i` of an answer as a number.
fn num<T: std::str::FromStr>(store: &str, answer: &[String], i: usize) -> Result<T, StoreError> {
    answer
        .get(i)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(store, answer))
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

pub(super) fn reserved(
    store: &str,
    limits: &TenantLimits,
    request: &ReserveRequest,
    answer: &[String],
) -> Result<Reservation, ReserveError> {
    let money = |i| num::<u64>(store, answer, i).map(NanoUsd);
    match answer.first().map(String::as_str) {
        Some("ok") => Ok(Reservation {
            id: ReservationId(num(store, answer, 1)?),
            cost: request.cost,
            tokens: request.tokens,
            period_start_ms: num(store, answer, 2)?,
            expires_at_ms: num(store, answer, 3)?,
        }),
        Some("budget") => Err(ReserveError::Budget {
            limit: limits.budget,
            spent: money(1)?,
            reserved: money(2)?,
            requested: money(3)?,
            period_end_ms: num(store, answer, 4)?,
        }),
        Some("tpm") => Err(ReserveError::Tpm {
            limit: num(store, answer, 1)?,
            used: num(store, answer, 2)?,
            requested: num(store, answer, 3)?,
            retry_after_ms: num(store, answer, 4)?,
        }),
        Some("rpm") => Err(ReserveError::Rpm {
            limit: num(store, answer, 1)?,
            used: num(store, answer, 2)?,
            retry_after_ms: num(store, answer, 3)?,
        }),
        _ => Err(malformed(store, answer).into()),
    }
}

/// Logs an outcome that has just amended an adopter's charge of the same
/// hold (not a retry's `again`, which only repeats it).
fn note_amended(tenant: &TenantId, id: ReservationId, answer: &[String], outcome: &[String], index: usize) {
    let fresh = answer.first().map(String::as_str) == Some("ok");
    if fresh && outcome.get(index).map(String::as_str) == Some("amended") {
        tracing::warn!(
            tenant = %tenant,
            reservation = %id,
            adopter_charged_nano_usd = outcome.get(index + 1).map_or("", String::as_str),
            "this call's hold had been adopted and charged in full once its replica's lease lapsed; the call's own \
             outcome replaced that charge in the ledger (the adopter's record tollgate-restored-{} is superseded)",
            id.0
        );
    }
}

/// `ok`/`again` carry "settled held late charged pstart pspent", then
/// "amended <adopter's charge>" when it replaced an adopter's charge.
pub(super) fn settled(
    store: &str,
    tenant: &TenantId,
    id: ReservationId,
    answer: &[String],
) -> Result<Settled, LedgerError> {
    match answer.first().map(String::as_str) {
        Some("ok" | "again") => {
            let outcome = words(answer.get(1).map_or("", String::as_str));
            if outcome.first().map(String::as_str) != Some("settled") {
                // A retried settle whose first attempt was a release: nothing to charge twice.
                return Err(LedgerError::UnknownReservation {
                    tenant: tenant.clone(),
                    id,
                });
            }
            note_amended(tenant, id, answer, &outcome, 6);
            Ok(Settled {
                id,
                held: NanoUsd(num(store, &outcome, 1)?),
                late: outcome.get(2).map(String::as_str) == Some("1"),
                charged: NanoUsd(num(store, &outcome, 3)?),
                period_start_ms: num(store, &outcome, 4)?,
                period_spent: NanoUsd(num(store, &outcome, 5)?),
            })
        }
        Some("unknown") => Err(LedgerError::UnknownReservation {
            tenant: tenant.clone(),
            id,
        }),
        _ => Err(malformed(store, answer).into()),
    }
}

pub(super) fn released(
    store: &str,
    tenant: &TenantId,
    id: ReservationId,
    answer: &[String],
) -> Result<Released, LedgerError> {
    match answer.first().map(String::as_str) {
        Some("ok" | "again") => {
            let outcome = words(answer.get(1).map_or("", String::as_str));
            note_amended(tenant, id, answer, &outcome, 2);
            match outcome.first().map(String::as_str) {
                Some("released") => Ok(Released {
                    id,
                    held: NanoUsd(num(store, &outcome, 1)?),
                }),
                _ => Err(LedgerError::UnknownReservation {
                    tenant: tenant.clone(),
                    id,
                }),
            }
        }
        Some("expired") => Err(LedgerError::Expired {
            tenant: tenant.clone(),
            id,
            expired_at_ms: num(store, answer, 1)?,
        }),
        Some("unknown") => Err(LedgerError::UnknownReservation {
            tenant: tenant.clone(),
            id,
        }),
        _ => Err(malformed(store, answer).into()),
    }
}

/// "spent reserved open pstart pend wreq wtok used_tokens".
pub(super) fn state(store: &str, limits: &TenantLimits, answer: &[String]) -> Result<TenantLedgerState, StoreError> {
    Ok(TenantLedgerState {
        limit: limits.budget,
        spent: NanoUsd(num(store, answer, 0)?),
        reserved: NanoUsd(num(store, answer, 1)?),
        open_reservations: num(store, answer, 2)?,
        period: limits.period,
        period_start_ms: num(store, answer, 3)?,
        period_end_ms: num(store, answer, 4)?,
        window_requests: num(store, answer, 5)?,
        window_tokens: num(store, answer, 6)?,
        rpm: limits.rpm,
        tpm: limits.tpm,
        included_tokens: limits.included_tokens,
        used_tokens: num(store, answer, 7)?,
    })
}

/// One "start end spent tokens calls" per period, oldest first.
pub(super) fn history(store: &str, answer: &[String]) -> Result<Vec<PeriodTotals>, StoreError> {
    answer
        .iter()
        .map(|line| {
            let f = words(line);
            Ok(PeriodTotals {
                start_ms: num(store, &f, 0)?,
                end_ms: num(store, &f, 1)?,
                spent: NanoUsd(num(store, &f, 2)?),
                used_tokens: num(store, &f, 3)?,
                calls: num(store, &f, 4)?,
            })
        })
        .collect()
}

/// Two lists of "bucket amount": minutes, then hours; each sorted here.
pub(super) fn series(store: &str, answer: &[Vec<String>]) -> Result<SpendSeries, StoreError> {
    let pairs = |i: usize| -> Result<Vec<(u64, u64)>, StoreError> {
        let mut out = answer
            .get(i)
            .map(|list| {
                list.iter()
                    .map(|line| {
                        let f = words(line);
                        Ok((num(store, &f, 0)?, num(store, &f, 1)?))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .transpose()?
            .unwrap_or_default();
        out.sort_unstable();
        Ok(out)
    };
    Ok(SpendSeries {
        minutes: pairs(0)?,
        hours: pairs(1)?,
    })
}
