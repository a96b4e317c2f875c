//! Delivery receipts: telling a receipt from an MO in a deliver_sm, and reading the receipt's
//! text (SMPP 3.4 Appendix B, as vendors actually write it) and TLVs.
//!
//! TLVs win over text: `receipted_message_id` over `id:`, `message_state` over `stat:`. Vendors
//! that send both often write the text id in another base, and the TLV is the one meant for
//! machines.

use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::TlvValue;

/// Terminal/non-terminal receipt state, from `stat:` text or message_state TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptStat {
    Delivered,
    Expired,
    Deleted,
    Undeliverable,
    Accepted,
    Unknown,
    Rejected,
    Enroute,
    Skipped,
}

impl ReceiptStat {
    pub const ALL: [ReceiptStat; 9] = [
        Self::Delivered,
        Self::Expired,
        Self::Deleted,
        Self::Undeliverable,
        Self::Accepted,
        Self::Unknown,
        Self::Rejected,
        Self::Enroute,
        Self::Skipped,
    ];

    /// The Appendix B spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "DELIVRD",
            Self::Expired => "EXPIRED",
            Self::Deleted => "DELETED",
            Self::Undeliverable => "UNDELIV",
            Self::Accepted => "ACCEPTD",
            Self::Unknown => "UNKNOWN",
            Self::Rejected => "REJECTD",
            Self::Enroute => "ENROUTE",
            Self::Skipped => "SKIPPED",
        }
    }

    /// Whether the message is done: every state but ENROUTE is final (SMPP 5.0 4.7.15).
    pub fn is_final(self) -> bool {
        self != Self::Enroute
    }

    /// The message_state TLV value (SMPP 3.4 table 5-6); `from_message_state` reads it back.
    pub fn message_state(self) -> u8 {
        match self {
            Self::Enroute => 1,
            Self::Delivered => 2,
            Self::Expired => 3,
            Self::Deleted => 4,
            Self::Undeliverable => 5,
            Self::Accepted => 6,
            Self::Unknown => 7,
            Self::Rejected => 8,
            Self::Skipped => 9,
        }
    }

    /// SMPP 3.4 table 5-6. `None` for 0 (SCHEDULED, never in a receipt) and anything above 9.
    pub fn from_message_state(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Enroute,
            2 => Self::Delivered,
            3 => Self::Expired,
            4 => Self::Deleted,
            5 => Self::Undeliverable,
            6 => Self::Accepted,
            7 => Self::Unknown,
            8 => Self::Rejected,
            9 => Self::Skipped,
            _ => return None,
        })
    }

    /// A `stat:` value: any case, the 7-letter form or the spelled-out word, or the
    /// message_state number some vendors write instead.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_uppercase();
        if let Ok(n) = s.parse::<u8>() {
            return Self::from_message_state(n);
        }
        Some(match s.as_str() {
            "DELIVRD" | "DELIVERED" => Self::Delivered,
            "EXPIRED" => Self::Expired,
            "DELETED" => Self::Deleted,
            "UNDELIV" | "UNDELIVERABLE" | "UNDELIVERED" => Self::Undeliverable,
            "ACCEPTD" | "ACCEPTED" => Self::Accepted,
            "UNKNOWN" => Self::Unknown,
            "REJECTD" | "REJECTED" => Self::Rejected,
            "ENROUTE" => Self::Enroute,
            "SKIPPED" => Self::Skipped,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ReceiptStat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery receipt, TLVs and text merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// receipted_message_id TLV if present, else the text's `id:`.
    pub message_id: String,
    /// message_state TLV wins over text when both are present.
    pub stat: ReceiptStat,
    /// Text `err:` as written.
    pub err: Option<String>,
    /// network_error_code TLV (network type, code).
    pub network_error: Option<(u8, u16)>,
    pub sub: Option<String>,
    pub dlvrd: Option<String>,
    pub submit_date: Option<String>,
    pub done_date: Option<String>,
    pub text: Option<String>,
}

/// What a deliver_sm carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Receipt(Receipt),
    Mo(Mo),
}

