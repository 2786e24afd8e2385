//! Bearer keys (`Authorization: Bearer <key>`), as AWS SDKs send Bedrock API
//! keys. Only a key's SHA-256 is kept: a presented key is hashed, looked up
//! by hash, and the stored hash compared in constant time.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::AuthError;
use crate::ids::TenantId;

/// The form in which a bearer key is stored.
pub(super) fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub(super) fn verify(keys: &HashMap<[u8; 32], TenantId>, key: &str) -> Result<TenantId, AuthError> {
    if key.is_empty() {
        return Err(AuthError::Malformed("`Authorization: Bearer` carries no key".into()));
    }
    let presented = key_hash(key);
    // The map is keyed by a hash the caller cannot steer towards a stored one, so the lookup
    // leaks nothing useful; the final comparison is constant time all the same.
    match keys.get_key_value(&presented) {
        Some((stored, tenant)) if bool::from(stored.ct_eq(&presented)) => Ok(tenant.clone()),
        _ => Err(AuthError::UnknownKey),
    }
}
