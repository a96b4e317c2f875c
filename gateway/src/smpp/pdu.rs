//! The only place SMPP PDUs are built. Everything else asks this module for a `Command`, so
//! field limits (system_id ≤ 15, password ≤ 8, …) are checked in one spot and a bad value
//! becomes a typed error instead of a panic or a silently truncated field.

use chrono::{DateTime, Utc};
use rusmpp::pdus::{
    BindReceiver, BindReceiverResp, BindTransceiver, BindTransceiverResp, BindTransmitter,
    BindTransmitterResp, DeliverSm, DeliverSmResp, QuerySmResp, SubmitMultiResp, SubmitSm,
    SubmitSmResp,
};
use rusmpp::tlvs::{MessageDeliveryRequestTlvValue, MessageSubmissionRequestTlvValue};
use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::UnsuccessSme;
use rusmpp::values::{
    DataCoding, EsmClass, InterfaceVersion, MessagePayload, MessageState, Npi, RegisteredDelivery,
    Ton,
};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};

use crate::messaging::receipt::ReceiptStat;

/// What a single bind asks for. A TX+RX pair is two binds, one of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindKind {
    Transceiver,
    Transmitter,
    Receiver,
}

impl BindKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BindKind::Transceiver => "transceiver",
            BindKind::Transmitter => "transmitter",
            BindKind::Receiver => "receiver",
        }
    }

    /// Whether this bind may send submit_sm.
    pub fn can_submit(self) -> bool {
        !matches!(self, BindKind::Receiver)
    }
}

/// SMPP interface version sent in the bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V34,
    V50,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V34 => "3.4",
            Version::V50 => "5.0",
        }
    }

    fn wire(self) -> InterfaceVersion {
        match self {
            Version::V34 => InterfaceVersion::Smpp3_4,
            Version::V50 => InterfaceVersion::Smpp5_0,
        }
    }
}

/// Credentials and identity of one bind.
#[derive(Clone, PartialEq, Eq)]
pub struct BindParams {
    pub kind: BindKind,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    pub version: Version,
    pub address_range: String,
}