/// A mobile-originated message, undecoded: its alphabet depends on the vendor's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mo {
    pub source: String,
    pub destination: String,
    pub data_coding: u8,
    /// message_payload TLV if present, else short_message.
    pub short_message: Vec<u8>,
    pub esm_class: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error(
        "receipt text has none of the fields id:, stat:, err:, sub:, dlvrd:, submit date:, done date:, text:"
    )]
    NoFields,
    #[error(
        "receipt stat {0:?} is not a known state (DELIVRD, EXPIRED, DELETED, UNDELIV, ACCEPTD, UNKNOWN, REJECTD, ENROUTE, SKIPPED)"
    )]
    UnknownStat(String),
    #[error(
        "delivery receipt has no message id: no receipted_message_id TLV and no id: in its text"
    )]
    MissingId,
    #[error("delivery receipt has no state: no message_state TLV and no stat: in its text")]
    MissingStat,
    #[error(
        "delivery receipt's message_state TLV is {0}, outside SMPP 3.4 table 5-6 (1..=9), and its text has no stat: to fall back on"
    )]
    UnknownMessageState(u8),
}

/// The text fields of a receipt, each as written (values trimmed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedText {
    pub id: Option<String>,
    pub stat: Option<ReceiptStat>,
    pub err: Option<String>,
    pub sub: Option<String>,
    pub dlvrd: Option<String>,
    pub submit_date: Option<String>,
    pub done_date: Option<String>,
    pub text: Option<String>,
}

/// Pure text parser, tolerant: any field order, any case of keys and stat values, missing
/// fields, extra spaces, "submit date"/"submit_date"/"submitdate", "done date", trailing
/// "text:" with spaces inside. Non-UTF-8 bytes are the caller's (lossy) conversion.
pub fn parse_text(text: &str) -> Result<ParsedText, ReceiptError> {
    let raw = scan(text)?;
    let stat = match raw.stat {
        Some(s) => Some(ReceiptStat::parse(&s).ok_or(ReceiptError::UnknownStat(s))?),
        None => None,
    };
    Ok(ParsedText {
        id: raw.id,
        stat,
        err: raw.err,
        sub: raw.sub,
        dlvrd: raw.dlvrd,
        submit_date: raw.submit_date,
        done_date: raw.done_date,
        text: raw.text,
    })
}

/// From a rusmpp deliver_sm: a receipt when the esm_class message type says so, else an MO.
pub fn classify(d: &DeliverSm) -> Result<Inbound, ReceiptError> {
    let esm = u8::from(d.esm_class);
    let tlvs = Tlvs::of(d);
    let body = tlvs
        .payload
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| d.short_message().as_ref());
    let text = String::from_utf8_lossy(body);
    let scanned = scan(&text);

    let is_receipt = match esm & MESSAGE_TYPE_MASK {
        MC_DELIVERY_RECEIPT | INTERMEDIATE_NOTIFICATION => true,
        // SME delivery acknowledgement. Also rusmpp's EsmClass::default() encodes as 0x08,
        // so only take it for a receipt when it looks like one.
        SME_DELIVERY_ACK => {
            tlvs.receipted_id.is_some()
                || tlvs.state.is_some()
                || scanned
                    .as_ref()
                    .is_ok_and(|r| r.id.is_some() && r.stat.is_some())
        }
        _ => false,
    };
    if !is_receipt {
        return Ok(Inbound::Mo(Mo {
            source: d.source_addr.as_str().to_owned(),
            destination: d.destination_addr.as_str().to_owned(),
            data_coding: u8::from(d.data_coding),
            short_message: body.to_vec(),
            esm_class: esm,
        }));
    }

    // A receipt may carry everything in TLVs and no text at all.
    let raw = scanned.unwrap_or_default();
    let message_id = tlvs
        .receipted_id
        .or(raw.id)
        .ok_or(ReceiptError::MissingId)?;
    let stat = resolve_stat(tlvs.state, raw.stat)?;
    Ok(Inbound::Receipt(Receipt {
        message_id,
        stat,
        err: raw.err,
        network_error: tlvs.network_error,
        sub: raw.sub,
        dlvrd: raw.dlvrd,
        submit_date: raw.submit_date,
        done_date: raw.done_date,
        text: raw.text,
    }))
}

