//! A self-signed certificate for local use (the demo, tests): written as PEM
//! files that clients are told to trust (`verify=PATH` for boto3,
//! `AWS_CA_BUNDLE` for the AWS CLI and SDKs, `curl --cacert`).

use std::path::{Path, PathBuf};

/// Where a generated certificate and its key were written.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate in PEM, for clients in the same process.
    pub cert_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Generates a certificate for `localhost` and `127.0.0.1` into `dir`.
pub fn self_signed(dir: &Path) -> Result<SelfSigned, CertError> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| CertError::Generate(e.to_string()))?;
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let write = |path: PathBuf, text: &str| {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| CertError::Write {
                path: path.clone(),
                source,
            })
            .map(|()| path)
    };
    let cert = write(dir.join("tollgate-cert.pem"), &cert_pem)?;
    let key = write(dir.join("tollgate-key.pem"), &key_pem)?;
    Ok(SelfSigned { cert, key, cert_pem })
}
