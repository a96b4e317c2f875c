//! Accepting connections: plain TCP or TLS, at most `max_connections` open at once (one
//! semaphore for both listeners). A connection over the limit has its bind refused with
//! ESME_RBINDFAIL (a few at a time; beyond that it is just closed); a TLS handshake has its
//! own deadline. Each connection is a session task of the server.

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
        let _ = socket.set_nodelay(true);
        let c = ctx.clone();
        let tls = tls.clone();
        let Ok(permit) = ctx.connections().try_acquire_owned() else {
            ctx.metrics
                .customer_sessions_closed
                .with_label_values(&["too_many_connections"])
                .inc();
            tracing::warn!(peer = %peer, max = ctx.settings.max_connections, "SMPP connection refused: --smpp-max-connections reached");
            // A few at a time are told why (their bind gets ESME_RBINDFAIL); beyond that the
            // connection is just closed.
            if let Ok(p) = ctx.refusals().try_acquire_owned() {
                ctx.tracker().spawn(async move {
                    let _p = p;
                    if let Some(io) = handshake(&c, socket, peer, tls).await {
                        session::refuse(io, c.settings.tls_handshake_timeout).await;
                    }
                });
            }
            continue;
        };
        ctx.tracker().spawn(async move {
            let _permit = permit;
            if let Some(io) = handshake(&c, socket, peer, tls).await {
                session::run(c, io, peer).await;
            }
        });
    }
}

/// The connection as a byte stream: as it is, or after the TLS handshake (None when that
/// failed or took too long).
async fn handshake(
    ctx: &Ctx,
    socket: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<Arc<ReloadingTls>>,
) -> Option<Transport> {
    let Some(t) = tls else {
        return Some(Box::new(socket));
    };
    let accept = t.acceptor().accept(socket);
    match tokio::time::timeout(ctx.settings.tls_handshake_timeout, accept).await {
        Ok(Ok(s)) => Some(Box::new(s)),
        failed => {
            if let Ok(Err(e)) = failed {
                tracing::info!(peer = %peer, error = %e, "SMPP TLS handshake failed");
            }
            ctx.metrics
                .customer_sessions_closed
                .with_label_values(&["tls_handshake"])
                .inc();
            None
        }
    }
}
