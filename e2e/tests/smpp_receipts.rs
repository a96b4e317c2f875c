//! Receipts back to customers bound to our SMPP server, across real smpp-gateway processes:
//! the customer is the shared Rust ESME (smpp_e2e::esme), the vendor a private node SMSC
//! simulator that one gateway holds the only bind of (max_binds 1), PostgreSQL and Redis the
//! environment's. A receipt reaches the customer on whichever gateway it is bound, waits in the
//! account's outbox while it is not bound, and survives gateway restarts and a killed gateway.
//!
//! Run: make env-up; cargo build --bins; cargo test -p smpp-e2e --test smpp_receipts

mod gateway_support;

use std::process::Command as Process;
use std::time::Duration;

use gateway_support::{
    Messaging, Result, SmppGateway, TestDb, customer_account, customer_config, messaging_env,
    metric,
};
use rusmpp::values::{InterfaceVersion, MessageState};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use smpp_e2e::env::Env;
use smpp_e2e::esme::{BindType, Esme, Read, Receipt, Submit};
use smpp_e2e::smsc::{Smsc, SmscConfig};
use smpp_e2e::wait;
use uuid::Uuid;

/// The customer's password (SMPP allows 8 characters).
const PASSWORD: &str = "Rc9ptPw4";
/// The vendor: a private simulator and its credentials.
const VENDOR: &str = "dlrsim";
const SIM_ID: &str = "gwdlr";
const SIM_PW: &str = "Dl7rPw2x";
/// Bounds a hang, not a latency.
const SETTLE: Duration = Duration::from_secs(30);
/// A killed gateway's receipts are taken over after the claim idle time (30 s) and a poll.
const TAKEOVER: Duration = Duration::from_secs(90);
/// What the ESME's `Submit::text` sends from and to: the receipt comes back the other way.
const FROM: &str = "12345";
const TO: &str = "4915112345678";

/// Failed binds are not rate-limited: a test polls its first bind until the account row has
/// reached the gateway.
const GATEWAY_ENV: &[(&str, &str)] = &[("SMPP_FAILED_BINDS_PER_MINUTE", "100000")];

struct Rig {
    db: TestDb,
    m: Messaging,
    smsc: Smsc,
    system_id: String,
    account: Uuid,
}

/// The rig and its first gateway (which creates the schema the account row goes into).
async fn rig(system_id: &str, first: &str) -> Result<(Rig, SmppGateway)> {
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let smsc = Smsc::start(
        SmscConfig::standard()
            .credential(SIM_ID, SIM_PW)
            .dlr_delay(Duration::from_millis(50)),
    )
    .await?;
    let g = SmppGateway::start(&db, &m, first, GATEWAY_ENV).await?;
    let account = customer_account(&db, &customer_config(system_id, PASSWORD, |_| {})).await?;
    let r = Rig {
        db,
        m,
        smsc,
        system_id: system_id.into(),
        account,
    };
    Ok((r, g))
}

impl Rig {
    /// Another gateway of this rig.
    async fn gateway(&self, pod: &str) -> Result<SmppGateway> {
        SmppGateway::start(&self.db, &self.m, pod, GATEWAY_ENV).await
    }

    /// The vendor, with one bind in the fleet: `holder` takes it (start the others after).
    async fn vendor(&self, holder: &SmppGateway) -> Result<()> {
        self.db
            .insert_legacy(
                VENDOR,
                self.smsc.port("plain"),
                SIM_ID,
                SIM_PW,
                &[("max_binds", "1")],
            )
            .await?;
        holder.gw.wait_bound(VENDOR, 1, SETTLE).await
    }

    /// A bound customer session on `g` (polled until the account row has reached it).
    async fn bind(&self, g: &SmppGateway, kind: BindType) -> Result<Esme> {
        wait::until(
            &format!("{} binds {kind:?} on {}", self.system_id, g.gw.pod),
            SETTLE,
            || async {
                let mut e = Esme::plain(g.smpp).await?.with_timeout(SETTLE);
                let s = e
                    .bind_status(kind, &self.system_id, PASSWORD, InterfaceVersion::Smpp3_4)
                    .await?;
                Ok((s == CommandStatus::EsmeRok).then_some(e))
            },
        )
        .await
    }

    /// Receipts waiting in the account's outbox (Redis).
    async fn waiting(&self) -> Result<u64> {
        let mut c = Env::load()?.redis().await?;
        Ok(redis::cmd("XLEN")
            .arg(smpp_gateway::messaging::outbox::key(self.account))
            .query_async(&mut c)
            .await?)
    }

    /// Waits until `n` receipts wait in the outbox.
    async fn wait_waiting(&self, n: u64) -> Result<()> {
        wait::until(&format!("{n} receipts in the outbox"), SETTLE, || async {
            let w = self.waiting().await?;
            Ok((w == n).then_some(()))
        })
        .await
    }

