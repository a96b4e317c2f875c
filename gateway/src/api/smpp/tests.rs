//! The server in-process: real sessions over `tokio::io::duplex`, the shared test ESME
//! (smpp_e2e::esme) as the customer, the messaging core of messaging/tests.rs (a fake vendor
//! on a real vendor session, the in-memory store) behind it, bind slots in memory. What
//! crosses processes (PostgreSQL slots, Redis, TLS, several gateways) is in
//! e2e/tests/smpp_server.rs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusmpp::pdus::{CancelSm, QuerySm, SubmitMulti};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{
    DataCoding, DestAddress, DistributionListName, InterfaceVersion, MessageState, Npi,
    RegisteredDelivery, SmeAddress, Ton,
};
use rusmpp::{CommandId, CommandStatus, Pdu};
use smpp_db::accounts::{Account, AccountConfig};
use smpp_e2e::esme::{self, Esme, Read, Submit};
use smpp_e2e::smsc::BindType;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::api::auth::ApiKeys;
use crate::api::forward::Forwarder;
use crate::fleet::peers::Peers;
use crate::messaging::customer::{CustomerReceipt, DeliverError};
use crate::messaging::model::MessageStatus;
use crate::messaging::store::MessageStore;
use crate::messaging::store::memory::MemoryStore;
use crate::messaging::tests::{Behaviour, Core, Vendor, core};
use slots::MemorySlots;

/// Bounds a hang only; nothing here is a speed target.
const HANG: Duration = Duration::from_secs(30);
const PASSWORD: &str = "pw4cust";

/// The links of RX/TRX sessions, as the outbox would get them.
#[derive(Default)]
struct Links(Mutex<Vec<Arc<dyn CustomerLink>>>);

impl ReceiptFeed for Links {
    fn consume(
        &self,
        _account: Uuid,
        _consumer: String,
        link: Arc<dyn CustomerLink>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        self.0.lock().unwrap().push(link);
        tokio::spawn(async move { stop.cancelled().await })
    }
}

struct Fx {
    server: Server,
    memory: Arc<MemoryStore>,
    vendors: Vec<Vendor>,
    row: Account,
    slots: Arc<MemorySlots>,
    links: Arc<Links>,
}

fn row(f: impl FnOnce(&mut AccountConfig)) -> Account {
    let mut config = AccountConfig {
        system_id: "cust1".into(),
        password_hash: smpp_db::accounts::hash_password(&smpp_db::Secret::new(PASSWORD)).unwrap(),
        allowed_cidrs: vec!["127.0.0.0/8".into()],
        max_binds: 5,
        max_messages_per_second: None,
        allowed_senders: vec![],
        allowed_destination_prefixes: vec![],
        route: sqlx::types::Json(vec![]),
        forward_receipts: true,
        suspended: false,
    };
    f(&mut config);
    Account {
        id: Uuid::new_v4(),
        config,
        owner_namespace: None,
        owner_name: None,
        owner_uid: None,
        owner_generation: None,
        config_version: 1,
        updated_at: chrono::Utc::now(),
    }
}

fn fixture_with(f: impl FnOnce(&mut AccountConfig), settings: Settings, vendor: Behaviour) -> Fx {
    let (
        Core {
            messenger, memory, ..
        },
        vendors,
    ) = core(&[("v", 100, vendor)]);
    let metrics = messenger.metrics.clone();
    let messenger = Arc::new(messenger);
    let api = Arc::new(MessagesApi {
        keys: ApiKeys::default(),
        messenger,
        peers: Arc::new(Peers::default()),
        forwarder: Forwarder::new("pod-a".into(), metrics.clone(), Duration::from_secs(5)),
        pod: "pod-a".into(),
    });
    let row = row(f);
    let accounts = AccountRegistry::new();
    accounts.replace_all(std::slice::from_ref(&row));
    let slots = Arc::new(MemorySlots::default());
    let links = Arc::new(Links::default());
    let server = Server::new(Deps {
        settings,
        accounts,
        slots: slots.clone(),
        messages: Some(api),
        receipts: Some(links.clone()),
        metrics,
        pod: "pod-a".into(),
    })
    .unwrap();
    Fx {
        server,
        memory,
        vendors,
        row,
        slots,
        links,
    }
}

fn fixture(f: impl FnOnce(&mut AccountConfig)) -> Fx {
    fixture_with(f, Settings::default(), Behaviour::default())
}

