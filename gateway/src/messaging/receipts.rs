//! deliver_sm from vendors: receipts are correlated and stored, then answered; MO messages
//! are forwarded to --mo-url. The session's reader never waits: each deliver_sm is handled in
//! its own task and answered when its write is done. When it cannot be stored the answer is
//! a temporary error (the dropped reply answers ESME_RX_T_APPN), so the vendor sends it again.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use rusmpp::{Command, CommandStatus, Pdu};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::fleet::accounts::{AccountRegistry, CustomerAccount};
use crate::fleet::config::VendorConfig;
use crate::fleet::sessions::Inbound;
use crate::fleet::state::Registry;
use crate::messaging::callbacks::{Callbacks, Kind};
use crate::messaging::ids;
use crate::messaging::model::{HistoryEntry, MessageStatus};
use crate::messaging::outbox::ReceiptQueue;
use crate::messaging::receipt::{self, Inbound as Classified, Receipt, ReceiptStat};
use crate::messaging::store::{self, Correlated, StatusChange, Store};
use crate::metrics::Metrics;
use crate::smpp::session::DeliverReply;

/// The part status a receipt state means; `Submitted` (not final) for ENROUTE and ACCEPTD.
pub fn part_status(stat: ReceiptStat) -> MessageStatus {
    match stat {
        ReceiptStat::Delivered => MessageStatus::Delivered,
        ReceiptStat::Expired => MessageStatus::Expired,
        ReceiptStat::Deleted | ReceiptStat::Undeliverable | ReceiptStat::Skipped => {
            MessageStatus::Undeliverable
        }
        ReceiptStat::Rejected => MessageStatus::Rejected,
        ReceiptStat::Unknown => MessageStatus::Unknown,
        ReceiptStat::Accepted | ReceiptStat::Enroute => MessageStatus::Submitted,
    }
}

/// A receipt as parked in Redis until its mapping exists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Parked {
    pub vendor_message_id: String,
    pub stat: String,
    pub err: Option<String>,
    pub at: chrono::DateTime<Utc>,
}

impl Parked {
    fn of(r: &Receipt) -> Self {
        Self {
            vendor_message_id: r.message_id.clone(),
            stat: r.stat.as_str().to_string(),
            err: r.err.clone(),
            at: Utc::now(),
        }
    }
}

pub struct ReceiptHandler {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub callbacks: Callbacks,
    pub mo_url: Option<String>,
    /// Customer accounts: whether a receipt of a customer's message is forwarded.
    pub accounts: Arc<AccountRegistry>,
    /// Where receipts for customers go: the `outbox::Outbox` the SMPP server's sessions
    /// consume (a `MemoryQueue` in in-process tests).
    pub outbox: Arc<dyn ReceiptQueue>,
    /// How long a receipt matched only through a numeric reading of an `Auto` id waits for
    /// a message written exactly like it ([`EXACT_MATCH_GRACE`] in production).
    pub exact_grace: Duration,
}

/// Covers a receipt sent before its submit_sm_resp, or racing the write of its mapping: the
/// mapping is written once every part is acknowledged, well within this.
pub const EXACT_MATCH_GRACE: Duration = Duration::from_secs(3);

impl Inbound for Arc<ReceiptHandler> {
    fn deliver_sm(&self, vendor: &VendorConfig, cmd: Command, reply: DeliverReply) {
        let Some(Pdu::DeliverSm(d)) = cmd.pdu() else {
            reply.answer(CommandStatus::EsmeRok);
            return;
        };
        match receipt::classify(d) {
            Ok(Classified::Receipt(r)) => {
                if let Some(v) = self.registry.by_id(vendor.id) {
                    v.dlrs_received
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.metrics
                    .receipts
                    .with_label_values(&[&vendor.name, r.stat.as_str()])
                    .inc();
                let me = self.clone();
                let (vid, name, fmt) =
                    (vendor.id, vendor.name.clone(), vendor.messaging.receipt_ids);
                tokio::spawn(async move {
                    match me.handle(vid, &name, fmt, &r).await {
                        Ok(()) => reply.answer(CommandStatus::EsmeRok),
                        Err(e) => {
                            me.metrics
                                .redis_errors
                                .with_label_values(&["receipt"])
                                .inc();
                            tracing::warn!(vendor = %name, error = %e, "cannot store a receipt; answering a temporary error so the vendor resends it");
                            drop(reply);
                        }
                    }
                });
            }
            Ok(Classified::Mo(mo)) => {
                self.metrics.mo.with_label_values(&[&vendor.name]).inc();
                if let Some(url) = &self.mo_url {
                    let body = serde_json::json!({
                        "from": mo.source, "to": mo.destination,
                        "text": decode_mo(mo.data_coding, &mo.short_message),
                        "vendor": vendor.name, "received_at": Utc::now(),
                    });
                    self.callbacks.post(Kind::Mo, url.clone(), body);
                }
                reply.answer(CommandStatus::EsmeRok);
            }
            Err(e) => {
                // It will never parse better: acknowledge, count and say why (not its text).
                self.metrics
                    .receipts
                    .with_label_values(&[&vendor.name, "invalid"])
                    .inc();
                tracing::warn!(vendor = %vendor.name, error = %e, "deliver_sm with an unreadable receipt; acknowledged and counted as invalid");
                reply.answer(CommandStatus::EsmeRok);
            }
        }
    }
}

/// What became of a receipt looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Looked {
    Applied,
    /// Waiting for its mapping (or, matched through a reading, for an exact one).
    Parked,
}