    /// `event` of this account's receipts on gateway `g`.
    async fn outbox_count(&self, g: &SmppGateway, event: &str) -> Result<f64> {
        Ok(metric(
            &g.gw.metrics().await?,
            "smpp_outbox_receipts_total",
            &[
                &format!("account=\"{}\"", self.account),
                &format!("event=\"{event}\""),
            ],
        ))
    }
}

/// Submits a text asking for a receipt; our message id.
async fn submit(e: &mut Esme, text: &str) -> Result<String> {
    Ok(e.submit_ok(&Submit::text(text).receipt(true)).await?)
}

/// The next PDU, which must be a deliver_sm carrying a receipt.
async fn receipt(e: &mut Esme) -> Result<(Command, Receipt)> {
    let c = e.expect("a delivery receipt").await?;
    anyhow::ensure!(
        c.id() == CommandId::DeliverSm,
        "expected a deliver_sm, got {c:?}"
    );
    let r = Receipt::from_command(&c)?;
    Ok((c, r))
}

/// The receipt is for message `id`, delivered, and comes from the handset to the sender.
fn assert_delivered(c: &Command, r: &Receipt, id: &str) {
    assert_eq!(r.esm_class, 0x04, "an MC delivery receipt: {r:?}");
    assert_eq!(r.receipted_id.as_deref(), Some(id), "{r:?}");
    assert_eq!(r.id.as_deref(), Some(id), "{r:?}");
    assert_eq!(r.stat.as_deref(), Some("DELIVRD"), "{r:?}");
    assert_eq!(r.err.as_deref(), Some("000"), "{r:?}");
    assert_eq!(r.state, Some(MessageState::Delivered), "{r:?}");
    let Some(Pdu::DeliverSm(d)) = c.pdu() else {
        panic!("not a deliver_sm: {c:?}")
    };
    assert_eq!(
        (d.source_addr.to_string(), d.destination_addr.to_string()),
        (TO.to_string(), FROM.to_string())
    );
}

