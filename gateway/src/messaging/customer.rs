//! What goes back to a customer bound to our SMPP server: delivery receipts for the messages
//! it submitted, as deliver_sm on its RX or TRX sessions. The outbox (per account, in Redis)
//! holds them until a session acknowledges them; the SMPP server's sessions implement
//! [`CustomerLink`] to carry them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::messaging::model::MessageStatus;

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