impl ReceiptHandler {
    async fn handle(
        self: &Arc<Self>,
        vendor_id: Uuid,
        vendor: &str,
        fmt: smpp_db::messaging::IdFormat,
        r: &Receipt,
    ) -> Result<(), crate::messaging::store::StoreError> {
        if self
            .correlate(vendor_id, vendor, fmt, &Parked::of(r), r.stat)
            .await?
            == Looked::Parked
        {
            self.metrics.receipts_parked.inc();
        }
        Ok(())
    }

    /// Looks the receipt up and applies it, or parks it until its mapping is written. A match
    /// that is uncertain (`ids::match_is_uncertain`: the message written exactly like the id
    /// may be sent but not stored yet) waits under the exact key, where that message's mapping
    /// will find it; only if none comes within `exact_grace` does the reading's match hold.
    async fn correlate(
        self: &Arc<Self>,
        vendor_id: Uuid,
        vendor: &str,
        fmt: smpp_db::messaging::IdFormat,
        p: &Parked,
        stat: ReceiptStat,
    ) -> Result<Looked, crate::messaging::store::StoreError> {
        let keys = receipt_keys(vendor_id, &p.vendor_message_id, fmt);
        let json = serde_json::to_string(p).expect("parked");
        let found = match self.store.correlate_or_park(&keys, &json).await? {
            None => return Ok(Looked::Parked),
            Some(c) if ids::match_is_uncertain(&p.vendor_message_id, fmt, c.key) => {
                match self.store.correlate_or_park(&keys[..1], &json).await? {
                    Some(exact) => {
                        self.count_uncertain(Uncertain::ExactWon);
                        exact
                    }
                    None => {
                        let later = Settle {
                            exact: keys[0].clone(),
                            json,
                            found: c,
                            vendor_id,
                            vendor: vendor.to_string(),
                            receipt: p.clone(),
                            stat,
                        };
                        self.settle_later(later);
                        return Ok(Looked::Parked);
                    }
                }
            }
            Some(c) => c,
        };
        self.apply(
            &found.id,
            found.part,
            vendor_id,
            vendor,
            stat,
            p.err.as_deref(),
        )
        .await?;
        Ok(Looked::Applied)
    }

