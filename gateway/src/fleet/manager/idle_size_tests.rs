//! The tasks an idle vendor keeps for as long as it is configured (its supervisor and one
//! worker per bind) stay small. A future is as large as its largest inline await, so one
//! database call or TLS handshake awaited inline would make every idle vendor's task as large
//! as that step's state (it was ~18 KiB); the steps are boxed instead. Limits are for the debug
//! build, whose futures are larger than release ones.

use super::supervisor::{Phase, Supervisor};
use super::worker::SlotWorker;
use super::*;
use std::sync::atomic::AtomicBool;

use crate::fleet::budget::SLOT_TTL;
use crate::fleet::config::{self, tests::row};
use crate::fleet::dial_gate::DialGate;
use crate::fleet::sessions::AckAll;
use crate::smpp::pdu::BindKind;
use tokio::sync::watch;

fn ctx() -> Arc<Ctx> {
    // Never connected: building the futures does not run them.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    Arc::new(Ctx {
        fleet: Fleet::new(pool.clone(), "pod".into(), None),
        claims: Claims::start(pool.clone(), "pod".into(), SLOT_TTL),
        dials: DialGate::new(1),
        reporter: Reporter::start(pool, "pod".into(), metrics.clone()),
        registry: Arc::new(Registry::default()),
        metrics,
        timeouts: Timeouts::default(),
        connect_timeout: Duration::from_secs(5),
        sessions: Arc::new(SessionIndex::default()),
        inbound: Arc::new(AckAll),
    })
}

#[tokio::test]
async fn an_idle_vendors_tasks_stay_small() {
    let ctx = ctx();
    let entry = config::parse(&row("v"));
    let cfg = Arc::new(entry.config.clone().unwrap());
    let (_tx, rx) = mpsc::unbounded_channel();
    let supervisor = Supervisor::new(ctx.clone(), entry).run(rx, CancellationToken::new());
    let (_cfg_tx, cfg_rx) = watch::channel(cfg);
    let worker = SlotWorker {
        ctx: ctx.clone(),
        v: ctx.registry.insert(Uuid::new_v4(), "v"),
        slot: 0,
        kind: BindKind::Transceiver,
        cfg: cfg_rx,
        stop: CancellationToken::new(),
        lost: CancellationToken::new(),
        keep_slot: Arc::new(AtomicBool::new(false)),
        phase: watch::channel(Phase::Connecting).0,
    }
    .run();
    let (s, w) = (size_of_val(&supervisor), size_of_val(&worker));
    println!("supervisor task future: {s} B, slot worker task future: {w} B");
    assert!(s <= 1024, "the supervisor's future is {s} B");
    assert!(w <= 1536, "the slot worker's future is {w} B");
}
