//! The messaging core in-process: real sessions over `tokio::io::duplex` to a fake vendor
//! that this test drives, the in-memory store, no network. What crosses processes (Redis,
//! the node simulator, several gateways) is tested in e2e/tests/messages*.rs.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rusmpp::pdus::{DeliverSm, SubmitSmResp};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::EsmClass;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::fleet::accounts::AccountRegistry;
use crate::fleet::config::{VendorConfig, parse, tests::row};
use crate::fleet::sessions::{Inbound, SessionIndex};
use crate::fleet::state::Registry;
use crate::messaging::callbacks::{Callbacks, RetryPolicy};
use crate::messaging::customer::Origin;
use crate::messaging::model::MessageStatus;
use crate::messaging::outbox::MemoryQueue;
use crate::messaging::receipts::{ReceiptHandler, Uncertain};
use crate::messaging::store::memory::MemoryStore;
use crate::messaging::store::{MessageStore, Store};
use crate::messaging::submit::{Extra, Limits, MessageRequest, Messenger, SubmitError};
use crate::metrics::Metrics;
use crate::smpp::codec::Codec;
use crate::smpp::connection::Transport;
use crate::smpp::session::{self, DeliverReply, Observer, Timeouts, Tunables};
use crate::smpp::trace::Tracer;

/// How the fake vendor behaves.
#[derive(Clone, Default)]
pub(crate) struct Behaviour {
    /// submit_sm_resp ids in upper-case hex (receipts stay decimal).
    pub(crate) hex_ids: bool,
    /// Answer the first N submits with ESME_RTHROTTLED.
    pub(crate) throttle_first: u32,
    /// Answer every submit with this error status.
    pub(crate) reject: Option<CommandStatus>,
    /// Never answer submits.
    pub(crate) silent: bool,
    /// Send the receipt before the submit_sm_resp.
    pub(crate) receipt_first: bool,
    /// Hold receipts until the test releases them.
    pub(crate) hold_receipts: bool,
    /// The message ids of the first submits, in order (then counting on from 1001).
    pub(crate) ids: Vec<u64>,
}

/// What the test sees of the fake vendor.
pub(crate) struct Vendor {
    pub(crate) submits: Arc<AtomicU32>,
    /// Releases that many held receipts.
    pub(crate) release: mpsc::UnboundedSender<usize>,
    /// Statuses of the deliver_sm_resp the gateway sent.
    pub(crate) resps: mpsc::UnboundedReceiver<CommandStatus>,
}

fn receipt(id: u64, seq: u32) -> Command {
    let text = format!(
        "id:{id} sub:001 dlvrd:001 submit date:2612020000 done date:2612020000 stat:DELIVRD err:000 text:"
    );
    let d = DeliverSm::builder()
        .source_addr(COctetString::from_str("15551234567").unwrap())
        .destination_addr(COctetString::from_str("ACME").unwrap())
        .esm_class(EsmClass::from(0x04u8))
        .short_message(OctetString::from_slice(text.as_bytes()).unwrap())
        .build();
    Command::new(CommandStatus::EsmeRok, seq, d)
}

