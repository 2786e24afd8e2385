//! The gateway's edge: accepting connections, TLS, and HTTP/1.1 with the
//! limits a public listener needs.
//!
//! - **Connection cap.** At most `max_connections` are open at once; one
//!   past the cap is closed as soon as it is accepted, so a flood of idle
//!   sockets cannot exhaust file descriptors or memory.
//! - **TLS handshake timeout.** A client that opens a socket and never
//!   finishes the handshake is closed after `tls_handshake_timeout`.
//! - **Header-read and idle timeout.** hyper's header-read timer runs from the
//!   moment a connection waits for a request head (the first one, or the
//!   next one on a kept-alive connection) until the head is complete. One
//!   timer covers both a slowloris client and an idle keep-alive connection.
//! - **Write timeout.** A write that waits longer than `write_timeout` for
//!   the client to read (its receive window full) closes the connection, so
//!   a client that stops reading cannot hold a connection, hyper's buffers
//!   and its call for good.
//! - **HTTP/1.1 only.** Bedrock's Converse and ConverseStream are HTTP/1.1
//!   calls. Serving only HTTP/1.1 (and offering only `http/1.1` in ALPN)
//!   means no protocol sniffing runs before the timers start.
//! - Body-read timeouts and body limits are per route (see `server`), since
//!   only the route knows how large and slow a body may be.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Where the gateway listens and how.
#[derive(Debug, Clone)]
pub enum Listen {
    /// HTTPS with a certificate chain and key in PEM files.
    Https {
        addr: SocketAddr,
        cert: PathBuf,
        key: PathBuf,
    },
    /// Plain HTTP: only where configured (loopback, or behind a TLS proxy).
    Http { addr: SocketAddr },
}

/// The limits of the listener. See the module documentation.
#[derive(Debug, Clone)]
pub struct Edges {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub write_timeout: Duration,
    /// Counts connections closed at the cap, when set.
    pub refused: Option<prometheus_client::metrics::counter::Counter>,
}

impl Default for Edges {
    fn default() -> Self {
        Edges {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
            refused: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}. Is another process using the port?")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot load the TLS certificate {cert} / key {key}: {detail}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound listener, ready to serve.
pub struct Bound {
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
}

impl Bound {
    /// Binds the address (port 0 picks one) and loads the certificate, so
    /// errors surface before the gateway reports itself started.
    pub async fn bind(listen: &Listen) -> Result<Bound, ServeError> {
        let addr = match listen {
            Listen::Https { addr, .. } | Listen::Http { addr } => *addr,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let tls = match listen {
            Listen::Http { .. } => None,
            Listen::Https { cert, key, .. } => Some(tls_acceptor(cert, key).map_err(|detail| ServeError::Tls {
                cert: cert.clone(),
                key: key.clone(),
                detail,
            })?),
        };
        Ok(Bound { listener, tls })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets calls
    /// in flight finish (up to `grace`).
    pub async fn serve(
        self,
        app: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        grace: Duration,
        edges: Edges,
    ) -> Result<(), ServeError> {
        let permits = Arc::new(Semaphore::new(edges.max_connections.max(1)));
        let handshake_timeout = edges.tls_handshake_timeout;
        let graceful = GracefulShutdown::new();
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(edges.header_read_timeout)
            .keep_alive(true);
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // Out of descriptors, say: the cap is above the process
                        // limit. Pause so the loop does not spin on the error.
                        if let Some(suppressed) = crate::log_gate::ACCEPT_ERRORS.admit("") {
                            tracing::warn!(error = %err, suppressed, "cannot accept a connection; lower [server] max-connections below the process's file limit");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                if let Some(refused) = &edges.refused {
                    refused.inc();
                }
                if let Some(suppressed) = crate::log_gate::ACCEPT_ERRORS.admit("cap") {
                    tracing::warn!(
                        max_connections = edges.max_connections,
                        suppressed,
                        "connection cap reached; closing new connections"
                    );
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(edges.write_timeout));
            let stream = Box::pin(stream);
            let service = TowerToHyperService::new(app.clone());
            let http = http.clone();
            let tls = self.tls.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                match tls {
                    None => serve_connection(&http, stream, service, watcher).await,
                    Some(tls) => {
                        if let Ok(Ok(stream)) = tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                            serve_connection(&http, stream, service, watcher).await;
                        }
                    }
                }
            });
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!(grace_secs = grace.as_secs(), "calls still in flight after the shutdown grace period were cut");
            }
        }
        Ok(())
    }
}

async fn serve_connection<I>(
    http: &http1::Builder,
    io: I,
    service: TowerToHyperService<Router>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = http.serve_connection(TokioIo::new(io), service);
    // Errors here are the client's (a reset, a timeout); the request path
    // has logged anything that concerns a call.
    let _ = watcher.watch(connection).await;
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    install_crypto_provider();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key: {e}"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// rustls needs one process-wide crypto provider; ring builds everywhere.
pub fn install_crypto_provider() {
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
