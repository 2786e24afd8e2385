//! SigV4 (`Authorization: AWS4-HMAC-SHA256 ...`) with per-tenant access
//! keys. The signature is recomputed from the request as received (method,
//! path, query, signed headers, payload hash) and compared in constant
//! time. The secret has to be kept in the clear, since HMAC needs it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http::{HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{AuthError, MAX_CLOCK_SKEW};
use crate::ids::TenantId;

/// The SigV4 service name AWS SDKs sign Bedrock runtime calls with.
pub const SIGV4_SERVICE: &str = "bedrock";

pub(super) const SIGV4_ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// An access key's tenant and secret.
pub(super) struct SecretKey {
    pub(super) tenant: TenantId,
    pub(super) secret: String,
}

/// What the header alone tells: a well-formed SigV4 Authorization for a known
/// key, signed close enough to now. The signature itself needs the body.
pub(super) struct Identified<'a> {
    auth: SigV4Header<'a>,
    scope: Scope<'a>,
    key: &'a SecretKey,
    signed_at: u64,
}

/// Checks everything a SigV4 request says before its body: so an unknown or
/// stale caller is refused without the gateway reading what it sends.
pub(super) fn identify<'a>(
    access: &'a HashMap<String, SecretKey>,
    params: &'a str,
    headers: &'a HeaderMap,
    now: SystemTime,
) -> Result<Identified<'a>, AuthError> {
    let auth = parse_sigv4_header(params)?;
    let scope = parse_scope(auth.credential)?;

    let amz_date = single_header(headers, "x-amz-date")?
        .ok_or_else(|| AuthError::Malformed("SigV4 requests need an `x-amz-date` header".into()))?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        AuthError::Malformed("`x-amz-date` must look like 20240131T235959Z (UTC, ISO 8601 basic)".into())
    })?;
    if amz_date.get(..8) != Some(scope.date) {
        return Err(AuthError::Malformed(format!(
            "the credential scope date {} is not the date of `x-amz-date` {amz_date}",
            scope.date
        )));
    }
    if !auth.signed_headers.contains(&"host") || !auth.signed_headers.contains(&"x-amz-date") {
        return Err(AuthError::Malformed(
            "SignedHeaders must include `host` and `x-amz-date`".into(),
        ));
    }

    let key = access.get(scope.access_key_id).ok_or(AuthError::UnknownKey)?;

    // Checked after the key is known, so an unknown caller learns nothing about our clock.
    let now_secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let skew_secs = now_secs.abs_diff(signed_at);
    if skew_secs > MAX_CLOCK_SKEW.as_secs() {
        return Err(AuthError::Expired {
            signed_at: amz_date.to_owned(),
            now: format_amz_date(now_secs),
            skew_secs,
        });
    }
    Ok(Identified {
        auth,
        scope,
        key,
        signed_at,
    })
}

pub(super) fn verify(
    access: &HashMap<String, SecretKey>,
    params: &str,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    now: SystemTime,
) -> Result<TenantId, AuthError> {
    let Identified {
        auth,
        scope,
        key,
        signed_at,
    } = identify(access, params, headers, now)?;

    let payload_hash = payload_hash(headers, body)?;
    let signed = signed_headers(headers, uri, &auth.signed_headers)?;
    let host = signed
        .iter()
        .find(|(name, _)| *name == "host")
        .map(|(_, value)| value.as_str())
        .unwrap_or_default();
    let target = format!("https://{host}{}", uri.path_and_query().map_or("/", |p| p.as_str()));
    let identity = aws_credential_types::Credentials::new(
        scope.access_key_id,
        key.secret.clone(),
        None,
        None,
        "tollgate-tenant-access-key",
    )
    .into();
    let signed_at_time = UNIX_EPOCH + Duration::from_secs(signed_at);

    // Re-sign the request as received with the tenant's secret and compare.
    // AWS SDKs sign Bedrock paths URI-encoded twice (the model id's ':' arrives
    // as %3A and is signed as %253A); a client that encodes once is accepted too.
    for mode in [PercentEncodingMode::Double, PercentEncodingMode::Single] {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = mode;
        // Sign exactly the headers the client listed, whichever they are.
        settings.excluded_headers = Some(Vec::new());
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(scope.region)
            .name(scope.service)
            .time(signed_at_time)
            .settings(settings)
            .build()
            .map_err(|e| AuthError::Malformed(format!("cannot check this SigV4 signature: {e}")))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            target.as_str(),
            signed.iter().map(|(name, value)| (*name, value.as_str())),
            SignableBody::Precomputed(payload_hash.clone()),
        )
        .map_err(|e| AuthError::Malformed(format!("cannot check this SigV4 signature: {e}")))?;
        let expected = sign(signable, &params)
            .map_err(|e| AuthError::Malformed(format!("cannot check this SigV4 signature: {e}")))?;
        // Which encoding matched is no secret, so the common one ends the search.
        if bool::from(expected.signature().as_bytes().ct_eq(auth.signature.as_bytes())) {
            return Ok(key.tenant.clone());
        }
    }
    Err(AuthError::BadSignature)
}

struct SigV4Header<'a> {
    credential: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

