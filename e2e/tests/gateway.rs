//! smpp-gateway end to end: the real binary, the real PostgreSQL of `make env-up` (a fresh
//! database per test) and private node SMSC simulators (plain and TLS).
//!
//! Run: make env-up; cargo build --bins; cargo test -p smpp-e2e --test gateway

mod gateway_support;

use std::time::{Duration, Instant};

use gateway_support::{Gateway, Result, TestDb, metric, request};
use smpp_e2e::smsc::{Behaviour, BindMarks, BindType, ServerCert, Smsc, SmscConfig, TlsVersion};

/// A credential of our own: distinctive enough to search the logs for.
const SYSTEM_ID: &str = "gwtester";
const PASSWORD: &str = "Zq9xK2pw";

fn sim() -> SmscConfig {
    SmscConfig::standard().credential(SYSTEM_ID, PASSWORD)
}
use smpp_e2e::wait;

/// Deadline for something that should happen soon: bounds a hang, not a speed target.
const SETTLE: Duration = Duration::from_secs(30);
/// For steps that wait on the slot TTL or on several pods: bounds a hang, not a speed target.
const HANG: Duration = Duration::from_secs(60);

async fn open_binds(smsc: &Smsc, system_id: &str) -> Result<u64> {
    Ok(smsc.stats().await?.open_binds(system_id).total)
}

/// Binds of `system_id` open now. Panics, ending the test at once with a clear message, if the
/// simulator's marks show more than `max` open at any moment since the last reset: a waiting
/// loop must not sit out its deadline on a fleet that already broke the budget.
async fn open_within(smsc: &Smsc, system_id: &str, max: u64) -> Result<u64> {
    let s = smsc.stats().await?;
    if let Some(m) = s.marks(system_id) {
        assert!(
            m.high <= max,
            "the simulator had {} binds of {system_id} open at once (budget {max})",
            m.high
        );
    }
    Ok(s.open_binds(system_id).total)
}

/// Waits until the simulator has exactly one bind of `system_id` and the vendor's only slot
/// row says bound.
async fn wait_bound_slot(smsc: &Smsc, db: &TestDb, id: &str, system_id: &str) -> Result<()> {
    wait::until(
        &format!("one bind of {system_id}, slot bound"),
        SETTLE,
        || async {
            let n = open_within(smsc, system_id, 1).await?;
            let slots = db.slots(id).await?;
            Ok((n == 1 && slots.len() == 1 && slots[0].2 == "bound").then_some(()))
        },
    )
    .await
}

/// Fails unless the simulator's bind marks of `system_id` since the last reset stayed within
/// `low..=high` (the marks are kept at each bind and close, so nothing is missed).
async fn assert_marks_within(
    smsc: &Smsc,
    system_id: &str,
    low: u64,
    high: u64,
    what: &str,
) -> Result<()> {
    let stats = smsc.stats().await?;
    let m = stats.marks(system_id).ok_or_else(|| {
        anyhow::anyhow!("{what}: no bind of {system_id} since the reset: {stats:?}")
    })?;
    assert!(
        m.low >= low && m.high <= high,
        "{what}: binds of {system_id} went from {} to {} (want {low}..={high})",
        m.low,
        m.high
    );
    Ok(())
}

