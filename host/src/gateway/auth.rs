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
use std::time::SystemTime;

use http::{HeaderMap, Method, Uri, header};

mod bearer;
mod error;
mod sigv4;

pub use error::{AuthError, MAX_CLOCK_SKEW};
pub use sigv4::SIGV4_SERVICE;
use sigv4::{SIGV4_ALGORITHM, SecretKey};

pub use crate::config::credentials::{AccessKeyConfig, ApiKeyConfig, CredentialsConfig};
use crate::ids::TenantId;

/// Plaintext API keys shorter than this are refused at load: they could be guessed.
pub const MIN_PLAINTEXT_KEY_CHARS: usize = 16;

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
        self.insert_bearer(tenant, bearer::key_hash(key))
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

    /// What can be checked before the body is read: a bearer key wholly; a
    /// SigV4 header's form, key and clock. A caller refused here is refused
    /// before the gateway reads a byte of its body; one that passes still
    /// needs [`Credentials::authenticate`] once the body is in.
    pub fn precheck(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), AuthError> {
        self.precheck_at(headers, uri, SystemTime::now())
    }

    pub fn precheck_at(&self, headers: &HeaderMap, uri: &Uri, now: SystemTime) -> Result<(), AuthError> {
        let (scheme, rest) = authorization(headers, uri)?;
        if scheme.eq_ignore_ascii_case("bearer") {
            bearer::verify(&self.bearer, rest.trim()).map(drop)
        } else if scheme == SIGV4_ALGORITHM {
            sigv4::identify(&self.access, rest, headers, now).map(drop)
        } else {
            Err(unsupported_scheme(scheme))
        }
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
        let (scheme, rest) = authorization(headers, uri)?;
        if scheme.eq_ignore_ascii_case("bearer") {
            bearer::verify(&self.bearer, rest.trim())
        } else if scheme == SIGV4_ALGORITHM {
            sigv4::verify(&self.access, rest, headers, method, uri, body, now)
        } else {
            Err(unsupported_scheme(scheme))
        }
    }
}

/// The one Authorization header, split into its scheme and the rest.
fn authorization<'h>(headers: &'h HeaderMap, uri: &Uri) -> Result<(&'h str, &'h str), AuthError> {
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
    Ok(value.split_once(' ').unwrap_or((value, "")))
}

fn unsupported_scheme(scheme: &str) -> AuthError {
    AuthError::Malformed(format!(
        "unsupported Authorization scheme {:?}; use `Bearer` or `{SIGV4_ALGORITHM}`",
        scheme.chars().take(32).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use http::StatusCode;
    use sha2::{Digest, Sha256};

    use super::*;

    fn sha256(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }
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
}
