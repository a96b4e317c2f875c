//! Submitting one message on this pod: validate, route, encode and split, send every part
//! on a bound session, retry throttling, fail over, record, correlate.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::fleet::config::VendorConfig;
use crate::fleet::sessions::SessionIndex;
use crate::messaging::customer::Origin;
use crate::messaging::encoding::{self, EncodeError, Encoded};
use crate::messaging::model::{HistoryEntry, MessageStatus};
use crate::messaging::store::{self, NewMessage, Store};
use crate::messaging::{ids, router};
use crate::metrics::Metrics;
use crate::smpp::pdu::Submit;
use crate::smpp::session::SubmitError as SessionError;

/// The body of POST /api/v1/messages (and of each batch entry).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    pub to: String,
    pub from: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_seconds: Option<u64>,
}

/// A customer's own part, sent to the vendor as it came instead of encoding a text: one part
/// of a long message (its UDH in short_message, or its SAR TLVs), or binary content. It is a
/// message of its own: one submit_sm, one message id, one receipt, as the customer expects
/// from an SMSC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawPart {
    pub data_coding: u8,
    /// UDHI (0x40) when short_message starts with a UDH; other bits pass through too.
    pub esm_class: u8,
    pub short_message: Vec<u8>,
    /// sar_msg_ref_num, sar_total_segments, sar_segment_seqnum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sar: Option<(u16, u8, u8)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_payload: Option<Vec<u8>>,
}

/// What a submit carries besides the request (the SMPP server's submits; HTTP has none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    /// Send this part as it is; the request's text is then not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawPart>,
    /// The customer account it came from: its receipt goes back to that account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The customer account that submitted it, receipt asked for or not: only that account's
    /// query_sm sees the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Uuid>,
}

/// The 201 answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Accepted {
    pub id: String,
    pub status: MessageStatus,
    pub vendor: String,
    pub vendor_message_ids: Vec<String>,
    pub parts: u32,
}

/// Why a submit was not accepted. Each maps to one HTTP status and one error code.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SubmitError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no vendor named {0:?} (vendor is an SmppVendor's instanceName)")]
    UnknownVendor(String),
    #[error(
        "no vendor with a bound session routes {0} (check `kubectl get smppvendors`: BOUND and REASON)"
    )]
    NoRoute(String),
    #[error("this gateway has {0} submits in flight, its limit; retry with backoff")]
    QueueFull(usize),
    #[error("vendor {vendor} rejected part {part} with {status}")]
    Rejected {
        vendor: String,
        part: u32,
        status: String,
        /// The vendor's command_status.
        code: u32,
        id: Option<String>,
    },
    #[error(
        "vendor {vendor} sent no submit_sm_resp for part {part} within {secs} s; message {id} is marked failed"
    )]
    Timeout {
        vendor: String,
        part: u32,
        secs: u64,
        id: String,
    },
    #[error("Redis is unavailable ({0}); nothing was sent")]
    StoreUnavailable(String),
    #[error("{0}")]
    Forward(String),
    /// The answer of the pod the submit was forwarded to, passed through.
    #[error("{message}")]
    Remote {
        status: u16,
        code: String,
        message: String,
        id: Option<String>,
        /// The SMPP command_status the remote pod answered (a forwarded SMPP submit).
        command_status: Option<u32>,
    },
}

impl SubmitError {
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Invalid { .. } | Self::UnknownVendor(_) => 400,
            Self::QueueFull(_) => 429,
            Self::Rejected { .. } | Self::Forward(_) => 502,
            Self::NoRoute(_) | Self::StoreUnavailable(_) => 503,
            Self::Timeout { .. } => 504,
            Self::Remote { status, .. } => *status,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Self::Invalid { .. } => "invalid_request",
            Self::UnknownVendor(_) => "unknown_vendor",
            Self::NoRoute(_) => "no_route",
            Self::QueueFull(_) => "queue_full",
            Self::Rejected { .. } => "vendor_rejected",
            Self::Timeout { .. } => "vendor_timeout",
            Self::StoreUnavailable(_) => "redis_unavailable",
            Self::Forward(_) => "forward_failed",
            Self::Remote { code, .. } => code,
        }
    }

    /// The message id, when the message was recorded (the client can GET it).
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Self::Rejected { id, .. } => id.as_deref(),
            Self::Timeout { id, .. } => Some(id),
            Self::Remote { id, .. } => id.as_deref(),
            _ => None,
        }
    }
}