    /// After `exact_grace`, applies a receipt parked under its exact key to the match found
    /// through a numeric reading, unless a mapping of the exact key took it meanwhile.
    fn settle_later(self: &Arc<Self>, s: Settle) {
        let h = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(h.exact_grace).await;
            // Whoever takes the receipt out of the parking list owns it: once taken here, a
            // retry only applies it again (apply_receipt keeps a final part's status).
            let taken = AtomicBool::new(false);
            retried(
                &h,
                &s.vendor,
                "a receipt matched through a numeric reading",
                || async {
                    if !taken.load(Ordering::Relaxed) {
                        if !h.store.unpark(&s.exact, &s.json).await? {
                            // Handed over to the exact mapping's writer, which applied it.
                            h.count_uncertain(Uncertain::ExactWon);
                            return Ok(());
                        }
                        taken.store(true, Ordering::Relaxed);
                        h.count_uncertain(Uncertain::ReadingHeld);
                    }
                    let (c, r) = (&s.found, &s.receipt);
                    h.apply(
                        &c.id,
                        c.part,
                        s.vendor_id,
                        &s.vendor,
                        s.stat,
                        r.err.as_deref(),
                    )
                    .await
                },
            )
            .await;
        });
    }

    fn count_uncertain(&self, outcome: Uncertain) {
        self.metrics
            .receipts_uncertain
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    async fn apply(
        &self,
        id: &str,
        part: u32,
        vendor_id: Uuid,
        vendor: &str,
        stat: ReceiptStat,
        err: Option<&str>,
    ) -> Result<(), crate::messaging::store::StoreError> {
        let status = part_status(stat);
        let entry = HistoryEntry::new("receipt")
            .vendor(vendor)
            .part(part)
            .detail(match err {
                Some(e) => format!("stat:{} err:{e}", stat.as_str()),
                None => format!("stat:{}", stat.as_str()),
            });
        let err = err.filter(|_| status != MessageStatus::Delivered && status.is_final());
        match self
            .store
            .apply_receipt(id, part, status, err, &entry)
            .await?
        {
            Some(change) => {
                self.notify(id, vendor_id, vendor, &change);
                // Before the vendor's deliver_sm is answered: an Err answers it with a
                // temporary error, and the resent receipt pushes again.
                self.forward(id, &change).await
            }
            // The message itself is not written yet (cluster write order): let the vendor resend.
            None => Err(crate::messaging::store::StoreError::Corrupt(format!(
                "message {id} of a correlated receipt is not stored yet"
            ))),
        }
    }

    /// Puts the customer's receipt in its account's outbox when one is due; the push marks
    /// the message so a resent vendor receipt does not push it twice.
    async fn forward(
        &self,
        id: &str,
        change: &StatusChange,
    ) -> Result<(), crate::messaging::store::StoreError> {
        let Some(c) = &change.customer else {
            return Ok(());
        };
        let account = self.accounts.get(c.origin.account);
        if !forwards(account.as_deref()) {
            return Ok(());
        }
        self.outbox
            .push(c.origin.account, &c.receipt(id, change.to))
            .await
    }

    /// The per-vendor counters of /api/v1/vendors for a message just submitted.
    pub fn count_sent(&self, vendor: Uuid, status: MessageStatus) {
        if let Some(v) = self.registry.by_id(vendor) {
            v.messages_sent.fetch_add(1, Ordering::Relaxed);
            if status.is_final() {
                v.messages_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn notify(&self, id: &str, vendor_id: Uuid, vendor: &str, change: &StatusChange) {
        if change.from == change.to {
            return;
        }
        if change.to.is_final()
            && let Some(v) = self.registry.by_id(vendor_id)
        {
            let counter = if change.to == MessageStatus::Delivered {
                &v.messages_success
            } else {
                &v.messages_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(cb) = &change.callback {
            let body = status_body(id, vendor, change.to, cb);
            self.callbacks.post(Kind::Status, cb.url.clone(), body);
        }
    }
}

/// Whether a customer's receipt goes to its outbox: unless its account is known here and
/// has receipt forwarding off. An account this pod does not know (yet) gets it: the outbox
/// keeps it for the TTL, and a receipt lost is worse than one nobody reads.
pub fn forwards(account: Option<&CustomerAccount>) -> bool {
    account.is_none_or(|a| a.forward_receipts)
}

/// The JSON of a status callback (docs/callbacks.md).
pub fn status_body(
    id: &str,
    vendor: &str,
    status: MessageStatus,
    cb: &crate::messaging::store::Callback,
) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "status": status,
        "vendor": vendor,
        "client_ref": cb.client_ref,
        "parts": cb.parts,
        "done_at": cb.done_at.unwrap_or_else(Utc::now),
        "error_code": cb.error_code,
    })
}

/// The waits after each failed attempt to apply an early receipt.
const PARKED_RETRIES: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// Runs `step` until it succeeds, a few times with the waits of [`PARKED_RETRIES`]: the vendor
/// was answered when the receipt was parked, so nobody resends it.
async fn retried<F, Fut>(h: &ReceiptHandler, vendor: &str, what: &str, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::messaging::store::StoreError>>,
{
    for (attempt, wait) in PARKED_RETRIES.iter().enumerate() {
        match step().await {
            Ok(()) => return,
            Err(e) => {
                h.metrics.redis_errors.with_label_values(&["receipt"]).inc();
                tracing::warn!(vendor = %vendor, error = %e, attempt = attempt + 1, "cannot apply {what}");
                tokio::time::sleep(*wait).await;
            }
        }
    }
}

/// How an uncertain match (`ids::match_is_uncertain`) was settled: the
/// `smpp_receipts_uncertain_total{outcome}` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncertain {
    /// The message written exactly like the receipt's id took it.
    ExactWon,
    /// None came within the grace: the match through the numeric reading held.
    ReadingHeld,
}

impl Uncertain {
    pub const ALL: [Uncertain; 2] = [Uncertain::ExactWon, Uncertain::ReadingHeld];

    pub fn as_str(self) -> &'static str {
        match self {
            Uncertain::ExactWon => "exact_won",
            Uncertain::ReadingHeld => "reading_held",
        }
    }
}

/// An uncertain match waiting out the grace under its exact key.
struct Settle {
    exact: String,
    /// The receipt as parked (the parking list's entry).
    json: String,
    found: Correlated,
    vendor_id: Uuid,
    vendor: String,
    receipt: Parked,
    stat: ReceiptStat,
}

/// Applies receipts that arrived before their mapping (handed back by `Store::create`).
pub fn apply_parked(handler: &Arc<ReceiptHandler>, cfg: &VendorConfig, mut parked: Vec<String>) {
    // A receipt parked under several keys (Auto ids) comes back once per key.
    parked.sort_unstable();
    parked.dedup();
    let h = handler.clone();
    let vendor = cfg.name.clone();
    let (vid, fmt) = (cfg.id, cfg.messaging.receipt_ids);
    tokio::spawn(async move {
        for p in parked {
            let Ok(p) = serde_json::from_str::<Parked>(&p) else {
                continue;
            };
            let Some(stat) = ReceiptStat::parse(&p.stat) else {
                continue;
            };
            retried(&h, &vendor, "an early receipt", || async {
                h.correlate(vid, &vendor, fmt, &p, stat).await.map(|_| ())
            })
            .await;
        }
    });
}

/// The correlation keys to look a receipt's vendor message id up under.
fn receipt_keys(vendor: Uuid, id: &str, fmt: smpp_db::messaging::IdFormat) -> Vec<String> {
    ids::receipt_keys(id, fmt)
        .iter()
        .map(|k| store::correlation_key(vendor, k))
        .collect()
}

/// MO text for the webhook: UCS-2 as UTF-16BE, Latin-1, else the GSM/ASCII bytes as text.
fn decode_mo(data_coding: u8, b: &[u8]) -> String {
    match data_coding {
        0x08 => {
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        0x03 => b.iter().map(|&c| c as char).collect(),
        _ => String::from_utf8_lossy(b).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_callback_carries_what_docs_callbacks_md_promises() {
        let cb = crate::messaging::store::Callback {
            url: "http://example.test/cb".into(),
            client_ref: Some("order-42".into()),
            parts: 2,
            done_at: Some(Utc::now()),
            error_code: Some("0x0000000B".into()),
        };
        let b = status_body("m1", "v", MessageStatus::Undeliverable, &cb);
        let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "client_ref",
                "done_at",
                "error_code",
                "id",
                "parts",
                "status",
                "vendor"
            ]
        );
        assert_eq!(b["status"], "undeliverable");
        assert_eq!(b["client_ref"], "order-42");
        assert_eq!(b["parts"], 2);
        assert!(
            !b.to_string().contains("example.test"),
            "the URL is not in the body"
        );
        // Nothing optional stored: nulls, and done_at still a time.
        let bare = crate::messaging::store::Callback {
            client_ref: None,
            done_at: None,
            error_code: None,
            ..cb
        };
        let b = status_body("m1", "v", MessageStatus::Delivered, &bare);
        assert!(b["client_ref"].is_null() && b["done_at"].is_string());
    }

    #[test]
    fn receipts_are_forwarded_unless_the_account_turned_it_off() {
        let mut a = CustomerAccount {
            id: Uuid::new_v4(),
            system_id: "acme".into(),
            password_hash: String::new(),
            allowed_cidrs: vec![],
            max_binds: 1,
            max_messages_per_second: None,
            allowed_senders: vec![],
            allowed_destination_prefixes: vec![],
            route: vec![],
            forward_receipts: true,
            suspended: false,
            config_version: 1,
        };
        assert!(forwards(Some(&a)));
        // Not known here (yet): kept in the outbox rather than lost.
        assert!(forwards(None));
        a.forward_receipts = false;
        assert!(!forwards(Some(&a)));
    }

    #[test]
    fn receipt_states_map_to_final_part_statuses() {
        assert_eq!(
            part_status(ReceiptStat::Delivered),
            MessageStatus::Delivered
        );
        assert_eq!(part_status(ReceiptStat::Expired), MessageStatus::Expired);
        assert_eq!(
            part_status(ReceiptStat::Undeliverable),
            MessageStatus::Undeliverable
        );
        assert_eq!(part_status(ReceiptStat::Rejected), MessageStatus::Rejected);
        assert!(!part_status(ReceiptStat::Enroute).is_final());
        assert!(!part_status(ReceiptStat::Accepted).is_final());
    }
}