/// Nothing more arrives within a short look (a duplicate would come right after).
async fn no_more(e: &mut Esme) {
    match e.read(Duration::from_secs(2)).await {
        Read::Silent => {}
        other => panic!("expected nothing more, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_comes_back_as_a_delivered_receipt_in_the_customers_session() -> Result {
    let (r, a) = rig("dlrone", "gw-dlr-one").await?;
    r.vendor(&a).await?;
    let mut e = r.bind(&a, BindType::Transceiver).await?;
    let id = submit(&mut e, "hello receipts").await?;
    let (c, got) = receipt(&mut e).await?;
    assert_delivered(&c, &got, &id);
    e.answer(&c).await?;
    // Answered, so it leaves the outbox.
    r.wait_waiting(0).await?;
    no_more(&mut e).await;
    assert_eq!(r.outbox_count(&a, "pushed").await?, 1.0);
    assert_eq!(r.outbox_count(&a, "delivered").await?, 1.0);
    e.unbind().await?;
    a.gw.assert_no_secret_in_log(&[PASSWORD, SIM_PW, &r.m.token]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_bound_on_another_gateway_than_the_vendors_bind_gets_its_receipt() -> Result {
    let (r, a) = rig("dlrfar", "gw-dlr-vendor").await?;
    r.vendor(&a).await?;
    let b = r.gateway("gw-dlr-customer").await?;
    // b knows the vendor but holds no bind of it: its submits go through a.
    wait::until("b lists the vendor unbound", SETTLE, || async {
        Ok(b.gw.vendor(VENDOR).await?.map(|_| ()))
    })
    .await?;
    assert_eq!(b.gw.bound(VENDOR).await?, 0);
    // Its forwarding snapshot (read once a second) lists a's bind.
    b.gw.wait_forwardable(1, SETTLE).await?;
    let mut e = r.bind(&b, BindType::Transceiver).await?;
    let id = submit(&mut e, "from far away").await?;
    let (c, got) = receipt(&mut e).await?;
    assert_delivered(&c, &got, &id);
    e.answer(&c).await?;
    r.wait_waiting(0).await?;
    // Pushed where the vendor's receipt came in, delivered where the customer is.
    assert_eq!(r.outbox_count(&a, "pushed").await?, 1.0);
    assert_eq!(r.outbox_count(&b, "delivered").await?, 1.0);
    assert_eq!(r.outbox_count(&a, "delivered").await?, 0.0);
    e.unbind().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_that_binds_after_its_receipt_arrived_gets_it() -> Result {
    let (r, a) = rig("dlrlate", "gw-dlr-late-a").await?;
    r.vendor(&a).await?;
    let b = r.gateway("gw-dlr-late-b").await?;
    // A transmitter gets no receipts: it waits in the outbox.
    let mut tx = r.bind(&a, BindType::Transmitter).await?;
    let id = submit(&mut tx, "for later").await?;
    tx.unbind().await?;
    r.wait_waiting(1).await?;
    // The vendor has had its answer: the receipt is ours to keep now.
    wait::until("the vendor's receipt acknowledged", SETTLE, || async {
        Ok((r.smsc.stats().await?.receipts_acked == 1).then_some(()))
    })
    .await?;
    let mut rx = r.bind(&b, BindType::Receiver).await?;
    let (c, got) = receipt(&mut rx).await?;
    assert_delivered(&c, &got, &id);
    rx.answer(&c).await?;
    r.wait_waiting(0).await?;
    no_more(&mut rx).await;
    rx.unbind().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_restarted_or_killed_in_between_lose_no_receipt() -> Result {
    let (r, mut a) = rig("dlrcrash", "gw-dlr-crash-a").await?;
    r.vendor(&a).await?;
    let b = r.gateway("gw-dlr-crash-b").await?;

    // 1. Killed while the customer has the receipt but has not answered it: the new bind on
    //    another gateway gets it again once the dead session's hold has run out.
    let mut rx = r.bind(&b, BindType::Receiver).await?;
    rx.set_auto_answer(false);
    let mut tx = r.bind(&a, BindType::Transmitter).await?;
    let first = submit(&mut tx, "unanswered").await?;
    let (c, got) = receipt(&mut rx).await?;
    assert_delivered(&c, &got, &first);
    drop(b); // SIGKILL: no unbind, no hand-back.
    assert!(
        matches!(rx.read(SETTLE).await, Read::Closed),
        "the killed gateway's session is gone"
    );
    let mut rx = r.bind(&a, BindType::Receiver).await?.with_timeout(TAKEOVER);
    let (c, got) = receipt(&mut rx).await?;
    assert_delivered(&c, &got, &first);
    rx.answer(&c).await?;
    r.wait_waiting(0).await?;
    rx.unbind().await?;

    // 2. A receipt arrives while the customer is unbound; then every gateway is restarted
    //    (SIGTERM): it waits in Redis and goes out on the next bind.
    let second = submit(&mut tx, "across restarts").await?;
    tx.unbind().await?;
    r.wait_waiting(1).await?;
    a.gw.terminate(SETTLE).await?;
    let a2 = r.gateway("gw-dlr-crash-a2").await?;
    let mut rx = r.bind(&a2, BindType::Receiver).await?;
    let (c, got) = receipt(&mut rx).await?;
    assert_delivered(&c, &got, &second);
    rx.answer(&c).await?;
    r.wait_waiting(0).await?;
    no_more(&mut rx).await;
    rx.unbind().await?;
    Ok(())
}

/// Python smpplib as the customer: bind TRX, submit asking for a receipt, read until the
/// receipt comes (smpplib answers it), print what its own parser made of it.
const SMPPLIB: &str = r#"
import sys, smpplib.client, smpplib.consts
host, port, sid, pw = sys.argv[1:5]
c = smpplib.client.Client(host, int(port), timeout=30)
sent, got = [], []
c.set_message_sent_handler(lambda pdu: sent.append(pdu.message_id))
c.set_message_received_handler(lambda pdu: got.append(pdu))
c.connect()
c.bind_transceiver(system_id=sid, password=pw)
c.send_message(source_addr_ton=1, source_addr_npi=1, source_addr='12345',
               dest_addr_ton=1, dest_addr_npi=1, destination_addr='4915112345678',
               short_message=b'from smpplib', registered_delivery=1)
while not (sent and got):
    c.read_once()
s = lambda v: v.decode() if isinstance(v, bytes) else str(v)
d = got[0]
print("ID " + s(sent[0]))
print("ESM %d" % d.esm_class)
print("RECEIPTED " + s(d.receipted_message_id))
print("STATE %d" % d.message_state)
print("TEXT " + s(d.short_message))
c.unbind()
c.disconnect()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smpplib_reads_our_receipt_with_its_own_parser() -> Result {
    let (r, a) = rig("dlrpy", "gw-dlr-py").await?;
    r.vendor(&a).await?;
    // Bind once from Rust first: the account row has reached the gateway.
    r.bind(&a, BindType::Transmitter).await?.unbind().await?;
    let (port, sid) = (a.smpp.to_string(), r.system_id.clone());
    let out = tokio::task::spawn_blocking(move || {
        Process::new("python3")
            .arg("-c")
            .arg(SMPPLIB)
            .args(["127.0.0.1", &port, &sid, PASSWORD])
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "python3 smpplib (pip install -r e2e/requirements.txt) failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k} ")).map(str::to_string))
            .unwrap_or_else(|| panic!("smpplib printed no {k}: {stdout}"))
    };
    let id = field("ID");
    assert_eq!(field("ESM"), "4");
    assert_eq!(field("RECEIPTED"), id);
    assert_eq!(field("STATE"), "2", "DELIVERED");
    let text = field("TEXT");
    assert!(
        text.starts_with(&format!("id:{id} sub:001 dlvrd:001 "))
            && text.contains(" stat:DELIVRD err:000 "),
        "{text}"
    );
    // smpplib answered it: it has left the outbox.
    r.wait_waiting(0).await?;
    Ok(())
}
