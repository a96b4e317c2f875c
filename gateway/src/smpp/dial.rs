//! Connect and bind in one step, classified: what both the vendor sessions and the probe do.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::codec::Framed;

use crate::smpp::connection::{self, Target, Transport};
use crate::smpp::diagnostics::{self, BindFailure};
use crate::smpp::endpoint::Connection;
use crate::smpp::pdu::BindKind;
use crate::smpp::session;
use crate::smpp::tls;
use crate::smpp::trace::Tracer;

pub type Bound = Framed<Transport, crate::smpp::codec::Codec>;

/// Builds the connection target (TLS config included); a bad TLS setting is a config failure.
pub fn target(conn: &Connection, connect_timeout: Duration) -> Result<Target, BindFailure> {
    let tls = match &conn.tls {
        None => None,
        Some(s) => {
            let cfg = tls::client_config(s)
                .map_err(|e| diagnostics::config_error(format!("TLS settings: {e}")))?;
            let name = tls::server_name(&s.server_name)
                .map_err(|e| diagnostics::config_error(e.to_string()))?;
            Some((cfg, name))
        }
    };
    Ok(Target {
        host: conn.host.clone(),
        port: conn.port,
        tls,
        connect_timeout,
    })
}

/// DNS → TCP → TLS → bind → bind_resp.
pub async fn dial(
    conn: &Connection,
    kind: BindKind,
    connect_timeout: Duration,
    bind_timeout: Duration,
    vendor: &str,
    tracer: &Arc<Tracer>,
) -> Result<Bound, BindFailure> {
    let t = target(conn, connect_timeout)?;
    let (transport, _addr) = connection::connect(&t)
        .await
        .map_err(|e| diagnostics::classify_connect(&e))?;
    session::bind(
        transport,
        &conn.bind_params(kind),
        conn.tls.is_some(),
        bind_timeout,
        (vendor, tracer),
    )
    .await
}
