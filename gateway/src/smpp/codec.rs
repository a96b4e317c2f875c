//! Framing on rusmpp's codec that survives a malformed PDU.
//!
//! rusmpp's `CommandCodec` reports a body it cannot decode as a stream error, and a `Framed`
//! stream ends at its first error, so one bad PDU (e.g. a receipted_message_id TLV without
//! its NUL, which some vendors send) would take the whole session down. This codec cuts the
//! frame by its command_length first and decodes it on its own: a bad body becomes a
//! `Malformed` item carrying the header (so it can be answered), and the session goes on.
//! Only a bad length (the stream cannot be re-synchronised) is fatal.
//!
//! Buffers follow the traffic (an idle bind is mostly its buffers otherwise): `framed` starts
//! both tiny instead of tokio-util's 8 KiB each; a partial PDU makes room for a whole read
//! chunk, so a busy session still reads many PDUs per syscall; and an enquire_link or its
//! response (the keep-alive of an idle session) that leaves a buffer empty shrinks it back.

use bytes::BytesMut;
use rusmpp::tokio_codec::{CommandCodec, DecodeError, EncodeError};
use rusmpp::{Command, CommandId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, Framed};

/// Largest PDU accepted by default (SMPP has no limit; message_payload is at most 64 KiB).
pub const MAX_PDU: usize = 128 * 1024;

/// Read buffer of an idle session: one header (an enquire_link is exactly that).
const IDLE_READ: usize = 16;
/// Room made for the next read once a PDU is partly in: what tokio-util starts with.
const READ_CHUNK: usize = 8 * 1024;
/// A write buffer this small is kept when idle; a larger one is dropped.
const IDLE_WRITE: usize = 64;

/// A framed connection whose buffers start tiny and grow with the traffic.
pub fn framed<T: AsyncRead + AsyncWrite>(io: T, codec: Codec) -> Framed<T, Codec> {
    let mut f = Framed::with_capacity(io, codec, IDLE_READ);
    *f.write_buffer_mut() = BytesMut::new();
    // with_capacity also sets the flush threshold to the capacity: keep tokio-util's, so a
    // batch of PDUs is still written with one flush.
    f.set_backpressure_boundary(READ_CHUNK);
    f
}

/// Gives back the buffers' room when nothing is buffered (after the bind exchange).
pub fn relax<T>(f: &mut Framed<T, Codec>) {
    shrink(f.read_buffer_mut(), IDLE_READ);
    shrink(f.write_buffer_mut(), 0);
}

/// Replaces an empty buffer holding more than `keep` bytes of room by one of `keep`.
fn shrink(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > keep.max(IDLE_WRITE) {
        *buf = BytesMut::with_capacity(keep);
    }
}

/// The PDUs an idle session exchanges.
fn is_keepalive(command_id: u32) -> bool {
    command_id == u32::from(CommandId::EnquireLink)
        || command_id == u32::from(CommandId::EnquireLinkResp)
}

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
            if !src.is_empty() {
                src.reserve(READ_CHUNK.saturating_sub(src.len()));
            }
            return Ok(None);
        }
        let word = |i: usize| u32::from_be_bytes([src[i], src[i + 1], src[i + 2], src[i + 3]]);
        let len = word(0) as usize;
        if !(16..=self.max).contains(&len) {
            return Err(CodecError::Length { len, max: self.max });
        }
        if src.len() < len {
            src.reserve(len.max(READ_CHUNK) - src.len());
            return Ok(None);
        }
        let (command_id, sequence_number) = (word(4), word(12));
        let mut frame = src.split_to(len);
        if is_keepalive(command_id) {
            shrink(src, IDLE_READ);
        }
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
        if is_keepalive(u32::from(cmd.id())) {
            shrink(dst, 0);
        }
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
    fn a_partial_pdu_makes_room_for_a_read_chunk_and_a_keepalive_gives_it_back() {
        let mut c = Codec::new();
        let resp = wire(&pdu::submit_sm_resp(7, "abc").unwrap());
        // Half a submit_sm_resp in a tiny buffer: room for a whole chunk, not just this PDU.
        let mut b = BytesMut::with_capacity(IDLE_READ);
        b.extend_from_slice(&resp[..10]);
        assert!(c.decode(&mut b).unwrap().is_none());
        assert!(b.capacity() >= READ_CHUNK, "{}", b.capacity());
        b.extend_from_slice(&resp[10..]);
        assert!(c.decode(&mut b).unwrap().unwrap().is_ok());
        // A busy session keeps its room: a response left the buffer empty, not a keep-alive.
        assert!(b.capacity() >= READ_CHUNK - resp.len(), "{}", b.capacity());
        // The keep-alive of an idle session, alone in the buffer: the room goes.
        b.extend_from_slice(&wire(&pdu::enquire_link(8)));
        assert!(c.decode(&mut b).unwrap().unwrap().is_ok());
        assert!(b.is_empty());
        assert_eq!(b.capacity(), IDLE_READ);
        // With more behind it, a keep-alive keeps the buffer.
        let mut b = wire(&pdu::enquire_link(9));
        b.extend_from_slice(&resp);
        let cap = b.capacity();
        assert!(c.decode(&mut b).unwrap().unwrap().is_ok());
        assert_eq!(b.len(), resp.len());
        assert!(b.capacity() >= cap - 16);
    }

    #[test]
    fn encoding_a_keepalive_into_an_empty_buffer_drops_its_room() {
        let mut c = Codec::new();
        let mut big = BytesMut::with_capacity(READ_CHUNK);
        c.encode(&pdu::enquire_link_resp(3), &mut big).unwrap();
        assert_eq!(big.len(), 16);
        assert!(big.capacity() < READ_CHUNK, "{}", big.capacity());
        // Any other PDU, or a keep-alive behind queued bytes, keeps it.
        let mut busy = BytesMut::with_capacity(READ_CHUNK);
        c.encode(&pdu::submit_sm_resp(4, "x").unwrap(), &mut busy)
            .unwrap();
        c.encode(&pdu::enquire_link(5), &mut busy).unwrap();
        assert!(busy.capacity() >= READ_CHUNK - busy.len());
    }

    #[tokio::test]
    async fn framed_starts_small_and_still_writes_a_batch_in_one_flush() {
        use futures::{FutureExt, SinkExt};
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::io::duplex(4096);
        let mut f = framed(a, Codec::new());
        assert_eq!(f.read_buffer().capacity(), IDLE_READ);
        assert_eq!(f.write_buffer().capacity(), 0);
        // Fed, not flushed: nothing reaches the peer (a flush threshold of the tiny initial
        // capacity would write each PDU on its own).
        for seq in 1..=3 {
            f.feed(pdu::enquire_link(seq)).await.unwrap();
        }
        let mut buf = [0u8; 64];
        assert!(b.read(&mut buf).now_or_never().is_none());
        SinkExt::<Command>::flush(&mut f).await.unwrap();
        let mut got = 0;
        while got < 48 {
            got += b.read(&mut buf[got..]).await.unwrap();
        }
        f.read_buffer_mut().reserve(READ_CHUNK);
        f.write_buffer_mut().reserve(READ_CHUNK);
        relax(&mut f);
        assert_eq!(f.read_buffer().capacity(), IDLE_READ);
        assert_eq!(f.write_buffer().capacity(), 0);
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
