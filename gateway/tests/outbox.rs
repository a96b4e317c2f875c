//! The customer receipt outbox against the environment's real Redis: the consumer loop with a
//! fake customer session (`CustomerLink`). Each test has an account (a stream) of its own.
//!
//! Run: cargo test -p smpp-gateway --test outbox

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type Result<T = ()> = anyhow::Result<T>;
use chrono::Utc;
use smpp_e2e::env::Env;
use smpp_e2e::wait;
use smpp_gateway::messaging::customer::{CustomerLink, CustomerReceipt, DeliverError};
use smpp_gateway::messaging::model::MessageStatus;
use smpp_gateway::messaging::outbox::{self, Outbox, OutboxConfig};
use smpp_gateway::messaging::store::{self, MessageStore};
use smpp_gateway::metrics::Metrics;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

/// How the fake session answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Ok,
    /// Refuses each receipt's first n attempts, then accepts.
    RefuseFirst(u32),
    /// Never answers (a customer that hangs): the attempt lasts until the task is dropped.
    Hang,
    /// Never answers this one receipt; accepts the others.
    HangOn(&'static str),
}

/// A customer session: records every attempt, answers as told.
struct FakeLink {
    answer: Answer,
    attempts: Mutex<HashMap<String, u32>>,
    delivered: Mutex<Vec<String>>,
}

impl FakeLink {
    fn new(answer: Answer) -> Arc<Self> {
        Arc::new(Self {
            answer,
            attempts: Mutex::default(),
            delivered: Mutex::default(),
        })
    }

    fn delivered(&self) -> Vec<String> {
        self.delivered.lock().unwrap().clone()
    }