/// Plays a vendor on `peer`: answers submits, sends receipts, resends a receipt answered
/// with a temporary error.
pub(crate) fn fake_vendor(peer: tokio::io::DuplexStream, b: Behaviour) -> Vendor {
    let submits = Arc::new(AtomicU32::new(0));
    let (release, mut released) = mpsc::unbounded_channel::<usize>();
    let (resp_tx, resps) = mpsc::unbounded_channel();
    let n = submits.clone();
    tokio::spawn(async move {
        let mut conn = Framed::new(peer, Codec::new());
        let mut next_id = 1000u64;
        let mut seq = 1u32;
        let mut held: Vec<u64> = Vec::new();
        let mut outstanding: std::collections::HashMap<u32, u64> = Default::default();
        loop {
            tokio::select! {
                Some(k) = released.recv() => {
                    for id in held.drain(..k.min(held.len())).collect::<Vec<_>>() {
                        seq += 1;
                        outstanding.insert(seq, id);
                        let _ = conn.send(receipt(id, seq)).await;
                    }
                }
                frame = conn.next() => {
                    let Some(Ok(Ok(cmd))) = frame else { return };
                    match cmd.id() {
                        CommandId::SubmitSm => {
                            let count = n.fetch_add(1, Ordering::SeqCst) + 1;
                            if b.silent {
                                continue;
                            }
                            let status = if count <= b.throttle_first {
                                Some(CommandStatus::EsmeRthrottled)
                            } else {
                                b.reject
                            };
                            if let Some(s) = status {
                                let r = SubmitSmResp::new(COctetString::empty(), Vec::new());
                                let _ = conn.send(Command::new(s, cmd.sequence_number(), r)).await;
                                continue;
                            }
                            let id = match b.ids.get(count as usize - 1) {
                                Some(id) => *id,
                                None => {
                                    next_id += 1;
                                    next_id
                                }
                            };
                            let shown = if b.hex_ids { format!("{id:X}") } else { id.to_string() };
                            let resp = Command::new(
                                CommandStatus::EsmeRok,
                                cmd.sequence_number(),
                                SubmitSmResp::new(COctetString::from_string(shown).unwrap(), Vec::new()),
                            );
                            if b.hold_receipts {
                                held.push(id);
                                let _ = conn.send(resp).await;
                            } else {
                                seq += 1;
                                outstanding.insert(seq, id);
                                if b.receipt_first {
                                    let _ = conn.send(receipt(id, seq)).await;
                                    let _ = conn.send(resp).await;
                                } else {
                                    let _ = conn.send(resp).await;
                                    let _ = conn.send(receipt(id, seq)).await;
                                }
                            }
                        }
                        CommandId::DeliverSmResp => {
                            let _ = resp_tx.send(cmd.status());
                            let id = outstanding.remove(&cmd.sequence_number());
                            if cmd.status() == CommandStatus::EsmeRxTAppn && let Some(id) = id {
                                // Temporary: hold it again; the test releases it.
                                held.push(id);
                            }
                        }
                        CommandId::EnquireLink => {
                            let _ = conn.send(Command::new(CommandStatus::EsmeRok, cmd.sequence_number(), Pdu::EnquireLinkResp)).await;
                        }
                        _ => {}
                    }
                }
            }
        }
    });
    Vendor {
        submits,
        release,
        resps,
    }
}

/// Hands deliver_sm to the receipt handler, as the fleet's worker does.
struct Forward(Arc<ReceiptHandler>, Arc<VendorConfig>);
impl Observer for Forward {
    fn deliver_sm(&self, cmd: Command, reply: DeliverReply) {
        self.0.deliver_sm(&self.1, cmd, reply);
    }
}

pub(crate) struct Core {
    pub(crate) messenger: Messenger,
    pub(crate) memory: Arc<MemoryStore>,
    pub(crate) vendors: Vec<Arc<VendorConfig>>,
    /// The customer receipts the handler pushed.
    pub(crate) queue: Arc<MemoryQueue>,
    /// The customer accounts the handler looks receipt forwarding up in.
    pub(crate) accounts: Arc<AccountRegistry>,
}

/// One bound session per vendor `(name, priority, behaviour)`, all on this "pod".
pub(crate) fn core(vendors: &[(&str, i32, Behaviour)]) -> (Core, Vec<Vendor>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let memory = Arc::new(MemoryStore::default());
    let store: Store = memory.clone();
    let metrics = Arc::new(Metrics::new());
    let queue = Arc::new(MemoryQueue::marking(memory.clone()));
    let accounts = AccountRegistry::new();
    let receipts = Arc::new(ReceiptHandler {
        store: store.clone(),
        metrics: metrics.clone(),
        registry: Arc::new(Registry::default()),
        callbacks: Callbacks::start(
            reqwest::Client::new(),
            None,
            RetryPolicy::default(),
            metrics.clone(),
            10,
            1,
        ),
        mo_url: None,
        accounts: accounts.clone(),
        outbox: queue.clone(),
        exact_grace: Duration::from_millis(300),
    });
    let sessions = Arc::new(SessionIndex::default());
    let mut cfgs = Vec::new();
    let mut fakes = Vec::new();
    for (name, priority, b) in vendors {
        let mut r = row(name);
        r.config.routing_priority = *priority;
        r.config.message_id_submit_format = "Auto".into();
        let cfg = Arc::new(parse(&r).config.expect("valid row"));
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let (handle, _join) = session::spawn(
            Framed::new(Box::new(ours) as Transport, Codec::new()),
            Tunables {
                window: 10,
                tps: None,
                enquire_interval: Duration::from_secs(3600),
            },
            Timeouts::default(),
            (*name).into(),
            Arc::new(Tracer::default()),
            Arc::new(Forward(receipts.clone(), cfg.clone())),
        );
        sessions.set_config(&cfg);
        sessions.add(&cfg, 0, handle);
        fakes.push(fake_vendor(theirs, b.clone()));
        cfgs.push(cfg);
    }
    let limits = Limits {
        response_timeout: Duration::from_millis(500),
        throttle_backoff: Duration::from_millis(1),
        ..Limits::default()
    };
    let messenger = Messenger::new(store, receipts, sessions, metrics, limits, 100);
    (
        Core {
            messenger,
            memory,
            vendors: cfgs,
            queue,
            accounts,
        },
        fakes,
    )
}