impl std::fmt::Debug for BindParams {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindParams")
            .field("kind", &self.kind)
            .field("system_id", &self.system_id)
            .field("password", &"***")
            .field("system_type", &self.system_type)
            .field("version", &self.version)
            .field("address_range", &self.address_range)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PduError {
    #[error("{field} is {len} characters, SMPP allows at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} must be ASCII without NUL bytes")]
    NotAscii { field: &'static str },
}

/// Builds a C-octet string field, checking its SMPP length limit (`MAX` includes the NUL).
fn c_str<const MAX: usize>(
    field: &'static str,
    value: &str,
) -> Result<COctetString<1, MAX>, PduError> {
    if value.len() > MAX - 1 {
        return Err(PduError::TooLong {
            field,
            len: value.len(),
            max: MAX - 1,
        });
    }
    COctetString::from_string(value.to_string()).map_err(|_| PduError::NotAscii { field })
}

/// Checks the bind fields without building anything, so config validation and the PDU agree.
pub fn validate_bind(p: &BindParams) -> Result<(), PduError> {
    bind(p, 0).map(|_| ())
}

/// bind_transmitter / bind_receiver / bind_transceiver by kind, at the requested version.
pub fn bind(p: &BindParams, seq: u32) -> Result<Command, PduError> {
    let system_id = c_str::<16>("system_id", &p.system_id)?;
    let password = c_str::<9>("password", &p.password)?;
    let system_type = c_str::<13>("system_type", &p.system_type)?;
    let address_range = c_str::<41>("address_range", &p.address_range)?;
    let v = p.version.wire();
    let (ton, npi) = (Ton::Unknown, Npi::Unknown);
    let pdu: Pdu = match p.kind {
        BindKind::Transceiver => {
            BindTransceiver::new(system_id, password, system_type, v, ton, npi, address_range)
                .into()
        }
        BindKind::Transmitter => {
            BindTransmitter::new(system_id, password, system_type, v, ton, npi, address_range)
                .into()
        }
        BindKind::Receiver => {
            BindReceiver::new(system_id, password, system_type, v, ton, npi, address_range).into()
        }
    };
    Ok(Command::new(CommandStatus::EsmeRok, seq, pdu))
}

/// Replaces the password of a bind PDU, for traces. Other PDUs are returned as they are.
pub fn mask_password(cmd: &Command) -> Command {
    let masked =
        || COctetString::from_string("********".to_string()).expect("static mask is valid");
    let mut out = cmd.clone();
    let pdu = match cmd.pdu() {
        Some(Pdu::BindTransceiver(b)) => Some(Pdu::BindTransceiver(BindTransceiver {
            password: masked(),
            ..b.clone()
        })),
        Some(Pdu::BindTransmitter(b)) => Some(Pdu::BindTransmitter(BindTransmitter {
            password: masked(),
            ..b.clone()
        })),
        Some(Pdu::BindReceiver(b)) => Some(Pdu::BindReceiver(BindReceiver {
            password: masked(),
            ..b.clone()
        })),
        _ => None,
    };
    if let Some(p) = pdu {
        out.set_pdu(p);
    }
    out
}

/// One submit_sm: a whole short message or one part of a long one. The messaging layer fills
/// it from its encoder; this module only checks field limits and builds the PDU.
#[derive(Debug, Clone, Default)]
pub struct Submit {
    pub source_addr: String,
    pub destination_addr: String,
    /// Encoded text, with the UDH in front when `esm_class` has UDHI (0x40).
    pub short_message: Vec<u8>,
    pub data_coding: u8,
    pub esm_class: u8,
    pub registered_delivery: bool,
    /// Relative validity period; None = the vendor's default.
    pub validity: Option<std::time::Duration>,
    /// sar_msg_ref_num, sar_total_segments, sar_segment_seqnum.
    pub sar: Option<(u16, u8, u8)>,
    /// The whole text in message_payload (short_message then stays empty).
    pub message_payload: Option<Vec<u8>>,
}

/// An address's type: digits (an optional leading +) are international E.164, anything else
/// is an alphanumeric sender id.
fn address(field: &'static str, value: &str) -> Result<(Ton, Npi, COctetString<1, 21>), PduError> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok((Ton::International, Npi::Isdn, c_str::<21>(field, digits)?))
    } else {
        Ok((Ton::Alphanumeric, Npi::Unknown, c_str::<21>(field, value)?))
    }
}

/// SMPP relative time "YYMMDDhhmmss000R" (capped at 99 days).
pub fn relative_time(d: std::time::Duration) -> String {
    let s = d.as_secs().min(99 * 86_400 + 86_399);
    let (days, rem) = (s / 86_400, s % 86_400);
    format!(
        "0000{days:02}{:02}{:02}{:02}000R",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

pub fn submit_sm(s: &Submit, seq: u32) -> Result<Command, PduError> {
    let (src_ton, src_npi, source) = address("source_addr", &s.source_addr)?;
    let (dst_ton, dst_npi, dest) = address("destination_addr", &s.destination_addr)?;
    let too_long = |len| PduError::TooLong {
        field: "short_message",
        len,
        max: 254,
    };
    if s.short_message.len() > 254 {
        return Err(too_long(s.short_message.len()));
    }
    let sm =
        OctetString::from_slice(&s.short_message).map_err(|_| too_long(s.short_message.len()))?;
    let validity = match s.validity {
        None => EmptyOrFullCOctetString::empty(),
        Some(d) => EmptyOrFullCOctetString::from_string(relative_time(d)).map_err(|_| {
            PduError::NotAscii {
                field: "validity_period",
            }
        })?,
    };
    let mut b = SubmitSm::builder()
        .source_addr_ton(src_ton)
        .source_addr_npi(src_npi)
        .source_addr(source)
        .dest_addr_ton(dst_ton)
        .dest_addr_npi(dst_npi)
        .destination_addr(dest)
        .esm_class(EsmClass::from(s.esm_class))
        .schedule_delivery_time(EmptyOrFullCOctetString::empty())
        .validity_period(validity)
        .registered_delivery(RegisteredDelivery::from(u8::from(s.registered_delivery)))
        .data_coding(DataCoding::from(s.data_coding))
        .short_message(sm);
    if let Some((reference, total, seqnum)) = s.sar {
        b = b
            .push_tlv(MessageSubmissionRequestTlvValue::SarMsgRefNum(reference))
            .push_tlv(MessageSubmissionRequestTlvValue::SarTotalSegments(total))
            .push_tlv(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(seqnum));
    }
    if let Some(p) = &s.message_payload {
        b = b.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
            MessagePayload::new(AnyOctetString::from_vec(p.clone())),
        ));
    }
    Ok(Command::new(CommandStatus::EsmeRok, seq, b.build()))
}

/// A delivery receipt we send to a customer: deliver_sm with esm_class 0x04 (SMSC delivery
/// receipt), the SMPP 3.4 Appendix B text and the receipted_message_id and message_state TLVs.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryReceipt {
    /// Our message id, as the customer got it in submit_sm_resp.
    pub message_id: String,
    /// The message's destination (the handset the receipt is about).
    pub source_addr: String,
    /// The message's sender.
    pub destination_addr: String,
    pub stat: ReceiptStat,
    /// The text's `err:` (three digits by convention).
    pub err: String,
    pub submit_date: DateTime<Utc>,
    pub done_date: DateTime<Utc>,
}