/// esm_class bits 5-2 (SMPP 3.4 5.2.12).
const MESSAGE_TYPE_MASK: u8 = 0x3C;
const MC_DELIVERY_RECEIPT: u8 = 0x04;
const SME_DELIVERY_ACK: u8 = 0x08;
const INTERMEDIATE_NOTIFICATION: u8 = 0x20;

/// The TLV state wins; an out-of-table TLV value falls back to the text rather than losing
/// the receipt.
fn resolve_stat(tlv: Option<u8>, text: Option<String>) -> Result<ReceiptStat, ReceiptError> {
    if let Some(s) = tlv.and_then(ReceiptStat::from_message_state) {
        return Ok(s);
    }
    match (text, tlv) {
        (Some(t), _) => ReceiptStat::parse(&t).ok_or(ReceiptError::UnknownStat(t)),
        (None, Some(v)) => Err(ReceiptError::UnknownMessageState(v)),
        (None, None) => Err(ReceiptError::MissingStat),
    }
}

/// The TLVs a receipt or MO needs, first occurrence of each.
#[derive(Default)]
struct Tlvs<'a> {
    receipted_id: Option<String>,
    state: Option<u8>,
    network_error: Option<(u8, u16)>,
    payload: Option<&'a [u8]>,
}

impl<'a> Tlvs<'a> {
    fn of(d: &'a DeliverSm) -> Self {
        let mut t = Tlvs::default();
        for v in d.tlvs().iter().filter_map(|tlv| tlv.value()) {
            match v {
                TlvValue::ReceiptedMessageId(id) if t.receipted_id.is_none() => {
                    let id = id.as_str().trim();
                    // An empty TLV is no id: the text may still have one.
                    if !id.is_empty() {
                        t.receipted_id = Some(id.to_owned());
                    }
                }
                TlvValue::MessageState(s) if t.state.is_none() => t.state = Some(u8::from(*s)),
                TlvValue::NetworkErrorCode(n) if t.network_error.is_none() => {
                    t.network_error = Some((u8::from(n.network_type), n.error_code));
                }
                TlvValue::MessagePayload(p) if t.payload.is_none() => {
                    t.payload = Some(p.value.as_ref());
                }
                _ => {}
            }
        }
        t
    }
}

/// Text fields before the stat is interpreted, so that `classify` can let a TLV overrule an
/// unreadable `stat:`.
#[derive(Debug, Default)]
struct RawText {
    id: Option<String>,
    stat: Option<String>,
    err: Option<String>,
    sub: Option<String>,
    dlvrd: Option<String>,
    submit_date: Option<String>,
    done_date: Option<String>,
    text: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Sub,
    Dlvrd,
    SubmitDate,
    DoneDate,
    Stat,
    Err,
    Text,
}

/// Keys as lowercase words; between words any run of spaces or underscores, or nothing.
const KEYS: &[(Field, &[&str])] = &[
    (Field::Id, &["id"]),
    (Field::Sub, &["sub"]),
    (Field::Dlvrd, &["dlvrd"]),
    (Field::SubmitDate, &["submit", "date"]),
    (Field::DoneDate, &["done", "date"]),
    (Field::Stat, &["stat"]),
    (Field::Err, &["err"]),
    (Field::Text, &["text"]),
];

fn scan(text: &str) -> Result<RawText, ReceiptError> {
    let marks = find_keys(text);
    if marks.is_empty() {
        return Err(ReceiptError::NoFields);
    }
    let mut raw = RawText::default();
    for (i, m) in marks.iter().enumerate() {
        let field = m.field;
        // A value runs to where the next key's name begins.
        let end = marks.get(i + 1).map_or(text.len(), |n| n.key_start);
        let region = &text[m.value_start..end];
        let value = if field == Field::Text {
            Some(region.trim_matches(|c: char| c.is_whitespace() || c == '\0'))
                .filter(|s| !s.is_empty())
        } else {
            // One token: ids, states, counts and dates have no spaces, and anything after
            // is an unknown key we don't want in the value.
            region.split_whitespace().next()
        };
        let value = value.map(str::to_owned);
        match field {
            Field::Id => raw.id = value,
            Field::Sub => raw.sub = value,
            Field::Dlvrd => raw.dlvrd = value,
            Field::SubmitDate => raw.submit_date = value,
            Field::DoneDate => raw.done_date = value,
            Field::Stat => raw.stat = value,
            Field::Err => raw.err = value,
            Field::Text => raw.text = value,
        }
    }
    Ok(raw)
}

