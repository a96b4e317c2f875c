//! The bind exchange: bind, then wait for bind_resp, classifying every failure.

use super::Conn;
use crate::smpp::codec::{self, CodecError};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rusmpp::CommandId;

use crate::smpp::connection::Transport;
use crate::smpp::diagnostics::{self, BindFailure, Stage};
use crate::smpp::pdu::{self, BindParams};
use crate::smpp::trace::{Direction, Tracer};

/// Sends the bind and waits for bind_resp. Every way this can fail is classified.
pub async fn bind(
    transport: Transport,
    params: &BindParams,
    tls: bool,
    limit: Duration,
    trace: (&str, &Tracer),
) -> Result<Conn, BindFailure> {
    let mut conn = codec::framed(transport, codec::Codec::new());
    let cmd = pdu::bind(params, 1).map_err(|e| diagnostics::config_error(e.to_string()))?;
    trace.1.pdu(trace.0, Direction::Out, &cmd);
    let closed = || {
        diagnostics::closed_before_bind_resp(
            tls,
            params.kind.as_str(),
            params.version.as_str(),
            &params.system_type,
        )
    };
    if let Err(e) = conn.send(&cmd).await {
        return Err(diagnostics::io_during_bind(
            &e,
            tls,
            params.kind.as_str(),
            params.version.as_str(),
            &params.system_type,
        ));
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let frame = match tokio::time::timeout_at(deadline, conn.next()).await {
            Err(_) => return Err(diagnostics::bind_timeout(limit.as_secs())),
            Ok(None) => return Err(closed()),
            Ok(Some(Err(CodecError::Io(e)))) => {
                return Err(diagnostics::io_during_bind(
                    &e,
                    tls,
                    params.kind.as_str(),
                    params.version.as_str(),
                    &params.system_type,
                ));
            }
            Ok(Some(Err(e))) => {
                return Err(diagnostics::protocol_error(
                    Stage::Bind,
                    format!("undecodable answer to bind: {e}"),
                ));
            }
            Ok(Some(Ok(Err(m)))) => {
                return Err(diagnostics::protocol_error(
                    Stage::Bind,
                    format!(
                        "undecodable answer to bind (command_id 0x{:08X}): {}",
                        m.command_id, m.error
                    ),
                ));
            }
            Ok(Some(Ok(Ok(f)))) => f,
        };
        trace.1.pdu(trace.0, Direction::In, &frame);
        let status = u32::from(frame.status());
        match frame.id() {
            CommandId::BindTransceiverResp
            | CommandId::BindTransmitterResp
            | CommandId::BindReceiverResp => {
                return if status == 0 {
                    // The bind_resp made room for a read chunk; an idle session needs none.
                    codec::relax(&mut conn);
                    Ok(conn)
                } else {
                    Err(diagnostics::bind_rejected(status))
                };
            }
            CommandId::GenericNack => return Err(diagnostics::bind_generic_nack(status)),
            CommandId::EnquireLink => {
                let resp = pdu::enquire_link_resp(frame.sequence_number());
                trace.1.pdu(trace.0, Direction::Out, &resp);
                if conn.send(&resp).await.is_err() {
                    return Err(closed());
                }
            }
            CommandId::Unbind => return Err(closed()),
            other => return Err(diagnostics::bind_unexpected(&format!("{other:?}"))),
        }
    }
}