/// Appendix B date: YYMMDDhhmm (UTC).
fn receipt_date(t: DateTime<Utc>) -> String {
    t.format("%y%m%d%H%M").to_string()
}

/// The Appendix B text of a receipt; `dlvrd` is 001 only when it was delivered.
pub fn receipt_text(r: &DeliveryReceipt) -> String {
    let dlvrd = if r.stat == ReceiptStat::Delivered {
        "001"
    } else {
        "000"
    };
    format!(
        "id:{} sub:001 dlvrd:{dlvrd} submit date:{} done date:{} stat:{} err:{} text:",
        r.message_id,
        receipt_date(r.submit_date),
        receipt_date(r.done_date),
        r.stat.as_str(),
        r.err,
    )
}

/// deliver_sm carrying a delivery receipt to a customer (see `DeliveryReceipt`).
pub fn receipt_deliver_sm(r: &DeliveryReceipt, seq: u32) -> Result<Command, PduError> {
    let (src_ton, src_npi, source) = address("source_addr", &r.source_addr)?;
    let (dst_ton, dst_npi, dest) = address("destination_addr", &r.destination_addr)?;
    let id = c_str::<65>("receipted_message_id", &r.message_id)?;
    let text = receipt_text(r);
    let sm = OctetString::from_slice(text.as_bytes()).map_err(|_| PduError::TooLong {
        field: "short_message",
        len: text.len(),
        max: 254,
    })?;
    let d = DeliverSm::builder()
        .source_addr_ton(src_ton)
        .source_addr_npi(src_npi)
        .source_addr(source)
        .dest_addr_ton(dst_ton)
        .dest_addr_npi(dst_npi)
        .destination_addr(dest)
        .esm_class(EsmClass::from(0x04))
        .short_message(sm)
        .tlvs(vec![
            MessageDeliveryRequestTlvValue::ReceiptedMessageId(id),
            MessageDeliveryRequestTlvValue::MessageState(MessageState::from(
                r.stat.message_state(),
            )),
        ])
        .build();
    Ok(Command::new(CommandStatus::EsmeRok, seq, d))
}

pub fn deliver_sm_resp(seq: u32, status: CommandStatus) -> Command {
    Command::new(
        status,
        seq,
        DeliverSmResp::new(COctetString::empty(), Vec::new()),
    )
}

pub fn enquire_link(seq: u32) -> Command {
    Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLink)
}

pub fn enquire_link_resp(seq: u32) -> Command {
    Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLinkResp)
}

pub fn unbind(seq: u32) -> Command {
    Command::new(CommandStatus::EsmeRok, seq, Pdu::Unbind)
}

pub fn unbind_resp(seq: u32) -> Command {
    Command::new(CommandStatus::EsmeRok, seq, Pdu::UnbindResp)
}

/// generic_nack for a PDU we do not handle (status ESME_RINVCMDID) or cannot parse.
pub fn generic_nack(seq: u32, status: CommandStatus) -> Command {
    Command::new(status, seq, Pdu::GenericNack)
}

// ---------------------------------------------------------------------------------------------
// The customer-facing server's side: what we answer to a customer's requests.

/// The SMPP version a customer bound with (its bind's interface_version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomerVersion {
    /// 0x33 or lower: no TLVs at all, on either side.
    V33,
    /// 0x34 up to 0x4F.
    V34,
    /// 0x50 and above (answered as 5.0).
    V50,
}

impl CustomerVersion {
    pub fn of(v: InterfaceVersion) -> Self {
        match u8::from(v) {
            0..=0x33 => Self::V33,
            0x34..=0x4F => Self::V34,
            _ => Self::V50,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V33 => "3.3",
            Self::V34 => "3.4",
            Self::V50 => "5.0",
        }
    }