fn req(text: &str) -> MessageRequest {
    MessageRequest {
        to: "+15551234567".into(),
        from: "ACME".into(),
        text: text.into(),
        vendor: None,
        callback_url: None,
        client_ref: None,
        validity_seconds: None,
    }
}

/// Polls the stored message until `f` holds (deadline only bounds a hang).
async fn wait_for(
    store: &MemoryStore,
    id: &str,
    what: &str,
    f: impl Fn(&crate::messaging::model::MessageView) -> bool,
) -> crate::messaging::model::MessageView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = store.get(id).await.unwrap()
            && f(&v)
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message {id} never {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Submits `text` on this core's vendors and waits until it is delivered.
async fn submit_delivered(c: &Core, text: &str) -> crate::messaging::submit::Accepted {
    let a = c
        .messenger
        .submit_local(&req(text), &c.vendors)
        .await
        .unwrap();
    wait_for(&c.memory, &a.id, "delivered", |v| {
        v.status == MessageStatus::Delivered
    })
    .await;
    a
}

/// `smpp_receipts_uncertain_total{outcome}` so far.
fn uncertain(c: &Core, outcome: Uncertain) -> u64 {
    c.messenger
        .metrics
        .receipts_uncertain
        .with_label_values(&[outcome.as_str()])
        .get()
}

fn receipts_in(v: &crate::messaging::model::MessageView) -> usize {
    v.history.iter().filter(|h| h.event == "receipt").count()
}

#[tokio::test]
async fn a_submit_comes_back_delivered() {
    let (c, fakes) = core(&[("v", 100, Behaviour::default())]);
    let a = c
        .messenger
        .submit_local(&req("hello"), &c.vendors)
        .await
        .unwrap();
    assert_eq!(
        (a.parts, a.status, a.vendor.as_str()),
        (1, MessageStatus::Submitted, "v")
    );
    let v = wait_for(&c.memory, &a.id, "delivered", |v| {
        v.status == MessageStatus::Delivered
    })
    .await;
    assert!(v.done_at.is_some());
    let events: Vec<&str> = v.history.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(events, ["accepted", "submit_sm_resp", "receipt"]);
    assert_eq!(fakes[0].submits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_multipart_message_is_delivered_only_when_every_part_is() {
    let hold = Behaviour {
        hold_receipts: true,
        ..Behaviour::default()
    };
    let (c, fakes) = core(&[("v", 100, hold)]);
    let a = c
        .messenger
        .submit_local(&req(&"a".repeat(1000)), &c.vendors)
        .await
        .unwrap();
    assert_eq!((a.parts, a.vendor_message_ids.len()), (7, 7));
    fakes[0].release.send(6).unwrap();
    let v = wait_for(&c.memory, &a.id, "got 6 receipts", |v| receipts_in(v) == 6).await;
    assert_eq!(v.status, MessageStatus::Submitted, "6 of 7 parts delivered");
    fakes[0].release.send(1).unwrap();
    wait_for(&c.memory, &a.id, "delivered", |v| {
        v.status == MessageStatus::Delivered
    })
    .await;
}

#[tokio::test]
async fn a_receipt_before_submit_sm_resp_is_parked_then_correlated() {
    let early = Behaviour {
        receipt_first: true,
        ..Behaviour::default()
    };
    let (c, _fakes) = core(&[("v", 100, early)]);
    let a = c
        .messenger
        .submit_local(&req("early"), &c.vendors)
        .await
        .unwrap();
    wait_for(&c.memory, &a.id, "delivered", |v| {
        v.status == MessageStatus::Delivered
    })
    .await;
    assert_eq!(c.messenger.metrics.receipts_parked.get(), 1);
}

/// Message 4097 is stored and delivered; then message 1001's receipt comes before its
/// submit_sm_resp. Read as hex, "1001" is 4097: the receipt must still go to message 1001
/// (written exactly like it), not to message 4097 through the reading.
#[tokio::test]
async fn an_early_receipt_waits_for_the_message_written_exactly_like_its_id() {
    let early = Behaviour {
        receipt_first: true,
        ids: vec![4097, 1001],
        ..Behaviour::default()
    };
    let (c, _fakes) = core(&[("v", 100, early)]);
    let first = submit_delivered(&c, "first").await;
    assert_eq!(first.vendor_message_ids, ["4097"]);
    let second = submit_delivered(&c, "second").await;
    assert_eq!(second.vendor_message_ids, ["1001"]);
    // The uncertain match is settled (the exact message took it), so nothing more can go
    // to the first message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while uncertain(&c, Uncertain::ExactWon) < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(uncertain(&c, Uncertain::ReadingHeld), 0);
    let v = c.memory.get(&first.id).await.unwrap().unwrap();
    assert_eq!(receipts_in(&v), 1, "{:?}", v.history);
}

/// A receipt matched only through a numeric reading holds once no message written exactly
/// like it has come within the grace: hex in submit_sm_resp, decimal in the receipt.
#[tokio::test]
async fn a_reading_match_holds_after_the_grace() {
    let hex = Behaviour {
        hex_ids: true,
        ids: vec![4097],
        ..Behaviour::default()
    };
    let (c, _fakes) = core(&[("v", 100, hex)]);
    let started = tokio::time::Instant::now();
    let a = submit_delivered(&c, "hex").await;
    // "1001" in the resp, "4097" in the receipt: "4097" reads as 4097 and as 0x4097.
    assert_eq!(a.vendor_message_ids, ["1001"]);
    assert!(started.elapsed() >= c.messenger.receipts.exact_grace);
    assert_eq!(c.messenger.metrics.receipts_parked.get(), 1);
    assert_eq!(uncertain(&c, Uncertain::ReadingHeld), 1);
    assert_eq!(uncertain(&c, Uncertain::ExactWon), 0);
}

#[tokio::test]
async fn hex_submit_ids_correlate_with_decimal_receipts() {
    let hex = Behaviour {
        hex_ids: true,
        ..Behaviour::default()
    };
    let (c, _fakes) = core(&[("v", 100, hex)]);
    let a = c
        .messenger
        .submit_local(&req("hex"), &c.vendors)
        .await
        .unwrap();
    assert!(
        a.vendor_message_ids[0]
            .chars()
            .any(|ch| ch.is_ascii_uppercase()),
        "{:?}",
        a.vendor_message_ids
    );
    wait_for(&c.memory, &a.id, "delivered", |v| {
        v.status == MessageStatus::Delivered
    })
    .await;
}

#[tokio::test]
async fn throttling_is_retried_then_accepted() {
    let throttle = Behaviour {
        throttle_first: 2,
        ..Behaviour::default()
    };
    let (c, fakes) = core(&[("v", 100, throttle)]);
    let a = c
        .messenger
        .submit_local(&req("busy"), &c.vendors)
        .await
        .unwrap();
    assert_eq!(fakes[0].submits.load(Ordering::SeqCst), 3);
    let v = wait_for(&c.memory, &a.id, "delivered", |v| {
        v.status == MessageStatus::Delivered
    })
    .await;
    let t = v
        .history
        .iter()
        .find(|h| h.event == "throttled")
        .expect("throttled in history");
    assert_eq!(t.detail.as_deref(), Some("retried 2 times"));
}

#[tokio::test]
async fn a_permanent_error_fails_over_to_the_next_vendor() {
    let reject = Behaviour {
        reject: Some(CommandStatus::EsmeRsubmitfail),
        ..Behaviour::default()
    };
    let (c, fakes) = core(&[("first", 1, reject), ("second", 2, Behaviour::default())]);
    let a = c
        .messenger
        .submit_local(&req("x"), &c.vendors)
        .await
        .unwrap();
    assert_eq!(a.vendor, "second");
    assert_eq!(fakes[0].submits.load(Ordering::SeqCst), 1);
    let v = wait_for(&c.memory, &a.id, "delivered", |v| {
        v.status == MessageStatus::Delivered
    })
    .await;
    let events: Vec<&str> = v.history.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "accepted",
            "rejected",
            "failover",
            "submit_sm_resp",
            "receipt"
        ]
    );
}

#[tokio::test]
async fn no_answer_is_a_timeout_with_a_failed_message() {
    let silent = Behaviour {
        silent: true,
        ..Behaviour::default()
    };
    let (c, _fakes) = core(&[("v", 100, silent)]);
    let e = c
        .messenger
        .submit_local(&req("x"), &c.vendors)
        .await
        .unwrap_err();
    let SubmitError::Timeout { id, .. } = &e else {
        panic!("expected a timeout, got {e:?}")
    };
    assert_eq!(e.http_status(), 504);
    let v = c
        .memory
        .get(id)
        .await
        .unwrap()
        .expect("the message is recorded");
    assert_eq!(
        (v.status, v.error_code.as_deref()),
        (MessageStatus::Failed, Some("timeout"))
    );
}

#[tokio::test]
async fn a_store_that_is_down_refuses_before_anything_is_sent() {
    let (c, fakes) = core(&[("v", 100, Behaviour::default())]);
    c.memory.set_down(true);
    let e = c
        .messenger
        .submit_local(&req("x"), &c.vendors)
        .await
        .unwrap_err();
    assert_eq!((e.http_status(), e.code()), (503, "redis_unavailable"));
    assert_eq!(
        fakes[0].submits.load(Ordering::SeqCst),
        0,
        "nothing may be sent"
    );
}

#[tokio::test]
async fn a_receipt_that_cannot_be_stored_gets_a_temporary_error_and_is_stored_when_resent() {
    let hold = Behaviour {
        hold_receipts: true,
        ..Behaviour::default()
    };
    let (c, mut fakes) = core(&[("v", 100, hold)]);
    let a = c
        .messenger
        .submit_local(&req("x"), &c.vendors)
        .await
        .unwrap();
    c.memory.set_down(true);
    fakes[0].release.send(1).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), fakes[0].resps.recv())
        .await
        .expect("no deliver_sm_resp")
        .unwrap();
    assert_eq!(
        status,
        CommandStatus::EsmeRxTAppn,
        "temporary, so the vendor resends"
    );
    c.memory.set_down(false);
    fakes[0].release.send(1).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), fakes[0].resps.recv())
        .await
        .expect("no deliver_sm_resp")
        .unwrap();
    assert_eq!(status, CommandStatus::EsmeRok);
    wait_for(&c.memory, &a.id, "delivered", |v| {
        v.status == MessageStatus::Delivered
    })
    .await;
}