impl Fx {
    /// A customer connection from `ip`.
    fn connect_from(&self, ip: &str) -> Esme {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = format!("{ip}:40000").parse().unwrap();
        self.server.session(Box::new(ours), peer);
        Esme::over(theirs).with_timeout(HANG)
    }

    fn connect(&self) -> Esme {
        self.connect_from("127.0.0.1")
    }

    async fn bound(&self, kind: BindType) -> Esme {
        let mut e = self.connect();
        e.bind(kind, "cust1", PASSWORD).await.unwrap();
        e
    }

    fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self.server.ctx().metrics.render();
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn wait_binds(&self, n: u32) {
        let deadline = tokio::time::Instant::now() + HANG;
        loop {
            let live = self.slots.live_binds(self.row.id).await.unwrap();
            if live == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{live} binds, want {n}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A request's response status and command id.
async fn answer(e: &mut Esme, seq: u32) -> (CommandId, CommandStatus) {
    let c = e.response(seq, "a response").await.unwrap();
    (c.id(), c.status())
}

fn closed(r: &Read) -> bool {
    matches!(r, Read::Closed)
}

/// Reads until the connection closes, answering an unbind on the way; false on silence.
async fn until_closed(e: &mut Esme) -> bool {
    loop {
        match e.read(HANG).await {
            Read::Closed => return true,
            Read::Silent => return false,
            Read::Pdu(c) if c.id() == CommandId::Unbind => {
                e.respond(&c, CommandStatus::EsmeRok, Pdu::UnbindResp)
                    .await
                    .unwrap();
            }
            Read::Pdu(_) => {}
        }
    }
}

#[tokio::test]
async fn a_session_serves_only_what_its_state_allows() {
    let fx = fixture(|_| {});
    let mut e = fx.connect();
    // Open: no submit, no unbind.
    let seq = e.submit("too early", false).await.unwrap();
    assert_eq!(
        answer(&mut e, seq).await,
        (CommandId::SubmitSmResp, CommandStatus::EsmeRinvbndsts)
    );
    let seq = e.send(Pdu::Unbind).await.unwrap();
    assert_eq!(
        answer(&mut e, seq).await,
        (CommandId::UnbindResp, CommandStatus::EsmeRinvbndsts)
    );
    e.enquire_link().await.unwrap();
    e.bind(BindType::Transceiver, "cust1", PASSWORD)
        .await
        .unwrap();
    // Bound: a second bind is refused, the session stays bound.
    let s = e
        .bind_status(
            BindType::Transmitter,
            "cust1",
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await
        .unwrap();
    assert_eq!(s, CommandStatus::EsmeRalybnd);
    let id = e
        .submit_ok(&Submit::text("hello").receipt(true))
        .await
        .unwrap();
    let stored = fx.memory.get(&id).await.unwrap().expect("stored");
    assert_eq!((stored.vendor.as_str(), stored.parts), ("v", 1));
    // query_sm answers from the store.
    let q = QuerySm::new(
        COctetString::from_string(id.clone()).unwrap(),
        Ton::Unknown,
        Npi::Unknown,
        COctetString::from_string("12345".into()).unwrap(),
    );
    let seq = e.send(q).await.unwrap();
    let r = e.response(seq, "query_sm_resp").await.unwrap();
    let Some(Pdu::QuerySmResp(q)) = r.pdu() else {
        panic!("{r:?}")
    };
    assert_eq!(q.message_id.to_string(), id);
    assert!(
        matches!(
            q.message_state,
            MessageState::Enroute | MessageState::Delivered
        ),
        "{q:?}"
    );
    let unknown = QuerySm::new(
        COctetString::from_string("nope".into()).unwrap(),
        Ton::Unknown,
        Npi::Unknown,
        COctetString::empty(),
    );
    let seq = e.send(unknown).await.unwrap();
    assert_eq!(
        answer(&mut e, seq).await,
        (CommandId::QuerySmResp, CommandStatus::EsmeRqueryfail)
    );
    // cancel_sm is not supported by the vendors: ESME_RCANCELFAIL.
    let c = CancelSm::builder()
        .message_id(COctetString::from_string(id).unwrap())
        .build();
    let seq = e.send(c).await.unwrap();
    assert_eq!(
        answer(&mut e, seq).await,
        (CommandId::CancelSmResp, CommandStatus::EsmeRcancelfail)
    );
    // A request an SMSC does not serve: generic_nack, session goes on.
    let seq = e
        .send(Pdu::Other {
            command_id: CommandId::Other(0x0000_0099),
            body: rusmpp::types::AnyOctetString::empty(),
        })
        .await
        .unwrap();
    assert_eq!(
        answer(&mut e, seq).await,
        (CommandId::GenericNack, CommandStatus::EsmeRinvcmdid)
    );
    e.enquire_link().await.unwrap();
    e.unbind().await.unwrap();
    assert!(closed(&e.read(HANG).await), "closed after unbind_resp");
    fx.wait_binds(0).await;
}

#[tokio::test]
async fn binds_at_each_version_get_the_matching_bind_resp() {
    let fx = fixture(|_| {});
    for (version, tlv) in [
        (InterfaceVersion::Smpp3_3OrEarlier(0x33), None),
        (InterfaceVersion::Smpp3_4, Some(InterfaceVersion::Smpp3_4)),
        (InterfaceVersion::Smpp5_0, Some(InterfaceVersion::Smpp5_0)),
    ] {
        for kind in [
            BindType::Transmitter,
            BindType::Receiver,
            BindType::Transceiver,
        ] {
            let mut e = fx.connect();
            let Read::Pdu(r) = e.bind_raw(kind, "cust1", PASSWORD, version).await.unwrap() else {
                panic!("no bind_resp")
            };
            assert_eq!(r.status(), CommandStatus::EsmeRok);
            let sc = match r.pdu() {
                Some(Pdu::BindTransmitterResp(b)) => b.sc_interface_version(),
                Some(Pdu::BindReceiverResp(b)) => b.sc_interface_version(),
                Some(Pdu::BindTransceiverResp(b)) => b.sc_interface_version(),
                other => panic!("{other:?}"),
            };
            assert_eq!(sc, tlv, "{version:?} {kind:?}");
            if kind == BindType::Receiver {
                // A receiver submits nothing.
                let seq = e.submit("x", false).await.unwrap();
                assert_eq!(
                    answer(&mut e, seq).await,
                    (CommandId::SubmitSmResp, CommandStatus::EsmeRinvbndsts)
                );
            }
            e.unbind().await.unwrap();
        }
    }
    fx.wait_binds(0).await;
}

#[tokio::test]
async fn bad_credentials_source_and_the_bind_limit_are_refused_with_their_status() {
    let fx = fixture(|c| c.max_binds = 1);
    let mut e = fx.connect();
    // A refused bind leaves the session open: the customer may try again.
    for (id, pw, want) in [
        ("nobody", PASSWORD, CommandStatus::EsmeRinvsysid),
        ("cust1", "wrong", CommandStatus::EsmeRinvpaswd),
    ] {
        let s = e
            .bind_status(BindType::Transceiver, id, pw, InterfaceVersion::Smpp3_4)
            .await
            .unwrap();
        assert_eq!(s, want, "{id}/{pw}");
    }
    drop(e);
    // From outside the CIDRs the right password does not bind.
    let mut away = fx.connect_from("192.0.2.1");
    let s = away
        .bind_status(
            BindType::Transceiver,
            "cust1",
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await
        .unwrap();
    assert_eq!(s, CommandStatus::EsmeRinvsysid);
    // max_binds 1: the second bind is refused while the first holds the slot.
    let mut first = fx.bound(BindType::Transmitter).await;
    let mut second = fx.connect();
    let s = second
        .bind_status(
            BindType::Transmitter,
            "cust1",
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await
        .unwrap();
    assert_eq!(s, CommandStatus::EsmeRbindfail);
    first.unbind().await.unwrap();
    fx.wait_binds(0).await;
    second
        .bind(BindType::Transmitter, "cust1", PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        fx.metric("smpp_customer_bind_failures_total", &["bad_password"]),
        1.0
    );
    assert_eq!(
        fx.metric("smpp_customer_bind_failures_total", &["bind_limit"]),
        1.0
    );
    assert_eq!(
        fx.metric("smpp_customer_bind_failures_total", &["source_not_allowed"]),
        1.0
    );
    assert_eq!(
        fx.metric("smpp_customer_binds", &["cust1", "bind_type=\"TX\""]),
        1.0
    );
}

#[tokio::test]
async fn a_suspended_account_does_not_bind_and_its_bound_sessions_are_unbound() {
    let fx = fixture(|_| {});
    let mut tx = fx.bound(BindType::Transmitter).await;
    let mut rx = fx.bound(BindType::Receiver).await;
    let mut off = fx.row.clone();
    off.config.suspended = true;
    off.config_version = 2;
    fx.server.ctx().accounts.upsert(&off);
    fx.server.accounts_changed(&[off.id]);
    for e in [&mut tx, &mut rx] {
        let c = e.expect("unbind").await.unwrap();
        assert_eq!(c.id(), CommandId::Unbind);
        e.respond(&c, CommandStatus::EsmeRok, Pdu::UnbindResp)
            .await
            .unwrap();
        assert!(until_closed(e).await);
    }
    fx.wait_binds(0).await;
    let mut again = fx.connect();
    let s = again
        .bind_status(
            BindType::Transmitter,
            "cust1",
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await
        .unwrap();
    assert_eq!(s, CommandStatus::EsmeRinvsysid);
    assert_eq!(
        fx.metric(
            "smpp_customer_sessions_closed_total",
            &["account_suspended"]
        ),
        2.0
    );
}

#[tokio::test]
async fn a_malformed_pdu_is_answered_and_an_unframable_length_closes_only_that_session() {
    let settings = Settings {
        max_pdu: 4096,
        ..Settings::default()
    };
    let fx = fixture_with(|_| {}, settings, Behaviour::default());
    let mut a = fx.bound(BindType::Transceiver).await;
    let mut b = fx.bound(BindType::Transceiver).await;
    // A submit_sm (0x00000004, seq 7) whose body is garbage: generic_nack, session kept.
    a.send_raw(&[
        0, 0, 0, 20, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 7, 0xFF, 0xFF, 0xFF, 0xFF,
    ])
    .await
    .unwrap();
    let nack = a.expect("generic_nack").await.unwrap();
    assert_eq!(
        (nack.id(), nack.sequence_number(), nack.status()),
        (CommandId::GenericNack, 7, CommandStatus::EsmeRinvcmdlen)
    );
    a.enquire_link().await.unwrap();
    // b: a command_length over the limit, then one that is absurd: b is closed.
    let mut big = vec![0u8; 4097];
    big[..4].copy_from_slice(&4097u32.to_be_bytes());
    big[4..8].copy_from_slice(&4u32.to_be_bytes());
    b.send_raw(&big).await.unwrap();
    assert!(until_closed(&mut b).await, "b closed");
    let mut c = fx.bound(BindType::Transceiver).await;
    c.send_raw(&[0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1])
        .await
        .unwrap();
    assert!(until_closed(&mut c).await, "c closed");
    // a goes on.
    a.enquire_link().await.unwrap();
    a.submit_ok(&Submit::text("still here")).await.unwrap();
    fx.wait_binds(1).await;
    assert_eq!(
        fx.metric(
            "smpp_customer_sessions_closed_total",
            &["bad_command_length"]
        ),
        2.0
    );
}

#[tokio::test]
async fn an_account_over_its_rate_is_throttled_counting_parts() {
    let fx = fixture(|c| c.max_messages_per_second = Some(1));
    let mut e = fx.bound(BindType::Transmitter).await;
    // 1/s, burst 1: a 3-part message passes once (its debt takes 3 s to pay back)...
    let long = Submit::payload(&[b'a'; 400]);
    e.submit_ok(&long).await.unwrap();
    // ...and what follows at once is throttled, without reaching the vendor.
    let seq = e.submit("next", false).await.unwrap();
    assert_eq!(
        answer(&mut e, seq).await,
        (CommandId::SubmitSmResp, CommandStatus::EsmeRthrottled)
    );
    assert_eq!(fx.metric("smpp_customer_throttled_total", &["cust1"]), 1.0);
    assert_eq!(
        fx.metric("smpp_customer_submits_total", &["cust1", "accepted"]),
        1.0
    );
    // The long text went to the vendor as 3 parts of one message.
    let v = &fx.vendors[0];
    assert_eq!(v.submits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_full_window_is_answered_queue_full_and_an_unanswered_submit_fails() {
    let settings = Settings {
        window: 1,
        ..Settings::default()
    };
    let silent = Behaviour {
        silent: true,
        ..Behaviour::default()
    };
    let fx = fixture_with(|_| {}, settings, silent);
    let mut e = fx.bound(BindType::Transmitter).await;
    let first = e.submit("never answered", false).await.unwrap();
    let second = e.submit("over the window", false).await.unwrap();
    assert_eq!(
        answer(&mut e, second).await,
        (CommandId::SubmitSmResp, CommandStatus::EsmeRmsgqful)
    );
    // The vendor never answers: the core's timeout (500 ms in the fixture) is ESME_RSYSERR.
    assert_eq!(
        answer(&mut e, first).await,
        (CommandId::SubmitSmResp, CommandStatus::EsmeRsyserr)
    );
    // The slot is free again.
    let third = e.submit("again", false).await.unwrap();
    assert_eq!(
        answer(&mut e, third).await,
        (CommandId::SubmitSmResp, CommandStatus::EsmeRsyserr)
    );
}

#[tokio::test]
async fn sender_and_destination_checks_and_submit_multi() {
    let fx = fixture(|c| {
        c.allowed_senders = vec!["12345".into()];
        c.allowed_destination_prefixes = vec!["49".into()];
    });
    let mut e = fx.bound(BindType::Transceiver).await;
    let seq = e.submit_sm(&Submit::text("x").from("EVIL")).await.unwrap();
    assert_eq!(
        answer(&mut e, seq).await,
        (CommandId::SubmitSmResp, CommandStatus::EsmeRinvsrcadr)
    );
    let seq = e.submit_sm(&Submit::text("x").to("4470000")).await.unwrap();
    assert_eq!(
        answer(&mut e, seq).await,
        (CommandId::SubmitSmResp, CommandStatus::EsmeRinvdstadr)
    );
    let sme = |d: &str| {
        DestAddress::SmeAddress(SmeAddress::new(
            Ton::International,
            Npi::Isdn,
            COctetString::from_string(d.into()).unwrap(),
        ))
    };
    let dests = vec![
        sme("4470000"),
        sme("4915100001"),
        DestAddress::DistributionListName(DistributionListName::new(
            COctetString::from_string("friends".into()).unwrap(),
        )),
        sme("4915100002"),
    ];
    let mut m = SubmitMulti::builder()
        .source_addr(COctetString::from_string("12345".into()).unwrap())
        .registered_delivery(RegisteredDelivery::from(1u8))
        .data_coding(DataCoding::Ia5)
        .short_message(OctetString::from_slice(b"to all").unwrap())
        .build();
    m.set_dest_address(dests);
    let seq = e.send(m).await.unwrap();
    let r = e.response(seq, "submit_multi_resp").await.unwrap();
    assert_eq!(r.status(), CommandStatus::EsmeRok);
    let Some(Pdu::SubmitMultiResp(resp)) = r.pdu() else {
        panic!("{r:?}")
    };
    let failed: Vec<(String, CommandStatus)> = resp
        .unsuccess_sme()
        .iter()
        .map(|u| (u.destination_addr.to_string(), u.error_status_code))
        .collect();
    assert_eq!(
        failed,
        [
            ("4470000".to_string(), CommandStatus::EsmeRinvdstadr),
            ("friends".to_string(), CommandStatus::EsmeRinvdstadr)
        ]
    );
    let id = resp.message_id.to_string();
    assert!(fx.memory.get(&id).await.unwrap().is_some(), "{id} stored");
    let v = &fx.vendors[0];
    assert_eq!(v.submits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_customer_is_unbound_and_its_slot_given_back() {
    let settings = Settings {
        idle_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let fx = fixture_with(|_| {}, settings, Behaviour::default());
    let mut e = fx.bound(BindType::Transceiver).await;
    fx.wait_binds(1).await;
    let c = e.expect("our unbind").await.unwrap();
    assert_eq!(c.id(), CommandId::Unbind);
    e.respond(&c, CommandStatus::EsmeRok, Pdu::UnbindResp)
        .await
        .unwrap();
    assert!(until_closed(&mut e).await);
    fx.wait_binds(0).await;
    // A connection that never binds is closed after the idle time too.
    let mut lazy = fx.connect();
    assert!(until_closed(&mut lazy).await);
}

#[tokio::test]
async fn a_customer_that_does_not_read_loses_its_session_only() {
    let settings = Settings {
        window: 1,
        writer_queue: 1,
        ..Settings::default()
    };
    let fx = fixture_with(|_| {}, settings, Behaviour::default());
    let mut ok = fx.bound(BindType::Transceiver).await;
    // A pipe with little room: once it is full, our answers queue up.
    let (ours, theirs) = tokio::io::duplex(512);
    fx.server
        .session(Box::new(ours), "127.0.0.1:40001".parse().unwrap());
    let mut e = Esme::over(theirs).with_timeout(HANG);
    e.bind(BindType::Transceiver, "cust1", PASSWORD)
        .await
        .unwrap();
    // enquire_link after enquire_link, never reading the answers.
    let flood = tokio::spawn(async move {
        for _ in 0..2000 {
            if e.send(Pdu::EnquireLink).await.is_err() {
                break;
            }
        }
        e
    });
    let mut e = tokio::time::timeout(HANG, flood).await.unwrap().unwrap();
    assert!(until_closed(&mut e).await, "the flooding session is closed");
    assert_eq!(
        fx.metric("smpp_customer_sessions_closed_total", &["not_reading"]),
        1.0
    );
    ok.enquire_link().await.unwrap();
}

#[tokio::test]
async fn receipts_go_out_as_deliver_sm_and_wait_for_deliver_sm_resp() {
    let settings = Settings {
        response_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let fx = fixture_with(|_| {}, settings, Behaviour::default());
    let mut e = fx.bound(BindType::Receiver).await;
    let link = fx
        .links
        .0
        .lock()
        .unwrap()
        .pop()
        .expect("a link for the RX session");
    let r = CustomerReceipt {
        message_id: "m-1".into(),
        to: "4915112345678".into(),
        from: "12345".into(),
        status: MessageStatus::Delivered,
        submitted_at: chrono::Utc::now(),
        done_at: chrono::Utc::now(),
        error_code: None,
    };
    let delivery = tokio::spawn({
        let (link, r) = (link.clone(), r.clone());
        async move { link.deliver(&r).await }
    });
    let d = e.expect("the receipt").await.unwrap();
    let got = esme::Receipt::from_command(&d).unwrap();
    assert_eq!(got.receipted_id.as_deref(), Some("m-1"));
    assert_eq!(got.stat.as_deref(), Some("DELIVRD"));
    e.answer(&d).await.unwrap();
    assert_eq!(delivery.await.unwrap(), Ok(()));
    // Refused and unanswered ones are errors the outbox retries.
    let refused = tokio::spawn({
        let (link, r) = (link.clone(), r.clone());
        async move { link.deliver(&r).await }
    });
    let d = e.expect("the receipt again").await.unwrap();
    e.answer_with(&d, CommandStatus::EsmeRxTAppn).await.unwrap();
    assert_eq!(
        refused.await.unwrap(),
        Err(DeliverError::Refused(u32::from(CommandStatus::EsmeRxTAppn)))
    );
    let unanswered = tokio::spawn({
        let (link, r) = (link.clone(), r.clone());
        async move { link.deliver(&r).await }
    });
    let _ = e.expect("a receipt left unanswered").await.unwrap();
    assert_eq!(
        unanswered.await.unwrap(),
        Err(DeliverError::Timeout(Duration::from_millis(300)))
    );
    // Once the session is gone, the link says so at once.
    e.unbind().await.unwrap();
    assert!(until_closed(&mut e).await);
    assert_eq!(link.deliver(&r).await, Err(DeliverError::Closed));
}

#[tokio::test]
async fn shutdown_unbinds_every_customer_and_gives_the_slots_back() {
    let fx = fixture(|_| {});
    let mut a = fx.bound(BindType::Transceiver).await;
    let mut b = fx.bound(BindType::Transmitter).await;
    fx.wait_binds(2).await;
    let server = fx.server.clone();
    let down = tokio::spawn(async move { server.shutdown(HANG).await });
    for e in [&mut a, &mut b] {
        let c = e.expect("unbind").await.unwrap();
        assert_eq!(c.id(), CommandId::Unbind);
        e.respond(&c, CommandStatus::EsmeRok, Pdu::UnbindResp)
            .await
            .unwrap();
    }
    tokio::time::timeout(HANG, down).await.unwrap().unwrap();
    fx.wait_binds(0).await;
    assert!(until_closed(&mut a).await && until_closed(&mut b).await);
}

#[tokio::test]
async fn narrowed_cidrs_unbind_only_the_sessions_outside_them() {
    let fx = fixture(|_| {});
    let mut one = fx.connect_from("127.0.0.1");
    one.bind(BindType::Transceiver, "cust1", PASSWORD)
        .await
        .unwrap();
    let mut two = fx.connect_from("127.0.0.2");
    two.bind(BindType::Transceiver, "cust1", PASSWORD)
        .await
        .unwrap();
    let mut narrowed = fx.row.clone();
    narrowed.config.allowed_cidrs = vec!["127.0.0.2/32".into()];
    narrowed.config_version = 2;
    fx.server.ctx().accounts.upsert(&narrowed);
    fx.server.accounts_changed(&[narrowed.id]);
    let c = one.expect("unbind").await.unwrap();
    assert_eq!(c.id(), CommandId::Unbind);
    one.respond(&c, CommandStatus::EsmeRok, Pdu::UnbindResp)
        .await
        .unwrap();
    assert!(until_closed(&mut one).await);
    // The session inside the new CIDRs stays bound and serves.
    two.enquire_link().await.unwrap();
    two.submit_ok(&Submit::text("still allowed")).await.unwrap();
    fx.wait_binds(1).await;
    assert_eq!(
        fx.metric(
            "smpp_customer_sessions_closed_total",
            &["source_not_allowed"]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_connection_over_the_limit_is_told_why_and_closed() {
    let settings = Settings {
        max_connections: 1,
        ..Settings::default()
    };
    let fx = fixture_with(|_| {}, settings, Behaviour::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    fx.server.serve(listener, None);
    let mut first = Esme::plain(port).await.unwrap().with_timeout(HANG);
    first
        .bind(BindType::Transceiver, "cust1", PASSWORD)
        .await
        .unwrap();
    let mut second = Esme::plain(port).await.unwrap().with_timeout(HANG);
    let s = second
        .bind_status(
            BindType::Transceiver,
            "cust1",
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await
        .unwrap();
    assert_eq!(s, CommandStatus::EsmeRbindfail);
    assert!(until_closed(&mut second).await);
    assert_eq!(
        fx.metric(
            "smpp_customer_sessions_closed_total",
            &["too_many_connections"]
        ),
        1.0
    );
    // The first one is not affected, and once it is gone there is room again.
    first.enquire_link().await.unwrap();
    first.unbind().await.unwrap();
    assert!(until_closed(&mut first).await);
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let mut e = Esme::plain(port).await.unwrap().with_timeout(HANG);
        let s = e
            .bind_status(
                BindType::Transmitter,
                "cust1",
                PASSWORD,
                InterfaceVersion::Smpp3_4,
            )
            .await
            .unwrap();
        if s == CommandStatus::EsmeRok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room again: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_session_whose_bind_slot_was_taken_over_is_unbound_at_once() {
    let fx = fixture(|_| {});
    let mut first = fx.bound(BindType::Transceiver).await;
    fx.wait_binds(1).await;
    let mut second = fx.bound(BindType::Transmitter).await;
    fx.wait_binds(2).await;
    // The first bind holds slot 0; another pod takes it over (this pod was frozen).
    fx.slots.take_over(fx.row.id, 0);
    let c = first.expect("unbind").await.unwrap();
    assert_eq!(c.id(), CommandId::Unbind);
    first
        .respond(&c, CommandStatus::EsmeRok, Pdu::UnbindResp)
        .await
        .unwrap();
    assert!(until_closed(&mut first).await);
    // The session on a slot still ours goes on.
    second.enquire_link().await.unwrap();
    second.submit_ok(&Submit::text("still mine")).await.unwrap();
    assert_eq!(
        fx.metric("smpp_customer_sessions_closed_total", &["slot_taken_over"]),
        1.0
    );
    assert_eq!(fx.server.ctx().bound.count(fx.row.id), 1);
}

/// query_sm for `id`: its status, and the message_state when answered.
async fn query(e: &mut Esme, id: &str) -> (CommandStatus, Option<MessageState>) {
    let q = QuerySm::new(
        COctetString::from_string(id.into()).unwrap(),
        Ton::Unknown,
        Npi::Unknown,
        COctetString::empty(),
    );
    let seq = e.send(q).await.unwrap();
    let r = e.response(seq, "query_sm_resp").await.unwrap();
    assert_eq!(r.id(), CommandId::QuerySmResp);
    let state = match r.pdu() {
        Some(Pdu::QuerySmResp(q)) if r.status() == CommandStatus::EsmeRok => {
            assert_eq!(q.message_id.to_string(), id);
            Some(q.message_state)
        }
        _ => None,
    };
    (r.status(), state)
}

async fn cancel(e: &mut Esme, id: &str) -> CommandStatus {
    let c = CancelSm::builder()
        .message_id(COctetString::from_string(id.into()).unwrap())
        .build();
    let seq = e.send(c).await.unwrap();
    answer(e, seq).await.1
}

#[tokio::test]
async fn query_sm_and_cancel_sm_see_only_the_accounts_own_messages() {
    let fx = fixture(|_| {});
    let other = row(|c| c.system_id = "cust2".into());
    fx.server.ctx().accounts.upsert(&other);
    let mut mine = fx.bound(BindType::Transceiver).await;
    let mut theirs = fx.connect();
    theirs
        .bind(BindType::Transmitter, "cust2", PASSWORD)
        .await
        .unwrap();
    // Ours with a receipt asked for (it has an origin) and without (it has none).
    let with_receipt = mine
        .submit_ok(&Submit::text("mine").receipt(true))
        .await
        .unwrap();
    let quiet = mine.submit_ok(&Submit::text("mine too")).await.unwrap();
    // And one submitted over HTTP, stored like any other.
    let api = fx.server.ctx().messages.clone().unwrap();
    let req = crate::messaging::submit::MessageRequest {
        to: "+4670".into(),
        from: "HTTP".into(),
        text: "from http".into(),
        vendor: None,
        callback_url: None,
        client_ref: None,
        validity_seconds: None,
    };
    let http = api
        .dispatch(&req, &Default::default(), &[], "", false)
        .await
        .unwrap()
        .id;
    for id in [&with_receipt, &quiet, &http] {
        assert!(fx.memory.get(id).await.unwrap().is_some(), "{id} stored");
    }
    for id in [&with_receipt, &quiet] {
        let (s, state) = query(&mut mine, id).await;
        assert_eq!(s, CommandStatus::EsmeRok, "our own {id}");
        assert!(
            matches!(state, Some(MessageState::Enroute | MessageState::Delivered)),
            "{state:?}"
        );
    }
    // Another account's message, an HTTP one and an unknown id get the same answer.
    let unknown = "0123456789abcdef0123456789abcdef";
    for id in [&with_receipt, &quiet] {
        assert_eq!(
            query(&mut theirs, id).await,
            (CommandStatus::EsmeRqueryfail, None)
        );
    }
    assert_eq!(
        query(&mut mine, &http).await,
        (CommandStatus::EsmeRqueryfail, None)
    );
    assert_eq!(
        query(&mut mine, unknown).await,
        (CommandStatus::EsmeRqueryfail, None)
    );
    // cancel_sm tells nothing apart: ours, theirs, HTTP and unknown all fail alike.
    for id in [with_receipt.as_str(), &http, unknown] {
        assert_eq!(cancel(&mut mine, id).await, CommandStatus::EsmeRcancelfail);
    }
    assert_eq!(
        cancel(&mut theirs, &with_receipt).await,
        CommandStatus::EsmeRcancelfail
    );
}

#[tokio::test]
async fn the_pods_rate_share_follows_the_binds_here_and_in_the_fleet() {
    let fx = fixture(|c| c.max_messages_per_second = Some(12));
    let share = || fx.metric("smpp_customer_rate_share", &["cust1"]);
    let until = |want: f64| async move {
        let deadline = tokio::time::Instant::now() + HANG;
        while share() != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "share {} want {want}",
                share()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let mut one = fx.bound(BindType::Transmitter).await;
    until(12.0).await;
    // Two more binds on other pods (their NOTIFY): a third of the rate here.
    fx.slots.set_elsewhere(fx.row.id, 2);
    fx.server.binds_changed(&[fx.row.id]);
    until(4.0).await;
    let _two = fx.bound(BindType::Transmitter).await;
    until(6.0).await;
    // The limit raised: the share follows without a bind changing.
    let mut faster = fx.row.clone();
    faster.config.max_messages_per_second = Some(24);
    faster.config_version = 2;
    fx.server.ctx().accounts.upsert(&faster);
    fx.server.accounts_changed(&[faster.id]);
    until(12.0).await;
    // No session here: no share shown.
    drop(_two);
    one.unbind().await.unwrap();
    fx.wait_binds(2).await;
    until(0.0).await;
    assert!(
        !fx.server
            .ctx()
            .metrics
            .render()
            .contains("smpp_customer_rate_share{"),
        "the gauge is removed"
    );
}
