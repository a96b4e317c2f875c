//! A customer's submit_sm / submit_multi as messages for the messaging core, and stored
//! messages as query_sm answers (the account's own only: [`visible_to`]). Pure: no session,
//! no network.
//!
//! # What is sent
//!
//! - **A plain text** (data_coding 0 GSM 03.38 unpacked, 1 IA5/ASCII, 3 Latin-1, 8 UCS-2; no
//!   UDH, no SAR), in short_message or, for a long one, in message_payload: decoded to text and
//!   encoded again for the vendor it goes to (its alphabet, its way of splitting). One
//!   message id, one receipt, however many parts the vendor gets.
//! - **A part of the customer's own long message** (esm_class UDHI with the UDH in
//!   short_message, or the SAR TLVs) and **any other data_coding** (binary, flash classes):
//!   passed through as it came, one submit_sm, one message id, one receipt. Decoding a UDH
//!   part and splitting it again would cut the customer's concatenation apart, and its
//!   receipts would no longer match its parts.
//!
//! The account's rate counts parts: a text counts the GSM/UCS-2 segments it needs (153/67
//! units per part when long), a passed-through part counts one.

use chrono::{DateTime, NaiveDate, Utc};
use rusmpp::CommandStatus;
use rusmpp::pdus::{SubmitMulti, SubmitSm};
use rusmpp::tlvs::{Tlv, TlvValue};
use rusmpp::values::MessageState;
use smpp_db::messaging::{DefaultAlphabet, LongMessages};

use crate::fleet::accounts::CustomerAccount;
use crate::messaging::customer::Origin;
use crate::messaging::encoding::{self, ESM_CLASS_UDHI};
use crate::messaging::model::{MessageStatus, MessageView};
use crate::messaging::submit::{Extra, MessageRequest, RawPart};

/// What a submit_sm or submit_multi asks for, whatever its destination(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub source: String,
    pub esm_class: u8,
    pub registered_delivery: u8,
    pub data_coding: u8,
    pub short_message: Vec<u8>,
    pub message_payload: Option<Vec<u8>>,
    pub sar: Option<SarFields>,
    pub schedule_delivery_time: String,
    pub validity_period: String,
}

/// sar_msg_ref_num, sar_total_segments, sar_segment_seqnum.
type SarFields = (u16, u8, u8);

fn tlv_fields(tlvs: &[Tlv]) -> (Option<Vec<u8>>, Option<SarFields>) {
    let (mut payload, mut r, mut t, mut s) = (None, None, None, None);
    for tlv in tlvs {
        match tlv.value() {
            Some(TlvValue::MessagePayload(p)) => payload = Some(p.value.as_ref().to_vec()),
            Some(TlvValue::SarMsgRefNum(v)) => r = Some(*v),
            Some(TlvValue::SarTotalSegments(v)) => t = Some(*v),
            Some(TlvValue::SarSegmentSeqnum(v)) => s = Some(*v),
            _ => {}
        }
    }
    let sar = match (r, t, s) {
        (Some(r), Some(t), Some(s)) => Some((r, t, s)),
        _ => None,
    };
    (payload, sar)
}

impl Content {
    pub fn of_submit_sm(sm: &SubmitSm) -> Self {
        let (message_payload, sar) = tlv_fields(sm.tlvs());
        Self {
            source: sm.source_addr.to_string(),
            esm_class: u8::from(sm.esm_class),
            registered_delivery: u8::from(sm.registered_delivery),
            data_coding: u8::from(sm.data_coding),
            short_message: sm.short_message().as_ref().to_vec(),
            message_payload,
            sar,
            schedule_delivery_time: sm.schedule_delivery_time.to_string(),
            validity_period: sm.validity_period.to_string(),
        }
    }