#[test]
fn the_lua_receipt_rule_names_the_statuses_of_the_model() {
    // The Redis script compares status strings: they must be the model's.
    let lua = crate::messaging::store::redis::APPLY_RECEIPT;
    for s in ["submitted", "delivered"] {
        assert!(lua.contains(&format!("'{s}'")), "{s}");
        assert!(MessageStatus::parse(s).is_some());
    }
}

fn customer(account: uuid::Uuid) -> Extra {
    Extra {
        raw: None,
        origin: Some(Origin {
            account,
            to: "+15551234567".into(),
            from: "ACME".into(),
        }),
        account: Some(account),
    }
}

/// An account row as the watcher loads it, with receipt forwarding `forward`.
fn account_row(id: uuid::Uuid, forward: bool) -> smpp_db::accounts::Account {
    smpp_db::accounts::Account {
        id,
        config: smpp_db::accounts::AccountConfig {
            system_id: "cust".into(),
            password_hash: String::new(),
            allowed_cidrs: vec![],
            max_binds: 1,
            max_messages_per_second: None,
            allowed_senders: vec![],
            allowed_destination_prefixes: vec![],
            route: sqlx::types::Json(vec![]),
            forward_receipts: forward,
            suspended: false,
        },
        owner_namespace: None,
        owner_name: None,
        owner_uid: None,
        owner_generation: None,
        config_version: 1,
        updated_at: chrono::Utc::now(),
    }
}

