//! Messages across a fleet of smpp-gateway processes, and with Redis failing: any pod serves
//! any request (one-hop forwarding to the pod holding the vendor's bind), the Idempotency-Key
//! holds fleet-wide, a Redis stop and start loses nothing with no gateway restart, and a pod
//! with no route says so.
//!
//! The real binary (several processes on one database), the real PostgreSQL and Redis of
//! `make env-up` (a private, persistent Redis for the fault test) and a private node SMSC
//! simulator, whose counters tell what reached the vendor.
//!
//! Run: make env-up; cargo build --bins; cargo test -p smpp-e2e --test messages_fleet

mod gateway_support;

use std::time::Duration;

use gateway_support::{
    Answer, Gateway, Messaging, Result, TestDb, message, messaging_env, metric, post_json,
};
use serde_json::Value;
use smpp_e2e::postgres::PrivateRedis;
use smpp_e2e::smsc::{Behaviour, ReceiptSettings, Smsc, SmscConfig, Stats};
use smpp_e2e::wait;

const SYSTEM_ID: &str = "gwfleet";
const PASSWORD: &str = "Fl33tPw7";
const VENDOR: &str = "fleet";
const TO: &str = "+15551234567";
/// A second vendor, on the simulator's slow listener (Redis test).
const SLOW: &str = "fleet-slow";
const SLOW_ID: &str = "gwslow";

const SETTLE: Duration = Duration::from_secs(20);
const DELIVERED: Duration = Duration::from_secs(20);

fn sim() -> SmscConfig {
    SmscConfig::standard()
        .credential(SYSTEM_ID, PASSWORD)
        .dlr_delay(Duration::from_millis(50))
}

/// A gateway that sends messages: Redis, API keys, and the address it advertises for
/// forwarded submits (POD_IP + its HTTP port = 127.0.0.1:<port>).
async fn start_gateway(db: &TestDb, pod: &str, m: &Messaging) -> Result<Gateway> {
    Gateway::start_with(
        db,
        pod,
        &m.env_with(&[("POD_IP", "127.0.0.1"), ("SUBMIT_TIMEOUT_SECONDS", "5")]),
    )
    .await
}

/// The fleet's vendor: a hand-written row with `max_binds`.
async fn insert_vendor(db: &TestDb, smsc: &Smsc, max_binds: u32) -> Result<String> {
    db.insert_legacy(
        VENDOR,
        smsc.port("plain"),
        SYSTEM_ID,
        PASSWORD,
        &[("max_binds", &max_binds.to_string())],
    )
    .await
}

async fn stats(smsc: &Smsc) -> Result<Stats> {
    Ok(smsc.stats().await?)
}

/// Waits until the vendor's binds are spread over `gws` as `spread` (sorted sessions_bound
/// per pod), every pod lists the vendor, and the simulator sees that many binds. Returns the
/// per-pod counts in the order of `gws`.
async fn wait_spread(smsc: &Smsc, gws: &[&Gateway], spread: &[u64]) -> Result<Vec<u64>> {
    wait::until(&format!("binds spread as {spread:?}"), SETTLE, || async {
        let mut counts = Vec::new();
        for g in gws {
            let Some(v) = g.vendor(VENDOR).await? else {
                anyhow::bail!("{} does not list the vendor yet", g.pod);
            };
            counts.push(v["sessions_bound"].as_u64().unwrap_or(0));
        }
        let open = stats(smsc).await?.open_binds(SYSTEM_ID).total;
        let mut sorted = counts.clone();
        sorted.sort();
        if sorted == spread && open == spread.iter().sum::<u64>() {
            Ok(Some(counts))
        } else {
            Err(anyhow::anyhow!(
                "sessions_bound per pod {counts:?}, {open} open at the simulator"
            ))
        }
    })
    .await
}

/// Waits until the simulator has had `n` receipts acknowledged (the gateway answers a
/// receipt once it is stored, so GET may show it a moment before the answer arrives).
async fn wait_acked(smsc: &Smsc, n: u64) -> Result<Stats> {
    wait::until(&format!("{n} receipts acknowledged"), SETTLE, || async {
        let s = stats(smsc).await?;
        anyhow::ensure!(
            s.receipts_acked <= n,
            "more receipts acknowledged than sent: {s:?}"
        );
        Ok((s.receipts_acked == n).then_some(s))
    })
    .await
}