    pub fn of_submit_multi(sm: &SubmitMulti) -> Self {
        let (message_payload, sar) = tlv_fields(sm.tlvs());
        Self {
            source: sm.source_addr.to_string(),
            esm_class: u8::from(sm.esm_class),
            registered_delivery: u8::from(sm.registered_delivery),
            data_coding: u8::from(sm.data_coding),
            short_message: sm.short_message().as_ref().to_vec(),
            message_payload,
            sar,
            schedule_delivery_time: sm.schedule_delivery_time.to_string(),
            validity_period: sm.validity_period.to_string(),
        }
    }

    /// Whether the customer asked for a receipt (registered_delivery bits 0-1; "on failure
    /// only" gets every receipt).
    pub fn wants_receipt(&self) -> bool {
        self.registered_delivery & 0x03 != 0
    }
}

/// A message ready for the messaging core.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub req: MessageRequest,
    pub extra: Extra,
    /// What it counts against the account's rate.
    pub parts: u32,
}

/// A destination as the messaging core takes it: digits, an optional leading +, at most 20.
fn valid_destination(d: &str) -> bool {
    let digits = d.strip_prefix('+').unwrap_or(d);
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The message for one destination of `c`, or the status that refuses it.
pub fn prepare(
    account: &CustomerAccount,
    c: &Content,
    destination: &str,
    max_parts: usize,
    now: DateTime<Utc>,
) -> Result<Prepared, CommandStatus> {
    if c.source.is_empty() || !account.allows_sender(&c.source) {
        return Err(CommandStatus::EsmeRinvsrcadr);
    }
    if !valid_destination(destination) || !account.allows_destination(destination) {
        return Err(CommandStatus::EsmeRinvdstadr);
    }
    if !c.schedule_delivery_time.is_empty() {
        // Sending now what was meant for later would be wrong: say it is not supported.
        return Err(CommandStatus::EsmeRinvsched);
    }
    let validity_seconds =
        validity(&c.validity_period, now).map_err(|BadValidity| CommandStatus::EsmeRinvexpiry)?;
    if !c.short_message.is_empty() && c.message_payload.is_some() {
        return Err(CommandStatus::EsmeRinvmsglen);
    }
    let body = c.message_payload.as_deref().unwrap_or(&c.short_message);
    let coding = encoding::text_coding(c.data_coding);
    let udh = c.esm_class & ESM_CLASS_UDHI != 0;
    let (text, raw, parts) = match coding {
        Some(coding) if !udh && c.sar.is_none() => {
            let text =
                encoding::decode(coding, body).map_err(|_| CommandStatus::EsmeRsubmitfail)?;
            (text.clone(), None, segments(&text, max_parts)?)
        }
        _ => {
            if body.is_empty() || c.short_message.len() > 254 {
                return Err(CommandStatus::EsmeRinvmsglen);
            }
            let raw = RawPart {
                data_coding: c.data_coding,
                esm_class: c.esm_class,
                short_message: c.short_message.clone(),
                sar: c.sar,
                message_payload: c.message_payload.clone(),
            };
            (String::new(), Some(raw), 1)
        }
    };
    let origin = c.wants_receipt().then(|| Origin {
        account: account.id,
        to: destination.to_string(),
        from: c.source.clone(),
    });
    Ok(Prepared {
        req: MessageRequest {
            to: destination.to_string(),
            from: c.source.clone(),
            text,
            vendor: None,
            callback_url: None,
            client_ref: None,
            validity_seconds,
        },
        extra: Extra {
            raw,
            origin,
            account: Some(account.id),
        },
        parts,
    })
}

/// The parts a text counts: GSM 7-bit segments, or UCS-2 ones when GSM cannot carry it.
fn segments(text: &str, max_parts: usize) -> Result<u32, CommandStatus> {
    if text.is_empty() {
        return Err(CommandStatus::EsmeRinvmsglen);
    }
    let e = encoding::encode(text, DefaultAlphabet::Gsm7, LongMessages::Udh, 0, max_parts)
        .map_err(|_| CommandStatus::EsmeRinvmsglen)?;
    Ok(e.parts.len() as u32)
}

/// A validity_period that is malformed or already past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadValidity;

/// validity_period as seconds from `now`: empty → None (the vendor's default); relative
/// "YYMMDDhhmmss000R"; absolute "YYMMDDhhmmsstnn±" (nn quarter hours from UTC).
pub fn validity(v: &str, now: DateTime<Utc>) -> Result<Option<u64>, BadValidity> {
    if v.is_empty() {
        return Ok(None);
    }
    let b = v.as_bytes();
    if b.len() != 16 || !b[..15].iter().all(u8::is_ascii_digit) {
        return Err(BadValidity);
    }
    let n = |i: usize| u32::from(b[i] - b'0') * 10 + u32::from(b[i + 1] - b'0');
    let (yy, mo, dd, hh, mi, ss) = (n(0), n(2), n(4), n(6), n(8), n(10));
    let secs = match b[15] {
        b'R' => {
            let days = u64::from(yy) * 365 + u64::from(mo) * 30 + u64::from(dd);
            days * 86_400 + u64::from(hh) * 3600 + u64::from(mi) * 60 + u64::from(ss)
        }
        sign @ (b'+' | b'-') => {
            let quarters = i64::from(n(13));
            let local = NaiveDate::from_ymd_opt(2000 + yy as i32, mo, dd)
                .and_then(|d| d.and_hms_opt(hh, mi, ss))
                .ok_or(BadValidity)?;
            let offset = chrono::Duration::minutes(15 * quarters);
            // "+": local time is ahead of UTC.
            let utc = if sign == b'+' {
                local - offset
            } else {
                local + offset
            };
            let left = (utc.and_utc() - now).num_seconds();
            if left <= 0 {
                return Err(BadValidity);
            }
            left as u64
        }
        _ => return Err(BadValidity),
    };
    if secs == 0 {
        return Err(BadValidity);
    }
    Ok(Some(secs))
}

/// query_sm's message_state for a message's status.
pub fn message_state(s: MessageStatus) -> MessageState {
    match s {
        MessageStatus::Submitted => MessageState::Enroute,
        MessageStatus::Delivered => MessageState::Delivered,
        MessageStatus::Expired => MessageState::Expired,
        MessageStatus::Undeliverable | MessageStatus::Failed => MessageState::Undeliverable,
        MessageStatus::Rejected => MessageState::Rejected,
        MessageStatus::Unknown => MessageState::Unknown,
    }
}

/// query_sm's final_date: SMPP absolute time in UTC, "YYMMDDhhmmss000+".
pub fn final_date(t: DateTime<Utc>) -> String {
    format!("{}000+", t.format("%y%m%d%H%M%S"))
}

/// query_sm's error_code (one octet): the vendor's error code when it is a number (decimal
/// like "011", or hex like "0x0000000B") that fits, else 0.
pub fn error_code(code: Option<&str>) -> u8 {
    let Some(c) = code else { return 0 };
    let n = match c.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => c.parse::<u32>().ok(),
    };
    n.and_then(|n| u8::try_from(n).ok()).unwrap_or(0)
}