async fn vendor_answer(v: &mut Vendor) -> CommandStatus {
    tokio::time::timeout(Duration::from_secs(10), v.resps.recv())
        .await
        .expect("no deliver_sm_resp")
        .unwrap()
}

#[tokio::test]
async fn a_customer_message_turning_final_queues_its_receipt_before_the_vendor_is_answered() {
    // Held until the message is stored (an early receipt is parked, answered, and queued
    // when the message is written).
    let hold = Behaviour {
        hold_receipts: true,
        ..Behaviour::default()
    };
    let (c, mut fakes) = core(&[("v", 100, hold)]);
    let account = uuid::Uuid::new_v4();
    c.accounts.upsert(&account_row(account, true));
    let a = c
        .messenger
        .submit_local_with(&req("hi"), &customer(account), &c.vendors)
        .await
        .unwrap();
    fakes[0].release.send(1).unwrap();
    assert_eq!(vendor_answer(&mut fakes[0]).await, CommandStatus::EsmeRok);
    // Answered, so already queued.
    let pushed = c.queue.pushed();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    let (to, r) = &pushed[0];
    assert_eq!(*to, account);
    assert_eq!(
        (r.message_id.as_str(), r.to.as_str(), r.from.as_str()),
        (a.id.as_str(), "+15551234567", "ACME")
    );
    assert_eq!(r.status, MessageStatus::Delivered);
    assert!(r.done_at >= r.submitted_at);
}