    /// Whether PDUs to this customer may carry TLVs.
    pub fn has_tlvs(self) -> bool {
        self != Self::V33
    }
}

/// The successful bind_resp to a bind of `kind`: our system_id, and for 3.4 and later the
/// sc_interface_version TLV with the version we speak on this session.
pub fn bind_resp(
    kind: BindKind,
    seq: u32,
    system_id: &str,
    version: CustomerVersion,
) -> Result<Command, PduError> {
    let id = c_str::<16>("system_id", system_id)?;
    let sc = match version {
        CustomerVersion::V33 => None,
        CustomerVersion::V34 => Some(InterfaceVersion::Smpp3_4),
        CustomerVersion::V50 => Some(InterfaceVersion::Smpp5_0),
    };
    let pdu: Pdu = match kind {
        BindKind::Transmitter => BindTransmitterResp::new(id, sc).into(),
        BindKind::Receiver => BindReceiverResp::new(id, sc).into(),
        BindKind::Transceiver => BindTransceiverResp::new(id, sc).into(),
    };
    Ok(Command::new(CommandStatus::EsmeRok, seq, pdu))
}

/// The response to a request with command_id `request`, with a non-zero `status` and no body
/// (SMPP: the body of such a response is not returned).
pub fn error_resp(request: u32, seq: u32, status: CommandStatus) -> Command {
    Command::new(
        status,
        seq,
        Pdu::Other {
            command_id: CommandId::from(request | 0x8000_0000),
            body: AnyOctetString::empty(),
        },
    )
}

/// submit_sm_resp with our message id.
pub fn submit_sm_resp(seq: u32, message_id: &str) -> Result<Command, PduError> {
    let id = c_str::<65>("message_id", message_id)?;
    Ok(Command::new(
        CommandStatus::EsmeRok,
        seq,
        SubmitSmResp::new(id, Vec::new()),
    ))
}

/// submit_multi_resp: a message id and the destinations that were not accepted, each with
/// its status.
pub fn submit_multi_resp(
    seq: u32,
    status: CommandStatus,
    message_id: &str,
    unsuccess: &[(String, CommandStatus)],
) -> Result<Command, PduError> {
    let id = c_str::<65>("message_id", message_id)?;
    let smes = unsuccess
        .iter()
        .map(|(dest, s)| {
            let (ton, npi, addr) = address("destination_addr", dest)?;
            Ok(UnsuccessSme::new(ton, npi, addr, *s))
        })
        .collect::<Result<Vec<_>, PduError>>()?;
    Ok(Command::new(
        status,
        seq,
        SubmitMultiResp::new(id, smes, Vec::new()),
    ))
}

/// query_sm_resp: the message's state, when it became final ("" while it is not) and the
/// network error code.
pub fn query_sm_resp(
    seq: u32,
    message_id: &str,
    final_date: &str,
    state: MessageState,
    error_code: u8,
) -> Result<Command, PduError> {
    let id = c_str::<65>("message_id", message_id)?;
    let date = EmptyOrFullCOctetString::from_string(final_date.to_string()).map_err(|_| {
        PduError::NotAscii {
            field: "final_date",
        }
    })?;
    Ok(Command::new(
        CommandStatus::EsmeRok,
        seq,
        QuerySmResp::new(id, date, state, error_code),
    ))
}

