//! Tenant authentication: which tenant is calling, decided by the credential alone.
//!
//! Two kinds of credential are accepted, the two ways AWS SDKs talk to Bedrock:
//!
//! * `Authorization: Bearer <key>`: a Bedrock-style API key. Only its SHA-256
//!   is kept; a presented key is hashed, looked up by hash, and the stored hash
//!   is compared in constant time.
//! * `Authorization: AWS4-HMAC-SHA256 ...`: SigV4 with a per-tenant access key.
//!   The signature is recomputed from the request as received (method, path,
//!   query, signed headers, payload hash) and compared in constant time. The
//!   secret has to be kept in the clear, since HMAC needs it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, StatusCode, Uri, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::TenantId;

/// How far a SigV4 request's `x-amz-date` may be from the gateway's clock (AWS uses the same window).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// The SigV4 service name AWS SDKs sign Bedrock runtime calls with.
pub const SIGV4_SERVICE: &str = "bedrock";

const SIGV4_ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Plaintext API keys shorter than this are refused at load: they could be guessed.
pub const MIN_PLAINTEXT_KEY_CHARS: usize = 16;

/// A tenant's credentials as written in `tollgate.toml`, e.g.
///
/// ```toml
/// [[tenants.acme.api-keys]]
/// key-sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
/// [[tenants.acme.access-keys]]
/// access-key-id = "AKIDACMEEXAMPLE"
/// secret-access-key = "..."
/// ```
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CredentialsConfig {
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
}

/// One bearer key: either its SHA-256 (hex, preferred) or the key itself, hashed at load.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub key_sha256: Option<String>,
    pub key: Option<String>,
}

/// One SigV4 access key.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AccessKeyConfig {
    pub access_key_id: String,
    pub secret_access_key: String,
}

// Secrets never reach logs through Debug.
impl fmt::Debug for CredentialsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsConfig")
            .field("api_keys", &self.api_keys.len())
            .field(
                "access_keys",
                &self.access_keys.iter().map(|k| &k.access_key_id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("key_sha256", &self.key_sha256)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for AccessKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeyConfig")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// A credential that cannot be loaded; the gateway refuses to start with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("tenant {tenant}: an api-keys entry needs exactly one of `key-sha256` or `key`")]
    KeyEntryShape { tenant: String },
    #[error("tenant {tenant}: `key-sha256` must be 64 hex digits (the SHA-256 of the key, e.g. from `sha256sum`)")]
    BadHash { tenant: String },
    #[error(
        "tenant {tenant}: a plaintext `key` has {chars} characters; use at least {MIN_PLAINTEXT_KEY_CHARS} \
         random characters (or store `key-sha256` instead)"
    )]
    WeakKey { tenant: String, chars: usize },
    #[error("the same API key is configured for tenants {first} and {second}; each key must belong to one tenant")]
    DuplicateKey { first: String, second: String },
    #[error(
        "access key id {access_key_id:?} (tenant {tenant}) must be 1-128 characters of A-Z, a-z, 0-9, and the \
         secret must not be empty"
    )]
    BadAccessKey { tenant: String, access_key_id: String },
    #[error(
        "access key id {access_key_id:?} is configured for tenants {first} and {second}; each access key must \
         belong to one tenant"
    )]
    DuplicateAccessKey {
        access_key_id: String,
        first: String,
        second: String,
    },
}

/// Why a request was not authenticated. `Display` says what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credential: send `Authorization: Bearer <your tollgate API key>` or sign the request with SigV4 \
         using your tollgate access key"
    )]
    Missing,
    #[error("malformed credential: {0}")]
    Malformed(String),
    #[error(
        "the API key or access key id is not known to this gateway; check the key your client uses, or ask the \
         operator to add it to the tenant's credentials"
    )]
    UnknownKey,
    #[error(
        "the request signature we calculated does not match the signature you provided; check the secret access \
         key, and that nothing between the client and tollgate rewrites the path, signed headers or body"
    )]
    BadSignature,
    #[error(
        "signature expired: the request was signed at {signed_at}, {skew_secs} s away from the gateway's clock \
         ({now}); at most {} s are allowed, so sync the client's clock (NTP) and send a freshly signed request",
        MAX_CLOCK_SKEW.as_secs()
    )]
    Expired {
        signed_at: String,
        now: String,
        skew_secs: u64,
    },
}

