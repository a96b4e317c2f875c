//! What goes back to a customer bound to our SMPP server: delivery receipts for the messages
//! it submitted, as deliver_sm on its RX or TRX sessions. The outbox (per account, in Redis)
//! holds them until a session acknowledges them; the SMPP server's sessions implement
//! [`CustomerLink`] to carry them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::messaging::model::MessageStatus;
use crate::messaging::receipt::ReceiptStat;
use crate::smpp::pdu::{self, DeliveryReceipt, PduError};

/// A delivery receipt for one message a customer submitted, as kept in its outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerReceipt {
    /// Our message id (what the customer got in submit_sm_resp).
    pub message_id: String,
    /// The message's destination: the receipt's source_addr.
    pub to: String,
    /// The message's sender: the receipt's destination_addr.
    pub from: String,
    pub status: MessageStatus,
    pub submitted_at: DateTime<Utc>,
    pub done_at: DateTime<Utc>,
    /// The vendor's error code, if any (the receipt's err: field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

impl CustomerReceipt {
    /// The receipt state the customer reads for our status.
    pub fn stat(&self) -> ReceiptStat {
        receipt_stat(self.status)
    }

    /// The deliver_sm that carries it (`seq` is the session's next sequence number).
    pub fn deliver_sm(&self, seq: u32) -> Result<rusmpp::Command, PduError> {
        pdu::receipt_deliver_sm(
            &DeliveryReceipt {
                message_id: self.message_id.clone(),
                source_addr: self.to.clone(),
                destination_addr: self.from.clone(),
                stat: self.stat(),
                err: err_field(self.error_code.as_deref()),
                submit_date: self.submitted_at,
                done_date: self.done_at,
            },
            seq,
        )
    }
}

/// The Appendix B state of a message status. `Failed` (we could not hand it to a vendor)
/// reads as UNDELIV; `Submitted` never goes out (not final) but reads as ENROUTE.
pub fn receipt_stat(s: MessageStatus) -> ReceiptStat {
    match s {
        MessageStatus::Delivered => ReceiptStat::Delivered,
        MessageStatus::Undeliverable | MessageStatus::Failed => ReceiptStat::Undeliverable,
        MessageStatus::Expired => ReceiptStat::Expired,
        MessageStatus::Rejected => ReceiptStat::Rejected,
        MessageStatus::Unknown => ReceiptStat::Unknown,
        MessageStatus::Submitted => ReceiptStat::Enroute,
    }
}

/// The receipt's `err:` from the stored error code: decimal digits as the vendor wrote them
/// (padded to three), an SMPP status as `0x…` in decimal, anything else (our own codes such
/// as `timeout`) as 000.
pub fn err_field(code: Option<&str>) -> String {
    let Some(c) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return "000".into();
    };
    if c.bytes().all(|b| b.is_ascii_digit()) {
        return format!("{c:0>3}");
    }
    let hex = c.strip_prefix("0x").or_else(|| c.strip_prefix("0X"));
    match hex.and_then(|h| u32::from_str_radix(h, 16).ok()) {
        Some(v) => format!("{v:03}"),
        None => "000".into(),
    }
}

/// Why a deliver_sm did not get a positive answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DeliverError {
    /// The session closed or is closing: the receipt stays in the outbox for another one.
    #[error("the customer session closed before answering")]
    Closed,
    /// No deliver_sm_resp within the response timeout.
    #[error("no deliver_sm_resp within {0:?}")]
    Timeout(std::time::Duration),
    /// The customer answered with an error status (temporary or not, it is retried later).
    #[error("the customer answered deliver_sm with 0x{0:08X}")]
    Refused(u32),
}

/// A customer session that can carry receipts (RX or TRX).
#[async_trait::async_trait]
pub trait CustomerLink: Send + Sync + 'static {
    /// Sends the receipt as deliver_sm and waits for its deliver_sm_resp.
    async fn deliver(&self, receipt: &CustomerReceipt) -> Result<(), DeliverError>;
}

/// Where a message came from when a customer submitted it over SMPP: the store keeps it with
/// the message, so its receipt can be routed to the account's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub account: uuid::Uuid,
    /// destination_addr as the customer sent it.
    pub to: String,
    /// source_addr as the customer sent it.
    pub from: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_final_status_has_a_final_receipt_state() {
        for s in MessageStatus::ALL {
            assert_eq!(receipt_stat(*s).is_final(), s.is_final(), "{s:?}");
        }
        assert_eq!(
            receipt_stat(MessageStatus::Delivered),
            ReceiptStat::Delivered
        );
        assert_eq!(
            receipt_stat(MessageStatus::Failed),
            ReceiptStat::Undeliverable
        );
    }

    #[test]
    fn err_field_keeps_digits_and_reads_smpp_statuses() {
        assert_eq!(err_field(None), "000");
        assert_eq!(err_field(Some("")), "000");
        assert_eq!(err_field(Some("11")), "011");
        assert_eq!(err_field(Some("0034")), "0034");
        assert_eq!(err_field(Some("0x0000000B")), "011");
        assert_eq!(err_field(Some("timeout")), "000");
    }

    #[test]
    fn a_customer_receipt_goes_out_from_the_handset_to_the_sender() {
        let now = chrono::Utc::now();
        let r = CustomerReceipt {
            message_id: "m1".into(),
            to: "15551234567".into(),
            from: "4420".into(),
            status: MessageStatus::Expired,
            submitted_at: now,
            done_at: now,
            error_code: None,
        };
        let cmd = r.deliver_sm(3).unwrap();
        let Some(rusmpp::Pdu::DeliverSm(d)) = cmd.pdu() else {
            panic!("{cmd:?}")
        };
        assert_eq!(d.source_addr.to_string(), "15551234567");
        assert_eq!(d.destination_addr.to_string(), "4420");
        let crate::messaging::receipt::Inbound::Receipt(p) =
            crate::messaging::receipt::classify(d).unwrap()
        else {
            panic!("not a receipt")
        };
        assert_eq!(
            (p.message_id.as_str(), p.stat),
            ("m1", ReceiptStat::Expired)
        );
    }
}
