//! SigV4 for the one request shape tollgate sends Bedrock: a `POST` of a
//! JSON body with a few fixed headers and no query.
//!
//! `aws-sigv4`'s general signer copies the headers into a map, normalises
//! the path, formats the canonical request and derives the signing key (four
//! HMACs) on every call; in the request path's profile that was a fifth of
//! the gateway's own CPU per call. For this shape the canonical request is
//! written straight into one buffer, and the signing key, which changes only
//! with the UTC date or the credentials, is derived once with `aws-sigv4`'s
//! own primitive and kept. A request of any other shape (a query, a path
//! that normalises to something else, headers that need trimming) goes to
//! the general signer. Tests hold both to the same signature.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::{HeaderName, HeaderValue, Request};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");

/// What the canonical path escapes of a path already escaped once: SigV4
/// (outside S3) encodes it twice, so `%` becomes `%25`; `/` stays.
const CANONICAL_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Signs requests for one region and service, keeping the day's key.
pub(crate) struct Signer {
    region: String,
    service: &'static str,
    key: ArcSwapOption<DayKey>,
}

/// A signing key and what it was derived from.
struct DayKey {
    date: String,
    access_key_id: String,
    secret_access_key: String,
    key: Vec<u8>,
}

impl Signer {
    pub(crate) fn new(region: &str, service: &'static str) -> Signer {
        Signer {
            region: region.to_owned(),
            service,
            key: ArcSwapOption::empty(),
        }
    }

    /// Adds `x-amz-date`, `authorization` and, with temporary credentials,
    /// `x-amz-security-token` to `request`, whose body is `body`.
    pub(crate) fn sign<B>(
        &self,
        request: &mut Request<B>,
        body: &[u8],
        identity: &Identity,
        now: SystemTime,
    ) -> Result<(), String> {
        match identity.data::<Credentials>() {
            Some(creds) if fast_path_applies(request) => self.sign_fast(request, body, creds, now),
            _ => self.sign_general(request, body, identity, now),
        }
    }

    fn sign_fast<B>(
        &self,
        request: &mut Request<B>,
        body: &[u8],
        creds: &Credentials,
        now: SystemTime,
    ) -> Result<(), String> {
        let (date, date_time) = format_times(now)?;
        let uri = request.uri();
        let host = match (uri.host(), uri.authority()) {
            (Some(host), Some(authority)) => {
                if port_is_default(uri) {
                    host
                } else {
                    authority.as_str()
                }
            }
            _ => return Err(format!("the URL {uri} names no host")),
        };
        let token = creds.session_token();
        // Names are lowercase in `http`; sorted, as the canonical form wants.
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(request.headers().len() + 3);
        for (name, value) in request.headers() {
            let value = value
                .to_str()
                .map_err(|_| format!("header {name} is not visible ASCII"))?;
            headers.push((name.as_str(), value));
        }
        headers.push(("host", host));
        headers.push(("x-amz-date", &date_time));
        if let Some(token) = token {
            headers.push(("x-amz-security-token", token));
        }
        headers.sort_unstable_by(|a, b| a.0.cmp(b.0));

        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let mut signed_headers = String::with_capacity(96);
        let mut canonical = String::with_capacity(320 + uri.path().len());
        canonical.push_str("POST\n");
        canonical.extend(utf8_percent_encode(uri.path(), CANONICAL_PATH));
        canonical.push_str("\n\n");
        for (i, (name, value)) in headers.iter().enumerate() {
            if i > 0 {
                signed_headers.push(';');
            }
            signed_headers.push_str(name);
            canonical.push_str(name);
            canonical.push(':');
            canonical.push_str(value);
            canonical.push('\n');
        }
        canonical.push('\n');
        canonical.push_str(&signed_headers);
        canonical.push('\n');
        push_hex(&mut canonical, &Sha256::digest(body));

        let mut string_to_sign = String::with_capacity(160);
        string_to_sign.push_str(ALGORITHM);
        string_to_sign.push('\n');
        string_to_sign.push_str(&date_time);
        string_to_sign.push('\n');
        string_to_sign.push_str(&scope);
        string_to_sign.push('\n');
        push_hex(&mut string_to_sign, &Sha256::digest(canonical.as_bytes()));
        let key = self.day_key(&date, creds, now);
        let signature = v4::calculate_signature(&key.key, string_to_sign.as_bytes());
        let authorization = format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id()
        );

