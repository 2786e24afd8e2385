//! Browser sessions of the dashboard. A browser cannot send the admin token
//! as a header when it navigates, so signing in with the token opens a
//! session: a random id in an HttpOnly, SameSite=Strict cookie.
//!
//! Only the SHA-256 of each id is kept, with its expiry; an id that was
//! never issued, or has expired, or was signed out, opens nothing. The
//! number of live sessions is capped, so repeated sign-ins cannot grow memory.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

/// How long a session lasts.
pub const SESSION_TTL_MS: u64 = 12 * 3_600_000;
/// Live sessions kept; one more pushes out the one closest to expiring.
const MAX_SESSIONS: usize = 256;
/// The cookie's name.
pub const COOKIE: &str = "tollgate_dashboard";

#[derive(Debug, Default)]
pub struct Sessions {
    /// SHA-256 of the id → expiry, milliseconds since the epoch.
    live: Mutex<HashMap<[u8; 32], u64>>,
}

impl Sessions {
    /// A new session's id (hex), valid until `now_ms + SESSION_TTL_MS`.
    pub fn open(&self, now_ms: u64) -> Result<String, String> {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| format!("no randomness for a session id: {e}"))?;
        let id = hex::encode(id);
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|_, expiry| *expiry > now_ms);
        if live.len() >= MAX_SESSIONS
            && let Some(soonest) = live.iter().min_by_key(|(_, expiry)| **expiry).map(|(k, _)| *k)
        {
            live.remove(&soonest);
        }
        live.insert(digest(&id), now_ms + SESSION_TTL_MS);
        Ok(id)
    }

    /// Whether `id` names a live session at `now_ms`.
    pub fn valid(&self, id: &str, now_ms: u64) -> bool {
        let key = digest(id);
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        match live.get(&key) {
            Some(expiry) if *expiry > now_ms => true,
            Some(_) => {
                live.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Ends a session (signing out).
    pub fn close(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&digest(id));
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The session id a request's `Cookie` headers carry, if any.
pub fn from_cookies(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `Set-Cookie` value for a session id. `Secure` when the page is
/// served over TLS, so the browser never sends it in the clear.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/admin/dashboard; Max-Age={}; HttpOnly; SameSite=Strict{}",
        SESSION_TTL_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/admin/dashboard; Max-Age=0; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn an_issued_session_is_valid_until_it_expires() {
        let sessions = Sessions::default();
        let id = sessions.open(NOW).expect("open");
        assert_eq!(id.len(), 64);
        assert!(sessions.valid(&id, NOW + 1));
        assert!(sessions.valid(&id, NOW + SESSION_TTL_MS - 1));
        assert!(!sessions.valid(&id, NOW + SESSION_TTL_MS));
        // Expired once is gone, even if the clock were to step back.
        assert!(!sessions.valid(&id, NOW + 1));
    }

    #[test]
    fn forged_and_signed_out_sessions_are_refused() {
        let sessions = Sessions::default();
        let id = sessions.open(NOW).expect("open");
        assert!(!sessions.valid(&"0".repeat(64), NOW));
        assert!(!sessions.valid("", NOW));
        let mut altered = id.clone().into_bytes();
        altered[0] = if altered[0] == b'a' { b'b' } else { b'a' };
        assert!(!sessions.valid(std::str::from_utf8(&altered).expect("hex"), NOW));
        sessions.close(&id);
        assert!(!sessions.valid(&id, NOW));
    }

    #[test]
    fn sessions_are_capped() {
        let sessions = Sessions::default();
        let first = sessions.open(NOW).expect("open");
        for i in 0..MAX_SESSIONS as u64 * 2 {
            sessions.open(NOW + 1 + i).expect("open");
        }
        assert!(sessions.live.lock().expect("lock").len() <= MAX_SESSIONS);
        assert!(!sessions.valid(&first, NOW + 2), "the oldest session was pushed out");
    }

    #[test]
    fn the_cookie_is_read_among_others_and_set_strictly() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "a=1; tollgate_dashboard=abc; b=2".parse().expect("header"),
        );
        assert_eq!(from_cookies(&headers), Some("abc"));
        headers.insert(http::header::COOKIE, "tollgate_dashboardx=abc".parse().expect("header"));
        assert_eq!(from_cookies(&headers), None);
        let cookie = set_cookie("abc", true);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.ends_with("Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
    }
}