/// Limits of one submit.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_parts: usize,
    pub response_timeout: Duration,
    /// Tries of one part when the vendor answers ESME_RTHROTTLED or ESME_RMSGQFUL.
    pub throttle_tries: u32,
    pub throttle_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_parts: 10,
            response_timeout: Duration::from_secs(10),
            throttle_tries: 5,
            throttle_backoff: Duration::from_millis(50),
        }
    }
}

/// Checks the fields that do not depend on the vendor. Pure.
pub fn validate(r: &MessageRequest) -> Result<(), SubmitError> {
    let invalid = |field, message: &str| SubmitError::Invalid {
        field,
        message: message.to_string(),
    };
    let to = r.to.strip_prefix('+').unwrap_or(&r.to);
    if to.is_empty() || to.len() > 20 || !to.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "to",
            "must be a phone number in international format: digits, an optional leading +, at most 20",
        ));
    }
    let from = r.from.strip_prefix('+').unwrap_or(&r.from);
    let numeric = !from.is_empty() && from.bytes().all(|b| b.is_ascii_digit());
    if r.from.is_empty()
        || (numeric && from.len() > 20)
        || (!numeric
            && (r.from.len() > 11
                || !r
                    .from
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b' ')))
    {
        return Err(invalid(
            "from",
            "must be a phone number (at most 20 digits) or an alphanumeric sender id (at most 11 letters, digits or spaces)",
        ));
    }
    if r.text.is_empty() {
        return Err(invalid("text", "must not be empty"));
    }
    if let Some(u) = &r.callback_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(invalid(
            "callback_url",
            "must be an http:// or https:// URL",
        ));
    }
    if r.validity_seconds == Some(0) {
        return Err(invalid("validity_seconds", "must be at least 1"));
    }
    Ok(())
}

/// Whether a submit_sm_resp status means "try again later".
fn is_throttle(status: u32) -> bool {
    status == 0x58 || status == 0x14
}

/// "ESME_RTHROTTLED (0x00000058)": the name a person looks up, and the number.
fn status_name(status: u32) -> String {
    format!(
        "{} (0x{status:08X})",
        crate::smpp::diagnostics::status_name(status)
    )
}

/// The messaging core on this pod.
pub struct Messenger {
    pub store: Store,
    pub receipts: Arc<crate::messaging::receipts::ReceiptHandler>,
    pub sessions: Arc<SessionIndex>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
}

impl Messenger {
    pub fn new(
        store: Store,
        receipts: Arc<crate::messaging::receipts::ReceiptHandler>,
        sessions: Arc<SessionIndex>,
        metrics: Arc<Metrics>,
        limits: Limits,
        max_inflight: usize,
    ) -> Self {
        Self {
            store,
            receipts,
            sessions,
            metrics,
            limits,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
        }
    }

    /// Sends the message on a vendor bound on this pod, failing over among `vendors` (in
    /// route order, every one bound here). The caller has validated the request.
    pub async fn submit_local(
        &self,
        req: &MessageRequest,
        vendors: &[Arc<VendorConfig>],
    ) -> Result<Accepted, SubmitError> {
        self.submit_local_with(req, &Extra::default(), vendors)
            .await
    }

    /// [`Messenger::submit_local`] with a customer's raw part and origin.
    pub async fn submit_local_with(
        &self,
        req: &MessageRequest,
        extra: &Extra,
        vendors: &[Arc<VendorConfig>],
    ) -> Result<Accepted, SubmitError> {
        let _permit = self
            .inflight
            .try_acquire()
            .map_err(|_| SubmitError::QueueFull(self.max_inflight))?;
        let id = Uuid::new_v4().simple().to_string();
        let mut history = vec![HistoryEntry::new("accepted")];
        let mut last_err = SubmitError::NoRoute(req.to.clone());
        for (n, cfg) in vendors.iter().enumerate() {
            if n > 0 {
                self.metrics.failovers.with_label_values(&[&cfg.name]).inc();
                history.push(HistoryEntry::new("failover").vendor(&cfg.name));
            }
            match self.try_vendor(&id, req, extra, cfg, &mut history).await {
                Ok(a) => return Ok(a),
                Err(Attempt::Permanent(e)) => last_err = e,
                Err(Attempt::Final(e)) => return Err(e),
            }
        }
        Err(last_err)
    }