/// Parses `Credential=..., SignedHeaders=..., Signature=...` (the part after the algorithm).
fn parse_sigv4_header(params: &str) -> Result<SigV4Header<'_>, AuthError> {
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in params.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = part.split_once('=').ok_or_else(|| {
            AuthError::Malformed(format!(
                "SigV4 Authorization part {:?} has no '='",
                crate::text::clip(part, 32)
            ))
        })?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => {
                return Err(AuthError::Malformed(format!(
                    "unexpected SigV4 Authorization part {:?}; expected Credential, SignedHeaders, Signature",
                    crate::text::clip(name, 32)
                )));
            }
        };
        if slot.replace(value).is_some() {
            return Err(AuthError::Malformed(format!("SigV4 Authorization repeats {name}")));
        }
    }
    let missing = |what: &str| AuthError::Malformed(format!("SigV4 Authorization header has no {what}="));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;

    if signature.len() != 64 || !signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(AuthError::Malformed("Signature must be 64 lowercase hex digits".into()));
    }
    let signed_headers: Vec<&str> = signed.split(';').collect();
    let names_ok = signed_headers.iter().all(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    if !names_ok {
        return Err(AuthError::Malformed(
            "SignedHeaders must be lowercase header names separated by ';'".into(),
        ));
    }
    let mut unique = signed_headers.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != signed_headers.len() {
        return Err(AuthError::Malformed("SignedHeaders names a header twice".into()));
    }
    Ok(SigV4Header {
        credential,
        signed_headers,
        signature,
    })
}

struct Scope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

/// Parses `AKID/YYYYMMDD/region/bedrock/aws4_request`.
fn parse_scope(credential: &str) -> Result<Scope<'_>, AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts[..] else {
        return Err(AuthError::Malformed(
            "Credential must be ACCESS_KEY_ID/YYYYMMDD/REGION/bedrock/aws4_request".into(),
        ));
    };
    if access_key_id.is_empty() {
        return Err(AuthError::Malformed("Credential has an empty access key id".into()));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed(format!(
            "Credential date {:?} is not YYYYMMDD",
            crate::text::clip(date, 32)
        )));
    }
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(AuthError::Malformed(format!(
            "Credential region {:?} is not a region name",
            crate::text::clip(region, 32)
        )));
    }
    if service != SIGV4_SERVICE {
        return Err(AuthError::Malformed(format!(
            "Credential is scoped to service {:?}; sign for {SIGV4_SERVICE:?} (the Bedrock runtime's signing name)",
            crate::text::clip(service, 32)
        )));
    }
    if terminator != "aws4_request" {
        return Err(AuthError::Malformed("Credential must end with /aws4_request".into()));
    }
    Ok(Scope {
        access_key_id,
        date,
        region,
        service,
    })
}

/// A header that must appear at most once, as text.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, AuthError> {
    let mut values = headers.get_all(name).into_iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(AuthError::Malformed(format!("more than one `{name}` header")));
    }
    let text = value
        .to_str()
        .map_err(|_| AuthError::Malformed(format!("`{name}` is not visible ASCII")))?;
    Ok(Some(text.trim()))
}

/// The payload hash that was signed. A declared `x-amz-content-sha256` must match the body,
/// otherwise a signed header would vouch for a body that was swapped in transit.
fn payload_hash(headers: &HeaderMap, body: &[u8]) -> Result<String, AuthError> {
    let actual = hex::encode(Sha256::digest(body));
    match single_header(headers, "x-amz-content-sha256")? {
        None => Ok(actual),
        Some(declared) if declared.eq_ignore_ascii_case(&actual) => Ok(declared.to_owned()),
        Some(declared) if declared.len() == 64 && declared.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err(AuthError::BadSignature)
        }
        Some(_) => Err(AuthError::Malformed(
            "`x-amz-content-sha256` must be the hex SHA-256 of the body; unsigned or streamed payloads are not \
             accepted"
                .into(),
        )),
    }
}

/// The headers the client signed, as `(name, value)` pairs in the order it
/// listed them (a repeated header once per value).
fn signed_headers<'a>(headers: &HeaderMap, uri: &Uri, signed: &[&'a str]) -> Result<Vec<(&'a str, String)>, AuthError> {
    let mut out = Vec::with_capacity(signed.len());
    for &name in signed {
        let before = out.len();
        for value in headers.get_all(name) {
            let text = std::str::from_utf8(value.as_bytes())
                .map_err(|_| AuthError::Malformed(format!("signed header `{name}` is not UTF-8")))?;
            out.push((name, text.to_owned()));
        }
        if out.len() == before {
            // HTTP/2 carries the host in `:authority`, which ends up in the URI.
            match (name, uri.authority()) {
                ("host", Some(authority)) => out.push((name, authority.as_str().to_owned())),
                _ => {
                    return Err(AuthError::Malformed(format!(
                        "signed header `{name}` is not in the request"
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// Seconds since the Unix epoch of `YYYYMMDDTHHMMSSZ`, or None if it is not a real UTC time.
fn parse_amz_date(s: &str) -> Option<u64> {
    // chrono's `%Y` would accept signs and more digits; SigV4 dates are exactly 16 characters.
    if s.len() != 16 || !s.is_ascii() {
        return None;
    }
    let at = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    u64::try_from(at.and_utc().timestamp()).ok()
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (for error messages).
fn format_amz_date(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(crate::wall_clock::amz_date_time)
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_are_strict_utc() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20240501T120000Z"), Some(1_714_564_800));
        assert_eq!(
            parse_amz_date("20240229T000000Z").map(format_amz_date).as_deref(),
            Some("20240229T000000Z")
        );
        assert_eq!(parse_amz_date("20230229T000000Z"), None);
        assert_eq!(parse_amz_date("20240501T120000"), None);
        assert_eq!(parse_amz_date("2024-5-1T1200000Z"), None);
    }
}
