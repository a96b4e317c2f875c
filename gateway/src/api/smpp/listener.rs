//! Accepting connections: plain TCP or TLS, at most `max_connections` open at once (one
//! semaphore for both listeners). A connection over the limit is closed at once; a TLS
//! handshake has its own deadline. Each connection is a session task of the server.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::smpp::Ctx;
use crate::api::smpp::session;
use crate::api::smpp::tls::ReloadingTls;
use crate::smpp::connection::Transport;

/// Accepts on `listener` until the server stops. With `tls`, each connection is a TLS
/// handshake first, with the certificate current at that moment.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, tls: Option<Arc<ReloadingTls>>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = ctx.stop_token().cancelled() => return,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, retry_in = ?backoff, "SMPP accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = ctx.connections().try_acquire_owned() else {
            ctx.metrics
                .customer_sessions_closed
                .with_label_values(&["too_many_connections"])
                .inc();
            tracing::warn!(peer = %peer, max = ctx.settings.max_connections, "SMPP connection refused: --smpp-max-connections reached");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let c = ctx.clone();
        let tls = tls.clone();
        ctx.tracker().spawn(async move {
            let _permit = permit;
            let io: Transport = match tls {
                None => Box::new(socket),
                Some(t) => {
                    let handshake = t.acceptor().accept(socket);
                    match tokio::time::timeout(c.settings.tls_handshake_timeout, handshake).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer, error = %e, "SMPP TLS handshake failed");
                            c.metrics
                                .customer_sessions_closed
                                .with_label_values(&["tls_handshake"])
                                .inc();
                            return;
                        }
                        Err(_) => {
                            c.metrics
                                .customer_sessions_closed
                                .with_label_values(&["tls_handshake"])
                                .inc();
                            return;
                        }
                    }
                }
            };
            session::run(c, io, peer).await;
        });
    }
}
