//! Framing on rusmpp's codec that survives a malformed PDU.
//!
//! rusmpp's `CommandCodec` reports a body it cannot decode as a stream error, and a `Framed`
//! stream ends at its first error, so one bad PDU (e.g. a receipted_message_id TLV without
//! its NUL, which some vendors send) would take the whole session down. This codec cuts the
//! frame by its command_length first and decodes it on its own: a bad body becomes a
//! `Malformed` item carrying the header (so it can be answered), and the session goes on.
//! Only a bad length (the stream cannot be re-synchronised) is fatal.

use bytes::BytesMut;
use rusmpp::Command;
use rusmpp::tokio_codec::{CommandCodec, DecodeError, EncodeError};
use tokio_util::codec::{Decoder, Encoder};

/// Largest PDU accepted by default (SMPP has no limit; message_payload is at most 64 KiB).
pub const MAX_PDU: usize = 128 * 1024;

/// A PDU whose header was read but whose body was not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub command_id: u32,
    pub sequence_number: u32,
    pub error: String,
}

impl Malformed {
    pub fn is_request(&self) -> bool {
        self.command_id & 0x8000_0000 == 0
    }
}

/// What the stream yields: a PDU, or the header of one that could not be decoded.
pub type Frame = Result<Command, Malformed>;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("command_length {len} is outside 16..={max}; the stream cannot be re-synchronised")]
    Length { len: usize, max: usize },
}

pub struct Codec {
    inner: CommandCodec,
    max: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self::with_max(MAX_PDU)
    }
}

impl Codec {
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec that refuses PDUs longer than `max` bytes (the customer-facing server's limit).
    pub fn with_max(max: usize) -> Self {
        Self {
            inner: CommandCodec::new(),
            max: max.max(16),
        }
    }
}

impl Decoder for Codec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if src.len() < 16 {
            return Ok(None);
        }
        let word = |i: usize| u32::from_be_bytes([src[i], src[i + 1], src[i + 2], src[i + 3]]);
        let len = word(0) as usize;
        if !(16..=self.max).contains(&len) {
            return Err(CodecError::Length { len, max: self.max });
        }
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let (command_id, sequence_number) = (word(4), word(12));
        let mut frame = src.split_to(len);
        let malformed = |error: String| Malformed {
            command_id,
            sequence_number,
            error,
        };
        Ok(Some(match self.inner.decode(&mut frame) {
            Ok(Some(cmd)) => Ok(cmd),
            Ok(None) => Err(malformed("the body is shorter than its fields".into())),
            Err(DecodeError::Io(e)) => return Err(e.into()),
            Err(e) => {
                self.inner = CommandCodec::new();
                Err(malformed(e.to_string()))
            }
        }))
    }
}

impl Encoder<&Command> for Codec {
    type Error = std::io::Error;

    fn encode(&mut self, cmd: &Command, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        self.inner.encode(cmd, dst).map_err(|e| match e {
            EncodeError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        })
    }
}

impl Encoder<Command> for Codec {
    type Error = std::io::Error;

    fn encode(&mut self, cmd: Command, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        Encoder::<&Command>::encode(self, &cmd, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu;

    fn wire(cmd: &Command) -> BytesMut {
        let mut b = BytesMut::new();
        Codec::new().encode(cmd, &mut b).unwrap();
        b
    }

    #[test]
    fn a_bad_body_is_an_item_and_the_next_pdu_still_decodes() {
        // deliver_sm whose body is garbage, then a good enquire_link.
        let mut b = BytesMut::new();
        b.extend_from_slice(&[
            0, 0, 0, 20, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        b.extend_from_slice(&wire(&pdu::enquire_link(10)));
        let mut c = Codec::new();
        let bad = c.decode(&mut b).unwrap().unwrap().unwrap_err();
        assert_eq!((bad.command_id, bad.sequence_number), (5, 9));
        assert!(bad.is_request());
        let good = c.decode(&mut b).unwrap().unwrap().unwrap();
        assert_eq!(good.sequence_number(), 10);
        assert!(b.is_empty());
    }

    #[test]
    fn partial_frames_wait_and_bad_lengths_are_fatal() {
        let full = wire(&pdu::enquire_link(3));
        let mut part = BytesMut::from(&full[..10]);
        assert!(Codec::new().decode(&mut part).unwrap().is_none());
        let mut huge = BytesMut::from(&[0x7F, 0, 0, 0, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert!(matches!(
            Codec::new().decode(&mut huge),
            Err(CodecError::Length { .. })
        ));
        let mut tiny = BytesMut::from(&[0, 0, 0, 8, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert!(matches!(
            Codec::new().decode(&mut tiny),
            Err(CodecError::Length { len: 8, .. })
        ));
        // A smaller limit of our own (the customer-facing server's --smpp-max-pdu-bytes).
        let full = wire(&pdu::enquire_link(4));
        let mut ok = BytesMut::from(&full[..]);
        assert!(Codec::with_max(16).decode(&mut ok).unwrap().is_some());
        let mut big = BytesMut::from(&[0, 0, 0, 17, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 1, 0][..]);
        assert!(matches!(
            Codec::with_max(16).decode(&mut big),
            Err(CodecError::Length { len: 17, max: 16 })
        ));
    }
}