#[tokio::test]
async fn a_receipt_that_cannot_be_queued_gets_a_temporary_error_and_is_queued_once_when_resent() {
    let hold = Behaviour {
        hold_receipts: true,
        ..Behaviour::default()
    };
    let (c, mut fakes) = core(&[("v", 100, hold)]);
    let account = uuid::Uuid::new_v4();
    let a = c
        .messenger
        .submit_local_with(&req("x"), &customer(account), &c.vendors)
        .await
        .unwrap();
    c.queue.set_down(true);
    fakes[0].release.send(1).unwrap();
    assert_eq!(
        vendor_answer(&mut fakes[0]).await,
        CommandStatus::EsmeRxTAppn,
        "temporary, so the vendor resends it"
    );
    // The status is recorded; only the customer's copy is missing.
    let v = c.memory.get(&a.id).await.unwrap().unwrap();
    assert_eq!(v.status, MessageStatus::Delivered);
    assert!(c.queue.pushed().is_empty());
    c.queue.set_down(false);
    fakes[0].release.send(1).unwrap();
    assert_eq!(vendor_answer(&mut fakes[0]).await, CommandStatus::EsmeRok);
    let pushed = c.queue.pushed();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0].1.message_id, a.id);
}

#[tokio::test]
async fn a_multipart_customer_message_gets_one_receipt_when_it_turns_final() {
    let hold = Behaviour {
        hold_receipts: true,
        ..Behaviour::default()
    };
    let (c, mut fakes) = core(&[("v", 100, hold)]);
    let account = uuid::Uuid::new_v4();
    let a = c
        .messenger
        .submit_local_with(&req(&"a".repeat(400)), &customer(account), &c.vendors)
        .await
        .unwrap();
    assert_eq!(a.parts, 3);
    fakes[0].release.send(2).unwrap();
    for _ in 0..2 {
        assert_eq!(vendor_answer(&mut fakes[0]).await, CommandStatus::EsmeRok);
    }
    assert!(c.queue.pushed().is_empty(), "not final after 2 of 3 parts");
    fakes[0].release.send(1).unwrap();
    assert_eq!(vendor_answer(&mut fakes[0]).await, CommandStatus::EsmeRok);
    let pushed = c.queue.pushed();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0].1.status, MessageStatus::Delivered);
}

#[tokio::test]
async fn no_receipt_is_queued_for_an_account_without_forwarding_nor_for_an_http_submit() {
    let (c, mut fakes) = core(&[("v", 100, Behaviour::default())]);
    let quiet = uuid::Uuid::new_v4();
    c.accounts.upsert(&account_row(quiet, false));
    let a = c
        .messenger
        .submit_local_with(&req("x"), &customer(quiet), &c.vendors)
        .await
        .unwrap();
    assert_eq!(vendor_answer(&mut fakes[0]).await, CommandStatus::EsmeRok);
    let b = c
        .messenger
        .submit_local(&req("y"), &c.vendors)
        .await
        .unwrap();
    assert_eq!(vendor_answer(&mut fakes[0]).await, CommandStatus::EsmeRok);
    for id in [&a.id, &b.id] {
        wait_for(&c.memory, id, "delivered", |v| {
            v.status == MessageStatus::Delivered
        })
        .await;
    }
    assert!(c.queue.pushed().is_empty(), "{:?}", c.queue.pushed());
}

#[tokio::test]
async fn an_early_receipt_of_a_customer_message_is_queued_once_the_message_is_stored() {
    let early = Behaviour {
        receipt_first: true,
        ..Behaviour::default()
    };
    let (c, _fakes) = core(&[("v", 100, early)]);
    let account = uuid::Uuid::new_v4();
    let a = c
        .messenger
        .submit_local_with(&req("x"), &customer(account), &c.vendors)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.queue.pushed().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pushed = c.queue.pushed();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(
        (pushed[0].0, pushed[0].1.message_id.as_str()),
        (account, a.id.as_str())
    );
}