/// cancel_sm_resp (ESME_ROK).
pub fn cancel_sm_resp(seq: u32) -> Command {
    Command::new(CommandStatus::EsmeRok, seq, Pdu::CancelSmResp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rusmpp::CommandId;
    use rusmpp::tokio_codec::CommandCodec;
    use tokio_util::codec::Encoder;

    fn params(kind: BindKind, version: Version) -> BindParams {
        BindParams {
            kind,
            system_id: "telxMBa1".into(),
            password: "secret12".into(),
            system_type: "ESME".into(),
            version,
            address_range: String::new(),
        }
    }

    fn encode(cmd: &Command) -> Vec<u8> {
        let mut b = BytesMut::new();
        CommandCodec::new().encode(cmd, &mut b).unwrap();
        b.to_vec()
    }

    #[test]
    fn bind_kind_sets_command_id_and_version_byte() {
        for (kind, id) in [
            (BindKind::Transceiver, CommandId::BindTransceiver),
            (BindKind::Transmitter, CommandId::BindTransmitter),
            (BindKind::Receiver, CommandId::BindReceiver),
        ] {
            for (v, byte) in [(Version::V34, 0x34u8), (Version::V50, 0x50u8)] {
                let cmd = bind(&params(kind, v), 7).unwrap();
                assert_eq!(cmd.id(), id);
                assert_eq!(cmd.sequence_number(), 7);
                let wire = encode(&cmd);
                // header 16 + "telxMBa1\0" 9 + "secret12\0" 9 + "ESME\0" 5 → interface_version
                assert_eq!(wire[16 + 9 + 9 + 5], byte);
            }
        }
    }

    #[test]
    fn too_long_fields_are_errors_not_truncation() {
        let mut p = params(BindKind::Transceiver, Version::V34);
        p.password = "123456789".into();
        assert_eq!(
            bind(&p, 1).unwrap_err(),
            PduError::TooLong {
                field: "password",
                len: 9,
                max: 8
            }
        );
        let mut p = params(BindKind::Transceiver, Version::V34);
        p.system_id = "x".repeat(16);
        assert!(matches!(
            bind(&p, 1),
            Err(PduError::TooLong {
                field: "system_id",
                ..
            })
        ));
    }

    #[test]
    fn mask_password_hides_it_in_debug_and_wire() {
        let cmd = bind(&params(BindKind::Transmitter, Version::V34), 1).unwrap();
        let masked = mask_password(&cmd);
        assert!(!format!("{masked:?}").contains("secret12"));
        assert!(!String::from_utf8_lossy(&encode(&masked)).contains("secret12"));
        assert!(String::from_utf8_lossy(&encode(&cmd)).contains("secret12"));
        assert!(!format!("{:?}", params(BindKind::Receiver, Version::V50)).contains("secret12"));
    }

    fn receipt(stat: ReceiptStat) -> DeliveryReceipt {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        DeliveryReceipt {
            message_id: "0b8e5a36-3c1f-4d7e-9a59-0d2f4c1e7a10".into(),
            source_addr: "+15551234567".into(),
            destination_addr: "ACME".into(),
            stat,
            err: "000".into(),
            submit_date: at("2026-03-04T05:06:59Z"),
            done_date: at("2026-03-04T05:07:01Z"),
        }
    }

    #[test]
    fn receipt_text_is_appendix_b() {
        assert_eq!(
            receipt_text(&receipt(ReceiptStat::Delivered)),
            "id:0b8e5a36-3c1f-4d7e-9a59-0d2f4c1e7a10 sub:001 dlvrd:001 \
             submit date:2603040506 done date:2603040507 stat:DELIVRD err:000 text:"
        );
        let t = receipt_text(&DeliveryReceipt {
            err: "011".into(),
            ..receipt(ReceiptStat::Undeliverable)
        });
        assert!(
            t.contains(" dlvrd:000 ") && t.contains("stat:UNDELIV err:011 "),
            "{t}"
        );
    }

    #[test]
    fn receipt_deliver_sm_round_trips_through_our_receipt_parser() {
        use crate::messaging::receipt::{Inbound, classify};
        for stat in ReceiptStat::ALL {
            let r = DeliveryReceipt {
                err: "042".into(),
                ..receipt(stat)
            };
            let cmd = receipt_deliver_sm(&r, 9).unwrap();
            assert_eq!((cmd.id(), cmd.sequence_number()), (CommandId::DeliverSm, 9));
            // Through the wire and back, as a customer reads it.
            let wire = encode(&cmd);
            let mut buf = BytesMut::from(&wire[..]);
            let back = tokio_util::codec::Decoder::decode(&mut CommandCodec::new(), &mut buf)
                .unwrap()
                .unwrap();
            let Some(Pdu::DeliverSm(d)) = back.pdu() else {
                panic!("not a deliver_sm: {back:?}")
            };
            assert_eq!(u8::from(d.esm_class), 0x04);
            assert_eq!(d.source_addr.to_string(), "15551234567");
            assert_eq!(d.destination_addr.to_string(), "ACME");
            let Inbound::Receipt(p) = classify(d).unwrap() else {
                panic!("not read as a receipt")
            };
            assert_eq!(p.message_id, r.message_id);
            assert_eq!(p.stat, stat);
            assert_eq!(p.err.as_deref(), Some("042"));
            assert_eq!(p.submit_date.as_deref(), Some("2603040506"));
            assert_eq!(p.done_date.as_deref(), Some("2603040507"));
            assert_eq!(p.sub.as_deref(), Some("001"));
            let dlvrd = if stat == ReceiptStat::Delivered {
                "001"
            } else {
                "000"
            };
            assert_eq!(p.dlvrd.as_deref(), Some(dlvrd));
            // The TLVs are there, not only the text: the parser prefers them.
            let tlvs = format!("{:?}", d.tlvs());
            assert!(tlvs.contains("ReceiptedMessageId"), "{tlvs}");
            assert!(tlvs.contains("MessageState"), "{tlvs}");
        }
    }

    #[test]
    fn receipt_deliver_sm_refuses_an_id_too_long_for_its_tlv() {
        let r = DeliveryReceipt {
            message_id: "x".repeat(65),
            ..receipt(ReceiptStat::Delivered)
        };
        assert_eq!(
            receipt_deliver_sm(&r, 1).unwrap_err(),
            PduError::TooLong {
                field: "receipted_message_id",
                len: 65,
                max: 64
            }
        );
    }

    #[test]
    fn server_answers_encode_as_the_spec_says() {
        // bind_resp: system_id, then sc_interface_version only from 3.4 on.
        let v33 = encode(&bind_resp(BindKind::Transmitter, 5, "gw", CustomerVersion::V33).unwrap());
        assert_eq!(&v33[4..8], &0x8000_0002u32.to_be_bytes());
        assert_eq!(&v33[16..], b"gw\0");
        let v34 = encode(&bind_resp(BindKind::Transceiver, 5, "gw", CustomerVersion::V34).unwrap());
        assert_eq!(&v34[4..8], &0x8000_0009u32.to_be_bytes());
        // TLV 0x0210, length 1, 0x34.
        assert_eq!(&v34[16..], &[b'g', b'w', 0, 0x02, 0x10, 0, 1, 0x34]);
        let v50 = encode(&bind_resp(BindKind::Receiver, 5, "gw", CustomerVersion::V50).unwrap());
        assert_eq!(*v50.last().unwrap(), 0x50);
        assert_eq!(
            CustomerVersion::of(InterfaceVersion::Smpp3_3OrEarlier(0x33)),
            CustomerVersion::V33
        );
        assert_eq!(
            CustomerVersion::of(InterfaceVersion::Smpp3_4),
            CustomerVersion::V34
        );
        assert_eq!(
            CustomerVersion::of(InterfaceVersion::Other(0x51)),
            CustomerVersion::V50
        );
        // An error response is the header alone, with the request's response command_id.
        let e = encode(&error_resp(0x0000_0004, 9, CommandStatus::EsmeRinvbndsts));
        assert_eq!(
            e,
            [0, 0, 0, 16, 0x80, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9].to_vec()
        );
        let ok = encode(&submit_sm_resp(3, "abc").unwrap());
        assert_eq!(&ok[16..], b"abc\0");
        let m = encode(
            &submit_multi_resp(
                4,
                CommandStatus::EsmeRok,
                "m1",
                &[("4670".into(), CommandStatus::EsmeRinvdstadr)],
            )
            .unwrap(),
        );
        // message_id, no_unsuccess 1, ton 1 npi 1 "4670", error_status_code 0x0B.
        assert_eq!(
            &m[16..],
            &[
                b'm', b'1', 0, 1, 1, 1, b'4', b'6', b'7', b'0', 0, 0, 0, 0, 0x0B
            ]
        );
        let q = encode(
            &query_sm_resp(6, "m1", "260304050607000+", MessageState::Delivered, 11).unwrap(),
        );
        assert_eq!(&q[16..19], b"m1\0");
        assert_eq!(&q[19..36], b"260304050607000+\0");
        assert_eq!(&q[36..], &[2, 11]);
        let q = encode(&query_sm_resp(6, "m1", "", MessageState::Enroute, 0).unwrap());
        assert_eq!(&q[16..], &[b'm', b'1', 0, 0, 1, 0]);
    }

    #[test]
    fn submit_sm_encodes() {
        let s = Submit {
            source_addr: "12345".into(),
            destination_addr: "15551234567".into(),
            short_message: b"hello".to_vec(),
            registered_delivery: true,
            ..Submit::default()
        };
        let cmd = submit_sm(&s, 3).unwrap();
        assert_eq!(cmd.id(), CommandId::SubmitSm);
        assert!(encode(&cmd).ends_with(b"hello"));
    }
}
