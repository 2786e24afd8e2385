//! The floor of a two-hop gateway on this machine: the HTTP stacks tollgate is
//! built on (Tokio, hyper's HTTP/1 server, hyper-util's pooled client, the
//! same allocator) forwarding each call with nothing in between. No auth, no
//! JSON, no policy, no ledger, no SigV4, no log, no metrics.
//!
//! `benches/cpu-ab.sh` runs it beside tollgate (FLOOR=1), so the CPU per call
//! that any gateway with these two hops spends here is measured in the same
//! run as tollgate's own.
//!
//!   cargo run --release --example bare_proxy -- 127.0.0.1:0 http://127.0.0.1:PORT

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Client<HttpConnector, Full<Bytes>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare_proxy LISTEN-ADDR UPSTREAM-URL (e.g. 127.0.0.1:0 http://127.0.0.1:8080)");
    };
    let upstream: Arc<str> = upstream.trim_end_matches('/').into();
    upstream.parse::<Uri>()?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("bare proxy listening on http://{}", listener.local_addr()?);

    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(tcp);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (client, upstream, http) = (client.clone(), upstream.clone(), http.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(client.clone(), upstream.clone(), request));
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Buffers the caller's body, sends it on, buffers the answer and returns it:
/// what tollgate does with a Converse call, less everything it decides.
async fn forward(
    client: Upstream,
    upstream: Arc<str>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{upstream}{path}").parse::<Uri>() else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let mut outbound = Request::post(uri);
    if let Some(content_type) = parts.headers.get(hyper::header::CONTENT_TYPE) {
        outbound = outbound.header(hyper::header::CONTENT_TYPE, content_type);
    }
    let Ok(outbound) = outbound.body(Full::new(body)) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let Ok(answer) = client.request(outbound).await else {
        return Ok(status(StatusCode::BAD_GATEWAY));
    };
    let (parts, body) = answer.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(status(StatusCode::BAD_GATEWAY));
    };
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