    fn attempts(&self, id: &str) -> u32 {
        self.attempts.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    fn tried(&self) -> usize {
        self.attempts.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl CustomerLink for FakeLink {
    async fn deliver(&self, r: &CustomerReceipt) -> std::result::Result<(), DeliverError> {
        let n = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(r.message_id.clone()).or_default();
            *n += 1;
            *n
        };
        match self.answer {
            Answer::Hang => std::future::pending().await,
            Answer::HangOn(id) if r.message_id == id => std::future::pending().await,
            Answer::RefuseFirst(k) if n <= k => Err(DeliverError::Refused(0x0000_0008)),
            _ => {
                self.delivered.lock().unwrap().push(r.message_id.clone());
                Ok(())
            }
        }
    }
}

/// Short timings so a test takes seconds; `claim_idle` is the test's to choose.
fn fast(claim_idle: Duration) -> OutboxConfig {
    OutboxConfig {
        claim_idle,
        poll: Duration::from_millis(50),
        retry_first: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        housekeeping: Duration::from_millis(200),
        ..OutboxConfig::new(Duration::from_secs(3600))
    }
}

struct Rig {
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    account: Uuid,
}

async fn rig(cfg: OutboxConfig) -> Result<Rig> {
    // The consumer's warnings (Redis errors) show in a failing test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let env = Env::load()?;
    let conn = store::connect(&env.redis_url).await?;
    let metrics = Arc::new(Metrics::new());
    Ok(Rig {
        outbox: Outbox::with_config(conn, cfg, metrics.clone()),
        metrics,
        account: Uuid::new_v4(),
    })
}

impl Rig {
    fn receipt(&self, id: &str) -> CustomerReceipt {
        CustomerReceipt {
            message_id: id.into(),
            to: "15551234567".into(),
            from: "ACME".into(),
            status: MessageStatus::Delivered,
            submitted_at: Utc::now(),
            done_at: Utc::now(),
            error_code: None,
        }
    }

    async fn push(&self, ids: &[&str]) -> Result<()> {
        for id in ids {
            self.outbox.push(self.account, &self.receipt(id)).await?;
        }
        Ok(())
    }

    fn consume(
        &self,
        name: &str,
        link: &Arc<FakeLink>,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let link: Arc<dyn CustomerLink> = link.clone();
        let h = self
            .outbox
            .consume(self.account, name.into(), link, stop.clone());
        (stop, h)
    }

    fn count(&self, event: &str) -> u64 {
        self.metrics
            .outbox
            .with_label_values(&[&self.account.to_string(), event])
            .get()
    }

    /// Waits until the stream is empty and nothing is pending.
    async fn drained(&self) -> Result<()> {
        wait::until("the outbox to be empty", DEADLINE, || async {
            let d = self.outbox.depth(self.account).await?;
            Ok((d == (0, 0)).then_some(()))
        })
        .await
    }
}

async fn got(link: &FakeLink, what: &str, n: usize) -> Result<Vec<String>> {
    wait::until(what, DEADLINE, || async {
        let d = link.delivered();
        Ok((d.len() >= n).then_some(d))
    })
    .await
}

#[tokio::test]
async fn delivered_receipts_leave_the_outbox_and_ones_pushed_before_the_bind_are_delivered()
-> Result {
    let r = rig(fast(Duration::from_secs(60))).await?;
    // Pushed while nobody is bound: the stream exists, the group not yet.
    r.push(&["a", "b", "c"]).await?;
    assert_eq!(r.outbox.depth(r.account).await?, (3, 0));
    let link = FakeLink::new(Answer::Ok);
    let (stop, h) = r.consume("pod-a:1", &link);
    let mut d = got(&link, "three receipts", 3).await?;
    d.sort();
    assert_eq!(d, ["a", "b", "c"]);
    r.drained().await?;
    assert_eq!((r.count("pushed"), r.count("delivered")), (3, 3));
    assert_eq!(r.count("redelivered"), 0);
    stop.cancel();
    h.await?;
    Ok(())
}

#[tokio::test]
async fn a_push_on_this_pod_wakes_its_idle_session_at_once() -> Result {
    // A poll far beyond the deadline: only the wake-up can deliver in time.
    let cfg = OutboxConfig {
        poll: Duration::from_secs(600),
        housekeeping: Duration::from_secs(600),
        ..fast(Duration::from_secs(60))
    };
    let r = rig(cfg).await?;
    let link = FakeLink::new(Answer::Ok);
    let (stop, h) = r.consume("pod-a:1", &link);
    // Until the session has made its group and gone idle, a push could race its first read.
    wait::until("the consumer group", DEADLINE, || async {
        let env = Env::load()?;
        let mut c = env.redis().await?;
        let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(outbox::key(r.account))
            .query_async(&mut c)
            .await;
        Ok(groups
            .ok()
            .filter(|g| matches!(g, redis::Value::Array(v) if !v.is_empty())))
    })
    .await?;
    r.push(&["woken"]).await?;
    assert_eq!(got(&link, "the woken receipt", 1).await?, ["woken"]);
    stop.cancel();
    h.await?;
    Ok(())
}

#[tokio::test]
async fn a_refused_receipt_stays_in_the_outbox_and_is_retried_until_accepted() -> Result {
    let r = rig(fast(Duration::from_secs(60))).await?;
    let link = FakeLink::new(Answer::RefuseFirst(3));
    r.push(&["x"]).await?;
    let (stop, h) = r.consume("pod-a:1", &link);
    wait::until("a first refusal", DEADLINE, || async {
        Ok((link.attempts("x") >= 1).then_some(()))
    })
    .await?;
    // Refused: still there.
    assert_eq!(r.outbox.depth(r.account).await?.0, 1);
    assert_eq!(got(&link, "x accepted", 1).await?, ["x"]);
    assert_eq!(link.attempts("x"), 4, "three refusals, then the answer");
    r.drained().await?;
    assert_eq!(r.count("failed"), 3);
    assert_eq!(r.count("redelivered"), 3);
    assert_eq!(r.count("delivered"), 1);
    stop.cancel();
    h.await?;
    Ok(())
}

#[tokio::test]
async fn a_session_that_stops_mid_delivery_hands_its_receipts_to_another_at_once() -> Result {
    // claim_idle is beyond the deadline: the other session can only get them by a hand-back.
    let r = rig(fast(Duration::from_secs(600))).await?;
    r.push(&["p", "q"]).await?;
    let hung = FakeLink::new(Answer::Hang);
    let (stop_a, a) = r.consume("pod-a:1", &hung);
    wait::until("both in flight on the hung session", DEADLINE, || async {
        Ok((hung.tried() == 2).then_some(()))
    })
    .await?;
    assert_eq!(r.outbox.depth(r.account).await?, (2, 2));
    stop_a.cancel();
    a.await?;
    let link = FakeLink::new(Answer::Ok);
    let (stop_b, b) = r.consume("pod-b:7", &link);
    let mut d = got(&link, "both on the second session", 2).await?;
    d.sort();
    assert_eq!(d, ["p", "q"]);
    r.drained().await?;
    assert!(hung.delivered().is_empty());
    stop_b.cancel();
    b.await?;
    Ok(())
}

#[tokio::test]
async fn the_receipts_of_a_session_that_died_are_taken_over_after_the_claim_idle_time() -> Result {
    let r = rig(fast(Duration::from_secs(1))).await?;
    r.push(&["d"]).await?;
    let hung = FakeLink::new(Answer::Hang);
    let (_stop_a, a) = r.consume("pod-dead:1", &hung);
    wait::until("d in flight on the session that dies", DEADLINE, || async {
        Ok((hung.tried() == 1).then_some(()))
    })
    .await?;
    // Killed: no hand-back.
    a.abort();
    let _ = a.await;
    assert_eq!(r.outbox.depth(r.account).await?, (1, 1));
    let link = FakeLink::new(Answer::Ok);
    let (stop_b, b) = r.consume("pod-b:1", &link);
    assert_eq!(got(&link, "d taken over", 1).await?, ["d"]);
    r.drained().await?;
    assert_eq!(r.count("redelivered"), 1);
    stop_b.cancel();
    b.await?;
    Ok(())
}

#[tokio::test]
async fn sessions_of_one_account_share_its_receipts_each_delivered_once() -> Result {
    let r = rig(fast(Duration::from_secs(60))).await?;
    let (one, two) = (FakeLink::new(Answer::Ok), FakeLink::new(Answer::Ok));
    let (s1, h1) = r.consume("pod-a:1", &one);
    let (s2, h2) = r.consume("pod-b:1", &two);
    let ids: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    r.push(&refs).await?;
    wait::until("all 40 delivered", DEADLINE, || async {
        Ok((one.delivered().len() + two.delivered().len() >= 40).then_some(()))
    })
    .await?;
    r.drained().await?;
    let mut all = one.delivered();
    all.extend(two.delivered());
    all.sort();
    assert_eq!(all, ids, "each receipt exactly once over both sessions");
    s1.cancel();
    s2.cancel();
    h1.await?;
    h2.await?;
    Ok(())
}

#[tokio::test]
async fn receipts_older_than_the_ttl_are_trimmed_counted_and_never_delivered() -> Result {
    let r = rig(fast(Duration::from_secs(60))).await?;
    let env = Env::load()?;
    let mut c = env.redis().await?;
    // Two receipts written two hours ago, in an outbox whose TTL is one hour.
    let two_hours_ago = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() - 7_200_000;
    for (i, id) in ["old1", "old2"].iter().enumerate() {
        let json = serde_json::to_string(&r.receipt(id))?;
        let _: String = redis::cmd("XADD")
            .arg(outbox::key(r.account))
            .arg(format!("{two_hours_ago}-{i}"))
            .arg("r")
            .arg(json)
            .query_async(&mut c)
            .await?;
    }
    r.push(&["fresh"]).await?;
    assert_eq!(r.count("expired"), 2, "the push trims them");
    assert_eq!(r.outbox.depth(r.account).await?.0, 1);
    let link = FakeLink::new(Answer::Ok);
    let (stop, h) = r.consume("pod-a:1", &link);
    assert_eq!(got(&link, "the fresh receipt", 1).await?, ["fresh"]);
    r.drained().await?;
    assert_eq!(link.tried(), 1, "nothing expired was offered");
    stop.cancel();
    h.await?;
    Ok(())
}

#[tokio::test]
async fn an_expired_receipt_already_read_is_dropped_not_delivered() -> Result {
    // Read (pending) by a session that then died, and past the TTL when taken over.
    let r = rig(fast(Duration::from_secs(1))).await?;
    let env = Env::load()?;
    let mut c = env.redis().await?;
    let key = outbox::key(r.account);
    let old = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() - 7_200_000;
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg(format!("{old}-0"))
        .arg("r")
        .arg(serde_json::to_string(&r.receipt("stale"))?)
        .query_async(&mut c)
        .await?;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg(outbox::GROUP)
        .arg("0")
        .query_async(&mut c)
        .await?;
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(outbox::GROUP)
        .arg("pod-dead:1")
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut c)
        .await?;
    let link = FakeLink::new(Answer::Ok);
    let (stop, h) = r.consume("pod-b:1", &link);
    r.drained().await?;
    assert_eq!(link.tried(), 0);
    assert!(r.count("expired") >= 1);
    stop.cancel();
    h.await?;
    Ok(())
}

/// The names of the group's consumers.
async fn consumers(account: Uuid) -> Result<Vec<String>> {
    let env = Env::load()?;
    let mut c = env.redis().await?;
    let cs: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(outbox::key(account))
        .arg(outbox::GROUP)
        .query_async(&mut c)
        .await?;
    Ok(cs
        .iter()
        .filter_map(|c| match c.get("name") {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect())
}

#[tokio::test]
async fn names_of_sessions_gone_without_a_goodbye_are_forgotten() -> Result {
    let cfg = OutboxConfig {
        forget_after: Duration::from_millis(300),
        ..fast(Duration::from_secs(60))
    };
    let r = rig(cfg).await?;
    let env = Env::load()?;
    let mut c = env.redis().await?;
    let key = outbox::key(r.account);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg(outbox::GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await?;
    // A killed pod's session: in the group, holding nothing, silent.
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&key)
        .arg(outbox::GROUP)
        .arg("pod-gone:1")
        .query_async(&mut c)
        .await?;
    // A live session with a receipt in flight for longer than forget_after, and another
    // one (whose housekeeping runs while the first waits for its answer).
    r.push(&["held"]).await?;
    let hung = FakeLink::new(Answer::Hang);
    let (stop_a, a) = r.consume("pod-a:1", &hung);
    wait::until("held in flight", DEADLINE, || async {
        Ok((hung.tried() == 1).then_some(()))
    })
    .await?;
    let link = FakeLink::new(Answer::Ok);
    let (stop_b, b) = r.consume("pod-b:1", &link);
    let names = wait::until("the gone session forgotten", DEADLINE, || async {
        let names = consumers(r.account).await?;
        Ok((!names.iter().any(|n| n == "pod-gone:1")).then_some(names))
    })
    .await?;
    assert!(
        names.iter().any(|n| n == "pod-a:1"),
        "a session holding a receipt stays: {names:?}"
    );
    // A session that stops says goodbye itself; its receipt goes to the other one.
    stop_a.cancel();
    a.await?;
    assert_eq!(got(&link, "held, handed over", 1).await?, ["held"]);
    assert!(!consumers(r.account).await?.iter().any(|n| n == "pod-a:1"));
    stop_b.cancel();
    b.await?;
    Ok(())
}

#[tokio::test]
async fn a_receipt_the_customer_does_not_answer_holds_up_no_other() -> Result {
    let r = rig(fast(Duration::from_secs(600))).await?;
    let link = FakeLink::new(Answer::HangOn("slow"));
    r.push(&["slow"]).await?;
    let (stop, h) = r.consume("pod-a:1", &link);
    wait::until("slow in flight", DEADLINE, || async {
        Ok((link.attempts("slow") == 1).then_some(()))
    })
    .await?;
    r.push(&["a", "b", "c"]).await?;
    let mut d = got(&link, "the three others", 3).await?;
    d.sort();
    assert_eq!(d, ["a", "b", "c"]);
    // The three answered ones leave (settled in one batch, by the next round at the
    // latest); the one still waiting for its answer stays.
    wait::until("only the unanswered one left", DEADLINE, || async {
        Ok((r.outbox.depth(r.account).await? == (1, 1)).then_some(()))
    })
    .await?;
    assert_eq!(link.attempts("slow"), 1);
    stop.cancel();
    h.await?;
    Ok(())
}

#[tokio::test]
async fn a_push_marks_its_message_so_a_resent_vendor_receipt_is_not_queued_twice() -> Result {
    let r = rig(fast(Duration::from_secs(60))).await?;
    let env = Env::load()?;
    let s = store::RedisStore::new(
        store::connect(&env.redis_url).await?,
        Duration::from_secs(60),
    );
    let id = format!("mark-{}", Uuid::new_v4());
    let origin = smpp_gateway::messaging::customer::Origin {
        account: r.account,
        to: "15551234567".into(),
        from: "ACME".into(),
    };
    s.create(&customer_message(&id, origin), &[], &[]).await?;
    let h = smpp_gateway::messaging::model::HistoryEntry::new("receipt");
    let first = s
        .apply_receipt(&id, 0, MessageStatus::Delivered, None, &h)
        .await?
        .expect("stored");
    assert!(first.customer.is_some(), "the final receipt is due");
    r.push(&[&id]).await?;
    let resent = s
        .apply_receipt(&id, 0, MessageStatus::Delivered, None, &h)
        .await?
        .expect("stored");
    assert!(
        resent.customer.is_none(),
        "the push marked the message in the same pipeline"
    );
    // A receipt whose message is not stored is queued, and no message is made up for it.
    r.push(&["nobody"]).await?;
    assert!(s.get("nobody").await?.is_none());
    assert_eq!(r.outbox.depth(r.account).await?.0, 2);
    Ok(())
}

#[tokio::test]
async fn a_push_recreates_an_outbox_deleted_since_the_last_upkeep_with_its_ttl() -> Result {
    // No upkeep due within the test: only the NOMKSTREAM miss can make the second push
    // create the stream.
    let r = rig(OutboxConfig {
        upkeep: Duration::from_secs(3600),
        ..fast(Duration::from_secs(60))
    })
    .await?;
    let env = Env::load()?;
    let mut c = env.redis().await?;
    let key = outbox::key(r.account);
    r.push(&["a"]).await?;
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut c).await?;
    r.push(&["b"]).await?;
    r.push(&["c"]).await?;
    assert_eq!(r.outbox.depth(r.account).await?.0, 2, "b and c, once each");
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut c).await?;
    assert!(
        ttl > 3600,
        "the recreated outbox expires (DLR TTL + upkeep), got TTL {ttl}"
    );
    assert_eq!(r.count("pushed"), 3);
    Ok(())
}

fn customer_message(
    id: &str,
    origin: smpp_gateway::messaging::customer::Origin,
) -> store::NewMessage {
    store::NewMessage {
        id: id.into(),
        vendor: "v".into(),
        vendor_id: Uuid::nil(),
        parts: 1,
        vendor_message_ids: vec![format!("{id}-0")],
        submitted_at: Utc::now(),
        status: MessageStatus::Submitted,
        error_code: None,
        client_ref: None,
        callback_url: None,
        account: Some(origin.account),
        origin: Some(origin),
    }
}