/// A key found in the text: its field, where its name begins and where its value begins (just
/// after the colon).
struct Mark {
    field: Field,
    key_start: usize,
    value_start: usize,
}

/// Each key, left to right. A key seen twice is text (a message quoting "id:"), not a field.
fn find_keys(text: &str) -> Vec<Mark> {
    // ASCII lowercasing keeps byte offsets, so positions index `text` too; keys are ASCII,
    // so every position found is a char boundary.
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut marks: Vec<Mark> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at_boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        match at_boundary.then(|| match_key(b, i)).flatten() {
            Some((field, after)) if !marks.iter().any(|m| m.field == field) => {
                marks.push(Mark {
                    field,
                    key_start: i,
                    value_start: after,
                });
                i = after;
            }
            _ => i += 1,
        }
    }
    marks
}

/// The field whose key starts at `i`, and the index after its colon.
fn match_key(b: &[u8], i: usize) -> Option<(Field, usize)> {
    KEYS.iter().find_map(|&(field, words)| {
        let mut p = i;
        for (n, word) in words.iter().enumerate() {
            if n > 0 {
                p = skip(b, p, |c| c == b' ' || c == b'_');
            }
            if !b[p..].starts_with(word.as_bytes()) {
                return None;
            }
            p += word.len();
        }
        p = skip(b, p, |c| c == b' ');
        (b.get(p) == Some(&b':')).then_some((field, p + 1))
    })
}

