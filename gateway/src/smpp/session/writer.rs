//! The writer task: coalesces every queued PDU into one buffer and flushes once per batch.

use super::{Conn, Observer};
use std::sync::Arc;

use futures::SinkExt;
use rusmpp::Command;
use tokio::sync::mpsc;

use crate::smpp::trace::{Direction, Tracer};

pub(super) async fn writer(
    mut sink: futures::stream::SplitSink<Conn, Command>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    vendor: Arc<str>,
    tracer: Arc<Tracer>,
    observer: Arc<dyn Observer>,
) {
    const BATCH: usize = 256;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(cmd) = next.take() {
            tracer.pdu(&vendor, Direction::Out, &cmd);
            observer.pdu_out(cmd.id());
            if sink.feed(cmd).await.is_err() {
                return;
            }
            n += 1;
            if n < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}
