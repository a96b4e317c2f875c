//! A message as the API shows it: its status, parts and history. One enum for the status,
//! shared by the store, the receipts and the API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The status of a message (and of each part). `Submitted` is the only non-terminal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Submitted,
    Delivered,
    Undeliverable,
    Expired,
    Rejected,
    Failed,
    Unknown,
}

impl MessageStatus {
    pub const ALL: &'static [MessageStatus] = &[
        Self::Submitted,
        Self::Delivered,
        Self::Undeliverable,
        Self::Expired,
        Self::Rejected,
        Self::Failed,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Delivered => "delivered",
            Self::Undeliverable => "undeliverable",
            Self::Expired => "expired",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        self != Self::Submitted
    }
}

/// The message's status from its parts' statuses: final-failed as soon as one part is,
/// delivered when every part is, submitted otherwise. Pure; the store runs the same rule in
/// its Lua script (see `store::APPLY_RECEIPT`), and a test keeps both in step.
pub fn overall(parts: &[MessageStatus]) -> MessageStatus {
    if let Some(bad) = parts
        .iter()
        .find(|s| s.is_final() && **s != MessageStatus::Delivered)
    {
        return *bad;
    }
    if !parts.is_empty() && parts.iter().all(|s| *s == MessageStatus::Delivered) {
        MessageStatus::Delivered
    } else {
        MessageStatus::Submitted
    }
}

/// One line of a message's history: every attempt, answer and receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub part: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl HistoryEntry {
    pub fn new(event: impl Into<String>) -> Self {
        Self {
            at: Utc::now(),
            event: event.into(),
            vendor: None,
            part: None,
            detail: None,
        }
    }

    pub fn vendor(mut self, v: &str) -> Self {
        self.vendor = Some(v.to_string());
        self
    }

    pub fn part(mut self, p: u32) -> Self {
        self.part = Some(p);
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

/// What GET /api/v1/messages/{id} answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    pub status: MessageStatus,
    pub vendor: String,
    pub parts: u32,
    pub vendor_message_ids: Vec<String>,
    pub submitted_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_ref: Option<String>,
    pub history: Vec<HistoryEntry>,
    /// The customer account that submitted it over SMPP; not in the HTTP answer.
    #[serde(skip)]
    pub account: Option<uuid::Uuid>,
}

#[cfg(test)]
mod tests {
    use super::MessageStatus::*;
    use super::*;

    #[test]
    fn overall_is_final_failed_at_the_first_failed_part_and_delivered_at_the_last() {
        assert_eq!(overall(&[Submitted, Submitted]), Submitted);
        assert_eq!(overall(&[Delivered, Submitted]), Submitted);
        assert_eq!(overall(&[Delivered, Delivered]), Delivered);
        assert_eq!(overall(&[Submitted, Undeliverable]), Undeliverable);
        assert_eq!(overall(&[Delivered, Expired, Submitted]), Expired);
        assert_eq!(overall(&[]), Submitted);
    }

    #[test]
    fn status_strings_round_trip() {
        for s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(*s));
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