/// Whether `account`'s query_sm may see a stored message: only its own submits. Another
/// account's message, or one submitted over HTTP, is answered as an unknown id, so nothing
/// about it leaks (not even that it exists).
pub fn visible_to(m: &MessageView, account: uuid::Uuid) -> bool {
    m.account == Some(account)
}

/// (message_state, final_date, error_code) of a stored message.
pub fn query_answer(m: &MessageView) -> (MessageState, String, u8) {
    let date = match (m.status.is_final(), m.done_at) {
        (true, Some(t)) => final_date(t),
        _ => String::new(),
    };
    (
        message_state(m.status),
        date,
        error_code(m.error_code.as_deref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use smpp_db::accounts::{Account, AccountConfig};

    fn account(senders: &[&str], prefixes: &[&str]) -> CustomerAccount {
        CustomerAccount::from_row(&Account {
            id: uuid::Uuid::new_v4(),
            config: AccountConfig {
                system_id: "acme".into(),
                password_hash: String::new(),
                allowed_cidrs: vec![],
                max_binds: 1,
                max_messages_per_second: None,
                allowed_senders: senders.iter().map(|s| s.to_string()).collect(),
                allowed_destination_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
                route: sqlx::types::Json(vec![]),
                forward_receipts: true,
                suspended: false,
            },
            owner_namespace: None,
            owner_name: None,
            owner_uid: None,
            owner_generation: None,
            config_version: 1,
            updated_at: Utc::now(),
        })
        .unwrap()
    }

    fn text(dc: u8, bytes: &[u8]) -> Content {
        Content {
            source: "ACME".into(),
            esm_class: 0,
            registered_delivery: 1,
            data_coding: dc,
            short_message: bytes.to_vec(),
            message_payload: None,
            sar: None,
            schedule_delivery_time: String::new(),
            validity_period: String::new(),
        }
    }

    #[test]
    fn a_text_is_decoded_and_counted_in_segments() {
        let a = account(&[], &[]);
        let p = prepare(&a, &text(0, &[0x00, b'h', b'i']), "+4670", 10, Utc::now()).unwrap();
        assert_eq!((p.req.text.as_str(), p.parts), ("@hi", 1));
        assert_eq!(p.extra.raw, None);
        let o = p.extra.origin.unwrap();
        assert_eq!(
            (o.account, o.to.as_str(), o.from.as_str()),
            (a.id, "+4670", "ACME")
        );
        // A long text in message_payload: 161 GSM septets are 2 segments.
        let long = Content {
            message_payload: Some(vec![b'a'; 161]),
            ..text(1, b"")
        };
        assert_eq!(prepare(&a, &long, "4670", 10, Utc::now()).unwrap().parts, 2);
        // UCS-2 counts 67 units per part.
        let ucs: Vec<u8> = "ж"
            .repeat(71)
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let long = Content {
            message_payload: Some(ucs),
            ..text(8, b"")
        };
        assert_eq!(prepare(&a, &long, "4670", 10, Utc::now()).unwrap().parts, 2);
        // No receipt asked: no origin, so none goes back.
        let quiet = Content {
            registered_delivery: 0,
            ..text(1, b"x")
        };
        assert_eq!(
            prepare(&a, &quiet, "4670", 10, Utc::now())
                .unwrap()
                .extra
                .origin,
            None
        );
    }

    #[test]
    fn a_udh_part_sar_part_or_binary_passes_through_raw() {
        let a = account(&[], &[]);
        let udh = Content {
            esm_class: 0x40,
            ..text(0, &[5, 0, 3, 7, 2, 1, b'h'])
        };
        let p = prepare(&a, &udh, "4670", 10, Utc::now()).unwrap();
        let raw = p.extra.raw.unwrap();
        assert_eq!(
            (raw.esm_class, raw.short_message.len(), p.parts),
            (0x40, 7, 1)
        );
        let sar = Content {
            sar: Some((9, 2, 1)),
            ..text(0, b"part one")
        };
        assert_eq!(
            prepare(&a, &sar, "4670", 10, Utc::now())
                .unwrap()
                .extra
                .raw
                .unwrap()
                .sar,
            Some((9, 2, 1))
        );
        let binary = text(0x04, &[0xFF, 0x00]);
        assert!(
            prepare(&a, &binary, "4670", 10, Utc::now())
                .unwrap()
                .extra
                .raw
                .is_some()
        );
    }

    #[test]
    fn what_is_refused_gets_its_status() {
        use CommandStatus::*;
        let a = account(&["ACME"], &["46"]);
        let now = Utc::now();
        let p = |c: &Content, d: &str| prepare(&a, c, d, 10, now).err();
        assert_eq!(p(&text(1, b"x"), "4670"), None);
        let other = Content {
            source: "EVIL".into(),
            ..text(1, b"x")
        };
        assert_eq!(p(&other, "4670"), Some(EsmeRinvsrcadr));
        assert_eq!(p(&text(1, b"x"), "4470"), Some(EsmeRinvdstadr));
        assert_eq!(p(&text(1, b"x"), "46ab"), Some(EsmeRinvdstadr));
        assert_eq!(p(&text(1, b""), "4670"), Some(EsmeRinvmsglen));
        assert_eq!(p(&text(1, &[0xE9]), "4670"), Some(EsmeRsubmitfail));
        let both = Content {
            message_payload: Some(b"y".to_vec()),
            ..text(1, b"x")
        };
        assert_eq!(p(&both, "4670"), Some(EsmeRinvmsglen));
        let later = Content {
            schedule_delivery_time: "000001000000000R".into(),
            ..text(1, b"x")
        };
        assert_eq!(p(&later, "4670"), Some(EsmeRinvsched));
        let bad = Content {
            validity_period: "garbage".into(),
            ..text(1, b"x")
        };
        assert_eq!(p(&bad, "4670"), Some(EsmeRinvexpiry));
        let too_long = Content {
            message_payload: Some(vec![b'a'; 153 * 11]),
            ..text(1, b"")
        };
        assert_eq!(p(&too_long, "4670"), Some(EsmeRinvmsglen));
    }

    #[test]
    fn validity_periods_relative_and_absolute() {
        let now: DateTime<Utc> = "2026-03-04T05:00:00Z".parse().unwrap();
        assert_eq!(validity("", now), Ok(None));
        assert_eq!(
            validity("000001020304000R", now),
            Ok(Some(86_400 + 7200 + 180 + 4))
        );
        // 06:00 local at +1h (4 quarters) is 05:00 UTC: already past.
        assert_eq!(validity("260304060000004+", now), Err(BadValidity));
        // 07:00 at +1h is 06:00 UTC: an hour from now.
        assert_eq!(validity("260304070000004+", now), Ok(Some(3600)));
        assert_eq!(validity("260304050000004-", now), Ok(Some(3600)));
        assert_eq!(
            validity("261304070000004+", now),
            Err(BadValidity),
            "month 13"
        );
        assert_eq!(validity("000000000000000R", now), Err(BadValidity));
        assert_eq!(
            validity("26030407000000+", now),
            Err(BadValidity),
            "15 characters"
        );
    }

    #[test]
    fn stored_messages_answer_query_sm() {
        assert_eq!(
            message_state(MessageStatus::Submitted),
            MessageState::Enroute
        );
        assert_eq!(
            message_state(MessageStatus::Delivered),
            MessageState::Delivered
        );
        assert_eq!(
            message_state(MessageStatus::Failed),
            MessageState::Undeliverable
        );
        let t: DateTime<Utc> = "2026-03-04T05:06:07Z".parse().unwrap();
        assert_eq!(final_date(t), "260304050607000+");
        assert_eq!(error_code(Some("011")), 11);
        assert_eq!(error_code(Some("0x0000000B")), 11);
        assert_eq!(error_code(Some("0x00000400")), 0);
        assert_eq!(error_code(Some("timeout")), 0);
        assert_eq!(error_code(None), 0);
    }

    #[test]
    fn query_sm_sees_only_the_accounts_own_messages() {
        let (mine, theirs) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let m = |account| MessageView {
            id: "m".into(),
            status: MessageStatus::Delivered,
            vendor: "v".into(),
            parts: 1,
            vendor_message_ids: vec![],
            submitted_at: Utc::now(),
            done_at: None,
            error_code: None,
            client_ref: None,
            history: vec![],
            account,
        };
        assert!(visible_to(&m(Some(mine)), mine));
        assert!(!visible_to(&m(Some(theirs)), mine));
        assert!(!visible_to(&m(None), mine), "an HTTP submit");
    }
}