        let date_value = HeaderValue::from_str(&date_time).map_err(|e| e.to_string())?;
        let authorization = HeaderValue::from_str(&authorization).map_err(|e| e.to_string())?;
        let token = token
            .map(|t| {
                HeaderValue::from_str(t).map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
            })
            .transpose()
            .map_err(|e| format!("the session token is not a header value: {e}"))?;
        let out = request.headers_mut();
        out.insert(X_AMZ_DATE, date_value);
        out.insert(http::header::AUTHORIZATION, authorization);
        if let Some(token) = token {
            out.insert(X_AMZ_SECURITY_TOKEN, token);
        }
        Ok(())
    }

    /// The key for `date` and these credentials: the kept one, or a new one kept.
    fn day_key(&self, date: &str, creds: &Credentials, now: SystemTime) -> Arc<DayKey> {
        if let Some(kept) = self.key.load_full()
            && kept.date == date
            && kept.access_key_id == creds.access_key_id()
            && kept.secret_access_key == creds.secret_access_key()
        {
            return kept;
        }
        let key = v4::generate_signing_key(creds.secret_access_key(), now, &self.region, self.service);
        let fresh = Arc::new(DayKey {
            date: date.to_owned(),
            access_key_id: creds.access_key_id().to_owned(),
            secret_access_key: creds.secret_access_key().to_owned(),
            key: key.as_ref().to_vec(),
        });
        self.key.store(Some(Arc::clone(&fresh)));
        fresh
    }

    /// `aws-sigv4`'s general signer, for any request.
    fn sign_general<B>(
        &self,
        request: &mut Request<B>,
        body: &[u8],
        identity: &Identity,
        now: SystemTime,
    ) -> Result<(), String> {
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name(self.service)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let uri = request.uri().to_string();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            &uri,
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// Whether the general signer would see this request exactly as written: a
/// `POST` without a query, a path with no empty, `.` or `..` segment (which
/// it normalises away), and header values that need no trimming or folding,
/// none of them repeated or among the ones signing adds.
fn fast_path_applies<B>(request: &Request<B>) -> bool {
    let uri = request.uri();
    let path = uri.path();
    request.method() == http::Method::POST
        && uri.query().is_none()
        && path.len() > 1
        && path.starts_with('/')
        && path[1..].split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && request.headers().keys_len() == request.headers().len()
        && request.headers().iter().all(|(name, value)| {
            !matches!(
                name.as_str(),
                "host" | "authorization" | "x-amz-date" | "x-amz-security-token" | "x-amz-content-sha256"
            ) && value.to_str().is_ok_and(plain_value)
        })
}

/// A header value SigV4's normalisation leaves as it is.
fn plain_value(value: &str) -> bool {
    !value.starts_with(' ') && !value.ends_with(' ') && !value.contains("  ") && !value.contains('\t')
}

fn port_is_default(uri: &http::Uri) -> bool {
    matches!(
        (uri.scheme_str(), uri.port_u16()),
        (_, None) | (Some("http"), Some(80)) | (Some("https"), Some(443))
    )
}

/// `YYYYMMDD` and `YYYYMMDDTHHMMSSZ`, in UTC.
fn format_times(now: SystemTime) -> Result<(String, String), String> {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    let date_time = secs
        .and_then(crate::wall_clock::amz_date_time)
        .ok_or_else(|| format!("the clock reads {now:?}, a time SigV4 cannot name"))?;
    Ok((date_time[..8].to_owned(), date_time))
}

/// Appends a SHA-256 digest in lowercase hex, through a buffer on the
/// stack rather than a `String` built a character at a time.
fn push_hex(out: &mut String, digest: &[u8]) {
    let mut buf = [0u8; 64];
    let Some(buf) = buf.get_mut(..digest.len() * 2) else {
        out.push_str(&hex::encode(digest));
        return;
    };
    if hex::encode_to_slice(digest, buf).is_ok()
        && let Ok(text) = std::str::from_utf8(buf)
    {
        out.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn identity(token: Option<&str>) -> Identity {
        Identity::from(Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        ))
    }

    fn request(url: &str, accept: &str) -> Request<()> {
        Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, accept)
            .body(())
            .expect("request")
    }

    /// Signs with the fast path and with the general signer; the headers must match.
    fn both(url: &str, accept: &str, body: &[u8], identity: &Identity, at: SystemTime) -> (Request<()>, Request<()>) {
        let signer = Signer::new("us-east-1", "bedrock");
        let mut fast = request(url, accept);
        assert!(fast_path_applies(&fast), "{url} should take the fast path");
        signer.sign(&mut fast, body, identity, at).expect("fast");
        let mut general = request(url, accept);
        signer.sign_general(&mut general, body, identity, at).expect("general");
        (fast, general)
    }

    #[test]
    fn the_fast_path_signs_as_the_general_signer_does() {
        let at = UNIX_EPOCH + Duration::from_secs(1_764_600_000);
        let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":5}}"#;
        let urls = [
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
            "https://bedrock-runtime.us-east-1.amazonaws.com:443/model/amazon.nova-micro-v1%3A0/converse-stream",
            "http://127.0.0.1:8080/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc/converse",
            "http://localhost/prefix/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse",
            "http://127.0.0.1:9/model/m%C3%BCnchen~x_y-z/converse",
        ];
        for token in [None, Some("FQoGZXIvYXdzEXAMPLE//token+=")] {
            let identity = identity(token);
            for url in urls {
                for accept in ["application/json", "application/vnd.amazon.eventstream"] {
                    let (fast, general) = both(url, accept, body, &identity, at);
                    assert_eq!(fast.headers(), general.headers(), "{url} {token:?}");
                }
            }
        }
        // An empty body, and the same key on a later call of the same day.
        let identity = identity(None);
        let (fast, general) = both(
            urls[0],
            "application/json",
            b"",
            &identity,
            at + Duration::from_secs(3600),
        );
        assert_eq!(fast.headers(), general.headers());
    }

    #[test]
    fn the_key_follows_the_date_and_the_credentials() {
        let signer = Signer::new("us-east-1", "bedrock");
        let day = UNIX_EPOCH + Duration::from_secs(1_764_547_199); // 2025-11-30T23:59:59Z
        let url = "http://127.0.0.1:1/model/amazon.nova-micro-v1%3A0/converse";
        for (at, id) in [
            (day, identity(None)),
            (day + Duration::from_secs(1), identity(None)),
            (day + Duration::from_secs(2), identity(Some("token"))),
            (
                day + Duration::from_secs(3),
                Identity::from(Credentials::new("AKIDOTHER", "another-secret", None, None, "test")),
            ),
        ] {
            let mut fast = request(url, "application/json");
            signer.sign(&mut fast, b"{}", &id, at).expect("fast");
            let mut general = request(url, "application/json");
            signer.sign_general(&mut general, b"{}", &id, at).expect("general");
            assert_eq!(fast.headers(), general.headers(), "at {at:?}");
        }
    }

    #[test]
    fn other_shapes_go_to_the_general_signer() {
        for url in [
            "http://127.0.0.1:1/model/../converse",
            "http://127.0.0.1:1/model//converse",
            "http://127.0.0.1:1/model/./converse",
            "http://127.0.0.1:1/model/x/converse?a=b",
        ] {
            assert!(!fast_path_applies(&request(url, "application/json")), "{url}");
        }
        assert!(!fast_path_applies(&request("http://h/model/x/converse", " padded ")));
        let mut twice = request("http://h/model/x/converse", "application/json");
        twice
            .headers_mut()
            .append(http::header::ACCEPT, HeaderValue::from_static("text/plain"));
        assert!(!fast_path_applies(&twice));
        // Signed all the same, by the general signer.
        let signer = Signer::new("us-east-1", "bedrock");
        let mut odd = request("http://127.0.0.1:1/model/../converse", "application/json");
        signer
            .sign(&mut odd, b"{}", &identity(None), SystemTime::now())
            .expect("signed");
        assert!(odd.headers().contains_key(http::header::AUTHORIZATION));
    }
}
