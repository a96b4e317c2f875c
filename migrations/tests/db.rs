//! smpp-db against a real PostgreSQL: DATABASE_URL (from `make env-up`, target/env.sh).
//! Every test creates its own database, so tests run in parallel without seeing each other.

use chrono::Duration;
use smpp_db::providers::{self, Owner, ProviderConfig, ServiceProvider, UpsertOutcome};
use smpp_db::{DbError, PgPool, Secret, migrate, status};
use sqlx::Executor;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use std::str::FromStr;

async fn fresh_db() -> (PgPool, String) {
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must point at a PostgreSQL (run `make env-up; . target/env.sh`)");
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("connect");
    let name = format!("smppdb_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let opts = PgConnectOptions::from_str(&url).unwrap().database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(opts)
        .await
        .unwrap();
    (pool, name)
}

fn owner(uid: &str, generation: i64) -> Owner {
    Owner {
        namespace: "messaging".into(),
        name: format!("v-{uid}"),
        uid: uid.into(),
        generation,
    }
}

#[tokio::test]
async fn concurrent_migrations_do_not_race_and_rerun_is_a_no_op() {
    let (pool, _) = fresh_db().await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { migrate(&p).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().expect("each concurrent migrate succeeds");
    }
    migrate(&pool).await.expect("re-run is a no-op");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, smpp_db::migrate::known_versions().len());
}

#[tokio::test]
async fn migrates_a_legacy_table_and_keeps_its_rows_loadable() {
    let (pool, _) = fresh_db().await;
    // The table as the existing installation has it, with a row written by hand.
    pool.execute(
        "CREATE SCHEMA vendor_mgmt;
         CREATE TABLE vendor_mgmt.service_providers (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(), instance_name text NOT NULL UNIQUE,
            host text NOT NULL, port integer NOT NULL, username text NOT NULL,
            password text NOT NULL DEFAULT '', system_type text NOT NULL DEFAULT '',
            is_active boolean NOT NULL DEFAULT true);
         INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password)
            VALUES ('Sinch_Atlanta', 'smpp.example.net', 3601, 'telx', 'legacy');",
    )
    .await
    .unwrap();
    migrate(&pool).await.unwrap();
    // A hand-written row in the new shape, with a bind mode the gateway will reject: it
    // must still load here.
    pool.execute(
        "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password,
            tls_enabled, bind_mode, interface_version, max_binds)
         VALUES ('Hand_Made', 'h', 0, 'u', 'p', true, 'BOGUS', '9.9', 3)",
    )
    .await
    .unwrap();
    let rows = providers::list_all(&pool).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.instance_name.as_str())
            .collect::<Vec<_>>(),
        vec!["Hand_Made", "Sinch_Atlanta"]
    );
    let legacy = &rows[1];
    assert_eq!(legacy.config.bind_mode, "TRX");
    assert_eq!(legacy.config.interface_version, "3.4");
    assert_eq!(legacy.config.max_binds, 1);
    assert!(!legacy.config.tls_enabled);
    assert_eq!(legacy.owner(), None);
    assert_eq!(legacy.config.password.expose(), "legacy");
    assert_eq!(rows[0].config.bind_mode, "BOGUS");
    assert_eq!(rows[0].config.port, 0);

    let one = providers::get(&pool, legacy.id).await.unwrap().unwrap();
    assert_eq!(&one, legacy);
    let missing = uuid::Uuid::new_v4();
    let many = providers::get_many(&pool, &[rows[0].id, missing])
        .await
        .unwrap();
    assert_eq!(many.len(), 1);
    assert!(providers::get(&pool, missing).await.unwrap().is_none());
}

