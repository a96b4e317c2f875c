//! The session layer against the real node SMSC simulator (a private instance per test):
//! submits through the window and the TPS bucket, receipts answered with deliver_sm_resp,
//! enquire_link both ways, in-place window/TPS changes, graceful unbind, enquire_link timeout.
//!
//! Run: cargo test -p smpp-gateway --test session

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusmpp::{Command, CommandStatus};
use smpp_db::Secret;
use smpp_e2e::smsc::{Behaviour, Smsc, SmscConfig};
use smpp_e2e::wait;
use smpp_gateway::smpp::endpoint::{BindMode, Connection};
use smpp_gateway::smpp::pdu::{BindKind, Submit, Version};
use smpp_gateway::smpp::session::{
    self, DeliverReply, Observer, SessionHandle, Timeouts, Tunables,
};
use smpp_gateway::smpp::trace::Tracer;

const SYSTEM_ID: &str = "sessuser";
const PASSWORD: &str = "Pw8sess1";

#[derive(Default)]
struct Counting {
    dlrs: AtomicU64,
    rtts: AtomicU64,
}

impl Observer for Counting {
    fn enquire_link_rtt(&self, _rtt: Duration) {
        self.rtts.fetch_add(1, Ordering::Relaxed);
    }
    fn deliver_sm(&self, _cmd: Command, reply: DeliverReply) {
        self.dlrs.fetch_add(1, Ordering::Relaxed);
        reply.answer(CommandStatus::EsmeRok);
    }
}

fn conn(port: u16) -> Connection {
    Connection {
        host: "127.0.0.1".into(),
        port,
        tls: None,
        mode: BindMode::Transceiver,
        system_id: SYSTEM_ID.into(),
        password: Secret::new(PASSWORD),
        system_type: String::new(),
        version: Version::V34,
        address_range: String::new(),
    }
}

fn msg(i: usize) -> Submit {
    Submit {
        source_addr: "12345".into(),
        destination_addr: format!("1555{i:07}"),
        short_message: format!("hello {i}").into_bytes(),
        registered_delivery: true,
        ..Submit::default()
    }
}