    async fn try_vendor(
        &self,
        id: &str,
        req: &MessageRequest,
        extra: &Extra,
        cfg: &Arc<VendorConfig>,
        history: &mut Vec<HistoryEntry>,
    ) -> Result<Accepted, Attempt> {
        let vendor = cfg.name.clone();
        let m = &cfg.messaging;
        let submits = match &extra.raw {
            Some(raw) => vec![raw_submit(req, raw)],
            None => {
                let encoded = encoding::encode(
                    &req.text,
                    m.default_alphabet,
                    m.long_messages,
                    rand::random::<u16>(),
                    self.limits.max_parts,
                )
                .map_err(|e| Attempt::Final(encode_error(e)))?;
                (0..encoded.parts.len())
                    .map(|p| part_submit(req, &encoded, p))
                    .collect()
            }
        };
        let Some(vs) = self.sessions.vendor(cfg.id) else {
            return Err(Attempt::Permanent(SubmitError::NoRoute(req.to.clone())));
        };
        // Without Redis nothing could be tracked: refuse before anything is sent.
        if !self.store.healthy() {
            return Err(Attempt::Final(SubmitError::StoreUnavailable(
                "the last Redis operation failed".into(),
            )));
        }
        let parts = submits.len() as u32;
        let started = std::time::Instant::now();
        let sends = submits.into_iter().map(|s| self.send_part(&vs, s, &vendor));
        let results = futures::future::join_all(sends).await;
        let mut vids = Vec::with_capacity(results.len());
        let mut failure: Option<(u32, PartResult)> = None;
        for (p, (r, tries)) in results.into_iter().enumerate() {
            let p = p as u32;
            if tries > 1 {
                history.push(
                    HistoryEntry::new("throttled")
                        .vendor(&vendor)
                        .part(p)
                        .detail(format!("retried {} times", tries - 1)),
                );
            }
            history.push(r.history(&vendor, p));
            vids.push(match &r {
                PartResult::Ok(vid) => vid.clone(),
                _ => String::new(),
            });
            if !matches!(r, PartResult::Ok(_)) && failure.is_none() {
                failure = Some((p, r));
            }
        }
        let accepted_any = vids.iter().any(|v| !v.is_empty());
        if let Some((part, r)) = &failure
            && !accepted_any
            && r.nothing_sent()
        {
            // Nothing reached the vendor: another vendor may take it.
            self.metrics
                .submits
                .with_label_values(&[&vendor, "rejected"])
                .inc();
            return Err(Attempt::Permanent(r.error(
                &vendor,
                *part,
                None,
                &self.limits,
            )));
        }
        let (status, error_code) = match &failure {
            None => (MessageStatus::Submitted, None),
            Some((_, r)) => r.status(),
        };
        let mappings: Vec<(String, u32)> = vids
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .flat_map(|(p, v)| {
                ids::submit_keys(v, m.submit_ids)
                    .into_iter()
                    .map(move |k| (store::correlation_key(cfg.id, &k), p as u32))
            })
            .collect();
        let msg = NewMessage {
            id: id.to_string(),
            vendor: vendor.clone(),
            vendor_id: cfg.id,
            parts,
            vendor_message_ids: vids.clone(),
            submitted_at: Utc::now(),
            status,
            error_code,
            client_ref: req.client_ref.clone(),
            callback_url: req.callback_url.clone(),
            origin: extra.origin.clone(),
            account: extra.account,
        };
        self.record(cfg, msg, std::mem::take(history), mappings)
            .await;
        self.metrics
            .submit_latency
            .with_label_values(&[&vendor])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .submits
            .with_label_values(&[&vendor, status.as_str()])
            .inc();
        self.receipts.count_sent(cfg.id, status);
        match failure {
            None => Ok(Accepted {
                id: id.to_string(),
                status,
                vendor,
                vendor_message_ids: vids,
                parts,
            }),
            Some((part, r)) => Err(Attempt::Final(r.error(
                &vendor,
                part,
                Some(id.to_string()),
                &self.limits,
            ))),
        }
    }

