//! Serving an axum `Router` over TLS (rustls), or over plain HTTP in development mode. Each
//! request carries the fingerprint of the client's certificate, when it showed one that the
//! server's verifier accepted ([`Peer`]), which is how the master tells agents apart and how an
//! agent knows a call came from a master.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Who is on the other end of a request's connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The SHA-256 of the client certificate (hex), when one was shown and verified.
    pub fingerprint: Option<String>,
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until the process ends: over TLS with `tls`, else plain HTTP.
pub async fn serve(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, app: Router) -> std::io::Result<()> {
    let Some(tls) = tls else {
        let app = app.layer(axum::Extension(Peer::default()));
        return axum::serve(listener, app).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, a connection reset before accept: the server goes on.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let fingerprint = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| crate::pki::fingerprint(leaf));
            tracing::debug!(%remote, client_certificate = fingerprint.is_some(), "TLS connection");
            let peer = Peer { fingerprint };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                let mut app = app.clone();
                async move {
                    use tower::Service;
                    app.call(req.map(axum::body::Body::new)).await
                }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
}