fn pem(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).expect("read PEM");
    format!("'{}'", text.replace('\'', "''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_change_password_and_delete() -> Result {
    let smsc = Smsc::start(sim().credential("gwuser2", "newpw22")).await?;
    let db = TestDb::new().await?;
    let gw = Gateway::start(&db, "gw-basic").await?;
    db.wait_schema().await?;

    // A hand-written row with only the legacy columns binds.
    let id = db
        .insert_legacy("basic", smsc.port("plain"), SYSTEM_ID, PASSWORD, &[])
        .await?;
    wait::until("the simulator to see the bind", SETTLE, || async {
        Ok((open_within(&smsc, SYSTEM_ID, 1).await? == 1).then_some(()))
    })
    .await?;
    let v = wait::until("/api/v1/vendors connected", SETTLE, || async {
        Ok(gw
            .vendor("basic")
            .await?
            .filter(|v| v["status"] == "connected"))
    })
    .await?;
    assert_eq!(v["vendor_id"], id.as_str());
    assert_eq!(v["sessions_bound"], 1);
    assert_eq!(v["sessions_desired"], 1);
    assert_eq!(v["bind_mode"], "TRX");
    assert_eq!(v["tls"], false);
    assert!(v["connected_at"].is_string());
    // vendor_sessions follows within a moment (states are written by a background task).
    wait::until(
        "slot 0 bound by gw-basic in vendor_sessions",
        SETTLE,
        || async {
            let slots = db.slots(&id).await?;
            Ok((slots.len() == 1 && slots[0].1 == gw.pod && slots[0].2 == "bound").then_some(()))
        },
    )
    .await?;
    let (status, _) = request(gw.http, "GET", "/ready").await?;
    assert_eq!(status, 200);
    let pid = gw.guard.id();

    // New credentials in the row: re-bound with them, same process. (How fast is a figure for
    // `make bench`; here the deadline only bounds a hang.)
    db.update(&id, "username='gwuser2', password='newpw22'")
        .await?;
    wait::until("a bind as gwuser2", SETTLE, || async {
        let s = smsc.stats().await?;
        Ok(
            (s.open_binds("gwuser2").total == 1 && s.open_binds(SYSTEM_ID).total == 0)
                .then_some(()),
        )
    })
    .await?;
    assert_eq!(gw.guard.id(), pid, "no restart");
    let version: i64 = sqlx::query_scalar(
        "SELECT config_version FROM vendor_mgmt.service_providers WHERE id::text=$1",
    )
    .bind(&id)
    .fetch_one(&db.pool)
    .await?;
    wait::until("config_version reported", SETTLE, || async {
        Ok(gw
            .vendor("basic")
            .await?
            .filter(|v| v["config_version"] == version && v["status"] == "connected"))
    })
    .await?;

    // A wrong password is named, in the API and in vendor_sessions.
    db.update(&id, "password='nopenope'").await?;
    gw.wait_error("basic", "bind_esme_rinvpaswd", SETTLE)
        .await?;
    wait::until("vendor_sessions last_error", SETTLE, || async {
        let s = db.slots(&id).await?;
        Ok(s.first()
            .and_then(|s| s.3.clone())
            .filter(|e| e.starts_with("bind_esme_rinvpaswd:")))
    })
    .await?;
    let (status, body) = request(gw.http, "GET", "/ready").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("bind_esme_rinvpaswd"), "{body}");

    // Deleting the row unbinds and frees the slot.
    db.update(&id, "password='newpw22'").await?;
    wait::until("bound again", SETTLE, || async {
        Ok((open_binds(&smsc, "gwuser2").await? == 1).then_some(()))
    })
    .await?;

    // Suspended: unbound everywhere, row kept; resumed: bound again.
    db.update(&id, "suspended=true").await?;
    wait::until("unbound while suspended", SETTLE, || async {
        Ok(
            (open_binds(&smsc, "gwuser2").await? == 0 && db.slots(&id).await?.is_empty())
                .then_some(()),
        )
    })
    .await?;
    db.update(&id, "suspended=false").await?;
    wait::until("bound after resume", SETTLE, || async {
        Ok((open_binds(&smsc, "gwuser2").await? == 1).then_some(()))
    })
    .await?;
    // is_active off, then on, each step observed before the next: two UPDATEs in a row can
    // reach the watcher in one batch and diff to nothing, which would prove nothing. The
    // simulator's bind marks (kept at each bind and close, not sampled) show the bind really
    // went away and that there was never more than max_binds 1.
    smsc.reset_stats().await?;
    db.update(&id, "is_active=false").await?;
    wait::until("unbound while inactive", SETTLE, || async {
        Ok(
            (open_binds(&smsc, "gwuser2").await? == 0 && db.slots(&id).await?.is_empty())
                .then_some(()),
        )
    })
    .await?;
    db.update(&id, "is_active=true").await?;
    wait_bound_slot(&smsc, &db, &id, "gwuser2").await?;
    let marks = smsc.stats().await?.marks("gwuser2");
    assert_eq!(
        marks,
        Some(BindMarks { high: 1, low: 0 }),
        "binds of gwuser2 across the is_active toggle (want: down to 0, never above 1)"
    );
    // Off and on at once: merged or not, never more than max_binds 1. Done once the gateway
    // runs the row's last config_version, bound.
    smsc.reset_stats().await?;
    db.update(&id, "is_active=false").await?;
    db.update(&id, "is_active=true").await?;
    let version: i64 = sqlx::query_scalar(
        "SELECT config_version FROM vendor_mgmt.service_providers WHERE id::text=$1",
    )
    .bind(&id)
    .fetch_one(&db.pool)
    .await?;
    wait::until("the last config_version bound", SETTLE, || async {
        Ok(gw
            .vendor("basic")
            .await?
            .filter(|v| v["config_version"] == version && v["sessions_bound"] == 1))
    })
    .await?;
    wait_bound_slot(&smsc, &db, &id, "gwuser2").await?;
    let marks = smsc.stats().await?.marks("gwuser2");
    assert!(
        marks.is_none_or(|m| m.high <= 1),
        "more than max_binds 1 during a quick toggle: {marks:?}"
    );

    db.exec(&format!(
        "DELETE FROM vendor_mgmt.service_providers WHERE id='{id}'"
    ))
    .await?;
    wait::until("unbound after delete", SETTLE, || async {
        Ok(
            (open_binds(&smsc, "gwuser2").await? == 0 && gw.vendor("basic").await?.is_none())
                .then_some(()),
        )
    })
    .await?;
    assert!(db.slots(&id).await?.is_empty());
    gw.assert_no_secret_in_log(&[PASSWORD, "newpw22", "nopenope"]);
    Ok(())
}