    /// Writes the message and its mappings. The vendor has it already, so when Redis fails
    /// now the write is retried in the background (receipts meanwhile get a temporary error
    /// and come again) instead of losing track of a sent message.
    async fn record(
        &self,
        cfg: &Arc<VendorConfig>,
        msg: NewMessage,
        history: Vec<HistoryEntry>,
        mappings: Vec<(String, u32)>,
    ) {
        match self.store.create(&msg, &history, &mappings).await {
            Ok(parked) => {
                if !parked.is_empty() {
                    crate::messaging::receipts::apply_parked(&self.receipts, cfg, parked);
                }
            }
            Err(e) => {
                self.metrics
                    .redis_errors
                    .with_label_values(&["create"])
                    .inc();
                tracing::warn!(message = %msg.id, error = %e, "cannot store a sent message yet; retrying in the background");
                let (store, receipts, cfg) =
                    (self.store.clone(), self.receipts.clone(), cfg.clone());
                tokio::spawn(async move {
                    let mut delay = Duration::from_millis(200);
                    // Bounded by the DLR TTL: after that the receipts are gone anyway.
                    let give_up = tokio::time::Instant::now() + store.ttl();
                    while tokio::time::Instant::now() < give_up {
                        tokio::time::sleep(delay).await;
                        if let Ok(parked) = store.create(&msg, &history, &mappings).await {
                            tracing::info!(message = %msg.id, "stored the sent message after Redis came back");
                            crate::messaging::receipts::apply_parked(&receipts, &cfg, parked);
                            return;
                        }
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                    tracing::error!(message = %msg.id, "gave up storing a sent message: its receipts cannot be correlated");
                });
            }
        }
    }

    /// Sends one part, retrying throttling answers with backoff; returns the result and the
    /// number of tries.
    async fn send_part(
        &self,
        vs: &crate::fleet::sessions::VendorSessions,
        submit: Submit,
        vendor: &str,
    ) -> (PartResult, u32) {
        let mut tries = 0;
        loop {
            tries += 1;
            let Some(session) = vs.pick() else {
                return (PartResult::NotSent("no bound session".into()), tries);
            };
            let result = match session
                .submit(submit.clone(), self.limits.response_timeout)
                .await
            {
                Ok(o) if o.status == 0 => PartResult::Ok(o.message_id),
                Ok(o) if is_throttle(o.status) && tries < self.limits.throttle_tries => {
                    self.metrics.throttled.with_label_values(&[vendor]).inc();
                    let backoff = self.limits.throttle_backoff * 2u32.pow(tries - 1);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                Ok(o) => PartResult::Rejected(o.status),
                Err(SessionError::Timeout(_)) => PartResult::Timeout,
                Err(SessionError::Closed | SessionError::Malformed(_)) => PartResult::Lost,
                Err(e @ (SessionError::Busy(_) | SessionError::Pdu(_))) => {
                    PartResult::NotSent(e.to_string())
                }
            };
            return (result, tries);
        }
    }
}

/// What one part's send ended with.
enum PartResult {
    Ok(String),
    /// The vendor answered with an error status.
    Rejected(u32),
    /// Sent, and no answer in time: the vendor may have it.
    Timeout,
    /// The session closed while the part was queued or in flight.
    Lost,
    /// Never written to the vendor (no session, window full, a field the PDU refuses).
    NotSent(String),
}

impl PartResult {
    fn nothing_sent(&self) -> bool {
        matches!(self, PartResult::Rejected(_) | PartResult::NotSent(_))
    }

    fn history(&self, vendor: &str, part: u32) -> HistoryEntry {
        let (event, detail) = match self {
            PartResult::Ok(vid) => ("submit_sm_resp", format!("message_id {vid}")),
            PartResult::Rejected(s) => ("rejected", status_name(*s)),
            PartResult::Timeout => ("timeout", "no submit_sm_resp in time".to_string()),
            PartResult::Lost => (
                "lost",
                "the session closed before submit_sm_resp".to_string(),
            ),
            PartResult::NotSent(why) => ("not_sent", why.clone()),
        };
        HistoryEntry::new(event)
            .vendor(vendor)
            .part(part)
            .detail(detail)
    }

    /// The message's status and error code when this is its first failed part.
    fn status(&self) -> (MessageStatus, Option<String>) {
        match self {
            PartResult::Ok(_) => (MessageStatus::Submitted, None),
            PartResult::Rejected(s) => (MessageStatus::Rejected, Some(format!("0x{s:08X}"))),
            PartResult::Timeout => (MessageStatus::Failed, Some("timeout".into())),
            PartResult::Lost => (MessageStatus::Failed, Some("session_closed".into())),
            PartResult::NotSent(_) => (MessageStatus::Failed, Some("not_sent".into())),
        }
    }

    fn error(&self, vendor: &str, part: u32, id: Option<String>, l: &Limits) -> SubmitError {
        match self {
            PartResult::Rejected(s) => SubmitError::Rejected {
                vendor: vendor.to_string(),
                part,
                status: status_name(*s),
                code: *s,
                id,
            },
            PartResult::NotSent(why) if id.is_none() => {
                SubmitError::NoRoute(format!("vendor {vendor} could not take it ({why})"))
            }
            _ => SubmitError::Timeout {
                vendor: vendor.to_string(),
                part,
                secs: l.response_timeout.as_secs(),
                id: id.unwrap_or_default(),
            },
        }
    }
}

enum Attempt {
    /// This vendor could not take it; the next may.
    Permanent(SubmitError),
    /// The answer (nothing to fail over: invalid, or already partly sent).
    Final(SubmitError),
}

fn encode_error(e: EncodeError) -> SubmitError {
    SubmitError::Invalid {
        field: "text",
        message: e.to_string(),
    }
}

/// The submit_sm of part `p`. Pure.
pub fn part_submit(req: &MessageRequest, e: &Encoded, p: usize) -> Submit {
    let part = &e.parts[p];
    Submit {
        source_addr: req.from.clone(),
        destination_addr: req.to.clone(),
        short_message: part.short_message.clone(),
        data_coding: e.data_coding,
        esm_class: if part.udhi { 0x40 } else { 0 },
        registered_delivery: true,
        validity: req.validity_seconds.map(Duration::from_secs),
        sar: part.sar.as_ref().map(|s| (s.reference, s.total, s.seq)),
        message_payload: part.message_payload.clone(),
    }
}

/// The submit_sm of a customer's raw part. Pure.
pub fn raw_submit(req: &MessageRequest, raw: &RawPart) -> Submit {
    Submit {
        source_addr: req.from.clone(),
        destination_addr: req.to.clone(),
        short_message: raw.short_message.clone(),
        data_coding: raw.data_coding,
        esm_class: raw.esm_class,
        registered_delivery: true,
        validity: req.validity_seconds.map(Duration::from_secs),
        sar: raw.sar,
        message_payload: raw.message_payload.clone(),
    }
}

/// An account's own route: its vendors (instance names, lowest priority value first) that
/// are bound somewhere in the fleet, in that order; an unknown or unbound one is skipped, so
/// the next takes over. Destination prefixes of those vendors are not consulted: the
/// account's route is the choice. Pure.
pub fn account_route(
    req: &MessageRequest,
    route: &[smpp_db::accounts::RouteEntry],
    vendors: &[(Arc<VendorConfig>, bool)],
) -> Result<Vec<Arc<VendorConfig>>, SubmitError> {
    let mut sorted: Vec<_> = route.iter().collect();
    sorted.sort_by_key(|r| r.priority);
    let order: Vec<Arc<VendorConfig>> = sorted
        .iter()
        .filter_map(|r| vendors.iter().find(|(c, _)| c.name == r.vendor))
        .filter(|(_, bound)| *bound)
        .map(|(c, _)| c.clone())
        .collect();
    if order.is_empty() {
        let names: Vec<&str> = sorted.iter().map(|r| r.vendor.as_str()).collect();
        return Err(SubmitError::NoRoute(format!(
            "{} (none of the account's route vendors {names:?} has a bound session)",
            req.to
        )));
    }
    Ok(order)
}

/// The route: the vendors in the order to try, among those bound anywhere in the fleet.
/// `explicit` pins one vendor by name.
pub fn route(
    req: &MessageRequest,
    vendors: &[(Arc<VendorConfig>, bool)],
) -> Result<Vec<Arc<VendorConfig>>, SubmitError> {
    if let Some(name) = &req.vendor {
        let (cfg, bound) = vendors
            .iter()
            .find(|(c, _)| &c.name == name)
            .ok_or_else(|| SubmitError::UnknownVendor(name.clone()))?;
        return if *bound {
            Ok(vec![cfg.clone()])
        } else {
            Err(SubmitError::NoRoute(format!(
                "{} (vendor {name} has no bound session)",
                req.to
            )))
        };
    }
    let cands: Vec<router::Candidate> = vendors
        .iter()
        .map(|(c, bound)| router::Candidate {
            id: c.id,
            name: c.name.clone(),
            priority: c.routing.priority,
            weight: c.routing.weight,
            prefixes: c.routing.prefixes.clone(),
            bound: *bound,
        })
        .collect();
    let order = router::order(&req.to, &cands, rand::random::<f64>);
    if order.is_empty() {
        return Err(SubmitError::NoRoute(req.to.clone()));
    }
    Ok(order.into_iter().map(|i| vendors[i].0.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> MessageRequest {
        MessageRequest {
            to: "+15551234567".into(),
            from: "ACME".into(),
            text: "hi".into(),
            vendor: None,
            callback_url: None,
            client_ref: None,
            validity_seconds: None,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(validate(&req()), Ok(()));
        let field = |r: MessageRequest| match validate(&r) {
            Err(SubmitError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(MessageRequest {
                to: "12ab".into(),
                ..req()
            }),
            "to"
        );
        assert_eq!(
            field(MessageRequest {
                to: "".into(),
                ..req()
            }),
            "to"
        );
        assert_eq!(
            field(MessageRequest {
                from: "".into(),
                ..req()
            }),
            "from"
        );
        assert_eq!(
            field(MessageRequest {
                from: "TOOLONGSENDERID".into(),
                ..req()
            }),
            "from"
        );
        assert_eq!(
            field(MessageRequest {
                text: "".into(),
                ..req()
            }),
            "text"
        );
        assert_eq!(
            field(MessageRequest {
                callback_url: Some("ftp://x".into()),
                ..req()
            }),
            "callback_url"
        );
        assert_eq!(
            field(MessageRequest {
                validity_seconds: Some(0),
                ..req()
            }),
            "validity_seconds"
        );
    }

    fn vendor(name: &str) -> Arc<VendorConfig> {
        let r = crate::fleet::config::tests::row(name);
        Arc::new(crate::fleet::config::parse(&r).config.expect("valid row"))
    }

    #[test]
    fn an_account_route_goes_by_priority_and_skips_unbound_and_unknown_vendors() {
        use smpp_db::accounts::RouteEntry;
        let e = |vendor: &str, priority| RouteEntry {
            vendor: vendor.into(),
            priority,
        };
        let table = vec![
            (vendor("a"), true),
            (vendor("b"), false),
            (vendor("c"), true),
        ];
        let names =
            |r: Vec<Arc<VendorConfig>>| r.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        let route = [e("c", 20), e("nope", 1), e("b", 5), e("a", 10)];
        assert_eq!(
            names(account_route(&req(), &route, &table).unwrap()),
            ["a", "c"]
        );
        // Only unbound or unknown ones: no route, and the error names them.
        let err = account_route(&req(), &[e("b", 1), e("nope", 2)], &table).unwrap_err();
        assert!(
            matches!(&err, SubmitError::NoRoute(m) if m.contains("\"b\"") && m.contains("nope")),
            "{err}"
        );
    }

    #[test]
    fn a_raw_part_is_sent_as_it_came() {
        let raw = RawPart {
            data_coding: 0x08,
            esm_class: 0x40,
            short_message: vec![5, 0, 3, 9, 2, 1, 0, 0x41],
            sar: None,
            message_payload: None,
        };
        let s = raw_submit(&req(), &raw);
        assert_eq!((s.data_coding, s.esm_class), (0x08, 0x40));
        assert_eq!(s.short_message, raw.short_message);
        assert!(s.registered_delivery);
        assert_eq!(s.destination_addr, "+15551234567");
    }

    #[test]
    fn errors_map_to_http_statuses() {
        assert_eq!(SubmitError::UnknownVendor("x".into()).http_status(), 400);
        assert_eq!(SubmitError::QueueFull(1).http_status(), 429);
        assert_eq!(SubmitError::NoRoute("1".into()).http_status(), 503);
        assert_eq!(SubmitError::StoreUnavailable("x".into()).http_status(), 503);
        let t = SubmitError::Timeout {
            vendor: "v".into(),
            part: 0,
            secs: 1,
            id: "m".into(),
        };
        assert_eq!((t.http_status(), t.message_id()), (504, Some("m")));
        assert!(status_name(0x58).contains("0x00000058"));
    }
}