#[tokio::test]
async fn upsert_lifecycle_drift_conflict_adopt_orphan_delete() {
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let a = owner("uid-a", 1);

    let created = providers::upsert_owned(&pool, "ns.v", &a, &ProviderConfig::example())
        .await
        .unwrap();
    let UpsertOutcome::Created(row) = created else {
        panic!("expected Created: {created:?}")
    };
    assert_eq!(row.config, ProviderConfig::example());
    assert_eq!(row.owner_generation, Some(1));
    assert!(!row.edited_since_owner_wrote());

    let again = providers::upsert_owned(&pool, "ns.v", &a, &ProviderConfig::example())
        .await
        .unwrap();
    assert!(matches!(again, UpsertOutcome::Unchanged(_)), "{again:?}");

    // Secret rotation: an ordinary update, not drift.
    let mut rotated = ProviderConfig::example();
    rotated.password = Secret::new("pw-two");
    let out = providers::upsert_owned(&pool, "ns.v", &a, &rotated)
        .await
        .unwrap();
    let (row, changed, drift) = updated(out);
    assert_eq!(changed, vec!["password"]);
    assert!(!drift);
    assert_eq!(row.config.password.expose(), "pw-two");
    let version = row.config_version;

    // A hand edit is drift, and the upsert reverts it.
    pool.execute("UPDATE vendor_mgmt.service_providers SET port = 2775, is_active = false")
        .await
        .unwrap();
    let edited = providers::get_by_instance_name(&pool, "ns.v")
        .await
        .unwrap()
        .unwrap();
    assert!(edited.edited_since_owner_wrote());
    let out = providers::upsert_owned(&pool, "ns.v", &a, &rotated)
        .await
        .unwrap();
    let (row, changed, drift) = updated(out);
    assert!(drift);
    assert_eq!(changed, vec!["port", "is_active"]);
    assert_eq!(row.config.port, 3601);
    assert!(row.config.is_active);
    assert!(row.config_version > version);

    // Another resource claiming the same name: refused, row untouched.
    let b = owner("uid-b", 1);
    let mut other = ProviderConfig::example();
    other.host = "evil".into();
    let out = providers::upsert_owned(&pool, "ns.v", &b, &other)
        .await
        .unwrap();
    let UpsertOutcome::OwnedByOther { owner: o, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(o.uid, "uid-a");
    let now = providers::get_by_instance_name(&pool, "ns.v")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.config.host, "smpp.example.net");
    assert!(
        !providers::delete_owned(&pool, "ns.v", "uid-b")
            .await
            .unwrap()
    );
    assert!(!providers::orphan(&pool, "ns.v", "uid-b").await.unwrap());

    // Transfer is compare-and-set on the current owner.
    assert!(
        providers::transfer(&pool, "ns.v", "uid-x", &b)
            .await
            .unwrap()
            .is_none()
    );
    let moved = providers::transfer(&pool, "ns.v", "uid-a", &b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.owner_uid.as_deref(), Some("uid-b"));
    assert!(
        providers::transfer(&pool, "ns.v", "uid-b", &a)
            .await
            .unwrap()
            .is_some()
    );

    // Orphan keeps the row and clears ownership; then it is unowned and can be adopted.
    assert!(providers::orphan(&pool, "ns.v", "uid-a").await.unwrap());
    let orphaned = providers::get_by_instance_name(&pool, "ns.v")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(orphaned.owner(), None);
    assert_eq!(orphaned.owner_fingerprint, None);
    let out = providers::upsert_owned(&pool, "ns.v", &b, &other)
        .await
        .unwrap();
    assert!(matches!(out, UpsertOutcome::Unowned(_)), "{out:?}");
    let adopted = providers::adopt(&pool, "ns.v", &b).await.unwrap().unwrap();
    assert_eq!(adopted.owner_uid.as_deref(), Some("uid-b"));
    assert!(
        providers::adopt(&pool, "ns.v", &a).await.unwrap().is_none(),
        "owned rows stay"
    );
    let out = providers::upsert_owned(&pool, "ns.v", &b, &other)
        .await
        .unwrap();
    let UpsertOutcome::Updated { row, drift, .. } = out else {
        panic!("{out:?}")
    };
    assert!(!drift, "adoption is not drift");
    assert_eq!(row.config.host, "evil");

    assert!(
        providers::delete_owned(&pool, "ns.v", "uid-b")
            .await
            .unwrap()
    );
    assert!(
        providers::get_by_instance_name(&pool, "ns.v")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn every_write_notifies_the_channel() {
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(providers::CHANNEL).await.unwrap();
    let out = providers::upsert_owned(&pool, "ns.n", &owner("u", 1), &ProviderConfig::example())
        .await
        .unwrap();
    let UpsertOutcome::Created(row) = out else {
        panic!("{out:?}")
    };
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("NOTIFY within 5 s")
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
    assert_eq!(payload["op"], "INSERT");
    assert_eq!(payload["id"], row.id.to_string());
}

/// The next notification's payload, or None if none comes within 500 ms.
async fn next_payload(l: &mut PgListener) -> Option<String> {
    let n = tokio::time::timeout(std::time::Duration::from_millis(500), l.try_recv()).await;
    n.ok().map(|n| n.unwrap().unwrap().payload().to_string())
}

#[tokio::test]
async fn session_state_changes_notify_but_heartbeats_do_not() {
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let out = providers::upsert_owned(&pool, "ns.h", &owner("u", 1), &ProviderConfig::example())
        .await
        .unwrap();
    let UpsertOutcome::Created(row) = out else {
        panic!("{out:?}")
    };
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(status::SESSIONS_CHANNEL).await.unwrap();
    let exec = |sql: &'static str| sqlx::query(sql).bind(row.id).execute(&pool);
    exec("INSERT INTO vendor_mgmt.vendor_sessions (vendor_id, slot, pod) VALUES ($1, 0, 'gw-0')")
        .await
        .unwrap();
    assert_eq!(
        next_payload(&mut listener).await,
        Some(row.id.to_string()),
        "claim notifies"
    );
    exec("UPDATE vendor_mgmt.vendor_sessions SET heartbeat = now() + interval '1 s' WHERE vendor_id = $1")
        .await
        .unwrap();
    // A state change committed after the heartbeat: if the heartbeat had notified, that
    // notification would arrive first.
    exec("UPDATE vendor_mgmt.vendor_sessions SET state = 'bound' WHERE vendor_id = $1")
        .await
        .unwrap();
    assert_eq!(
        next_payload(&mut listener).await,
        Some(row.id.to_string()),
        "state change notifies"
    );
    assert_eq!(
        next_payload(&mut listener).await,
        None,
        "exactly one notification: heartbeats are silent"
    );
    exec("DELETE FROM vendor_mgmt.vendor_sessions WHERE vendor_id = $1")
        .await
        .unwrap();
    assert_eq!(
        next_payload(&mut listener).await,
        Some(row.id.to_string()),
        "release notifies"
    );
}

#[tokio::test]
async fn status_aggregates_live_sessions_only() {
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let out = providers::upsert_owned(&pool, "ns.s", &owner("u", 1), &ProviderConfig::example())
        .await
        .unwrap();
    let UpsertOutcome::Created(row) = out else {
        panic!("{out:?}")
    };
    sqlx::query(
        "INSERT INTO vendor_mgmt.vendor_sessions (vendor_id, slot, pod, state, since, last_error, heartbeat) VALUES
         ($1, 0, 'gw-0', 'bound',   now() - interval '5 min', NULL, now()),
         ($1, 1, 'gw-1', 'backoff', now() - interval '10 s', 'bind_resp ESME_RINVPASWD', now()),
         ($1, 2, 'gw-2', 'bound',   now() - interval '1 h', 'dead pod', now() - interval '2 min')",
    )
    .bind(row.id)
    .execute(&pool)
    .await
    .unwrap();
    let s = status::vendor_sessions(&pool, row.id, Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(s.bound, 1);
    assert_eq!(
        s.sessions
            .iter()
            .map(|s| s.pod.as_str())
            .collect::<Vec<_>>(),
        vec!["gw-0", "gw-1"]
    );
    assert_eq!(s.last_error.as_deref(), Some("bind_resp ESME_RINVPASWD"));
    let none = status::vendor_sessions(&pool, uuid::Uuid::new_v4(), Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(none, status::VendorSessions::default());
}

#[tokio::test]
async fn unreachable_database_is_reported_as_unavailable() {
    // A port nobody listens on: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let pool = PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy(&format!("postgres://nobody@127.0.0.1:{port}/x"))
        .unwrap();
    let err = providers::list_all(&pool).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = migrate(&pool).await.unwrap_err();
    assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn legacy_insert_gets_the_messaging_defaults_and_odd_values_still_load() {
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    // The old way: only the legacy columns.
    pool.execute(
        "INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username, password)
         VALUES ('Legacy', 'smpp.example.net', 3601, 'telx', 'pw');
         INSERT INTO vendor_mgmt.service_providers (instance_name, host, port, username,
            message_id_submit_format, long_messages, default_alphabet)
         VALUES ('Odd', 'h', 2775, 'u', 'hex', 'Bogus', 'utf8');",
    )
    .await
    .unwrap();
    let legacy = providers::get_by_instance_name(&pool, "Legacy")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(legacy.config.message_id_submit_format, "Auto");
    assert_eq!(legacy.config.message_id_receipt_format, "Auto");
    assert_eq!(legacy.config.long_messages, "Udh");
    assert_eq!(legacy.config.default_alphabet, "Gsm7");
    // No CHECK constraints: values the gateway rejects are stored and loaded as written.
    let odd = providers::get_by_instance_name(&pool, "Odd")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(odd.config.message_id_submit_format, "hex");
    assert_eq!(odd.config.long_messages, "Bogus");
    assert_eq!(odd.config.default_alphabet, "utf8");
    // The defaults are what the enums call default (one definition of each).
    use smpp_db::messaging::{DefaultAlphabet, IdFormat, LongMessages};
    assert_eq!(
        legacy.config.message_id_submit_format,
        IdFormat::default().as_str()
    );
    assert_eq!(
        legacy.config.long_messages,
        LongMessages::default().as_str()
    );
    assert_eq!(
        legacy.config.default_alphabet,
        DefaultAlphabet::default().as_str()
    );
}

#[tokio::test]
async fn messaging_settings_round_trip_through_the_upsert() {
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let a = owner("uid-m", 1);
    let mut c = ProviderConfig::example();
    c.message_id_submit_format = "Hex".into();
    c.message_id_receipt_format = "Decimal".into();
    c.long_messages = "Sar".into();
    c.default_alphabet = "Latin1".into();
    let out = providers::upsert_owned(&pool, "ns.m", &a, &c)
        .await
        .unwrap();
    let UpsertOutcome::Created(row) = out else {
        panic!("{out:?}")
    };
    assert_eq!(row.config, c);
    let mut d = c.clone();
    d.long_messages = "Payload".into();
    let out = providers::upsert_owned(&pool, "ns.m", &a, &d)
        .await
        .unwrap();
    let (row, changed, drift) = updated(out);
    assert_eq!(changed, vec!["long_messages"]);
    assert!(!drift);
    assert_eq!(row.config.long_messages, "Payload");
    // A hand edit of a messaging column is drift like any other.
    pool.execute("UPDATE vendor_mgmt.service_providers SET default_alphabet = 'Ascii'")
        .await
        .unwrap();
    let out = providers::upsert_owned(&pool, "ns.m", &a, &d)
        .await
        .unwrap();
    let (row, changed, drift) = updated(out);
    assert!(drift);
    assert_eq!(changed, vec!["default_alphabet"]);
    assert_eq!(row.config.default_alphabet, "Latin1");
}

#[tokio::test]
async fn heartbeat_writes_the_advertised_address() {
    use smpp_db::sessions;
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let addr = |pod: &'static str| {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT advertise_addr FROM vendor_mgmt.gateway_pods WHERE pod = $1",
        )
        .bind(pod)
        .fetch_one(&pool)
    };
    sessions::heartbeat_pod(&pool, "gw-0", Some("10.0.0.1:8080"))
        .await
        .unwrap();
    sessions::heartbeat_pod(&pool, "gw-1", None).await.unwrap();
    assert_eq!(
        addr("gw-0").await.unwrap().as_deref(),
        Some("10.0.0.1:8080")
    );
    assert_eq!(addr("gw-1").await.unwrap(), None);
    // A restarted pod with another address (or none) is current after one beat.
    sessions::heartbeat_pod(&pool, "gw-0", Some("10.0.0.9:8080"))
        .await
        .unwrap();
    assert_eq!(
        addr("gw-0").await.unwrap().as_deref(),
        Some("10.0.0.9:8080")
    );
    sessions::heartbeat_pod(&pool, "gw-0", None).await.unwrap();
    assert_eq!(addr("gw-0").await.unwrap(), None);
}

#[tokio::test]
async fn bound_pods_lists_live_pods_with_bound_slots_per_vendor() {
    use smpp_db::sessions::{self, BoundPod, SLOT_TTL};
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let mut ids = Vec::new();
    for name in ["ns.a", "ns.b", "ns.c"] {
        let mut c = ProviderConfig::example();
        c.max_binds = 4;
        let out = providers::upsert_owned(&pool, name, &owner(name, 1), &c)
            .await
            .unwrap();
        let UpsertOutcome::Created(row) = out else {
            panic!("{out:?}")
        };
        ids.push(row.id);
    }
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    sessions::heartbeat_pod(&pool, "gw-0", Some("10.0.0.1:8080"))
        .await
        .unwrap();
    sessions::heartbeat_pod(&pool, "gw-1", None).await.unwrap();
    sessions::heartbeat_pod(&pool, "gw-dead", Some("10.0.0.3:8080"))
        .await
        .unwrap();
    sessions::heartbeat_pod(&pool, "gw-stale-slot", Some("10.0.0.4:8080"))
        .await
        .unwrap();
    // gw-dead's pod heartbeat is old (its slot rows look fresh: the pod row decides too).
    pool.execute(
        "UPDATE vendor_mgmt.gateway_pods SET heartbeat = now() - interval '10 min' \
         WHERE pod = 'gw-dead'",
    )
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO vendor_mgmt.vendor_sessions (vendor_id, slot, pod, state, heartbeat) VALUES
         ($1, 0, 'gw-0', 'bound', now()),
         ($1, 1, 'gw-0', 'bound', now()),
         ($1, 2, 'gw-1', 'bound', now()),
         ($1, 3, 'gw-1', 'backoff', now()),
         ($2, 0, 'gw-0', 'connecting', now()),
         ($2, 1, 'gw-1', 'bound', now()),
         ($2, 2, 'gw-dead', 'bound', now()),
         ($3, 0, 'gw-stale-slot', 'bound', now() - interval '10 min'),
         ($3, 1, 'gw-unknown', 'bound', now())",
    )
    .bind(a)
    .bind(b)
    .bind(c)
    .execute(&pool)
    .await
    .unwrap();
    let got = sessions::bound_pods(&pool, SLOT_TTL).await.unwrap();
    let mut want = vec![
        BoundPod {
            vendor_id: a,
            pod: "gw-0".into(),
            advertise_addr: Some("10.0.0.1:8080".into()),
            binds: 2,
        },
        BoundPod {
            vendor_id: a,
            pod: "gw-1".into(),
            advertise_addr: None,
            binds: 1,
        },
        BoundPod {
            vendor_id: b,
            pod: "gw-1".into(),
            advertise_addr: None,
            binds: 1,
        },
    ];
    want.sort_by(|x, y| (x.vendor_id, &x.pod).cmp(&(y.vendor_id, &y.pod)));
    assert_eq!(got, want);
    // Vendor c: a stale slot and a slot whose pod has no gateway_pods row: nobody to forward to.
    assert!(got.iter().all(|p| p.vendor_id != c));
    // What one pod can forward to: the others, and only those with an address.
    assert_eq!(
        sessions::forward_targets(&pool, "gw-1", SLOT_TTL)
            .await
            .unwrap(),
        want.iter()
            .filter(|p| p.pod == "gw-0")
            .cloned()
            .collect::<Vec<_>>()
    );
    assert!(
        sessions::forward_targets(&pool, "gw-0", SLOT_TTL)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The row, changed fields and drift flag of an upsert that must have updated.
fn updated(out: UpsertOutcome) -> (ServiceProvider, Vec<&'static str>, bool) {
    match out {
        UpsertOutcome::Updated {
            row,
            changed,
            drift,
        } => (row, changed, drift),
        other => panic!("expected an update, got {other:?}"),
    }
}

fn account_config(system_id: &str, max_binds: i32) -> smpp_db::accounts::AccountConfig {
    smpp_db::accounts::AccountConfig {
        system_id: system_id.into(),
        password_hash: smpp_db::accounts::hash_password(&Secret::new("pw")).unwrap(),
        allowed_cidrs: vec!["127.0.0.0/8".into()],
        max_binds,
        max_messages_per_second: Some(100),
        allowed_senders: vec![],
        allowed_destination_prefixes: vec!["46".into()],
        route: sqlx::types::Json(vec![smpp_db::accounts::RouteEntry {
            vendor: "messaging.sinch".into(),
            priority: 10,
        }]),
        forward_receipts: true,
        suspended: false,
    }
}

#[tokio::test]
async fn account_upsert_creates_updates_and_refuses_another_owners_row() {
    use smpp_db::accounts::{self, AccountUpsert};
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let cfg = account_config("acme", 2);
    let AccountUpsert::Created(row) = accounts::upsert_owned(&pool, &owner("a1", 1), &cfg)
        .await
        .unwrap()
    else {
        panic!("first write creates")
    };
    assert_eq!(row.config, cfg);
    assert_eq!(row.config_version, 1);
    let again = accounts::upsert_owned(&pool, &owner("a1", 1), &cfg)
        .await
        .unwrap();
    assert!(matches!(again, AccountUpsert::Unchanged(_)), "{again:?}");
    let mut changed = cfg.clone();
    changed.max_binds = 3;
    let AccountUpsert::Updated(row) = accounts::upsert_owned(&pool, &owner("a1", 2), &changed)
        .await
        .unwrap()
    else {
        panic!("a change updates")
    };
    assert_eq!(row.config.max_binds, 3);
    assert_eq!(row.config_version, 2, "the trigger bumps config_version");
    let other = accounts::upsert_owned(&pool, &owner("b2", 1), &cfg)
        .await
        .unwrap();
    match other {
        AccountUpsert::OwnedByOther { owner, .. } => assert_eq!(owner.uid, "a1"),
        o => panic!("another resource with the same systemId must not take the row: {o:?}"),
    }
    assert_eq!(
        accounts::get_by_system_id(&pool, "acme")
            .await
            .unwrap()
            .unwrap()
            .config
            .max_binds,
        3
    );
    assert!(accounts::delete_owned(&pool, "a1").await.unwrap());
    assert!(accounts::list_all(&pool).await.unwrap().is_empty());
}

#[tokio::test]
async fn account_renamed_by_its_owner_drops_the_old_system_id_only() {
    use smpp_db::accounts;
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    for (sid, uid) in [("old", "a1"), ("new", "a1"), ("theirs", "b2")] {
        accounts::upsert_owned(&pool, &owner(uid, 1), &account_config(sid, 1))
            .await
            .unwrap();
    }
    assert_eq!(
        accounts::delete_owned_except(&pool, "a1", "new")
            .await
            .unwrap(),
        1
    );
    let left: Vec<String> = accounts::list_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.config.system_id)
        .collect();
    assert_eq!(left, ["new", "theirs"]);
    assert_eq!(
        accounts::delete_owned_except(&pool, "a1", "new")
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn account_transfer_is_compare_and_set_on_the_owner() {
    use smpp_db::accounts::{self, AccountUpsert};
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let cfg = account_config("acme", 2);
    let AccountUpsert::Created(row) = accounts::upsert_owned(&pool, &owner("a1", 1), &cfg)
        .await
        .unwrap()
    else {
        panic!("first write creates")
    };
    // Not a1's any more by the time b2 asks: nothing moves.
    assert_eq!(
        accounts::transfer(&pool, "acme", "zz", &owner("b2", 4))
            .await
            .unwrap(),
        None
    );
    let moved = accounts::transfer(&pool, "acme", "a1", &owner("b2", 4))
        .await
        .unwrap()
        .expect("a1 owned it");
    assert_eq!((moved.id, moved.owner_uid.as_deref()), (row.id, Some("b2")));
    assert_eq!(moved.owner_generation, None, "the new owner's write is due");
    // The new owner's next write is an update of the same row, not Unchanged.
    let again = accounts::upsert_owned(&pool, &owner("b2", 4), &cfg)
        .await
        .unwrap();
    match again {
        AccountUpsert::Updated(r) => {
            assert_eq!((r.id, r.owner_generation), (row.id, Some(4)))
        }
        o => panic!("expected an update: {o:?}"),
    }
}

#[tokio::test]
async fn account_slots_hold_max_binds_across_pods_and_free_with_a_dead_pod() {
    use smpp_db::accounts::{self, AccountUpsert, CustomerBindType::*};
    use smpp_db::sessions;
    let ttl = std::time::Duration::from_secs(15);
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let AccountUpsert::Created(acc) =
        accounts::upsert_owned(&pool, &owner("a1", 1), &account_config("acme", 3))
            .await
            .unwrap()
    else {
        panic!()
    };
    for pod in ["p1", "p2", "p3"] {
        sessions::heartbeat_pod(&pool, pod, None).await.unwrap();
    }
    // Twelve binds race from three pods for three slots: exactly three win.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let pool = pool.clone();
            let pod = ["p1", "p2", "p3"][i % 3];
            tokio::spawn(async move {
                accounts::claim_slot(&pool, acc.id, 3, pod, Transceiver, "127.0.0.1:1", ttl).await
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        if let Some(slot) = t.await.unwrap().unwrap() {
            won.push(slot);
        }
    }
    won.sort();
    assert_eq!(won, [0, 1, 2]);
    assert_eq!(accounts::live_binds(&pool, acc.id, ttl).await.unwrap(), 3);
    // p2 dies (its heartbeat goes stale): its slots are free for the others.
    sqlx::query("UPDATE vendor_mgmt.gateway_pods SET heartbeat = now() - interval '1 minute' WHERE pod = 'p2'")
        .execute(&pool)
        .await
        .unwrap();
    let held_by_p2 = accounts::binds(&pool, acc.id, std::time::Duration::from_secs(3600))
        .await
        .unwrap()
        .iter()
        .filter(|b| b.pod == "p2")
        .count() as i64;
    assert_eq!(
        accounts::live_binds(&pool, acc.id, ttl).await.unwrap(),
        3 - held_by_p2
    );
    let mut taken = 0;
    while accounts::claim_slot(&pool, acc.id, 3, "p1", Receiver, "127.0.0.1:2", ttl)
        .await
        .unwrap()
        .is_some()
    {
        taken += 1;
        assert!(taken <= 3, "claims beyond max_binds");
    }
    assert_eq!(taken, held_by_p2);
    // TRX and RX binds both receive; the dead p2 is no longer among them.
    let mut live_pods: Vec<String> = accounts::binds(&pool, acc.id, ttl)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.pod)
        .collect();
    live_pods.dedup();
    live_pods.sort();
    live_pods.dedup();
    assert!(!live_pods.contains(&"p2".to_string()));
    assert_eq!(
        accounts::receiving_pods(&pool, acc.id, ttl).await.unwrap(),
        live_pods
    );
    // A release frees exactly that slot; a removed pod's binds go with it.
    let p1_slot = accounts::binds(&pool, acc.id, ttl).await.unwrap()[0].clone();
    accounts::release_slot(&pool, acc.id, p1_slot.slot, &p1_slot.pod)
        .await
        .unwrap();
    assert_eq!(accounts::live_binds(&pool, acc.id, ttl).await.unwrap(), 2);
    sessions::remove_pod(&pool, "p1").await.unwrap();
    sessions::remove_pod(&pool, "p3").await.unwrap();
    assert_eq!(accounts::live_binds(&pool, acc.id, ttl).await.unwrap(), 0);
}

#[tokio::test]
async fn account_slots_held_by_a_pod_lose_those_taken_over_or_deleted() {
    use smpp_db::accounts::{self, AccountUpsert, CustomerBindType::*};
    use smpp_db::sessions;
    let ttl = std::time::Duration::from_secs(15);
    let (pool, _) = fresh_db().await;
    migrate(&pool).await.unwrap();
    let mut ids = Vec::new();
    for (sid, uid) in [("acme", "a1"), ("beta", "b2")] {
        let AccountUpsert::Created(acc) =
            accounts::upsert_owned(&pool, &owner(uid, 1), &account_config(sid, 2))
                .await
                .unwrap()
        else {
            panic!()
        };
        ids.push(acc.id);
    }
    let (acme, beta) = (ids[0], ids[1]);
    for pod in ["p1", "p2"] {
        sessions::heartbeat_pod(&pool, pod, None).await.unwrap();
    }
    let claim = |account, pod: &'static str| {
        let pool = pool.clone();
        async move {
            accounts::claim_slot(&pool, account, 1, pod, Transceiver, "127.0.0.1:1", ttl)
                .await
                .unwrap()
        }
    };
    assert_eq!(claim(acme, "p1").await, Some(0));
    assert_eq!(claim(beta, "p1").await, Some(0));
    let mut want = vec![(acme, 0), (beta, 0)];
    want.sort();
    assert_eq!(
        accounts::slots_held_by_pod(&pool, "p1").await.unwrap(),
        want
    );
    assert!(
        accounts::slots_held_by_pod(&pool, "p2")
            .await
            .unwrap()
            .is_empty()
    );
    // p1 is frozen past the TTL: p2 takes acme's slot over (the row now names p2).
    sqlx::query(
        "UPDATE vendor_mgmt.gateway_pods SET heartbeat = now() - interval '1 minute' WHERE pod = 'p1'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(claim(acme, "p2").await, Some(0));
    // p1 wakes up and beats: its list no longer has acme's slot, whatever its heartbeat.
    sessions::heartbeat_pod(&pool, "p1", None).await.unwrap();
    assert_eq!(
        accounts::slots_held_by_pod(&pool, "p1").await.unwrap(),
        [(beta, 0)]
    );
    assert_eq!(
        accounts::slots_held_by_pod(&pool, "p2").await.unwrap(),
        [(acme, 0)]
    );
    // A row deleted by hand is gone from its pod's list too.
    sqlx::query("DELETE FROM vendor_mgmt.account_sessions WHERE account_id = $1")
        .bind(beta)
        .execute(&pool)
        .await
        .unwrap();
    assert!(
        accounts::slots_held_by_pod(&pool, "p1")
            .await
            .unwrap()
            .is_empty()
    );
}
