//! Browser sessions of the dashboard. A browser cannot send the admin token
//! as a header when it navigates, so signing in with the token opens a
//! session: a random id in an HttpOnly, SameSite=Strict cookie.
//!
//! Only the SHA-256 of each id is kept, with its expiry; an id that was
//! never issued, or has expired, or was signed out, opens nothing. The
//! number of live sessions is capped, so repeated sign-ins cannot grow memory.
//!
//! One gateway keeps them in memory. Replicas on Redis keep them there
//! ([`Sessions::in_redis`]), so a load balancer may send each of a
//! browser's requests to any replica, and signing out on one signs out on all.

#[cfg(feature = "redis")]
mod in_redis;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

/// How long a session lasts.
pub const SESSION_TTL_MS: u64 = 12 * 3_600_000;
/// Live sessions kept; one more pushes out the one closest to expiring.
const MAX_SESSIONS: usize = 256;
/// The cookie's name.
pub const COOKIE: &str = "tollgate_dashboard";

/// Where the dashboard's sessions are kept.
#[derive(Debug)]
pub struct Sessions {
    place: Place,
}

#[derive(Debug)]
enum Place {
    /// SHA-256 of the id → expiry, milliseconds since the epoch.
    Memory(Mutex<HashMap<[u8; 32], u64>>),
    #[cfg(feature = "redis")]
    Redis(in_redis::RedisSessions),
}

impl Default for Sessions {
    /// In this process's memory: one gateway.
    fn default() -> Self {
        Sessions {
            place: Place::Memory(Mutex::default()),
        }
    }
}

/// The session store did not answer; the message names it and why.
#[derive(Debug, thiserror::Error)]
#[error("dashboard sessions: {0}")]
pub struct SessionError(String);

impl Sessions {
    /// Kept in Redis under `<key_prefix>:{control}:`, beside the fleet's
    /// control store; connects at the first use.
    #[cfg(feature = "redis")]
    pub fn in_redis(url: &str, key_prefix: &str, timeout: std::time::Duration) -> Result<Sessions, SessionError> {
        Ok(Sessions {
            place: Place::Redis(in_redis::RedisSessions::new(url, key_prefix, timeout)?),
        })
    }

    /// A new session's id (hex), valid until `now_ms + SESSION_TTL_MS`.
    pub async fn open(&self, now_ms: u64) -> Result<String, SessionError> {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| SessionError(format!("no randomness for a session id: {e}")))?;
        let id = hex::encode(id);
        let expiry = now_ms + SESSION_TTL_MS;
        match &self.place {
            Place::Memory(live) => {
                let mut live = live.lock().unwrap_or_else(PoisonError::into_inner);
                live.retain(|_, expiry| *expiry > now_ms);
                if live.len() >= MAX_SESSIONS
                    && let Some(soonest) = live.iter().min_by_key(|(_, expiry)| **expiry).map(|(k, _)| *k)
                {
                    live.remove(&soonest);
                }
                live.insert(digest(&id), expiry);
            }
            #[cfg(feature = "redis")]
            Place::Redis(redis) => redis.open(&digest(&id), now_ms, expiry, MAX_SESSIONS).await?,
        }
        Ok(id)
    }

    /// Whether `id` names a live session at `now_ms`.
    pub async fn valid(&self, id: &str, now_ms: u64) -> Result<bool, SessionError> {
        let key = digest(id);
        match &self.place {
            Place::Memory(live) => {
                let mut live = live.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(match live.get(&key) {
                    Some(expiry) if *expiry > now_ms => true,
                    Some(_) => {
                        live.remove(&key);
                        false
                    }
                    None => false,
                })
            }
            #[cfg(feature = "redis")]
            Place::Redis(redis) => Ok(redis.expiry(&key).await?.is_some_and(|expiry| expiry > now_ms)),
        }
    }

    /// Ends a session (signing out).
    pub async fn close(&self, id: &str) -> Result<(), SessionError> {
        match &self.place {
            Place::Memory(live) => {
                live.lock().unwrap_or_else(PoisonError::into_inner).remove(&digest(id));
                Ok(())
            }
            #[cfg(feature = "redis")]
            Place::Redis(redis) => redis.close(&digest(id)).await,
        }
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

    async fn valid(sessions: &Sessions, id: &str, now: u64) -> bool {
        sessions.valid(id, now).await.expect("in memory")
    }

    #[tokio::test]
    async fn an_issued_session_is_valid_until_it_expires() {
        let sessions = Sessions::default();
        let id = sessions.open(NOW).await.expect("open");
        assert_eq!(id.len(), 64);
        assert!(valid(&sessions, &id, NOW + 1).await);
        assert!(valid(&sessions, &id, NOW + SESSION_TTL_MS - 1).await);
        assert!(!valid(&sessions, &id, NOW + SESSION_TTL_MS).await);
        // Expired once is gone, even if the clock were to step back.
        assert!(!valid(&sessions, &id, NOW + 1).await);
    }

    #[tokio::test]
    async fn forged_and_signed_out_sessions_are_refused() {
        let sessions = Sessions::default();
        let id = sessions.open(NOW).await.expect("open");
        assert!(!valid(&sessions, &"0".repeat(64), NOW).await);
        assert!(!valid(&sessions, "", NOW).await);
        let mut altered = id.clone().into_bytes();
        altered[0] = if altered[0] == b'a' { b'b' } else { b'a' };
        assert!(!valid(&sessions, std::str::from_utf8(&altered).expect("hex"), NOW).await);
        sessions.close(&id).await.expect("close");
        assert!(!valid(&sessions, &id, NOW).await);
    }

    #[tokio::test]
    async fn sessions_are_capped() {
        let sessions = Sessions::default();
        let first = sessions.open(NOW).await.expect("open");
        for i in 0..MAX_SESSIONS as u64 * 2 {
            sessions.open(NOW + 1 + i).await.expect("open");
        }
        let Place::Memory(live) = &sessions.place else {
            unreachable!("the default is in memory")
        };
        assert!(live.lock().expect("lock").len() <= MAX_SESSIONS);
        assert!(
            !valid(&sessions, &first, NOW + 2).await,
            "the oldest session was pushed out"
        );
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