/// (instance_name, port, password, extra columns, expected reason code)
type Case<'a> = (&'a str, u16, &'a str, Vec<(&'a str, String)>, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaviours_are_classified() -> Result {
    let only_tx = Behaviour {
        bind_types: Some(vec![BindType::Transmitter]),
        reject_action: Some("ESME_RBINDFAIL".into()),
        ..Default::default()
    };
    let only_tx_close = Behaviour {
        bind_types: Some(vec![BindType::Transmitter]),
        reject_action: Some("close".into()),
        ..Default::default()
    };
    let slow = Behaviour {
        response_delay_ms: Some(6000),
        ..Default::default()
    };
    let cfg = sim()
        .credential("gwlimit", PASSWORD)
        .tls(
            "close-after-tls",
            Behaviour {
                close_after_handshake: true,
                ..Default::default()
            },
        )
        .plain("only-tx", only_tx)
        .plain("only-tx-close", only_tx_close)
        .plain("slow", slow)
        .tls_with(
            "wrong-name",
            ServerCert::WrongName,
            false,
            Behaviour::default(),
        )
        .plain(
            "limit1",
            Behaviour {
                max_binds_per_system_id: Some(1),
                ..Default::default()
            },
        )
        .tls_with("mtls", ServerCert::Valid, true, Behaviour::default());
    let smsc = Smsc::start(cfg).await?;
    let db = TestDb::new().await?;
    let gw = Gateway::start(&db, "gw-modes").await?;
    db.wait_schema().await?;
    let ca = pem(&smsc.ca_file());
    let wrong_ca = pem(&smsc.pki_dir().join("wrong-ca.crt"));
    let refused = gateway_support::free_port();
    let tls = |ca: &str| {
        vec![
            ("tls_enabled", "true".to_string()),
            ("tls_ca_pem", ca.to_string()),
        ]
    };
    let cases: Vec<Case> = vec![
        (
            "close-after-tls",
            smsc.port("close-after-tls"),
            PASSWORD,
            tls(&ca),
            "closed_before_bind_resp",
        ),
        (
            "wrong-ca",
            smsc.port("tls"),
            PASSWORD,
            tls(&wrong_ca),
            "tls_unknown_ca",
        ),
        (
            "wrong-name",
            smsc.port("wrong-name"),
            PASSWORD,
            tls(&ca),
            "tls_name_mismatch",
        ),
        (
            "tls-to-plain",
            smsc.port("plain"),
            PASSWORD,
            tls(&ca),
            "tls_peer_closed",
        ),
        (
            "bad-password",
            smsc.port("plain"),
            "wrongpw",
            vec![],
            "bind_esme_rinvpaswd",
        ),
        (
            "only-tx",
            smsc.port("only-tx"),
            PASSWORD,
            vec![],
            "bind_esme_rbindfail",
        ),
        (
            "only-tx-close",
            smsc.port("only-tx-close"),
            PASSWORD,
            vec![],
            "closed_before_bind_resp",
        ),
        ("slow", smsc.port("slow"), PASSWORD, vec![], "bind_timeout"),
        ("refused", refused, PASSWORD, vec![], "tcp_refused"),
        (
            "bad-mode",
            smsc.port("plain"),
            PASSWORD,
            vec![("bind_mode", "'XYZ'".into())],
            "config_invalid",
        ),
        (
            "limit",
            smsc.port("limit1"),
            PASSWORD,
            vec![("max_binds", "2".into())],
            "bind_esme_ralybnd",
        ),
        (
            "mtls-no-client-cert",
            smsc.port("mtls"),
            PASSWORD,
            tls(&ca),
            "tls_client_cert_refused",
        ),
    ];
    let mut ids = Vec::new();
    for (name, port, pw, extra, _) in &cases {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // The bind limit counts per system_id across listeners: give that vendor its own.
        let user = if *name == "limit" {
            "gwlimit"
        } else {
            SYSTEM_ID
        };
        ids.push(db.insert_legacy(name, *port, user, pw, &extra).await?);
    }
    // A good vendor next to the bad ones binds: a bad row disturbs no other.
    let good = db
        .insert_legacy(
            "good-tls",
            smsc.port("tls"),
            SYSTEM_ID,
            PASSWORD,
            &[("tls_enabled", "true"), ("tls_ca_pem", &ca)],
        )
        .await?;
    wait::until("good-tls bound", SETTLE, || async {
        Ok((gw.bound("good-tls").await? == 1).then_some(()))
    })
    .await?;
    // The listener that requires a client certificate takes ours (tls_client_cert_pem/key).
    let cert = pem(&smsc.pki_dir().join("client.crt"));
    let key = pem(&smsc.pki_dir().join("client.key"));
    db.insert_legacy(
        "mtls-with-client-cert",
        smsc.port("mtls"),
        SYSTEM_ID,
        PASSWORD,
        &[
            ("tls_enabled", "true"),
            ("tls_ca_pem", &ca),
            ("tls_client_cert_pem", &cert),
            ("tls_client_key_pem", &key),
        ],
    )
    .await?;
    wait::until("mtls-with-client-cert bound", SETTLE, || async {
        Ok((gw.bound("mtls-with-client-cert").await? == 1).then_some(()))
    })
    .await?;

    for ((name, _, _, _, reason), id) in cases.iter().zip(&ids) {
        let err = gw.wait_error(name, reason, SETTLE).await?;
        assert!(!err.to_lowercase().contains("eof"), "{name}: {err}");
        assert!(
            err.contains("Likely causes") || *reason == "config_invalid",
            "{name}: {err}"
        );
        if *reason == "config_invalid" {
            continue; // no slot is claimed for a row that cannot bind
        }
        wait::until(
            &format!("{name} reason in vendor_sessions"),
            SETTLE,
            || async {
                let slots = db.slots(id).await?;
                Ok(slots
                    .iter()
                    .find_map(|s| s.3.clone().filter(|e| e.starts_with(&format!("{reason}:")))))
            },
        )
        .await?;
    }
    // The bind-limit vendor: one bind held, the second refused by the vendor.
    assert_eq!(gw.bound("limit").await?, 1);
    let m = gw.metrics().await?;
    assert!(
        metric(
            &m,
            "smpp_bind_failures_total",
            &["vendor=\"wrong-ca\"", "reason=\"tls_unknown_ca\""]
        ) >= 1.0,
        "{m}"
    );
    assert!(metric(&m, "smpp_sessions_bound", &["vendor=\"good-tls\""]) == 1.0);
    assert_eq!(
        metric(&m, "smpp_vendor_config_invalid", &["vendor=\"bad-mode\""]),
        1.0
    );
    let _ = good;
    gw.assert_no_secret_in_log(&[PASSWORD, "wrongpw"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_restart_reconnects_with_backoff() -> Result {
    let mut smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    let gw = Gateway::start(&db, "gw-restart").await?;
    db.wait_schema().await?;
    db.insert_legacy(
        "restart",
        smsc.port("plain"),
        SYSTEM_ID,
        PASSWORD,
        &[("reconnect_max_delay_seconds", "4")],
    )
    .await?;
    wait::until("bound", SETTLE, || async {
        Ok((gw.bound("restart").await? == 1).then_some(()))
    })
    .await?;
    let attempts_before = metric(
        &gw.metrics().await?,
        "smpp_bind_attempts_total",
        &["vendor=\"restart\""],
    );

    smsc.kill();
    let err = wait::until("session loss noticed", SETTLE, || async {
        Ok(gw
            .vendor("restart")
            .await?
            .filter(|v| v["status"] == "disconnected")
            .and_then(|v| v["last_error"].as_str().map(String::from)))
    })
    .await?;
    assert!(
        err.starts_with("connection_lost:") || err.starts_with("tcp_refused:"),
        "{err}"
    );
    // While the vendor is down, attempts are spaced out (1 s, 2 s, 4 s, 4 s …), not a tight loop.
    let down = Instant::now();
    wait::until("a refused reconnect", SETTLE, || async {
        Ok(gw
            .vendor("restart")
            .await?
            .and_then(|v| v["last_error"].as_str().map(String::from))
            .filter(|e| e.starts_with("tcp_refused:")))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(down.elapsed())).await; // observe the backoff over a fixed window
    let attempts_down = metric(
        &gw.metrics().await?,
        "smpp_bind_attempts_total",
        &["vendor=\"restart\""],
    ) - attempts_before;
    // At most 6 (no tight loop); at least 1 (it keeps trying). The lower bound is not 2: on
    // a loaded machine one connect can take a while.
    assert!(
        (1.0..=6.0).contains(&attempts_down),
        "{attempts_down} attempts in 6 s of outage"
    );

    smsc.restart().await?;
    wait::until("re-bound after the simulator came back", HANG, || async {
        Ok(
            (open_binds(&smsc, SYSTEM_ID).await? == 1 && gw.bound("restart").await? == 1)
                .then_some(()),
        )
    })
    .await?;
    assert!(
        metric(
            &gw.metrics().await?,
            "smpp_reconnects_total",
            &["vendor=\"restart\""]
        ) >= 1.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_never_exceed_max_binds() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    let mut a = Gateway::start(&db, "gw-fleet-a").await?;
    db.wait_schema().await?;
    let id = db
        .insert_legacy(
            "fleet",
            smsc.port("plain"),
            SYSTEM_ID,
            PASSWORD,
            &[("max_binds", "2")],
        )
        .await?;
    wait::until("gateway A holds both binds", SETTLE, || async {
        Ok(
            (open_within(&smsc, SYSTEM_ID, 2).await? == 2 && a.bound("fleet").await? == 2)
                .then_some(()),
        )
    })
    .await?;

    let b = Gateway::start(&db, "gw-fleet-b").await?;
    wait::until("one bind each (fair share)", HANG, || async {
        Ok((open_within(&smsc, SYSTEM_ID, 2).await? == 2
            && a.bound("fleet").await? == 1
            && b.bound("fleet").await? == 1)
            .then_some(()))
    })
    .await?;
    let pods: Vec<String> = db.slots(&id).await?.into_iter().map(|s| s.1).collect();
    assert!(pods.contains(&a.pod) && pods.contains(&b.pod), "{pods:?}");
    // Since the simulator started, every bind and close: never more than 2; and once bound,
    // never fewer than 1 (A gives one bind back and keeps the other while B binds).
    assert_marks_within(&smsc, SYSTEM_ID, 1, 2, "A alone, then B joining").await?;

    // Kill A without a chance to clean up: its connection closes with the process, and B
    // takes its slot over after the TTL, keeping its own bind meanwhile.
    smsc.reset_stats().await?;
    a.guard.kill();
    let t0 = Instant::now();
    wait::until("B holds both binds", HANG, || async {
        open_within(&smsc, SYSTEM_ID, 2).await?; // fails at once on a third bind
        Ok((b.bound("fleet").await? == 2).then_some(()))
    })
    .await?;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(10),
        "took over after {took:?}, before the slot TTL"
    );
    wait::until(
        "both slots bound by B in vendor_sessions",
        SETTLE,
        || async {
            let slots = db.slots(&id).await?;
            Ok(
                (slots.len() == 2 && slots.iter().all(|s| s.1 == b.pod && s.2 == "bound"))
                    .then_some(()),
            )
        },
    )
    .await?;
    wait::until("simulator sees 2 binds", SETTLE, || async {
        Ok((open_within(&smsc, SYSTEM_ID, 2).await? == 2).then_some(()))
    })
    .await?;
    let m = smsc.stats().await?.marks(SYSTEM_ID);
    assert_eq!(
        m,
        Some(BindMarks { high: 2, low: 1 }),
        "binds while B took the killed pod's slot over (want: A's closed, B's kept, never above 2)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_third_pod_stays_within_max_binds() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    let a = Gateway::start(&db, "gw-roll-a").await?;
    db.wait_schema().await?;
    db.insert_legacy(
        "roll",
        smsc.port("plain"),
        SYSTEM_ID,
        PASSWORD,
        &[("max_binds", "2")],
    )
    .await?;
    wait::until("A holds both binds", SETTLE, || async {
        Ok(
            (open_within(&smsc, SYSTEM_ID, 2).await? == 2 && a.bound("roll").await? == 2)
                .then_some(()),
        )
    })
    .await?;
    let b = Gateway::start(&db, "gw-roll-b").await?;
    wait::until("one bind each", HANG, || async {
        Ok((open_within(&smsc, SYSTEM_ID, 2).await? == 2
            && a.bound("roll").await? == 1
            && b.bound("roll").await? == 1)
            .then_some(()))
    })
    .await?;
    assert_marks_within(&smsc, SYSTEM_ID, 1, 2, "A alone, then B joining").await?;

    // The new pod of a rolling update starts while the two old ones run: it sees a fleet of
    // 3 (fair share 1 of 2) and gets no slot, both being held.
    smsc.reset_stats().await?;
    let mut a = a;
    let c = Gateway::start(&db, "gw-roll-c").await?;
    wait::until("C sees 3 live pods and holds nothing", HANG, || async {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM vendor_mgmt.gateway_pods WHERE heartbeat > now() - interval '10 seconds'",
        )
        .fetch_one(&db.pool)
        .await?;
        let v = c.vendor("roll").await?;
        open_within(&smsc, SYSTEM_ID, 2).await?;
        Ok((live == 3
            && v.as_ref().is_some_and(|v| v["sessions_desired"] == 1 && v["sessions_bound"] == 0))
        .then_some(()))
    })
    .await?;
    assert_marks_within(&smsc, SYSTEM_ID, 2, 2, "three pods, two slots").await?;

    // The old pod A is stopped (SIGTERM, as Kubernetes does): C takes the slot A released.
    a.guard.signal(15);
    wait::until("A exits", HANG, || {
        let exited = a.guard.has_exited();
        async move { Ok(exited.then_some(())) }
    })
    .await?;
    wait::until("B and C hold one bind each", HANG, || async {
        Ok((open_within(&smsc, SYSTEM_ID, 2).await? == 2
            && b.bound("roll").await? == 1
            && c.bound("roll").await? == 1)
            .then_some(()))
    })
    .await?;
    // From the reset on: never more than 2, and B's bind stayed up throughout.
    assert_marks_within(&smsc, SYSTEM_ID, 1, 2, "rolling update").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_finds_the_only_working_combination() -> Result {
    let only = Behaviour {
        bind_types: Some(vec![BindType::Transmitter]),
        interface_versions: Some(vec!["3.4".into()]),
        reject_action: Some("close".into()),
        ..Default::default()
    };
    let smsc = Smsc::start(
        SmscConfig::new()
            .credential(SYSTEM_ID, PASSWORD)
            .plain("only", only),
    )
    .await?;
    let dir = smpp_e2e::process::repo_root().join("target/gateway-tests");
    std::fs::create_dir_all(&dir)?;
    let pwfile = dir.join("probe-password");
    std::fs::write(&pwfile, format!("{PASSWORD}\n"))?;
    let t0 = Instant::now();
    let out = std::process::Command::new(smpp_e2e::process::workspace_bin("smpp-gateway"))
        .args([
            "probe",
            "--host",
            "127.0.0.1",
            "--port",
            &smsc.port("only").to_string(),
            "--system-id",
            SYSTEM_ID,
        ])
        .arg("--password-file")
        .arg(&pwfile)
        .args(["--system-type", "ESME"])
        .output()?;
    let took = t0.elapsed();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(30), "probe took {took:?}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("trans") || l.starts_with("receiver"))
        .collect();
    assert_eq!(rows.len(), 12, "{table}");
    for row in &rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let (mode, version, stage) = (cols[0], cols[1], cols[3]);
        if mode == "transmitter" && version == "3.4" {
            assert_eq!(stage, "bound", "{row}");
        } else {
            assert_eq!(stage, "bind", "{row}");
            assert!(row.contains("closed_before_bind_resp"), "{row}");
        }
    }
    assert!(
        table.contains(
            "Working: transmitter 3.4 system_type=\"ESME\", transmitter 3.4 system_type=\"\""
        ),
        "{table}"
    );
    assert!(!table.contains(PASSWORD));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_switchable_and_masks_the_password() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    // The trace shows message content, so it needs an API key (and REDIS_URL for messaging).
    let m = gateway_support::messaging_env()?;
    let gw = Gateway::start_with(&db, "gw-trace", &m.env()).await?;
    let (h, v) = m.auth();
    let auth = [(h.as_str(), v.as_str())];
    db.wait_schema().await?;
    let id = db
        .insert_legacy("traced", smsc.port("plain"), SYSTEM_ID, PASSWORD, &[])
        .await?;
    wait::until("bound", SETTLE, || async {
        Ok((gw.bound("traced").await? == 1).then_some(()))
    })
    .await?;
    let no_key = request(gw.http, "POST", "/api/v1/vendors/traced/trace").await?;
    assert_eq!(no_key.0, 401, "{}", no_key.1);
    let on =
        gateway_support::send(gw.http, "POST", "/api/v1/vendors/traced/trace", &auth, b"").await?;
    assert_eq!(on.status, 200, "{}", on.body);
    // Force a re-bind so a bind PDU is traced.
    db.update(&id, "system_type='ESME'").await?;
    let lines = wait::until("traced bind and bind_resp", SETTLE, || async {
        let v = gateway_support::send(gw.http, "GET", "/api/v1/vendors/traced/trace", &auth, b"")
            .await?
            .json;
        let lines: Vec<String> = v["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(String::from))
            .collect();
        Ok((lines
            .iter()
            .any(|l| l.starts_with(">>") && l.contains("BindTransceiver"))
            && lines.iter().any(|l| l.contains("BindTransceiverResp")))
        .then_some(lines))
    })
    .await?;
    let hex_pw: String = PASSWORD.bytes().map(|b| format!("{b:02x}")).collect();
    for l in &lines {
        assert!(!l.contains(PASSWORD) && !l.contains(&hex_pw), "{l}");
    }
    let off = gateway_support::send(
        gw.http,
        "DELETE",
        "/api/v1/vendors/traced/trace",
        &auth,
        b"",
    )
    .await?;
    assert!(off.body.contains("\"trace\":false"), "{}", off.body);
    gw.assert_no_secret_in_log(&[PASSWORD, &hex_pw, &m.token]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reads_the_vendor_row_over_tls() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    smpp_db::migrate(&db.pool).await?;
    let ca = pem(&smsc.ca_file());
    db.insert_legacy(
        "probe-row",
        smsc.port("tls"),
        SYSTEM_ID,
        PASSWORD,
        &[
            ("tls_enabled", "true"),
            ("tls_ca_pem", &ca),
            ("tls_server_name", "'localhost'"),
        ],
    )
    .await?;
    let out = std::process::Command::new(smpp_e2e::process::workspace_bin("smpp-gateway"))
        .args(["probe", "--vendor", "probe-row", "--budget-seconds", "20"])
        .env("DATABASE_URL", &db.url)
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("(TLS)"), "{table}");
    // A well-behaved simulator takes every mode at both versions.
    let bound = table
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("bound"))
        .count();
    assert_eq!(bound, 6, "{table}");
    assert!(!table.contains(PASSWORD) && !String::from_utf8_lossy(&out.stderr).contains(PASSWORD));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_unbinds_and_releases_the_slots() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    let mut gw = Gateway::start(&db, "gw-sigterm").await?;
    db.wait_schema().await?;
    let id = db
        .insert_legacy(
            "term",
            smsc.port("plain"),
            SYSTEM_ID,
            PASSWORD,
            &[("max_binds", "2")],
        )
        .await?;
    wait::until("both bound", SETTLE, || async {
        Ok((open_binds(&smsc, SYSTEM_ID).await? == 2).then_some(()))
    })
    .await?;
    let t0 = Instant::now();
    gw.guard.signal(15);
    wait::until("the gateway exits", HANG, || {
        let exited = gw.guard.has_exited();
        async move { Ok(exited.then_some(())) }
    })
    .await?;
    // Within Kubernetes' default terminationGracePeriodSeconds (30 s), after which the pod
    // would be killed mid-unbind: a correctness bound, not a speed target.
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(30), "shutdown took {took:?}");
    // The simulator saw unbinds (not resets), and the slots and the pod row are gone.
    assert_eq!(open_binds(&smsc, SYSTEM_ID).await?, 0);
    let tail = smsc.log_tail();
    assert_eq!(tail.matches(" unbind transceiver").count(), 2, "{tail}");
    assert!(db.slots(&id).await?.is_empty());
    let pods: i64 =
        sqlx::query_scalar("SELECT count(*) FROM vendor_mgmt.gateway_pods WHERE pod = $1")
            .bind(&gw.pod)
            .fetch_one(&db.pool)
            .await?;
    assert_eq!(pods, 0);
    let log = gw.log_text();
    assert_eq!(log.matches("unbound").count(), 2, "{log}");
    assert!(log.contains("stopped"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebind_replaces_one_bind_at_a_time() -> Result {
    let smsc = Smsc::start(sim().credential("gwuser3", "newpw33")).await?;
    let db = TestDb::new().await?;
    let gw = Gateway::start(&db, "gw-rolling").await?;
    db.wait_schema().await?;
    let id = db
        .insert_legacy(
            "rolling",
            smsc.port("plain"),
            SYSTEM_ID,
            PASSWORD,
            &[("max_binds", "2")],
        )
        .await?;
    wait::until("both bound", SETTLE, || async {
        Ok((open_within(&smsc, SYSTEM_ID, 2).await? == 2).then_some(()))
    })
    .await?;
    // The budget is full (2 of 2), so each bind is replaced break-before-make, one at a time:
    // the vendor never has fewer than 1 nor more than 2 binds of ours. The simulator's marks
    // over all system_ids (old and new credentials are both ours) record every bind and close.
    smsc.reset_stats().await?;
    db.update(&id, "username='gwuser3', password='newpw33'")
        .await?;
    wait::until("both binds replaced", SETTLE, || async {
        let s = smsc.stats().await?;
        let all = s.bind_marks_all.map_or(0, |m| m.high);
        assert!(
            all <= 2,
            "{all} binds open at once during the rebind (budget 2)"
        );
        Ok(
            (s.open_binds(SYSTEM_ID).total == 0 && s.open_binds("gwuser3").total == 2)
                .then_some(()),
        )
    })
    .await?;
    let s = smsc.stats().await?;
    let all = s.bind_marks_all;
    assert_eq!(
        all,
        Some(BindMarks { high: 2, low: 1 }),
        "binds open during the rebind, old and new together (want: never below 1, never above 2)"
    );
    assert_eq!(
        s.marks(SYSTEM_ID),
        Some(BindMarks { high: 2, low: 0 }),
        "{s:?}"
    );
    assert_eq!(s.marks("gwuser3").map(|m| m.high), Some(2), "{s:?}");
    // The simulator counts a bind when it sends bind_resp; the gateway, once it has read it.
    wait::until("the gateway reports both new binds", SETTLE, || async {
        Ok((gw.bound("rolling").await? == 2).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_rx_pair_binds_a_transmitter_and_a_receiver() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    let gw = Gateway::start(&db, "gw-pair").await?;
    db.wait_schema().await?;
    // max_binds 3 in TX_RX mode: one pair (slots 0 and 1); the odd slot stays unused.
    let id = db
        .insert_legacy(
            "pair",
            smsc.port("plain"),
            SYSTEM_ID,
            PASSWORD,
            &[("bind_mode", "'tx_rx'"), ("max_binds", "3")],
        )
        .await?;
    let counts = wait::until("one transmitter and one receiver", SETTLE, || async {
        let c = smsc.stats().await?.open_binds(SYSTEM_ID);
        Ok((c.transmitter == 1 && c.receiver == 1).then_some(c))
    })
    .await?;
    assert_eq!((counts.transceiver, counts.total), (0, 2));
    let v = wait::until("API shows the pair", SETTLE, || async {
        Ok(gw
            .vendor("pair")
            .await?
            .filter(|v| v["sessions_bound"] == 2))
    })
    .await?;
    assert_eq!(v["bind_mode"], "TX_RX");
    assert_eq!(v["sessions_desired"], 2);
    wait::until("slots 0 and 1 bound", SETTLE, || async {
        let slots = db.slots(&id).await?;
        let got: Vec<(i32, &str)> = slots.iter().map(|s| (s.0, s.2.as_str())).collect();
        Ok((got == vec![(0, "bound"), (1, "bound")]).then_some(()))
    })
    .await?;
    Ok(())
}

/// A pod that hangs (SIGSTOP: a frozen node, a long pause) misses its heartbeats, and after
/// the slot TTL another pod takes its slot over and binds. When the hung pod runs again, its
/// next heartbeat finds the slot gone and it unbinds at once (an unbind PDU, not a dropped
/// connection), and it does not bind again while the other pod holds the slot.
///
/// While the pod is frozen its TCP connection stays open, so the vendor sees two binds for
/// a budget of one until it wakes: no slot row can close a frozen process's socket. What is
/// checked is what follows: from the wake-up on, never a third bind, never fewer than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_slot_was_taken_over_unbinds_at_once() -> Result {
    let smsc = Smsc::start(sim()).await?;
    let db = TestDb::new().await?;
    let a = Gateway::start(&db, "gw-hung-a").await?;
    db.wait_schema().await?;
    let id = db
        .insert_legacy("hung", smsc.port("plain"), SYSTEM_ID, PASSWORD, &[])
        .await?;
    wait::until("A holds the only bind", SETTLE, || async {
        let slots = db.slots(&id).await?;
        Ok((open_within(&smsc, SYSTEM_ID, 1).await? == 1
            && a.bound("hung").await? == 1
            && slots.len() == 1
            && slots[0].1 == a.pod
            && slots[0].2 == "bound")
            .then_some(()))
    })
    .await?;
    let b = Gateway::start(&db, "gw-hung-b").await?;
    wait::until("B runs the vendor with nothing bound", SETTLE, || async {
        Ok(b.vendor("hung").await?.filter(|v| v["sessions_bound"] == 0))
    })
    .await?;
    assert_marks_within(&smsc, SYSTEM_ID, 1, 1, "A bound, B waiting").await?;

    // A hangs: after the TTL, B takes the slot over and binds (A's socket is still open).
    let resumed = a.freeze();
    wait::until("B took the slot over and bound", HANG, || async {
        let slots = db.slots(&id).await?;
        Ok((open_binds(&smsc, SYSTEM_ID).await? == 2
            && slots.len() == 1
            && slots[0].1 == b.pod
            && slots[0].2 == "bound")
            .then_some(()))
    })
    .await?;
    // Marks from here on: A wakes up with its bind still open.
    smsc.reset_stats().await?;
    drop(resumed); // SIGCONT
    wait::until("A unbinds once it sees the slot gone", SETTLE, || async {
        Ok((open_within(&smsc, SYSTEM_ID, 2).await? == 1).then_some(()))
    })
    .await?;
    let log = smsc.log();
    assert_eq!(
        log.matches(&format!(" unbind transceiver {SYSTEM_ID}"))
            .count(),
        1,
        "A's bind must end with an unbind: {}",
        smsc.log_tail()
    );
    assert!(
        a.log_text().contains("bind slot taken over by another pod"),
        "A's log does not say why it unbound:\n{}",
        a.log_text()
    );
    // A keeps running (at least one more heartbeat round) without claiming or binding again.
    let unbound_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&db.pool)
        .await?;
    wait::until("A heartbeats again after unbinding", SETTLE, || async {
        let beat: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT heartbeat FROM vendor_mgmt.gateway_pods WHERE pod = $1")
                .bind(&a.pod)
                .fetch_one(&db.pool)
                .await?;
        Ok((beat > unbound_at).then_some(()))
    })
    .await?;
    wait::until("A reports nothing bound", SETTLE, || async {
        Ok((a.bound("hung").await? == 0).then_some(()))
    })
    .await?;
    assert_eq!(b.bound("hung").await?, 1);
    let slots = db.slots(&id).await?;
    assert!(
        slots.len() == 1 && slots[0].1 == b.pod && slots[0].2 == "bound",
        "{slots:?}"
    );
    assert_eq!(
        smsc.stats().await?.marks(SYSTEM_ID),
        Some(BindMarks { high: 2, low: 1 }),
        "binds from A's wake-up on (want: A's frozen bind closed, B's kept, no new one)"
    );
    Ok(())
}

/// TLS options against real listeners, observed through the gateway's API: with
/// tls_insecure_skip_verify (spec.tls.insecureSkipVerify) the gateway binds to a server whose
/// certificate fails verification (a name that is not the host, a CA it was not given), and
/// the same row without it is refused (control); a tls_min_version of 1.3 refuses a server
/// that speaks only TLS 1.2 with reason tls_protocol_version, while the default minimum binds
/// to that server at 1.2 and a minimum of 1.3 binds to a server that has 1.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_skip_verification_and_refuse_an_older_version() -> Result {
    let cfg = sim()
        .tls_with(
            "wrong-name",
            ServerCert::WrongName,
            false,
            Behaviour::default(),
        )
        .tls_up_to("tls12", TlsVersion::Tls12, Behaviour::default());
    let smsc = Smsc::start(cfg).await?;
    let db = TestDb::new().await?;
    let gw = Gateway::start(&db, "gw-tls-opts").await?;
    db.wait_schema().await?;
    let ca = pem(&smsc.ca_file());
    let insert = |name: &'static str, port: u16, extra: Vec<(&'static str, String)>| {
        let db = &db;
        async move {
            let mut cols = vec![("tls_enabled", "true".to_string())];
            cols.extend(extra);
            let cols: Vec<(&str, &str)> = cols.iter().map(|(k, v)| (*k, v.as_str())).collect();
            db.insert_legacy(name, port, SYSTEM_ID, PASSWORD, &cols)
                .await
        }
    };
    let yes = || "true".to_string();
    let v13 = || "'1.3'".to_string();
    insert("verify", smsc.port("wrong-name"), vec![]).await?;
    insert(
        "skip-verify",
        smsc.port("wrong-name"),
        vec![("tls_insecure_skip_verify", yes())],
    )
    .await?;
    let min13 = insert(
        "min13-on-12",
        smsc.port("tls12"),
        vec![("tls_ca_pem", ca.clone()), ("tls_min_version", v13())],
    )
    .await?;
    insert(
        "min12-on-12",
        smsc.port("tls12"),
        vec![("tls_ca_pem", ca.clone())],
    )
    .await?;
    insert(
        "min13-on-13",
        smsc.port("tls"),
        vec![("tls_ca_pem", ca.clone()), ("tls_min_version", v13())],
    )
    .await?;

    for name in ["skip-verify", "min12-on-12", "min13-on-13"] {
        let v = wait::until(&format!("{name} bound"), SETTLE, || async {
            Ok(gw.vendor(name).await?.filter(|v| v["sessions_bound"] == 1))
        })
        .await?;
        assert_eq!(v["status"], "connected", "{name}: {v}");
        assert_eq!(v["tls"], true, "{name}: {v}");
    }
    // Without the option, verification refuses the same server: the system roots do not
    // hold the test CA.
    gw.wait_error("verify", "tls_unknown_ca", SETTLE).await?;
    let err = gw
        .wait_error("min13-on-12", "tls_protocol_version", SETTLE)
        .await?;
    assert!(err.contains("Likely causes"), "{err}");
    wait::until("min13-on-12 reason in vendor_sessions", SETTLE, || async {
        let slots = db.slots(&min13).await?;
        Ok(slots.iter().find_map(|s| {
            s.3.clone()
                .filter(|e| e.starts_with("tls_protocol_version:"))
        }))
    })
    .await?;
    assert_eq!(gw.bound("verify").await?, 0);
    assert_eq!(gw.bound("min13-on-12").await?, 0);
    // The simulator says which version each connection got, and that the 1.3-only client
    // failed the handshake on the 1.2 listener.
    let log = smsc.log();
    let opened = |listener: &str, version: &str| {
        log.lines()
            .any(|l| l.contains(&format!("({listener}) open from")) && l.ends_with(version))
    };
    assert!(opened("tls12", " TLSv1.2"), "{log}");
    assert!(!opened("tls12", " TLSv1.3"), "{log}");
    assert!(opened("tls", " TLSv1.3"), "{log}");
    assert!(
        log.contains("listener tls12: TLS handshake failed"),
        "{log}"
    );
    gw.assert_no_secret_in_log(&[PASSWORD]);
    Ok(())
}
