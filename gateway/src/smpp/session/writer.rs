//! The writer task: coalesces every queued PDU into one buffer and flushes once per batch.
//! Shared by the vendor sessions (unbounded queue) and the customer-facing server's sessions
//! (bounded queue): [`write_batches`].
//!
//! Queues hold boxed PDUs: a channel allocates its first block of 32 slots at once, and 32
//! inline Commands are ~9 KiB per idle session; this task holds only the box, too.

use super::{Conn, Observer};
use std::future::Future;
use std::sync::Arc;

use futures::SinkExt;
use futures::future::poll_fn;
use rusmpp::Command;
use tokio::sync::mpsc;

use crate::smpp::trace::{Direction, Tracer};

/// Where a writer takes its PDUs from.
pub trait Queue: Send {
    fn recv(&mut self) -> impl Future<Output = Option<Box<Command>>> + Send;
    /// The next PDU if one is queued already.
    fn try_recv(&mut self) -> Option<Box<Command>>;
}

impl Queue for mpsc::UnboundedReceiver<Box<Command>> {
    fn recv(&mut self) -> impl Future<Output = Option<Box<Command>>> + Send {
        mpsc::UnboundedReceiver::recv(self)
    }

    fn try_recv(&mut self) -> Option<Box<Command>> {
        mpsc::UnboundedReceiver::try_recv(self).ok()
    }
}

impl Queue for mpsc::Receiver<Box<Command>> {
    fn recv(&mut self) -> impl Future<Output = Option<Box<Command>>> + Send {
        mpsc::Receiver::recv(self)
    }

    fn try_recv(&mut self) -> Option<Box<Command>> {
        mpsc::Receiver::try_recv(self).ok()
    }
}

/// Writes what `rx` yields until it ends (every sender dropped) or the connection fails: each
/// batch of queued PDUs (up to 256) is encoded into one buffer and flushed once. `on_out`
/// sees every PDU before it is written (trace, metrics).
pub async fn write_batches(
    mut sink: futures::stream::SplitSink<Conn, Command>,
    mut rx: impl Queue,
    mut on_out: impl FnMut(&Command) + Send,
) {
    const BATCH: usize = 256;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut n = 0;
        let mut yielded = false;
        while let Some(cmd) = next.take() {
            on_out(&cmd);
            // Room first, then the PDU moves straight from its box into the sink.
            if poll_fn(|cx| sink.poll_ready_unpin(cx)).await.is_err()
                || sink.start_send_unpin(*cmd).is_err()
            {
                return;
            }
            n += 1;
            if n < BATCH {
                next = rx.try_recv();
                if next.is_none() && !yielded {
                    // Once per batch, let the tasks that are ready (the requests' senders)
                    // queue theirs before the write: under load one syscall then carries
                    // several PDUs instead of one each; idle, the task runs again at once.
                    yielded = true;
                    tokio::task::yield_now().await;
                    next = rx.try_recv();
                }
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

pub(super) async fn writer(
    sink: futures::stream::SplitSink<Conn, Command>,
    rx: mpsc::UnboundedReceiver<Box<Command>>,
    vendor: Arc<str>,
    tracer: Arc<Tracer>,
    observer: Arc<dyn Observer>,
) {
    write_batches(sink, rx, |cmd| {
        tracer.pdu(&vendor, Direction::Out, cmd);
        observer.pdu_out(cmd.id());
    })
    .await
}