async fn start(
    smsc: &Smsc,
    listener: &str,
    tun: Tunables,
    timeouts: Timeouts,
) -> (
    SessionHandle,
    tokio::task::JoinHandle<Result<(), smpp_gateway::smpp::diagnostics::BindFailure>>,
    Arc<Counting>,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tracer = Arc::new(Tracer::default());
    let bound = smpp_gateway::smpp::dial::dial(
        &conn(smsc.port(listener)),
        BindKind::Transceiver,
        Duration::from_secs(3),
        timeouts.bind,
        "t",
        &tracer,
    )
    .await
    .expect("bind");
    let obs = Arc::new(Counting::default());
    let (h, join) = session::spawn(bound, tun, timeouts, "t".into(), tracer, obs.clone());
    (h, join, obs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_receipts_window_tps_and_graceful_unbind() {
    let smsc = Smsc::start(SmscConfig::standard().credential(SYSTEM_ID, PASSWORD))
        .await
        .unwrap();
    let tun = Tunables {
        window: 10,
        tps: None,
        enquire_interval: Duration::from_secs(1),
    };
    let (h, join, obs) = start(&smsc, "plain", tun, Timeouts::default()).await;

    // 300 submits, many in flight at once (window 10): every one answered with an id.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.submit(msg(i), Duration::from_secs(10)).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let out = t.await.unwrap().expect("submit answered");
        assert_eq!(out.status, 0);
        assert!(!out.message_id.is_empty());
        ids.insert(out.message_id);
    }
    assert_eq!(ids.len(), 300, "message ids are distinct");
    eprintln!("300 submits at window 10: {:?}", t0.elapsed());
    // Every receipt is answered with deliver_sm_resp (the simulator counts acks).
    wait::until(
        "300 receipts acknowledged",
        Duration::from_secs(20),
        || async {
            let s = smsc.stats().await?;
            Ok((s.receipts_acked == 300 && obs.dlrs.load(Ordering::Relaxed) == 300).then_some(()))
        },
    )
    .await
    .unwrap();
    // Our enquire_link (1 s interval) is answered and timed.
    wait::until(
        "enquire_link round trips",
        Duration::from_secs(5),
        || async { Ok((obs.rtts.load(Ordering::Relaxed) >= 2).then_some(())) },
    )
    .await
    .unwrap();

    // TPS 20 (burst 20): 60 submits need at least ~2 s.
    h.update(Tunables {
        tps: Some(20.0),
        ..tun
    });
    // No wait needed: the bucket has been idle since the session began (over 2 s ago, see the two
    // enquire_link round trips above), so the first take refills it to its burst of 20.
    let t0 = Instant::now();
    for i in 0..60 {
        h.submit(msg(i), Duration::from_secs(10)).await.unwrap();
    }
    let limited = t0.elapsed();
    assert!(
        limited >= Duration::from_millis(1800) && limited < Duration::from_secs(5),
        "60 at 20/s took {limited:?}"
    );
    // Back to unlimited, in place: fast again, same session.
    h.update(Tunables { tps: None, ..tun });
    let t0 = Instant::now();
    for i in 0..60 {
        h.submit(msg(i), Duration::from_secs(10)).await.unwrap();
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "unlimited took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        smsc.stats().await.unwrap().open_binds(SYSTEM_ID).total,
        1,
        "no rebind"
    );

    // Graceful unbind: the session ends cleanly and the simulator sees the bind go.
    h.close();
    let ended = tokio::time::timeout(Duration::from_secs(5), join)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    wait::until("bind gone", Duration::from_secs(5), || async {
        Ok((smsc.stats().await?.open_binds(SYSTEM_ID).total == 0).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_caps_in_flight_requests() {
    let cfg = SmscConfig::new().credential(SYSTEM_ID, PASSWORD).plain(
        "silent",
        Behaviour {
            never_answer_submits: true,
            ..Default::default()
        },
    );
    let smsc = Smsc::start(cfg).await.unwrap();
    let tun = Tunables {
        window: 3,
        tps: None,
        enquire_interval: Duration::from_secs(30),
    };
    let (h, _join, _obs) = start(&smsc, "silent", tun, Timeouts::default()).await;
    for i in 0..8 {
        let h = h.clone();
        tokio::spawn(async move { h.submit(msg(i), Duration::from_secs(30)).await });
    }
    wait::until("3 submits on the wire", Duration::from_secs(5), || async {
        Ok((smsc.stats().await?.submits == 3).then_some(()))
    })
    .await
    .unwrap();
    // None of the other 5 may go out while the window is full (watched for a while).
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(800) {
        assert_eq!(smsc.stats().await.unwrap().submits, 3);
        tokio::time::sleep(Duration::from_millis(50)).await; // sampling interval of the observation window
    }
    // Growing the window in place lets 2 more out.
    h.update(Tunables { window: 5, ..tun });
    wait::until("5 submits on the wire", Duration::from_secs(5), || async {
        Ok((smsc.stats().await?.submits == 5).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_enquire_link_ends_the_session() {
    // Every response comes 2.5 s late: the bind still succeeds (bind timeout 5 s), but our
    // enquire_link (every 1 s, 1 s to answer) does not.
    let cfg = SmscConfig::new().credential(SYSTEM_ID, PASSWORD).plain(
        "laggy",
        Behaviour {
            response_delay_ms: Some(2500),
            ..Default::default()
        },
    );
    let smsc = Smsc::start(cfg).await.unwrap();
    let tun = Tunables {
        window: 1,
        tps: None,
        enquire_interval: Duration::from_secs(1),
    };
    let timeouts = Timeouts {
        bind: Duration::from_secs(5),
        enquire_response: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let (_h, join, _obs) = start(&smsc, "laggy", tun, timeouts).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), join)
        .await
        .unwrap()
        .unwrap();
    let failure = ended.expect_err("session must end");
    assert_eq!(failure.reason, "enquire_link_timeout", "{failure}");
}
