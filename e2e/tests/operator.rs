//! smpp-operator end to end: the real kube-apiserver (CRD applied with the built kubectl),
//! the real PostgreSQL, and the operator binary as a child process.
//!
//! Each test gets its own namespace, its own database (created in the environment's
//! PostgreSQL) and its own operator (watching only that namespace, with its own Lease), so
//! tests run in parallel and no gateway from another test ever sees these rows.
//! Prerequisites: `make env-up` (target/env.sh) and `cargo build --workspace --bins`.

mod operator_support;

use operator_support::{
    CountingRelay, Harness, T, apiserver_addr, apply_operator_rbac, example, kubeconfig_as,
    kubeconfig_via, vendor_yaml,
};
use smpp_e2e::env::Env;
use smpp_e2e::operator::{apply, namespace_with_crd, run};
use smpp_e2e::process::repo_root;
use smpp_e2e::wait::until;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

const PASSWORD: &str = "s3cr3tpw";
const ROTATED: &str = "r0tat3d!";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_lifecycle_row_columns_rotation_drift_delete() {
    let h = Harness::start("life").await;
    let instance = format!("{}.sinch-atlanta", h.ns);
    h.apply_ok(&example(&h.ns, "smppvendor-secret.yaml"));
    h.apply_ok(&example(&h.ns, "smppvendor.yaml"));

    // The row, from spec + Secret.
    let row = h.wait_row(&instance, "row of the example", |_| true).await;
    assert_eq!(row.config.host, "smpp.example.net");
    assert_eq!(row.config.port, 3601);
    assert_eq!(row.config.username, "telxMBa1");
    assert_eq!(row.config.password.expose(), PASSWORD);
    assert_eq!(row.config.system_type, "ESME");
    assert!(row.config.tls_enabled);
    assert_eq!(
        row.config.tls_server_name.as_deref(),
        Some("smpp.example.net")
    );
    assert_eq!(
        (
            row.config.bind_mode.as_str(),
            row.config.interface_version.as_str()
        ),
        ("TRX", "3.4")
    );
    assert_eq!(
        (
            row.config.max_binds,
            row.config.window_size,
            row.config.max_messages_per_second
        ),
        (2, 10, Some(20))
    );
    assert_eq!(row.config.routing_prefixes, vec!["1".to_string()]);
    assert!(!row.config.suspended && row.config.is_active);
    let v = h.vendor_json("sinch-atlanta").unwrap();
    assert_eq!(row.owner_uid.as_deref(), v["metadata"]["uid"].as_str());
    assert_eq!(row.owner_namespace.as_deref(), Some(h.ns.as_str()));

    // kubectl wait returns, the status names the row.
    h.kubectl(&[
        "wait",
        "--for=condition=Synced",
        "smppvendor/sinch-atlanta",
        "--timeout=30s",
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", h.log_text()));
    let v = h.vendor_json("sinch-atlanta").unwrap();
    assert_eq!(v["status"]["vendorId"], row.id.to_string());
    assert_eq!(
        v["status"]["observedGeneration"],
        v["metadata"]["generation"]
    );
    assert_eq!(v["status"]["desiredSessions"], 2);
    assert!(
        v["metadata"]["finalizers"]
            .to_string()
            .contains("smpp.io/row-cleanup")
    );

    // The printer columns, by the short name too. No gateway runs here: 0/2, NotBound.
    let table = until("BOUND column filled", T, || async {
        let t = h.kubectl(&["get", "smppv"])?;
        Ok(t.contains("0/2").then_some(t))
    })
    .await
    .unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "HOST", "PORT", "TLS", "MODE", "BOUND", "READY", "REASON", "AGE"
        ]
    );
    let cells: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &cells[..8],
        [
            "sinch-atlanta",
            "smpp.example.net",
            "3601",
            "true",
            "Transceiver",
            "0/2",
            "False",
            "NotBound"
        ]
    );
    assert!(
        h.kubectl(&["get", "smppvendors"])
            .unwrap()
            .contains("sinch-atlanta")
    );
    h.wait_event("Created").await;

    // Secret rotation reaches the row with no restart. (That the Secret watch does it, not
    // the resync, is shown with a one-minute resync in missing_secret_reports_…; how fast is
    // a figure for `make bench`.)
    let pid = h.operator_pid();
    h.secret("sinch-atlanta-smpp", ROTATED);
    let row2 = h
        .wait_row(&instance, "rotated password in the row", |r| {
            r.config.password.expose() == ROTATED
        })
        .await;
    assert_eq!(row2.id, row.id);
    assert!(row2.config_version > row.config_version);
    assert_eq!(h.operator_pid(), pid);

    // A hand edit of the owned row is reverted, with an Event saying so.
    sqlx::query(
        "UPDATE vendor_mgmt.service_providers SET port = 9999, bind_mode = 'RX', password = 'handedit' WHERE instance_name = $1",
    )
    .bind(&instance)
    .execute(&h.pool)
    .await
    .unwrap();
    h.wait_row(&instance, "hand edit reverted", |r| {
        r.config.port == 3601
            && r.config.bind_mode == "TRX"
            && r.config.password.expose() == ROTATED
    })
    .await;
    let note = h.wait_event("DriftReverted").await;
    assert!(
        note.contains("port") && note.contains("bind_mode") && note.contains("password"),
        "{note}"
    );
    assert!(!note.contains("handedit"));
    assert!(
        h.metrics()
            .await
            .contains("smpp_operator_drift_reverted_total 1")
    );

    // A spec change is an ordinary update.
    let (ok, out) =
        h.apply(&example(&h.ns, "smppvendor.yaml").replace("maxBinds: 2", "maxBinds: 3"));
    assert!(ok, "{out}");
    h.wait_row(&instance, "maxBinds 3", |r| r.config.max_binds == 3)
        .await;
    h.wait_event_with("Updated", "max_binds").await;

    let metrics = h.metrics().await;
    assert!(
        metrics.contains("smpp_operator_reconciles_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("smpp_operator_reconcile_duration_seconds_bucket"));
    assert_eq!(
        operator_support::leader_gauge(&metrics),
        Some(1),
        "{metrics}"
    );
    h.assert_no_secret_leaks(&[PASSWORD, ROTATED, "handedit"]);

    // deletionPolicy Delete: the row goes, then the resource.
    h.kubectl(&["delete", "smppvendor", "sinch-atlanta", "--timeout=30s"])
        .unwrap();
    assert!(
        h.row(&instance).await.is_none(),
        "row deleted before the finalizer was removed"
    );
    h.assert_no_secret_leaks(&[PASSWORD, ROTATED, "handedit"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_policy_keeps_the_row_and_releases_it() {
    let h = Harness::start("orphan").await;
    h.secret("keep-smpp", PASSWORD);
    h.apply_ok(&vendor_yaml("keep", "  deletionPolicy: Orphan\n"));
    let instance = format!("{}.keep", h.ns);
    let row = h
        .wait_row(&instance, "row", |r| r.owner_uid.is_some())
        .await;
    h.kubectl(&["delete", "smppvendor", "keep", "--timeout=30s"])
        .unwrap();
    let after = h
        .row(&instance)
        .await
        .expect("row kept with deletionPolicy Orphan");
    assert_eq!(after.id, row.id);
    assert_eq!(after.owner(), None);
    assert_eq!(after.owner_fingerprint, None);
    assert_eq!(
        after.config.password.expose(),
        PASSWORD,
        "the gateway keeps working with it"
    );
    h.wait_event("Orphaned").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_a_hand_written_row_by_instance_name() {
    let h = Harness::start("adopt").await;
    // Wait for the operator to have migrated, then write a row the old way.
    let instance = format!("Sinch_Atlanta_{}", h.ns.replace('-', "_"));
    smpp_db::migrate(&h.pool).await.unwrap();
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password, system_type, is_active)
         VALUES ($1, 'old.example.net', 2775, 'legacy', 'legacypw', '', true) RETURNING id",
    )
    .bind(&instance)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    h.secret("adopt-smpp", PASSWORD);
    h.apply_ok(&vendor_yaml(
        "adopt",
        &format!("  instanceName: {instance}\n  tls: {{enabled: true}}\n"),
    ));
    let row = h
        .wait_row(&instance, "adopted row follows the spec", |r| {
            r.config.host == "adopt.example.net"
        })
        .await;
    assert_eq!(
        row.id, id,
        "adoption keeps the row's id (the gateway's vendor_id)"
    );
    assert_eq!(row.config.password.expose(), PASSWORD);
    assert!(row.config.tls_enabled);
    assert_eq!(row.owner_name.as_deref(), Some("adopt"));
    h.wait_condition("adopt", "Synced", "True", Some("Synced"))
        .await;
    assert_eq!(
        h.vendor_json("adopt").unwrap()["status"]["vendorId"],
        id.to_string()
    );
    let note = h.wait_event("Adopted").await;
    assert!(note.contains(&instance), "{note}");
    h.assert_no_secret_leaks(&[PASSWORD, "legacypw"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_resources_one_instance_name_older_wins() {
    let h = Harness::start("conflict").await;
    let instance = format!("shared-{}", h.ns);
    h.secret("first-smpp", PASSWORD);
    h.secret("second-smpp", ROTATED);
    h.apply_ok(&vendor_yaml(
        "first",
        &format!("  instanceName: {instance}\n"),
    ));
    let row = h
        .wait_row(&instance, "first's row", |r| {
            r.owner_name.as_deref() == Some("first")
        })
        .await;
    // creationTimestamp has 1 s resolution: make sure "second" is strictly newer.
    let created = h.vendor_json("first").unwrap()["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .to_string();
    let created: chrono::DateTime<chrono::Utc> = created.parse().unwrap();
    until("a second after first's creation", T, || async {
        Ok((chrono::Utc::now() > created + chrono::Duration::milliseconds(1100)).then_some(()))
    })
    .await
    .unwrap();
    h.apply_ok(&vendor_yaml(
        "second",
        &format!("  instanceName: {instance}\n"),
    ));

    let c = h
        .wait_condition("second", "Ready", "False", Some("Conflict"))
        .await;
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/first", h.ns)),
        "{c}"
    );
    h.wait_condition("second", "Synced", "False", Some("Conflict"))
        .await;
    h.wait_event("Conflict").await;
    // Several resyncs later the row is still first's, untouched by second.
    let metrics_before = h.metrics().await;
    until("two more reconcile rounds", T, || async {
        let n = |m: &str| {
            m.lines()
                .find(|l| l.starts_with("smpp_operator_reconciles_total{result=\"ok\"}"))
                .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((n(&h.metrics().await) >= n(&metrics_before) + 4).then_some(()))
    })
    .await
    .unwrap();
    let now = h.row(&instance).await.unwrap();
    assert_eq!(
        now.config_version, row.config_version,
        "the loser never wrote the row"
    );
    assert_eq!(now.config.host, "first.example.net");
    assert_eq!(now.config.password.expose(), PASSWORD);
    assert_eq!(
        h.vendor_json("first").unwrap()["status"]["conditions"][0]["status"],
        "True"
    );

    // The winner goes away (Delete): the other one takes the name over.
    h.kubectl(&["delete", "smppvendor", "first", "--timeout=30s"])
        .unwrap();
    h.wait_row(&instance, "second's row", |r| {
        r.owner_name.as_deref() == Some("second")
    })
    .await;
    h.wait_condition("second", "Synced", "True", Some("Synced"))
        .await;
    h.assert_no_secret_leaks(&[PASSWORD, ROTATED]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_refused_with_readable_messages() {
    let env = Env::load().expect("environment (make env-up)");
    let ns = format!("op-invalid-{:08x}", rand::random::<u32>());
    namespace_with_crd(&env, &ns).await.unwrap();
    let apply = |yaml: String| apply(&env, &ns, &yaml).expect("kubectl apply");
    let refused = |yaml: String, expect: &[&str]| {
        let (ok, out) = apply(yaml);
        assert!(!ok, "accepted but should be refused");
        for e in expect {
            assert!(out.contains(e), "message lacks {e:?}: {out}");
        }
    };
    refused(
        vendor_yaml("p", "").replace("port: 2775", "port: 70000"),
        &["spec.port", "port must be between 1 and 65535"],
    );
    refused(
        vendor_yaml("h", "").replace("  host: h.example.net\n", ""),
        &["spec.host", "Required value"],
    );
    refused(
        vendor_yaml("s", "").replace("systemId: sys-s", "systemId: abcdefghijklmnopqrst"),
        &["spec.bind.systemId", "1 to 15 characters"],
    );
    refused(
        vendor_yaml("t", "").replace(
            "systemId: sys-t",
            "systemId: x\n    systemType: thirteenchars",
        ),
        &["spec.bind.systemType", "at most 12 characters"],
    );
    refused(
        vendor_yaml("c", "  tls: {caSecretRef: {name: ca}}\n"),
        &["spec.tls", "require tls.enabled: true"],
    );
    refused(
        vendor_yaml("m", "").replace("systemId: sys-m", "systemId: x\n    mode: Sideways"),
        &["spec.bind.mode", "Unsupported value"],
    );
    refused(
        vendor_yaml("v", "").replace(
            "systemId: sys-v",
            "systemId: x\n    interfaceVersion: \"4.0\"",
        ),
        &["spec.bind.interfaceVersion"],
    );
    // The CEL rule on reconnect: the longest delay is at least the first one, also when the
    // longest is left to its default (60 s); equal delays are fine.
    let cel = "reconnect.maxDelaySeconds must be at least reconnect.initialDelaySeconds";
    refused(
        vendor_yaml(
            "r",
            "  reconnect: {initialDelaySeconds: 30, maxDelaySeconds: 10}\n",
        ),
        &["spec.reconnect", cel],
    );
    refused(
        vendor_yaml("q", "  reconnect: {initialDelaySeconds: 120}\n"),
        &["spec.reconnect", cel],
    );
    let (ok, out) = apply(vendor_yaml(
        "e",
        "  reconnect: {initialDelaySeconds: 5, maxDelaySeconds: 5}\n",
    ));
    assert!(ok, "equal reconnect delays must be accepted: {out}");

    // instanceName is fixed at creation: change, add and remove are refused.
    let (ok, out) = apply(vendor_yaml("i", "  instanceName: first-name\n"));
    assert!(ok, "{out}");
    refused(
        vendor_yaml("i", "  instanceName: second-name\n"),
        &["spec.instanceName", "immutable"],
    );
    refused(vendor_yaml("i", ""), &["fixed at creation"]);
    let (ok, out) = apply(vendor_yaml("j", ""));
    assert!(ok, "{out}");
    refused(
        vendor_yaml("j", "  instanceName: late\n"),
        &["fixed at creation"],
    );
    // Re-applying the unchanged name is fine.
    let (ok, out) = apply(vendor_yaml(
        "i",
        "  instanceName: first-name\n  maxBinds: 2\n",
    ));
    assert!(ok, "{out}");
    // These resources have no operator; drop them with their finalizer-free metadata.
    let _ = run(env
        .kubectl()
        .args(["-n", &ns, "delete", "smppvendors", "--all", "--wait=false"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_reports_secret_not_found_then_heals() {
    let mut h = Harness::start("secret").await;
    // Resync once a minute: healing and rotation below must come from the Secret watch. The
    // deadline is not a speed target: it only says "before the first resync could run".
    h.restart_with_resync(60).await;
    let restarted = std::time::Instant::now();
    let before_resync = Duration::from_secs(50);
    let instance = format!("{}.late", h.ns);
    h.apply_ok(&vendor_yaml("late", ""));
    let c = h
        .wait_condition(
            "late",
            "CredentialsResolved",
            "False",
            Some("SecretNotFound"),
        )
        .await;
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("{}/late-smpp", h.ns)) && msg.contains("create secret"),
        "{msg}"
    );
    h.wait_condition("late", "Ready", "False", Some("SecretNotFound"))
        .await;
    assert!(
        h.row(&instance).await.is_none(),
        "no row without credentials"
    );
    h.wait_event("SecretNotFound").await;

    // The Secret appears: healed by the Secret watch, without anyone touching the vendor.
    h.secret("late-smpp", PASSWORD);
    h.wait_condition("late", "CredentialsResolved", "True", Some("Resolved"))
        .await;
    h.wait_condition("late", "Synced", "True", Some("Synced"))
        .await;
    h.wait_row(&instance, "row", |r| r.config.password.expose() == PASSWORD)
        .await;
    assert!(
        restarted.elapsed() < before_resync,
        "healed {:?} after the restart: by the one-minute resync, not the Secret watch?",
        restarted.elapsed()
    );

    // Rotation, also through the watch (the resync is a minute away).
    h.secret("late-smpp", ROTATED);
    let row = h
        .wait_row(&instance, "rotated", |r| {
            r.config.password.expose() == ROTATED
        })
        .await;
    assert!(
        restarted.elapsed() < before_resync,
        "rotated {:?} after the restart: by the one-minute resync, not the Secret watch?",
        restarted.elapsed()
    );

    // Too long for SMPP 3.4: a condition, the last good row stays, no crash.
    h.secret("late-smpp", "muchtoolongpassword");
    h.wait_condition(
        "late",
        "CredentialsResolved",
        "False",
        Some("PasswordTooLong"),
    )
    .await;
    let c = h
        .wait_condition("late", "Ready", "False", Some("PasswordTooLong"))
        .await;
    assert!(
        c["message"].as_str().unwrap().contains("8 characters"),
        "{c}"
    );
    assert_eq!(
        h.row(&instance).await.unwrap().config.password.expose(),
        ROTATED
    );
    assert_eq!(
        h.row(&instance).await.unwrap().config_version,
        row.config_version
    );
    h.assert_operator_alive();
    h.assert_no_secret_leaks(&[PASSWORD, ROTATED, "muchtoolongpassword"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_reports_database_unavailable_and_recovers() {
    let env = Env::load().expect("environment (make env-up)");
    // The scripts block for a few seconds; fine on this multi-threaded runtime.
    let mut pg = smpp_e2e::postgres::PrivatePostgres::start().expect("private PostgreSQL");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect(pg.url())
        .await
        .unwrap();
    let suffix = format!("{:08x}", rand::random::<u32>());
    let mut h = Harness::start_with(env, "pgdown", &suffix, pg.url().to_string(), pool).await;
    let instance = format!("{}.db", h.ns);
    h.secret("db-smpp", PASSWORD);
    h.apply_ok(&vendor_yaml("db", ""));
    h.wait_condition("db", "Synced", "True", Some("Synced"))
        .await;
    let pid = h.operator_pid();

    pg.stop().expect("stopping PostgreSQL");
    // A spec change while the database is down.
    h.apply_ok(&vendor_yaml("db", "  maxBinds: 4\n"));
    let c = h
        .wait_condition("db", "Synced", "False", Some("DatabaseUnavailable"))
        .await;
    assert!(c["message"].as_str().unwrap().contains("PostgreSQL"), "{c}");
    h.wait_condition("db", "Ready", "False", Some("DatabaseUnavailable"))
        .await;
    h.wait_event("DatabaseUnavailable").await;
    h.assert_operator_alive();
    assert!(
        h.metrics()
            .await
            .contains("smpp_operator_reconcile_errors_total{reason=\"DatabaseUnavailable\"}")
    );

    pg.start_again().expect("restarting PostgreSQL");
    h.wait_condition("db", "Synced", "True", Some("Synced"))
        .await;
    h.wait_row(&instance, "maxBinds 4 after recovery", |r| {
        r.config.max_binds == 4
    })
    .await;
    assert_eq!(h.operator_pid(), pid, "no restart");
    h.assert_operator_alive();
    h.assert_no_secret_leaks(&[PASSWORD]);
    drop(h);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles() {
    let mut h = Harness::start("lease").await;
    // A long lease, so a takeover well inside it can only come from the leader's release on
    // SIGTERM, however slow the machine (the replicas below copy the setting).
    const LEASE: u64 = 20;
    h.op.lease_duration_seconds = LEASE;
    let resync = h.op.resync_seconds;
    h.restart_with_resync(resync).await;
    // Two more replicas with the same Lease stay standby while the first renews.
    let mut second = h.replica("second").await;
    let mut third = h.replica("third").await;
    h.secret("l-smpp", PASSWORD);
    h.apply_ok(&vendor_yaml("l", ""));
    h.wait_condition("l", "Synced", "True", Some("Synced"))
        .await;
    let instance = format!("{}.l", h.ns);
    assert!(h.leads().await);
    for standby in [&second, &third] {
        let m = standby.metrics().await;
        assert_eq!(operator_support::leader_gauge(&m), Some(0), "{m}");
        assert!(
            !m.contains("smpp_operator_reconciles_total{result=\"ok\"}"),
            "a standby reconciled"
        );
    }

    // SIGTERM: the leader releases the Lease on its way out, so a standby leads well before
    // the lease would have expired.
    let stopped_at = std::time::Instant::now();
    h.operator.as_ref().unwrap().signal(15);
    let leader = until("a standby leads after SIGTERM", T, || async {
        Ok(if second.leads().await {
            Some(2)
        } else if third.leads().await {
            Some(3)
        } else {
            None
        })
    })
    .await
    .unwrap();
    assert!(
        stopped_at.elapsed() < Duration::from_secs(LEASE - 5),
        "takeover {:?} after SIGTERM: by lease expiry ({LEASE} s), not the release?",
        stopped_at.elapsed()
    );
    until("the old leader exits", T, || {
        let exited = h.operator.as_mut().unwrap().has_exited();
        async move { Ok(exited.then_some(())) }
    })
    .await
    .unwrap();
    let (new_leader, other) = if leader == 2 {
        (&mut second, &mut third)
    } else {
        (&mut third, &mut second)
    };
    h.apply_ok(&vendor_yaml("l", "  maxBinds: 5\n"));
    h.wait_row(&instance, "new leader applied maxBinds 5", |r| {
        r.config.max_binds == 5
    })
    .await;

    // SIGKILL: no release; the last replica takes over once the Lease expires.
    new_leader.operator.as_mut().unwrap().kill();
    until(
        "the last replica leads",
        Duration::from_secs(LEASE) + T,
        || async { Ok(other.leads().await.then_some(())) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", other.log_text()));
    h.apply_ok(&vendor_yaml("l", "  maxBinds: 6\n"));
    h.wait_row(&instance, "last replica applied maxBinds 6", |r| {
        r.config.max_binds == 6
    })
    .await;
    other.assert_operator_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_the_least_privilege_rbac_manifest() {
    let (env, suffix, db_url, pool) = Harness::fresh_db("rbac").await;
    let h = Harness::start_as(env, "rbac", &suffix, db_url, pool, true).await;
    let instance = format!("{}.r", h.ns);
    h.secret("r-smpp", PASSWORD);
    h.apply_ok(&vendor_yaml("r", ""));
    h.wait_condition("r", "Ready", "False", Some("NotBound"))
        .await; // status written
    h.wait_row(&instance, "row", |r| r.config.password.expose() == PASSWORD)
        .await;
    h.wait_event("Created").await; // events.k8s.io create
    h.secret("r-smpp", ROTATED); // Secret watch (list/watch) + get
    h.wait_row(&instance, "rotated", |r| {
        r.config.password.expose() == ROTATED
    })
    .await;
    h.kubectl(&["delete", "smppvendor", "r", "--timeout=30s"])
        .unwrap(); // finalizer patch
    assert!(h.row(&instance).await.is_none());
    let log = smpp_e2e::leak::read_log(&h.op.log);
    assert!(!log.trim().is_empty(), "the operator log is empty");
    assert!(
        !log.contains("forbidden"),
        "the operator hit RBAC denials:\n{log}"
    );
    h.assert_no_secret_leaks(&[PASSWORD, ROTATED]);
}

/// What a gateway pod does to vendor_sessions, done by hand: the operator must mirror it into
/// status at once (NOTIFY), not at its next periodic refresh (a minute away here). Each wait
/// is bounded by T (30 s), well inside that minute: a bound on a hang, not a speed target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_follows_the_gateways_vendor_sessions_at_once() {
    let mut h = Harness::start("bound").await;
    h.restart_with_resync(60).await;
    h.secret("b-smpp", PASSWORD);
    h.apply_ok(&vendor_yaml("b", "  maxBinds: 2\n"));
    h.wait_condition("b", "Synced", "True", Some("Synced"))
        .await;
    let id = h.row(&format!("{}.b", h.ns)).await.unwrap().id;
    let slot = |slot: i32, state: &'static str, err: Option<&'static str>| {
        sqlx::query(
            "INSERT INTO vendor_mgmt.vendor_sessions (vendor_id, slot, pod, state, last_error)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (vendor_id, slot) DO UPDATE SET state = $4, last_error = $5, since = now()",
        )
        .bind(id)
        .bind(slot)
        .bind(format!("gw-{slot}"))
        .bind(state)
        .bind(err)
        .execute(&h.pool)
    };
    let both = |state: &'static str, err: Option<&'static str>| {
        sqlx::query(
            "UPDATE vendor_mgmt.vendor_sessions SET state = $2, last_error = $3, since = now()
             WHERE vendor_id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(err)
        .execute(&h.pool)
    };
    let table_shows = |want: &'static str| {
        let h = &h;
        async move {
            until(&format!("kubectl get shows {want}"), T, || async {
                let t = h.kubectl(&["get", "smppv", "b", "--no-headers"])?;
                Ok(t.contains(want).then_some(t))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", h.log_text()))
        }
    };

    slot(0, "bound", None).await.unwrap();
    let row = table_shows("1/2").await;
    assert!(row.contains("PartiallyBound"), "{row}");

    slot(
        1,
        "backoff",
        Some("bind_resp: ESME_RINVPASWD (invalid password)"),
    )
    .await
    .unwrap();
    // The condition is PartiallyBound already; wait for the gateway's error to show.
    let v = until("lastError from the gateway", T, || async {
        let v = h.vendor_json("b")?;
        Ok(
            (v["status"]["lastError"] == "bind_resp: ESME_RINVPASWD (invalid password)")
                .then_some(v),
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.log_text()));
    let bound = v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Bound")
        .unwrap();
    assert_eq!(bound["reason"], "PartiallyBound");
    assert!(
        bound["message"]
            .as_str()
            .unwrap()
            .contains("ESME_RINVPASWD"),
        "{bound}"
    );
    let pods: Vec<_> = v["status"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pod"].clone())
        .collect();
    assert_eq!(pods, ["gw-0", "gw-1"]);

    slot(1, "bound", None).await.unwrap();
    let row = table_shows("2/2").await;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[5..8], ["2/2", "True", "Ready"], "{row}");

    // Events follow Ready: Normal when it becomes Ready, a Warning with the reason and message
    // when it leaves, Normal again when it is back.
    h.wait_event_with("Ready", "Ready again").await;
    // Both slots in one statement: one commit, so the operator cannot see them half-way
    // (PartiallyBound in between would be a transition of its own).
    both("backoff", Some("bind_resp: ESME_RBINDFAIL (bind failed)"))
        .await
        .unwrap();
    table_shows("BindFailed").await;
    let note = h.wait_warning("BindFailed").await;
    assert!(note.contains("ESME_RBINDFAIL"), "{note}");
    assert_eq!(both("bound", None).await.unwrap().rows_affected(), 2);
    let note = h.wait_event_with("Ready", "was BindFailed").await;
    assert!(note.contains("2/2 binds up"), "{note}");
    h.assert_no_secret_leaks(&[PASSWORD]);
}

/// A row owned by an SmppVendor that is gone (deleted while the operator was away, its
/// finalizer removed by hand, so the row was never cleaned up): a new resource with the same
/// instanceName takes it over (Event TookOver naming the old owner), keeping the row's id so
/// the gateways' vendor_id stays, and writes its own spec and credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_owner_is_gone_is_taken_over() {
    let mut h = Harness::start("tookover").await;
    let instance = format!("shared-{}", h.ns);
    h.secret("first-smpp", PASSWORD);
    h.secret("second-smpp", ROTATED);
    h.apply_ok(&vendor_yaml(
        "first",
        &format!("  instanceName: {instance}\n"),
    ));
    let row = h
        .wait_row(&instance, "first's row", |r| {
            r.owner_name.as_deref() == Some("first")
        })
        .await;
    let first_uid = h.vendor_json("first").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    // The operator is away; first is deleted and its finalizer removed by hand.
    h.operator.as_ref().unwrap().signal(15);
    until("the operator exits", T, || {
        let exited = h.operator.as_mut().unwrap().has_exited();
        async move { Ok(exited.then_some(())) }
    })
    .await
    .unwrap();
    h.kubectl(&["delete", "smppvendor", "first", "--wait=false"])
        .unwrap();
    h.kubectl(&[
        "patch",
        "smppvendor",
        "first",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .unwrap();
    until("first is gone", T, || async {
        Ok(h.vendor_json("first").is_err().then_some(()))
    })
    .await
    .unwrap();
    let orphaned = h.row(&instance).await.unwrap();
    assert_eq!(
        orphaned.owner_uid.as_deref(),
        Some(first_uid.as_str()),
        "the row still names its gone owner"
    );

    h.op.http_port = smpp_e2e::sink::free_port().unwrap();
    h.spawn_operator();
    h.wait_ready().await;
    h.apply_ok(&vendor_yaml(
        "second",
        &format!("  instanceName: {instance}\n"),
    ));
    let note = h.wait_event("TookOver").await;
    assert!(
        note.contains(&format!("{}/first", h.ns)) && note.contains(&first_uid),
        "{note}"
    );
    let now = h
        .wait_row(&instance, "second's row with its spec", |r| {
            r.owner_name.as_deref() == Some("second")
                && r.config.host == "second.example.net"
                && r.config.password.expose() == ROTATED
        })
        .await;
    assert_eq!(
        now.id, row.id,
        "a takeover keeps the row's id (the gateways' vendor_id)"
    );
    let second_uid = h.vendor_json("second").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(now.owner_uid.as_deref(), Some(second_uid.as_str()));
    h.wait_condition("second", "Synced", "True", Some("Synced"))
        .await;
    assert_eq!(
        h.vendor_json("second").unwrap()["status"]["vendorId"],
        row.id.to_string()
    );
    h.assert_no_secret_leaks(&[PASSWORD, ROTATED]);
}

/// Sum of `smpp_operator_reconciles_total` over its result labels.
fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("smpp_operator_reconciles_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// The first token of a log line: its timestamp (tracing's RFC 3339, UTC).
fn logged_at(line: &str) -> chrono::DateTime<chrono::Utc> {
    line.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"))
}

/// A leader that can no longer renew its Lease (its RBAC for leases revoked: every renewal is
/// refused) steps down before the Lease expires for the others. It stops reconciling before
/// the renewTime it last wrote plus the lease duration; the standby takes the Lease only after
/// that expiry; and the old leader reconciles nothing more while the new one works. The times
/// compared are the leader's log, and the Lease's renewTime and acquireTime as the apiserver
/// stored them: events, not samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_before_its_lease_can_be_taken() {
    let mut h = Harness::start("stepdown").await;
    const LEASE: u64 = 15;
    h.op.lease_duration_seconds = LEASE;
    // The leader runs as an identity of its own: the operator's ClusterRole in this namespace,
    // and the Lease rights through a RoleBinding the test deletes.
    apply_operator_rbac(&h.env);
    let ns = h.ns.clone();
    h.apply_ok(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: stepdown-operator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: smpp-system-smpp-operator}}
subjects: [{{kind: ServiceAccount, name: stepdown, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: stepdown-lease}}
rules: [{{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: stepdown-lease}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: stepdown-lease}}
subjects: [{{kind: ServiceAccount, name: stepdown, namespace: {ns}}}]
"
    ));
    h.op.kubeconfig = kubeconfig_as(&h.env, &ns, &format!("system:serviceaccount:{ns}:stepdown"));
    let resync = h.op.resync_seconds;
    h.restart_with_resync(resync).await;
    until("the restricted replica leads", T, || async {
        Ok(h.leads().await.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", h.log_text()));
    let standby = h.replica_as("standby", h.env.kubeconfig.clone()).await;
    assert!(!standby.leads().await);
    h.secret("s-smpp", PASSWORD);
    h.apply_ok(&vendor_yaml("s", ""));
    h.wait_condition("s", "Synced", "True", Some("Synced"))
        .await;
    let leader_id = format!("operator-{ns}-{}", h.op.http_port);
    let standby_id = format!("operator-{ns}-{}", standby.op.http_port);
    let lease_name = format!("smpp-operator-{ns}");
    let lease = || -> (String, Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>, i64) {
        let v: serde_json::Value =
            serde_json::from_str(&h.kubectl(&["get", "lease", &lease_name, "-o", "json"]).unwrap())
                .unwrap();
        let time = |k: &str| v["spec"][k].as_str().map(|t| t.parse().unwrap());
        (
            v["spec"]["holderIdentity"].as_str().unwrap_or("").to_string(),
            time("renewTime"),
            time("acquireTime"),
            v["spec"]["leaseDurationSeconds"].as_i64().unwrap(),
        )
    };
    assert_eq!(lease().0, leader_id);

    let log_from = h.log_text().len();
    let new_log = || h.log_text()[log_from..].to_string();
    h.kubectl(&["delete", "rolebinding", "stepdown-lease"])
        .unwrap();
    // After the first refused renewal the Lease keeps the last renewTime the leader wrote.
    until("a refused renewal", T, || async {
        Ok(new_log()
            .contains("renewing the leader Lease failed")
            .then_some(()))
    })
    .await
    .unwrap();
    let (holder, renewed, _, duration) = lease();
    assert_eq!(holder, leader_id, "nobody may hold the Lease yet");
    let expiry = renewed.unwrap() + chrono::Duration::seconds(duration);

    let line = until("the leader stops reconciling", T, || async {
        Ok(new_log()
            .lines()
            .find(|l| l.contains("lost the leader Lease: stopped reconciling"))
            .map(String::from))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", new_log()));
    let stepped_down = logged_at(&line);
    assert!(
        stepped_down < expiry,
        "stepped down at {stepped_down}, after its Lease expired at {expiry}:\n{}",
        new_log()
    );
    until("the old leader reports leader 0", T, || async {
        Ok((!h.leads().await).then_some(()))
    })
    .await
    .unwrap();
    let old_rounds = reconciles(&h.metrics().await);

    until(
        "the standby leads",
        Duration::from_secs(LEASE) + T,
        || async { Ok(standby.leads().await.then_some(())) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", standby.log_text()));
    let (holder, _, acquired, _) = lease();
    assert_eq!(holder, standby_id);
    let acquired = acquired.unwrap();
    assert!(
        acquired > expiry && acquired > stepped_down,
        "the standby took the Lease at {acquired}: before it expired ({expiry}) or before the \
         leader stepped down ({stepped_down})"
    );

    // The new leader works; the old one, which could still write status (only its Lease
    // rights are gone), reconciles nothing.
    h.apply_ok(&vendor_yaml("s", "  maxBinds: 4\n"));
    h.wait_row(
        &format!("{ns}.s"),
        "the new leader applied maxBinds 4",
        |r| r.config.max_binds == 4,
    )
    .await;
    let new_rounds = reconciles(&standby.metrics().await);
    until("two more rounds of the new leader", T, || async {
        Ok((reconciles(&standby.metrics().await) >= new_rounds + 2).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(
        reconciles(&h.metrics().await),
        old_rounds,
        "the old leader reconciled after stepping down"
    );
    h.assert_operator_alive();
}

/// Secrets are watched as metadata only: Secrets of the watched namespace that no vendor
/// references never reach the operator. They hold several MB, far more than everything the
/// apiserver sends the operator in this test (counted by a TCP relay the operator's kubeconfig
/// points at, TLS end to end), which would hold them had it listed or watched Secrets in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_secrets_never_reach_the_operator() {
    let mut h = Harness::start("metaonly").await;
    const SECRETS: usize = 6;
    const SIZE: usize = 700 * 1024;
    let dir = repo_root().join("target/e2e-logs");
    let blob = dir.join(format!("blob-{}", h.ns));
    let data: Vec<u8> = (0..SIZE).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&blob, &data).unwrap();
    // `kubectl create` keeps no last-applied copy of the data in an annotation (which a
    // metadata watch would carry).
    for i in 0..SECRETS {
        h.kubectl(&[
            "create",
            "secret",
            "generic",
            &format!("big-{i}"),
            &format!("--from-file=blob={}", blob.display()),
        ])
        .unwrap();
    }
    // A fresh operator, through the relay, lists the namespace's Secrets with the big ones in
    // it.
    let relay = CountingRelay::start(apiserver_addr(&h.env)).await.unwrap();
    h.op.kubeconfig = kubeconfig_via(&h.env, &h.ns, relay.port);
    let resync = h.op.resync_seconds;
    h.restart_with_resync(resync).await;
    h.secret("m-smpp", PASSWORD);
    h.apply_ok(&vendor_yaml("m", ""));
    h.wait_condition("m", "Synced", "True", Some("Synced"))
        .await;
    // A change to each big Secret is a watch event; the rotation after them arrives through
    // the same watch, so once it is applied those events were delivered too.
    for i in 0..SECRETS {
        h.kubectl(&["annotate", "secret", &format!("big-{i}"), "touched=yes"])
            .unwrap();
    }
    h.secret("m-smpp", ROTATED);
    let instance = format!("{}.m", h.ns);
    h.wait_row(&instance, "rotated through the watch", |r| {
        r.config.password.expose() == ROTATED
    })
    .await;
    let read = relay.received();
    let held = (SECRETS * SIZE) as u64;
    eprintln!("the apiserver sent the operator {read} bytes; unrelated Secrets hold {held}");
    assert!(
        read > 0,
        "nothing passed the relay: the operator did not use it"
    );
    assert!(
        read < held / 2,
        "the apiserver sent the operator {read} bytes in all, against {held} bytes of data in \
         Secrets it does not use: it fetched their content"
    );
    h.assert_operator_alive();
    for i in 0..SECRETS {
        h.kubectl(&["delete", "secret", &format!("big-{i}")])
            .unwrap();
    }
    let _ = std::fs::remove_file(&blob);
}