/// The 201 body's id, failing with the whole answer otherwise.
fn accepted(a: &Answer, what: &str) -> String {
    assert_eq!(a.status, 201, "{what}: {}", a.body);
    a.json["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no id in {}", a.body))
        .to_string()
}

/// Waits until message `id` is delivered, asking the pods in turn (any pod serves any GET).
async fn wait_delivered(gws: &[&Gateway], token: &str, id: &str) -> Result<Value> {
    let mut turn = 0usize;
    wait::until(&format!("message {id} delivered"), DELIVERED, || {
        turn += 1;
        let g = gws[turn % gws.len()];
        async move {
            let a = g.message(token, id).await?;
            anyhow::ensure!(a.status == 200, "GET on {}: {} {}", g.pod, a.status, a.body);
            match a.json["status"].as_str() {
                Some("delivered") => Ok(Some(a.json)),
                other => Err(anyhow::anyhow!("status {other:?} on {}", g.pod)),
            }
        }
    })
    .await
}

/// Three pods, a vendor that allows 2 binds: the pod without a bind forwards every submit to
/// one that has one; each is delivered and sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_without_a_bind_forwards_every_message() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let g0 = start_gateway(&db, "gw-fleet-a", &m).await?;
    db.wait_schema().await?;
    insert_vendor(&db, &smsc, 2).await?;
    let g1 = start_gateway(&db, "gw-fleet-b", &m).await?;
    let g2 = start_gateway(&db, "gw-fleet-c", &m).await?;
    let gws = [&g0, &g1, &g2];
    // The first pod may take both slots before the others start; the fleet then settles on
    // its fair share, one bind each on two pods. Wait for that, so no bind moves mid-test.
    let counts = wait_spread(&smsc, &gws, &[0, 1, 1]).await?;
    let idle = gws[counts
        .iter()
        .position(|&n| n == 0)
        .expect("a pod without a bind")];

    // The idle pod learns who holds the vendor from vendor_sessions (a snapshot read every
    // second). A text of 14 parts (over MAX_PARTS 10) is refused by the pod that would send
    // it, before anything is sent: once it comes back as that pod's 400 rather than this
    // pod's 503 no_route, the idle pod forwards.
    let too_long = message(TO, &"a".repeat(2000), None);
    wait::until("the idle pod routes to a bound pod", SETTLE, || async {
        let a = idle.submit(&m.token, &too_long).await?;
        match (a.status, a.code()) {
            (400, "invalid_request") => Ok(Some(())),
            (503, "no_route") => Err(anyhow::anyhow!("still no route: {}", a.body)),
            _ => anyhow::bail!("unexpected answer to the probe: {} {}", a.status, a.body),
        }
    })
    .await?;
    let forwarded_before = metric(
        &idle.metrics().await?,
        "smpp_forwards_total",
        &[r#"outcome="ok""#],
    );
    let submits_before = stats(&smsc).await?.submits;
    assert_eq!(submits_before, 0, "the probe never reaches the vendor");

    const N: usize = 20;
    let sends = (0..N).map(|i| {
        let body = message(TO, &format!("fleet message {i}"), None);
        let token = m.token.clone();
        async move { idle.submit(&token, &body).await }
    });
    let answers = futures::future::join_all(sends).await;
    let mut ids = Vec::new();
    for (i, a) in answers.into_iter().enumerate() {
        let a = a?;
        let id = accepted(&a, &format!("message {i} to the idle pod {}", idle.pod));
        assert_eq!(a.json["vendor"], VENDOR, "{}", a.body);
        assert_eq!(a.json["parts"], 1, "{}", a.body);
        ids.push(id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), N, "every message has its own id: {ids:?}");

    for id in &ids {
        wait_delivered(&gws, &m.token, id).await?;
    }
    let forwarded = metric(
        &idle.metrics().await?,
        "smpp_forwards_total",
        &[r#"outcome="ok""#],
    ) - forwarded_before;
    assert_eq!(forwarded, N as f64, "smpp_forwards_total{{outcome=\"ok\"}}");
    let s = wait_acked(&smsc, N as u64).await?;
    assert_eq!(
        s.submits, N as u64,
        "each message reached the vendor once: {s:?}"
    );
    // The idle pod sent nothing itself and still holds no bind.
    assert_eq!(idle.bound(VENDOR).await?, 0);
    for g in gws {
        g.assert_no_secret_in_log(&[PASSWORD, &m.token]);
    }
    Ok(())
}

/// One Idempotency-Key, two pods: one send, one id; another body is refused; two concurrent
/// first requests on two pods send once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_holds_across_pods() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let a = start_gateway(&db, "gw-idem-a", &m).await?;
    db.wait_schema().await?;
    insert_vendor(&db, &smsc, 2).await?;
    let b = start_gateway(&db, "gw-idem-b", &m).await?;
    // One bind each once the fleet settles (the first pod may take both at first), so no
    // bind moves mid-test. A probe that is refused before sending (14 parts, over MAX_PARTS)
    // shows each pod routes.
    wait_spread(&smsc, &[&a, &b], &[1, 1]).await?;
    for g in [&a, &b] {
        let probe = message(TO, &"a".repeat(2000), None);
        wait::until(&format!("{} routes", g.pod), SETTLE, || async {
            let r = g.submit(&m.token, &probe).await?;
            Ok((r.status == 400).then_some(()))
        })
        .await?;
    }

    let key = format!("order-{:08x}", rand::random::<u32>());
    let body = message(TO, "your code is 1234", None);
    let first = a.submit_idem(&m.token, &key, &body).await?;
    let id = accepted(&first, "first request on pod A");
    let retry_same = a.submit_idem(&m.token, &key, &body).await?;
    assert_eq!(accepted(&retry_same, "retry on pod A"), id);
    let retry_other = b.submit_idem(&m.token, &key, &body).await?;
    assert_eq!(accepted(&retry_other, "retry on pod B"), id);
    assert_eq!(
        retry_other.json, first.json,
        "the retry returns the first answer"
    );
    assert_eq!(stats(&smsc).await?.submits, 1, "sent once");

    let other = b
        .submit_idem(&m.token, &key, &message(TO, "your code is 9999", None))
        .await?;
    assert_eq!(
        (other.status, other.code()),
        (409, "idempotency_key_reused"),
        "{}",
        other.body
    );
    assert_eq!(
        stats(&smsc).await?.submits,
        1,
        "nothing sent for the reused key"
    );

    // Two first requests at once, on two pods.
    let key2 = format!("order-{:08x}", rand::random::<u32>());
    let body2 = message(TO, "concurrent retry", None);
    let (ra, rb) = tokio::join!(
        a.submit_idem(&m.token, &key2, &body2),
        b.submit_idem(&m.token, &key2, &body2)
    );
    let (ra, rb) = (ra?, rb?);
    let created: Vec<&Answer> = [&ra, &rb].into_iter().filter(|r| r.status == 201).collect();
    assert!(
        !created.is_empty(),
        "one of them sends: A {} {}, B {} {}",
        ra.status,
        ra.body,
        rb.status,
        rb.body
    );
    let id2 = accepted(created[0], "concurrent request");
    for r in [&ra, &rb] {
        match r.status {
            201 => assert_eq!(r.json["id"], id2.as_str(), "the same message: {}", r.body),
            409 => assert_eq!(r.code(), "idempotency_in_flight", "{}", r.body),
            _ => panic!("concurrent request: {} {}", r.status, r.body),
        }
    }
    assert_eq!(
        stats(&smsc).await?.submits,
        2,
        "the concurrent pair sent once"
    );
    wait_delivered(&[&a, &b], &m.token, &id).await?;
    wait_delivered(&[&a, &b], &m.token, &id2).await?;
    assert_eq!(stats(&smsc).await?.submits, 2);
    Ok(())
}