fn skip(b: &[u8], mut p: usize, pred: impl Fn(u8) -> bool) -> usize {
    while p < b.len() && pred(b[p]) {
        p += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::tlvs::MessageDeliveryRequestTlvValue as Tv;
    use rusmpp::types::{AnyOctetString, COctetString, OctetString};
    use rusmpp::values::{
        DataCoding, ErrorCodeNetworkType, EsmClass, MessagePayload, MessageState, NetworkErrorCode,
    };
    use std::str::FromStr;

    const APPENDIX_B: &str = "id:0123456789 sub:001 dlvrd:001 submit date:0510091200 \
        done date:0510091201 stat:DELIVRD err:000 text:Hello world, how ar";

    fn deliver(esm: u8, sm: &[u8], tlvs: Vec<Tv>) -> DeliverSm {
        DeliverSm::builder()
            .source_addr(COctetString::from_str("447700900001").unwrap())
            .destination_addr(COctetString::from_str("447700900002").unwrap())
            .esm_class(EsmClass::from(esm))
            .short_message(OctetString::from_slice(sm).unwrap())
            .tlvs(tlvs)
            .build()
    }

    fn receipt(d: &DeliverSm) -> Receipt {
        match classify(d).unwrap() {
            Inbound::Receipt(r) => r,
            other => panic!("expected a receipt, got {other:?}"),
        }
    }

    fn id_tlv(id: &str) -> Tv {
        Tv::ReceiptedMessageId(COctetString::from_str(id).unwrap())
    }

    #[test]
    fn stat_spellings_round_trip() {
        for s in ReceiptStat::ALL {
            assert_eq!(ReceiptStat::parse(s.as_str()), Some(s));
            assert_eq!(ReceiptStat::parse(&s.as_str().to_lowercase()), Some(s));
        }
        assert_eq!(
            ReceiptStat::parse("Delivered"),
            Some(ReceiptStat::Delivered)
        );
        assert_eq!(
            ReceiptStat::parse("UNDELIVERABLE"),
            Some(ReceiptStat::Undeliverable)
        );
        assert_eq!(ReceiptStat::parse("2"), Some(ReceiptStat::Delivered));
        assert_eq!(ReceiptStat::parse("DONE"), None);
        assert!(!ReceiptStat::Enroute.is_final());
        assert!(ReceiptStat::Delivered.is_final() && ReceiptStat::Rejected.is_final());
    }

    #[test]
    fn message_state_table() {
        let want = [
            (1, ReceiptStat::Enroute),
            (2, ReceiptStat::Delivered),
            (3, ReceiptStat::Expired),
            (4, ReceiptStat::Deleted),
            (5, ReceiptStat::Undeliverable),
            (6, ReceiptStat::Accepted),
            (7, ReceiptStat::Unknown),
            (8, ReceiptStat::Rejected),
            (9, ReceiptStat::Skipped),
        ];
        for (v, s) in want {
            assert_eq!(ReceiptStat::from_message_state(v), Some(s));
            assert_eq!(s.message_state(), v);
            // rusmpp's enum agrees with the table.
            assert_eq!(u8::from(MessageState::from(v)), v);
        }
        assert_eq!(ReceiptStat::from_message_state(0), None);
        assert_eq!(ReceiptStat::from_message_state(10), None);
    }

    #[test]
    fn parses_appendix_b() {
        let p = parse_text(APPENDIX_B).unwrap();
        assert_eq!(
            p,
            ParsedText {
                id: Some("0123456789".into()),
                stat: Some(ReceiptStat::Delivered),
                err: Some("000".into()),
                sub: Some("001".into()),
                dlvrd: Some("001".into()),
                submit_date: Some("0510091200".into()),
                done_date: Some("0510091201".into()),
                text: Some("Hello world, how ar".into()),
            }
        );
    }

    #[test]
    fn upper_case_keys_and_values() {
        let p = parse_text(
            "ID:ABC123 SUB:001 DLVRD:001 SUBMIT DATE:2401011200 DONE DATE:2401011201 \
             STAT:undeliv ERR:034 TEXT:Hi",
        )
        .unwrap();
        assert_eq!(p.id.as_deref(), Some("ABC123"));
        assert_eq!(p.stat, Some(ReceiptStat::Undeliverable));
        assert_eq!(p.err.as_deref(), Some("034"));
        assert_eq!(p.submit_date.as_deref(), Some("2401011200"));
        assert_eq!(p.done_date.as_deref(), Some("2401011201"));
        assert_eq!(p.text.as_deref(), Some("Hi"));
    }

    #[test]
    fn reordered_fields_and_key_spellings() {
        let p = parse_text(
            "stat:EXPIRED err:001 text:see you soon id:77 submit_date:2401011200 donedate:2401011300",
        )
        .unwrap();
        assert_eq!(p.id.as_deref(), Some("77"));
        assert_eq!(p.stat, Some(ReceiptStat::Expired));
        assert_eq!(p.text.as_deref(), Some("see you soon"));
        assert_eq!(p.submit_date.as_deref(), Some("2401011200"));
        assert_eq!(p.done_date.as_deref(), Some("2401011300"));
        let p = parse_text("id:1 submitdate:2401011200 done_date:2401011300 stat:ACCEPTD").unwrap();
        assert_eq!(p.submit_date.as_deref(), Some("2401011200"));
        assert_eq!(p.done_date.as_deref(), Some("2401011300"));
    }

    #[test]
    fn missing_fields_and_extra_spaces() {
        let p = parse_text("  id : 42   stat :  DELIVRD    err: 000  ").unwrap();
        assert_eq!(p.id.as_deref(), Some("42"));
        assert_eq!(p.stat, Some(ReceiptStat::Delivered));
        assert_eq!(p.err.as_deref(), Some("000"));
        assert_eq!((p.sub, p.dlvrd, p.text), (None, None, None));
        let p = parse_text("id:42 sub: dlvrd: stat:DELIVRD").unwrap();
        assert_eq!((p.sub, p.dlvrd), (None, None));
    }

    #[test]
    fn long_form_stat() {
        let p = parse_text("id:42 stat:DELIVERED err:0").unwrap();
        assert_eq!(p.stat, Some(ReceiptStat::Delivered));
    }

    #[test]
    fn text_keeps_spaces_and_quoted_keys() {
        // A second "id:" / "stat:" is part of the message, not a field.
        let p = parse_text("id:9 stat:DELIVRD err:000 text:your id: 5 stat: ok  ").unwrap();
        assert_eq!(p.id.as_deref(), Some("9"));
        assert_eq!(p.stat, Some(ReceiptStat::Delivered));
        assert_eq!(p.text.as_deref(), Some("your id: 5 stat: ok"));
    }

    #[test]
    fn keys_need_a_boundary() {
        // "msgid:" is not "id:", and "submit date" is not "sub".
        let p = parse_text("msgid:1 id:2 submit date:2401011200 stat:DELIVRD").unwrap();
        assert_eq!(p.id.as_deref(), Some("2"));
        assert_eq!(p.sub, None);
    }

    #[test]
    fn text_errors() {
        assert_eq!(parse_text("hello there"), Err(ReceiptError::NoFields));
        assert_eq!(parse_text(""), Err(ReceiptError::NoFields));
        assert_eq!(
            parse_text("id:1 stat:WHATEVER"),
            Err(ReceiptError::UnknownStat("WHATEVER".into()))
        );
        assert!(
            ReceiptError::UnknownStat("X".into())
                .to_string()
                .contains("DELIVRD")
        );
    }

    #[test]
    fn classify_standard_receipt() {
        let d = deliver(0x04, APPENDIX_B.as_bytes(), vec![]);
        let r = receipt(&d);
        assert_eq!(r.message_id, "0123456789");
        assert_eq!(r.stat, ReceiptStat::Delivered);
        assert_eq!(r.err.as_deref(), Some("000"));
        assert_eq!(r.done_date.as_deref(), Some("0510091201"));
        assert_eq!(r.network_error, None);
    }

    #[test]
    fn stat_missing_but_message_state_tlv() {
        let d = deliver(
            0x04,
            b"id:55 sub:001 dlvrd:000 err:000",
            vec![Tv::MessageState(MessageState::Undeliverable)],
        );
        assert_eq!(receipt(&d).stat, ReceiptStat::Undeliverable);
    }

    #[test]
    fn message_state_tlv_wins_over_text() {
        let d = deliver(
            0x04,
            b"id:55 stat:DELIVRD",
            vec![Tv::MessageState(MessageState::Rejected)],
        );
        assert_eq!(receipt(&d).stat, ReceiptStat::Rejected);
        // An unreadable text stat doesn't matter when the TLV says.
        let d = deliver(
            0x04,
            b"id:55 stat:???",
            vec![Tv::MessageState(MessageState::Delivered)],
        );
        assert_eq!(receipt(&d).stat, ReceiptStat::Delivered);
        // An out-of-table TLV falls back to the text.
        let d = deliver(
            0x04,
            b"id:55 stat:EXPIRED",
            vec![Tv::MessageState(MessageState::Other(42))],
        );
        assert_eq!(receipt(&d).stat, ReceiptStat::Expired);
    }

    #[test]
    fn receipted_id_tlv_wins_over_text_id() {
        // Text in decimal, TLV in hex: a common vendor mix.
        let d = deliver(
            0x04,
            b"id:255 stat:DELIVRD err:000",
            vec![id_tlv("000000FF")],
        );
        assert_eq!(receipt(&d).message_id, "000000FF");
    }

    #[test]
    fn tlvs_only_receipt_and_network_error() {
        let d = deliver(
            0x04,
            b"",
            vec![
                id_tlv("abc"),
                Tv::MessageState(MessageState::Undeliverable),
                Tv::NetworkErrorCode(NetworkErrorCode::new(ErrorCodeNetworkType::Gsm, 0x0022)),
            ],
        );
        let r = receipt(&d);
        assert_eq!(r.message_id, "abc");
        assert_eq!(r.stat, ReceiptStat::Undeliverable);
        assert_eq!(r.network_error, Some((3, 0x0022)));
        assert_eq!(r.text, None);
    }

    #[test]
    fn receipt_in_message_payload() {
        let d = deliver(
            0x04,
            b"",
            vec![Tv::MessagePayload(MessagePayload::new(
                AnyOctetString::from_static_slice(b"id:1 stat:ENROUTE"),
            ))],
        );
        let r = receipt(&d);
        assert_eq!(r.message_id, "1");
        assert!(!r.stat.is_final());
    }

    #[test]
    fn intermediate_notification_is_a_receipt() {
        let d = deliver(0x20, b"id:7 stat:ENROUTE", vec![]);
        assert_eq!(receipt(&d).stat, ReceiptStat::Enroute);
    }

    #[test]
    fn non_utf8_text_is_lossy() {
        let mut sm = b"id:8 stat:DELIVRD err:000 text:caf".to_vec();
        sm.extend_from_slice(&[0xE9, 0xFF, b'!']);
        let r = receipt(&deliver(0x04, &sm, vec![]));
        assert_eq!(r.message_id, "8");
        assert_eq!(r.text.as_deref(), Some("caf\u{FFFD}\u{FFFD}!"));
    }

    #[test]
    fn receipt_errors() {
        let d = deliver(0x04, b"stat:DELIVRD err:000", vec![]);
        assert_eq!(classify(&d), Err(ReceiptError::MissingId));
        let d = deliver(0x04, b"id:1 err:000", vec![]);
        assert_eq!(classify(&d), Err(ReceiptError::MissingStat));
        let d = deliver(0x04, b"nothing here", vec![]);
        assert_eq!(classify(&d), Err(ReceiptError::MissingId));
        let d = deliver(0x04, b"id:1 stat:NOPE", vec![]);
        assert_eq!(classify(&d), Err(ReceiptError::UnknownStat("NOPE".into())));
        let d = deliver(
            0x04,
            b"id:1",
            vec![Tv::MessageState(MessageState::Scheduled)],
        );
        assert_eq!(classify(&d), Err(ReceiptError::UnknownMessageState(0)));
    }

    #[test]
    fn mo_is_not_a_receipt() {
        // Even text that reads like a receipt: esm_class 0 says MO.
        let d = DeliverSm::builder()
            .source_addr(COctetString::from_str("447700900001").unwrap())
            .destination_addr(COctetString::from_str("12345").unwrap())
            .esm_class(EsmClass::from(0))
            .data_coding(DataCoding::Ucs2)
            .short_message(OctetString::from_slice(b"\x00h\x00i").unwrap())
            .build();
        assert_eq!(
            classify(&d).unwrap(),
            Inbound::Mo(Mo {
                source: "447700900001".into(),
                destination: "12345".into(),
                data_coding: 0x08,
                short_message: b"\x00h\x00i".to_vec(),
                esm_class: 0,
            })
        );
        let d = deliver(0x00, b"id:1 stat:DELIVRD", vec![]);
        assert!(matches!(classify(&d), Ok(Inbound::Mo(_))));
        // UDHI on an MO is kept in esm_class for reassembly.
        let d = deliver(0x40, b"\x05\x00\x03\x01\x02\x01hi", vec![]);
        assert!(matches!(classify(&d), Ok(Inbound::Mo(m)) if m.esm_class == 0x40));
    }

    #[test]
    fn sme_ack_bit_is_a_receipt_only_when_it_looks_like_one() {
        // rusmpp's EsmClass::default() encodes as 0x08.
        assert_eq!(u8::from(EsmClass::default()), 0x08);
        let d = deliver(0x08, b"id:3 stat:DELIVRD", vec![]);
        assert_eq!(receipt(&d).message_id, "3");
        let d = deliver(0x08, b"hello", vec![]);
        assert!(matches!(classify(&d), Ok(Inbound::Mo(_))));
    }

    #[test]
    fn classifies_what_the_codec_decodes() {
        use bytes::BytesMut;
        use rusmpp::tokio_codec::CommandCodec;
        use rusmpp::{Command, CommandStatus, Pdu};
        use tokio_util::codec::{Decoder, Encoder};

        let d = deliver(
            0x04,
            b"id:255 stat:DELIVRD err:000",
            vec![id_tlv("FF"), Tv::MessageState(MessageState::Delivered)],
        );
        let mut buf = BytesMut::new();
        let cmd = Command::new(CommandStatus::EsmeRok, 1, Pdu::DeliverSm(d));
        CommandCodec::new().encode(&cmd, &mut buf).unwrap();
        let back = CommandCodec::new().decode(&mut buf).unwrap().unwrap();
        let Some(Pdu::DeliverSm(d)) = back.pdu() else {
            panic!("decoded {back:?}");
        };
        let r = receipt(d);
        assert_eq!(
            (r.message_id.as_str(), r.stat),
            ("FF", ReceiptStat::Delivered)
        );
    }
}