impl AuthError {
    /// The Bedrock/AWS error type name to answer with (`x-amzn-ErrorType` and `__type`).
    ///
    /// Signature problems use AWS's own `InvalidSignatureException`: the SDKs'
    /// clock-skew correction recognises it and re-signs with a corrected clock.
    pub fn error_type(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Malformed(_) => "AccessDeniedException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            AuthError::BadSignature | AuthError::Expired { .. } => "InvalidSignatureException",
        }
    }

    /// The HTTP status: always 403, as AWS answers authentication failures.
    pub fn status(&self) -> StatusCode {
        StatusCode::FORBIDDEN
    }
}

struct SecretKey {
    tenant: TenantId,
    secret: String,
}

/// Every tenant's credentials, ready to authenticate requests. Built once from config.
#[derive(Default)]
pub struct Credentials {
    /// SHA-256 of a bearer key -> its tenant.
    bearer: HashMap<[u8; 32], TenantId>,
    /// Access key id -> tenant and secret.
    access: HashMap<String, SecretKey>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.access.keys().collect();
        ids.sort();
        f.debug_struct("Credentials")
            .field("bearer_keys", &self.bearer.len())
            .field("access_key_ids", &ids)
            .finish()
    }
}

impl Credentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every tenant's configured credentials, refusing malformed or shared keys.
    pub fn from_config<'a>(
        tenants: impl IntoIterator<Item = (&'a TenantId, &'a CredentialsConfig)>,
    ) -> Result<Self, CredentialsError> {
        let mut creds = Credentials::new();
        for (tenant, config) in tenants {
            for key in &config.api_keys {
                match (&key.key_sha256, &key.key) {
                    (Some(hash), None) => creds.add_bearer_key_sha256(tenant, hash)?,
                    (None, Some(plain)) => creds.add_bearer_key(tenant, plain)?,
                    _ => {
                        return Err(CredentialsError::KeyEntryShape {
                            tenant: tenant.to_string(),
                        });
                    }
                }
            }
            for key in &config.access_keys {
                creds.add_access_key(tenant, &key.access_key_id, &key.secret_access_key)?;
            }
        }
        Ok(creds)
    }

    /// Adds a bearer key by its SHA-256 in hex (upper or lower case).
    pub fn add_bearer_key_sha256(&mut self, tenant: &TenantId, sha256_hex: &str) -> Result<(), CredentialsError> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(sha256_hex.trim(), &mut hash).map_err(|_| CredentialsError::BadHash {
            tenant: tenant.to_string(),
        })?;
        self.insert_bearer(tenant, hash)
    }

    /// Adds a bearer key given in plaintext; only its hash is kept.
    pub fn add_bearer_key(&mut self, tenant: &TenantId, key: &str) -> Result<(), CredentialsError> {
        let chars = key.chars().count();
        if chars < MIN_PLAINTEXT_KEY_CHARS {
            return Err(CredentialsError::WeakKey {
                tenant: tenant.to_string(),
                chars,
            });
        }
        self.insert_bearer(tenant, sha256(key.as_bytes()))
    }

    fn insert_bearer(&mut self, tenant: &TenantId, hash: [u8; 32]) -> Result<(), CredentialsError> {
        match self.bearer.entry(hash) {
            Entry::Occupied(e) if e.get() == tenant => Ok(()),
            Entry::Occupied(e) => Err(CredentialsError::DuplicateKey {
                first: e.get().to_string(),
                second: tenant.to_string(),
            }),
            Entry::Vacant(e) => {
                e.insert(tenant.clone());
                Ok(())
            }
        }
    }

    /// Adds a SigV4 access key for a tenant.
    pub fn add_access_key(
        &mut self,
        tenant: &TenantId,
        access_key_id: &str,
        secret: &str,
    ) -> Result<(), CredentialsError> {
        let id_ok = !access_key_id.is_empty()
            && access_key_id.len() <= 128
            && access_key_id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !id_ok || secret.is_empty() {
            return Err(CredentialsError::BadAccessKey {
                tenant: tenant.to_string(),
                access_key_id: access_key_id.chars().take(64).collect(),
            });
        }
        match self.access.entry(access_key_id.to_owned()) {
            Entry::Occupied(e) => Err(CredentialsError::DuplicateAccessKey {
                access_key_id: access_key_id.to_owned(),
                first: e.get().tenant.to_string(),
                second: tenant.to_string(),
            }),
            Entry::Vacant(e) => {
                e.insert(SecretKey {
                    tenant: tenant.clone(),
                    secret: secret.to_owned(),
                });
                Ok(())
            }
        }
    }

    /// Authenticates a request against the gateway's clock.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        body: &[u8],
    ) -> Result<TenantId, AuthError> {
        self.authenticate_at(headers, method, uri, body, SystemTime::now())
    }

    /// Authenticates a request; `now` is the gateway's clock (passed in so tests can fix it).
    pub fn authenticate_at(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        body: &[u8],
        now: SystemTime,
    ) -> Result<TenantId, AuthError> {
        let mut values = headers.get_all(header::AUTHORIZATION).into_iter();
        let Some(value) = values.next() else {
            if uri.query().is_some_and(|q| q.contains("X-Amz-Signature=")) {
                return Err(AuthError::Malformed(
                    "presigned URLs are not accepted; send the signature in the Authorization header".into(),
                ));
            }
            return Err(AuthError::Missing);
        };
        if values.next().is_some() {
            return Err(AuthError::Malformed(
                "more than one Authorization header; send exactly one".into(),
            ));
        }
        let value = value
            .to_str()
            .map_err(|_| AuthError::Malformed("the Authorization header is not visible ASCII".into()))?
            .trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(rest.trim())
        } else if scheme == SIGV4_ALGORITHM {
            self.sigv4(rest, headers, method, uri, body, now)
        } else {
            Err(AuthError::Malformed(format!(
                "unsupported Authorization scheme {:?}; use `Bearer` or `{SIGV4_ALGORITHM}`",
                scheme.chars().take(32).collect::<String>()
            )))
        }
    }

    fn bearer(&self, key: &str) -> Result<TenantId, AuthError> {
        if key.is_empty() {
            return Err(AuthError::Malformed("`Authorization: Bearer` carries no key".into()));
        }
        let presented = sha256(key.as_bytes());
        // The map is keyed by a hash the caller cannot steer towards a stored one, so the lookup
        // leaks nothing useful; the final comparison is constant time all the same.
        match self.bearer.get_key_value(&presented) {
            Some((stored, tenant)) if bool::from(stored.ct_eq(&presented)) => Ok(tenant.clone()),
            _ => Err(AuthError::UnknownKey),
        }
    }

    fn sigv4(
        &self,
        params: &str,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        body: &[u8],
        now: SystemTime,
    ) -> Result<TenantId, AuthError> {
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

        let key = self.access.get(scope.access_key_id).ok_or(AuthError::UnknownKey)?;

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

        let payload_hash = payload_hash(headers, body)?;
        let canonical_headers = canonical_headers(headers, uri, &auth.signed_headers)?;
        let query = canonical_query(uri.query().unwrap_or(""));
        let signed_at_time = UNIX_EPOCH + Duration::from_secs(signed_at);
        let signing_key =
            aws_sigv4::sign::v4::generate_signing_key(&key.secret, signed_at_time, scope.region, scope.service);

        let path = normalize_path(uri.path());
        // AWS SDKs sign Bedrock paths URI-encoded twice (the model id's ':' arrives as %3A and is
        // signed as %253A); a client configured for single encoding is accepted too.
        let double = percent_encode_path(&path);
        let mut candidates = vec![double];
        if candidates[0] != path {
            candidates.push(path);
        }
        let mut matched = subtle::Choice::from(0);
        for canonical_path in &candidates {
            let creq = format!(
                "{method}\n{canonical_path}\n{query}\n{canonical_headers}\n{}\n{payload_hash}",
                auth.signed_headers.join(";"),
                method = method.as_str(),
            );
            let string_to_sign = format!(
                "{SIGV4_ALGORITHM}\n{amz_date}\n{}/{}/{}/aws4_request\n{}",
                scope.date,
                scope.region,
                scope.service,
                hex::encode(sha256(creq.as_bytes()))
            );
            let expected = aws_sigv4::sign::v4::calculate_signature(&signing_key, string_to_sign.as_bytes());
            matched |= expected.as_bytes().ct_eq(auth.signature.as_bytes());
        }
        if bool::from(matched) {
            Ok(key.tenant.clone())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
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
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| AuthError::Malformed(format!("SigV4 Authorization part {:?} has no '='", clip(part))))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => {
                return Err(AuthError::Malformed(format!(
                    "unexpected SigV4 Authorization part {:?}; expected Credential, SignedHeaders, Signature",
                    clip(name)
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
            clip(date)
        )));
    }
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(AuthError::Malformed(format!(
            "Credential region {:?} is not a region name",
            clip(region)
        )));
    }
    if service != SIGV4_SERVICE {
        return Err(AuthError::Malformed(format!(
            "Credential is scoped to service {:?}; sign for {SIGV4_SERVICE:?} (the Bedrock runtime's signing name)",
            clip(service)
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
    let actual = hex::encode(sha256(body));
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

/// `name:value\n` for each signed header, in the order the client listed them.
fn canonical_headers(headers: &HeaderMap, uri: &Uri, signed: &[&str]) -> Result<String, AuthError> {
    let mut out = String::new();
    for &name in signed {
        let mut values = Vec::new();
        for value in headers.get_all(name) {
            let text = std::str::from_utf8(value.as_bytes())
                .map_err(|_| AuthError::Malformed(format!("signed header `{name}` is not UTF-8")))?;
            values.push(trim_all(text));
        }
        if values.is_empty() {
            // HTTP/2 carries the host in `:authority`, which ends up in the URI.
            match (name, uri.authority()) {
                ("host", Some(authority)) => values.push(authority.as_str().to_owned()),
                _ => {
                    return Err(AuthError::Malformed(format!(
                        "signed header `{name}` is not in the request"
                    )));
                }
            }
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// Trims spaces and folds runs of spaces into one, as SigV4 canonical header values want.
fn trim_all(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_space = false;
    for c in text.trim_matches(' ').chars() {
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out
}

/// RFC 3986 unreserved characters stay as they are; SigV4 encodes everything else.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

fn percent_encode_path(path: &str) -> String {
    utf8_percent_encode(path, UNRESERVED_AND_SLASH).to_string()
}

/// Removes `.`/`..` segments and empty segments, as the AWS signer does before encoding.
fn normalize_path(path: &str) -> String {
    if !(path.contains('.') || path.contains("//")) && path.starts_with('/') {
        return path.to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..") || path == "." || path == "..";
    if trailing && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Query pairs decoded (form style, as the signer parses them), re-encoded and sorted.
fn canonical_query(query: &str) -> String {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                utf8_percent_encode(&decode(k), UNRESERVED).to_string(),
                utf8_percent_encode(&decode(v), UNRESERVED).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Seconds since the Unix epoch of `YYYYMMDDTHHMMSSZ`, or None if it is not a real UTC time.
fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = s.get(range)?;
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm), for years from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (for error messages).
fn format_amz_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// At most 32 characters of caller input in an error message.
fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials as AwsCredentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    const AKID: &str = "AKIDTESTACME0001";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const API_KEY: &str = "ABSKtollgate-test-key-acme-0123456789";
    const PATH: &str = "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse";

    fn tenant(id: &str) -> TenantId {
        TenantId::new(id).unwrap()
    }

    fn creds() -> Credentials {
        let mut c = Credentials::new();
        c.add_bearer_key(&tenant("acme"), API_KEY).unwrap();
        c.add_bearer_key_sha256(&tenant("globex"), &hex::encode(sha256(b"globex-key-0123456789abcdef")))
            .unwrap();
        c.add_access_key(&tenant("acme"), AKID, SECRET).unwrap();
        c
    }

    fn t0() -> SystemTime {
        // 2024-05-01T12:00:00Z
        UNIX_EPOCH + Duration::from_secs(1_714_564_800)
    }

    /// A request signed by the real AWS signer, as the SDK would send it.
    fn signed_request(body: &[u8], at: SystemTime, query: &str) -> http::Request<Vec<u8>> {
        let uri = format!("https://tollgate.example:8443{PATH}{query}");
        let mut req = http::Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/json")
            .header("x-amz-user-agent", "aws-sdk-rust/1.0")
            .body(body.to_vec())
            .unwrap();
        let identity: Identity = AwsCredentials::new(AKID, SECRET, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("bedrock")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.uri().to_string(),
            req.headers().iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut req);
        // What a server sees: the client also sends Host.
        let host = req.uri().authority().unwrap().as_str().to_owned();
        req.headers_mut().insert(header::HOST, host.parse().unwrap());
        req
    }

    fn check(c: &Credentials, req: &http::Request<Vec<u8>>, now: SystemTime) -> Result<TenantId, AuthError> {
        c.authenticate_at(req.headers(), req.method(), req.uri(), req.body(), now)
    }

    fn bearer_headers(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        h
    }

    fn auth_bearer(c: &Credentials, key: &str) -> Result<TenantId, AuthError> {
        let uri: Uri = PATH.parse().unwrap();
        c.authenticate_at(&bearer_headers(key), &Method::POST, &uri, b"{}", t0())
    }

    #[test]
    fn bearer_key_selects_its_tenant() {
        let c = creds();
        assert_eq!(auth_bearer(&c, API_KEY).unwrap(), tenant("acme"));
        assert_eq!(
            auth_bearer(&c, "globex-key-0123456789abcdef").unwrap(),
            tenant("globex")
        );
        assert_eq!(
            auth_bearer(&c, "ABSKtollgate-test-key-acme-0123456788"),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(
            auth_bearer(&c, ""),
            Err(AuthError::Malformed("`Authorization: Bearer` carries no key".into()))
        );
        let uri: Uri = PATH.parse().unwrap();
        assert_eq!(
            c.authenticate_at(&HeaderMap::new(), &Method::POST, &uri, b"", t0()),
            Err(AuthError::Missing)
        );
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic dXNlcjpwYXNz".parse().unwrap());
        assert!(matches!(
            c.authenticate_at(&h, &Method::POST, &uri, b"", t0()),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn only_hashes_are_stored() {
        let c = creds();
        let debug = format!("{c:?}");
        assert!(!debug.contains(API_KEY) && !debug.contains(SECRET), "{debug}");
        assert!(c.bearer.contains_key(&sha256(API_KEY.as_bytes())));
        assert!(!c.bearer.keys().any(|k| k.as_slice() == API_KEY.as_bytes()));
    }

    #[test]
    fn config_loads_and_refuses_bad_or_shared_keys() {
        let acme = tenant("acme");
        let globex = tenant("globex");
        let cfg: CredentialsConfig = serde_json::from_value(serde_json::json!({
            "api-keys": [{"key-sha256": hex::encode(sha256(API_KEY.as_bytes())).to_uppercase()}],
            "access-keys": [{"access-key-id": AKID, "secret-access-key": SECRET}],
        }))
        .unwrap();
        let c = Credentials::from_config([(&acme, &cfg)]).unwrap();
        assert_eq!(auth_bearer(&c, API_KEY).unwrap(), acme);
        assert!(!format!("{cfg:?}").contains(SECRET));

        let plain = CredentialsConfig {
            api_keys: vec![ApiKeyConfig {
                key: Some(API_KEY.into()),
                key_sha256: None,
            }],
            access_keys: vec![],
        };
        let err = Credentials::from_config([(&acme, &cfg), (&globex, &plain)]).unwrap_err();
        assert!(matches!(err, CredentialsError::DuplicateKey { .. }), "{err}");

        let both = CredentialsConfig {
            api_keys: vec![ApiKeyConfig {
                key: Some(API_KEY.into()),
                key_sha256: Some("00".into()),
            }],
            access_keys: vec![],
        };
        assert!(matches!(
            Credentials::from_config([(&acme, &both)]),
            Err(CredentialsError::KeyEntryShape { .. })
        ));
        let mut c = Credentials::new();
        assert!(matches!(
            c.add_bearer_key_sha256(&acme, "abc"),
            Err(CredentialsError::BadHash { .. })
        ));
        assert!(matches!(
            c.add_bearer_key(&acme, "short"),
            Err(CredentialsError::WeakKey { chars: 5, .. })
        ));
        c.add_access_key(&acme, AKID, SECRET).unwrap();
        assert!(matches!(
            c.add_access_key(&globex, AKID, "x"),
            Err(CredentialsError::DuplicateAccessKey { .. })
        ));
        assert!(matches!(
            c.add_access_key(&globex, "AK/ID", "x"),
            Err(CredentialsError::BadAccessKey { .. })
        ));
    }

    #[test]
    fn sigv4_from_the_aws_signer_is_verified() {
        let c = creds();
        let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
        let req = signed_request(body, t0(), "");
        assert!(
            req.headers()[header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .starts_with(SIGV4_ALGORITHM)
        );
        assert_eq!(check(&c, &req, t0()).unwrap(), tenant("acme"));
        // Within the skew window on either side.
        assert!(check(&c, &req, t0() + Duration::from_secs(14 * 60)).is_ok());
        assert!(check(&c, &req, t0() - Duration::from_secs(14 * 60)).is_ok());

        // Query strings and HTTP/2-style requests without a Host header.
        let mut req = signed_request(b"", t0(), "?b=2&a=x%2By&a=1");
        assert_eq!(check(&c, &req, t0()).unwrap(), tenant("acme"));
        req.headers_mut().remove(header::HOST);
        assert_eq!(check(&c, &req, t0()).unwrap(), tenant("acme"));
    }

    #[test]
    fn sigv4_tampering_is_rejected() {
        let c = creds();
        let body = br#"{"messages":[]}"#;
        let req = signed_request(body, t0(), "");

        let mut other_body = req.clone();
        *other_body.body_mut() = br#"{"messages":[1]}"#.to_vec();
        assert_eq!(check(&c, &other_body, t0()), Err(AuthError::BadSignature));

        let mut other_header = req.clone();
        other_header
            .headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        assert_eq!(check(&c, &other_header, t0()), Err(AuthError::BadSignature));

        let mut other_path = req.clone();
        *other_path.uri_mut() = "https://tollgate.example:8443/model/amazon.nova-pro-v1%3A0/converse"
            .parse()
            .unwrap();
        assert_eq!(check(&c, &other_path, t0()), Err(AuthError::BadSignature));

        let mut other_method = req.clone();
        *other_method.method_mut() = Method::PUT;
        assert_eq!(check(&c, &other_method, t0()), Err(AuthError::BadSignature));

        let auth = req.headers()[header::AUTHORIZATION].to_str().unwrap().to_owned();
        let (head, sig) = auth.rsplit_once("Signature=").unwrap();
        let flipped: String = sig.chars().rev().collect();
        let mut other_sig = req.clone();
        other_sig.headers_mut().insert(
            header::AUTHORIZATION,
            format!("{head}Signature={flipped}").parse().unwrap(),
        );
        assert_eq!(check(&c, &other_sig, t0()), Err(AuthError::BadSignature));

        // Same key id, wrong secret.
        let mut wrong_secret = Credentials::new();
        wrong_secret
            .add_access_key(&tenant("acme"), AKID, "not-the-secret")
            .unwrap();
        assert_eq!(check(&wrong_secret, &req, t0()), Err(AuthError::BadSignature));

        // A declared payload hash that does not match the body.
        let mut declared = req.clone();
        declared
            .headers_mut()
            .insert("x-amz-content-sha256", hex::encode(sha256(b"other")).parse().unwrap());
        assert_eq!(check(&c, &declared, t0()), Err(AuthError::BadSignature));
        declared
            .headers_mut()
            .insert("x-amz-content-sha256", "UNSIGNED-PAYLOAD".parse().unwrap());
        assert!(matches!(check(&c, &declared, t0()), Err(AuthError::Malformed(_))));

        // Unknown access key id.
        let unknown = Credentials::new();
        assert_eq!(check(&unknown, &req, t0()), Err(AuthError::UnknownKey));
    }

    #[test]
    fn sigv4_outside_the_clock_window_is_expired() {
        let c = creds();
        let req = signed_request(b"{}", t0(), "");
        let err = check(&c, &req, t0() + Duration::from_secs(16 * 60)).unwrap_err();
        assert!(matches!(err, AuthError::Expired { skew_secs: 960, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("20240501T120000Z") && msg.contains("20240501T121600Z") && msg.contains("clock"),
            "{msg}"
        );
        assert_eq!(err.error_type(), "InvalidSignatureException");
        assert!(check(&c, &req, t0() - Duration::from_secs(16 * 60)).is_err());
    }

    #[test]
    fn malformed_sigv4_headers_are_explained() {
        let c = creds();
        let uri: Uri = PATH.parse().unwrap();
        let sig = "0".repeat(64);
        let scope = format!("{AKID}/20240501/us-east-1/bedrock/aws4_request");
        let auth = |credential: &str, signed: &str, signature: &str| {
            format!("AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed}, Signature={signature}")
        };
        let cases = [
            format!("AWS4-HMAC-SHA256 Credential={scope}, Signature={sig}"),
            auth(&scope.replace("bedrock", "s3"), "host;x-amz-date", &sig),
            auth(&scope, "host", &sig),
            auth(&scope, "host;x-amz-date", "xyz"),
            auth(&scope.replace("20240501", "20240502"), "host;x-amz-date", &sig),
            auth(AKID, "host;x-amz-date", &sig),
            auth(&scope, "host;x-amz-date;x-missing", &sig),
            auth(&scope, "host;Content-Type;x-amz-date", &sig),
            auth(&scope, "host;x-amz-date;host", &sig),
        ];
        for auth in cases {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, auth.parse().unwrap());
            h.insert(header::HOST, "tollgate.example".parse().unwrap());
            h.insert("x-amz-date", "20240501T120000Z".parse().unwrap());
            let got = c.authenticate_at(&h, &Method::POST, &uri, b"", t0());
            assert!(matches!(got, Err(AuthError::Malformed(_))), "{auth}: {got:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        h.append(header::AUTHORIZATION, "Bearer b".parse().unwrap());
        assert!(matches!(
            c.authenticate_at(&h, &Method::POST, &uri, b"", t0()),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn errors_map_to_bedrock_types() {
        assert_eq!(AuthError::Missing.error_type(), "AccessDeniedException");
        assert_eq!(AuthError::UnknownKey.error_type(), "UnrecognizedClientException");
        assert_eq!(AuthError::BadSignature.error_type(), "InvalidSignatureException");
        assert_eq!(AuthError::UnknownKey.status(), StatusCode::FORBIDDEN);
        assert!(AuthError::Missing.to_string().contains("Authorization: Bearer"));
    }

    #[test]
    fn helpers_follow_the_sigv4_rules() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20240501T120000Z"), Some(1_714_564_800));
        assert_eq!(
            parse_amz_date("20240229T000000Z").map(format_amz_date).as_deref(),
            Some("20240229T000000Z")
        );
        assert_eq!(parse_amz_date("20230229T000000Z"), None);
        assert_eq!(parse_amz_date("20240501T120000"), None);
        assert_eq!(parse_amz_date("2024-5-1T1200000Z"), None);
        assert_eq!(trim_all("  a   b  c "), "a b c");
        assert_eq!(normalize_path("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(percent_encode_path("/model/x%3A0/converse"), "/model/x%253A0/converse");
        assert_eq!(canonical_query("b=2&a=x+y&a=1&c"), "a=1&a=x%20y&b=2&c=");
    }
}