/// Redis stops: submits get 503 redis_unavailable and send nothing; receipts get a temporary
/// error, so the vendor redelivers them. Redis starts again: with the same gateway process,
/// submits succeed, and the receipts of messages accepted before the stop are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_and_back_loses_nothing() -> Result {
    let mut redis = PrivateRedis::start_persistent()?;
    // Receipts come 4 s after the submit (after Redis is stopped), and are re-sent every
    // 200 ms for as long as the test needs. Listener "slow" answers 2.5 s late: a submit
    // that is in flight there when Redis stops is sent before and answered after.
    let smsc = Smsc::start(
        SmscConfig::standard()
            .credential(SYSTEM_ID, PASSWORD)
            .credential(SLOW_ID, PASSWORD)
            .plain(
                "slow",
                Behaviour {
                    response_delay_ms: Some(2500),
                    ..Default::default()
                },
            )
            .dlr_delay(Duration::from_secs(4))
            .receipts(ReceiptSettings {
                resp_timeout_ms: 2000,
                retry_delay_ms: 200,
                max_attempts: 1000,
            }),
    )
    .await?;
    let db = TestDb::new().await?;
    let mut m = messaging_env()?;
    m.redis_url = redis.url().to_string();
    let gw = start_gateway(&db, "gw-redis", &m).await?;
    db.wait_schema().await?;
    insert_vendor(&db, &smsc, 1).await?;
    db.insert_legacy(SLOW, smsc.port("slow"), SLOW_ID, PASSWORD, &[])
        .await?;
    wait_spread(&smsc, &[&gw], &[1]).await?;
    gw.wait_bound(SLOW, 1, SETTLE).await?;
    let pid = gw.guard.id();

    // Accepted before the stop; their receipts are not due yet.
    const N: usize = 5;
    let mut before = Vec::new();
    for i in 0..N {
        let a = gw
            .submit(
                &m.token,
                &message(TO, &format!("before the stop {i}"), Some(VENDOR)),
            )
            .await?;
        before.push(accepted(&a, &format!("message {i} before the stop")));
    }
    // Sent before the stop, its submit_sm_resp after: the vendor has it, so it is accepted,
    // and its record is written once Redis is back.
    let in_flight = tokio::spawn({
        let (port, token) = (gw.http, m.token.clone());
        async move {
            let body = message(TO, "in flight at the stop", Some(SLOW));
            post_json(port, "/api/v1/messages", Some(&token), &[], &body).await
        }
    });
    wait::until("the in-flight submit at the vendor", SETTLE, || async {
        Ok((stats(&smsc).await?.submits == N as u64 + 1).then_some(()))
    })
    .await?;
    let t0 = std::time::Instant::now();
    tokio::task::block_in_place(|| redis.stop())?;
    let stop_took = t0.elapsed();
    let s = stats(&smsc).await?;
    assert_eq!(s.submits, N as u64 + 1);
    assert_eq!(
        s.receipts_sent, 0,
        "Redis stopped before the first receipt was due (dlr delay 4 s): {s:?}"
    );
    let in_flight = in_flight.await??;
    before.push(accepted(&in_flight, "the submit in flight at the stop"));
    if stop_took < Duration::from_millis(2000) {
        let errors = metric(
            &gw.metrics().await?,
            "smpp_redis_errors_total",
            &[r#"op="create""#],
        );
        assert!(
            errors >= 1.0,
            "the in-flight message was answered after the stop ({stop_took:?}): its write failed and is retried"
        );
    }
    let mut sent = N as u64 + 1;
    // A submit before the gateway has noticed: either refused with nothing sent, or sent and
    // accepted, its record written once Redis is back. Either way nothing is lost.
    let window = gw
        .submit(&m.token, &message(TO, "just after the stop", Some(VENDOR)))
        .await?;
    match (window.status, window.code()) {
        (201, _) => {
            before.push(accepted(&window, "submit just after the stop"));
            sent += 1;
        }
        (503, "redis_unavailable") => {}
        _ => panic!(
            "submit just after the stop: {} {}",
            window.status, window.body
        ),
    }
    eprintln!("submit just after the stop: {}", window.status);
    assert_eq!(
        stats(&smsc).await?.submits,
        sent,
        "what the answer says was sent"
    );

    // The gateway notices (a GET fails, sends nothing; its background ping also would).
    wait::until("GET answers 503 redis_unavailable", SETTLE, || async {
        let g = gw.message(&m.token, &before[0]).await?;
        Ok((g.status == 503 && g.code() == "redis_unavailable").then_some(()))
    })
    .await?;

    // Submits: 503 redis_unavailable, and nothing reaches the vendor.
    for i in 0..3 {
        let a = gw
            .submit(&m.token, &message(TO, &format!("while down {i}"), None))
            .await?;
        assert_eq!(
            (a.status, a.code()),
            (503, "redis_unavailable"),
            "submit while Redis is down: {}",
            a.body
        );
    }
    let a = gw
        .submit_idem(
            &m.token,
            "while-down",
            &message(TO, "idem while down", None),
        )
        .await?;
    assert_eq!(
        (a.status, a.code()),
        (503, "redis_unavailable"),
        "{}",
        a.body
    );
    assert_eq!(
        stats(&smsc).await?.submits,
        sent,
        "a submit refused for Redis sent nothing"
    );

    // Receipts: answered with a temporary error, re-sent by the vendor, none acknowledged.
    wait::until("receipts refused and re-sent", SETTLE, || async {
        let s = stats(&smsc).await?;
        anyhow::ensure!(s.receipts_acked == 0, "a receipt was acknowledged: {s:?}");
        Ok((s.receipts_retried >= 2 * sent).then_some(s))
    })
    .await?;
    assert!(
        metric(
            &gw.metrics().await?,
            "smpp_redis_errors_total",
            &[r#"op="receipt""#]
        ) > 0.0,
        "smpp_redis_errors_total{{op=\"receipt\"}}"
    );

    // Redis back, same gateway process.
    tokio::task::block_in_place(|| redis.start_again())?;
    for id in &before {
        wait_delivered(&[&gw], &m.token, id).await?;
    }
    let after = gw
        .submit(&m.token, &message(TO, "after the restart", None))
        .await?;
    let after = accepted(&after, "submit after Redis came back");
    wait_delivered(&[&gw], &m.token, &after).await?;
    assert_eq!(gw.guard.id(), pid, "no gateway restart");
    // Every receipt stored, each acknowledged once.
    let s = wait_acked(&smsc, sent + 1).await?;
    assert_eq!(s.submits, sent + 1, "{s:?}");
    assert_eq!((s.receipts_failed, s.receipts_expired), (0, 0), "{s:?}");
    Ok(())
}

/// No bound session here and none anywhere else: 503 no_route, naming what has no route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bind_anywhere_is_no_route() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let a = start_gateway(&db, "gw-noroute-a", &m).await?;
    db.wait_schema().await?;
    // A wrong password: the vendor is configured on every pod and bound on none.
    db.insert_legacy(VENDOR, smsc.port("plain"), SYSTEM_ID, "wrongpw1", &[])
        .await?;
    let b = start_gateway(&db, "gw-noroute-b", &m).await?;
    for g in [&a, &b] {
        wait::until(&format!("{} has the vendor", g.pod), SETTLE, || async {
            g.vendor(VENDOR).await
        })
        .await?;
    }
    // One pod holds the slot and keeps failing to bind; which one does not matter.
    wait::until("a failed bind reported", SETTLE, || async {
        for g in [&a, &b] {
            let err = g
                .vendor(VENDOR)
                .await?
                .and_then(|v| v["last_error"].as_str().map(String::from));
            if err.is_some_and(|e| e.starts_with("bind_esme_rinvpaswd:")) {
                return Ok(Some(()));
            }
        }
        Ok(None)
    })
    .await?;

    for g in [&a, &b] {
        let r = g.submit(&m.token, &message(TO, "hello", None)).await?;
        assert_eq!((r.status, r.code()), (503, "no_route"), "{}", r.body);
        assert!(
            r.message().contains(TO),
            "names the destination: {}",
            r.body
        );
        let r = g
            .submit(&m.token, &message(TO, "hello", Some(VENDOR)))
            .await?;
        assert_eq!((r.status, r.code()), (503, "no_route"), "{}", r.body);
        assert!(
            r.message().contains(TO) && r.message().contains(VENDOR),
            "names the destination and the vendor: {}",
            r.body
        );
    }
    let s = stats(&smsc).await?;
    assert_eq!(s.submits, 0);
    assert_eq!(
        metric(&a.metrics().await?, "smpp_forwards_total", &[]),
        0.0,
        "nothing to forward to"
    );
    Ok(())
}
