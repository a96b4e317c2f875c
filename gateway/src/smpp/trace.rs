//! Per-vendor PDU trace, switchable at run time (HTTP). Lines go to the log (target
//! `smpp_trace`) and to a small ring buffer the HTTP API returns. Bind PDUs are traced with
//! the password replaced, in the hex dump as well as in the decoded form.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use rusmpp::Command;
use rusmpp::tokio_codec::CommandCodec;
use tokio_util::codec::Encoder;

const KEEP: usize = 500;

#[derive(Debug, Default)]
pub struct Tracer {
    enabled: AtomicBool,
    lines: Mutex<VecDeque<String>>,
}

#[derive(Debug, Clone, Copy)]
pub enum Direction {
    In,
    Out,
}

impl Tracer {
    pub fn set(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Records `cmd` if tracing is on. Cheap when off: one relaxed load.
    pub fn pdu(&self, vendor: &str, dir: Direction, cmd: &Command) {
        if !self.enabled() {
            return;
        }
        let line = render(dir, cmd);
        tracing::info!(target: "smpp_trace", vendor, "{line}");
        let mut lines = self.lines.lock().expect("trace buffer");
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .expect("trace buffer")
            .iter()
            .cloned()
            .collect()
    }
}

/// One trace line: direction, hex of the encoded PDU, decoded form; password masked in both.
pub fn render(dir: Direction, cmd: &Command) -> String {
    let masked = crate::smpp::pdu::mask_password(cmd);
    let mut buf = BytesMut::new();
    let hex = match CommandCodec::new().encode(&masked, &mut buf) {
        Ok(()) => buf.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        Err(e) => format!("<encode failed: {e}>"),
    };
    let arrow = match dir {
        Direction::In => "<<",
        Direction::Out => ">>",
    };
    format!("{arrow} {hex} {masked:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::{BindKind, BindParams, Version, bind};

    #[test]
    fn trace_masks_password_and_is_switchable() {
        let p = BindParams {
            kind: BindKind::Transceiver,
            system_id: "sys".into(),
            password: "hunter2".into(),
            system_type: String::new(),
            version: Version::V34,
            address_range: String::new(),
        };
        let cmd = bind(&p, 1).unwrap();
        let t = Tracer::default();
        t.pdu("v", Direction::Out, &cmd);
        assert!(t.lines().is_empty(), "off by default");
        t.set(true);
        t.pdu("v", Direction::Out, &cmd);
        let lines = t.lines();
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].contains("hunter2"));
        // hex of "hunter2" must not appear either
        assert!(!lines[0].contains("68756e74657232"));
        assert!(lines[0].contains("BindTransceiver"));
    }
}
