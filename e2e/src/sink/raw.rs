//! Raw SMPP 3.4 PDUs: just what the messaging sink and its benchmark client use.

pub const BIND_RECEIVER: u32 = 0x0000_0001;
pub const BIND_TRANSMITTER: u32 = 0x0000_0002;
pub const SUBMIT_SM: u32 = 0x0000_0004;
pub const DELIVER_SM: u32 = 0x0000_0005;
pub const UNBIND: u32 = 0x0000_0006;
pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
pub const ENQUIRE_LINK: u32 = 0x0000_0015;
pub const GENERIC_NACK: u32 = 0x8000_0000;
pub const RESP: u32 = 0x8000_0000;
pub const ESME_RINVCMDID: u32 = 0x0000_0003;

/// Appends one PDU: header, then whatever `body` writes; patches command_length.
pub fn pdu(out: &mut Vec<u8>, id: u32, status: u32, seq: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    body(out);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A C-Octet String.
pub fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// One PDU framed off the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub id: u32,
    pub status: u32,
    pub seq: u32,
    pub body: &'a [u8],
    /// command_length: how much of the buffer it takes.
    pub len: usize,
}

/// The first whole PDU in `buf`; None while incomplete; Err(length) on a nonsense length.
pub fn frame(buf: &[u8]) -> Result<Option<Frame<'_>>, u32> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let len = word(0);
    if !(16..=65_536).contains(&len) {
        return Err(len);
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Frame {
        id: word(4),
        status: word(8),
        seq: word(12),
        body: &buf[16..len],
        len,
    }))
}

/// Splits a C-Octet String off the front of `b`.
pub fn take_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = b.iter().position(|&c| c == 0)?;
    Some((&b[..nul], &b[nul + 1..]))
}

/// source_addr, destination_addr and registered_delivery of a submit_sm body.
pub fn submit_fields(b: &[u8]) -> Option<(&[u8], &[u8], u8)> {
    let (_service_type, b) = take_cstr(b)?;
    let (src, b) = take_cstr(b.get(2..)?)?;
    let (dst, b) = take_cstr(b.get(2..)?)?;
    // esm_class, protocol_id, priority_flag, then two times.
    let (_sched, b) = take_cstr(b.get(3..)?)?;
    let (_validity, b) = take_cstr(b)?;
    Some((src, dst, *b.first()?))
}

/// A bind_transceiver (TRX, SMPP 3.4).
pub fn bind_transceiver(out: &mut Vec<u8>, seq: u32, system_id: &str, password: &str) {
    pdu(out, BIND_TRANSCEIVER, 0, seq, |o| {
        cstr(o, system_id.as_bytes());
        cstr(o, password.as_bytes());
        cstr(o, b"");
        o.extend_from_slice(&[0x34, 0, 0]);
        cstr(o, b"");
    });
}

/// A submit_sm asking for a receipt.
pub fn submit_sm(out: &mut Vec<u8>, seq: u32, src: &[u8], dst: &[u8], text: &[u8]) {
    pdu(out, SUBMIT_SM, 0, seq, |o| {
        cstr(o, b"");
        o.extend_from_slice(&[1, 1]);
        cstr(o, src);
        o.extend_from_slice(&[1, 1]);
        cstr(o, dst);
        o.extend_from_slice(&[0, 0, 0]);
        cstr(o, b"");
        cstr(o, b"");
        o.extend_from_slice(&[1, 0, 0, 0, text.len() as u8]);
        o.extend_from_slice(text);
    });
}

/// A DELIVRD receipt for `id`, from the handset `src` to the sender `dst`.
pub fn receipt(out: &mut Vec<u8>, seq: u32, id: &str, src: &[u8], dst: &[u8]) {
    pdu(out, DELIVER_SM, 0, seq, |o| {
        cstr(o, b"");
        o.extend_from_slice(&[1, 1]);
        cstr(o, src);
        o.extend_from_slice(&[1, 1]);
        cstr(o, dst);
        // esm_class: SMSC delivery receipt; protocol_id, priority_flag.
        o.extend_from_slice(&[0x04, 0, 0]);
        cstr(o, b"");
        cstr(o, b"");
        let text = format!(
            "id:{id} sub:001 dlvrd:001 submit date:2501011200 done date:2501011200 stat:DELIVRD err:000 text:"
        );
        // registered_delivery, replace_if_present, data_coding, sm_default_msg_id, length.
        o.extend_from_slice(&[0, 0, 0, 0, text.len() as u8]);
        o.extend_from_slice(text.as_bytes());
        // receipted_message_id and message_state (DELIVERED).
        o.extend_from_slice(&0x001Eu16.to_be_bytes());
        o.extend_from_slice(&((id.len() + 1) as u16).to_be_bytes());
        cstr(o, id.as_bytes());
        o.extend_from_slice(&0x0427u16.to_be_bytes());
        o.extend_from_slice(&1u16.to_be_bytes());
        o.push(2);
    });
}
