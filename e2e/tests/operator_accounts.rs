//! smpp-operator's SmppAccount controller end to end: the real kube-apiserver (both CRDs
//! applied with the built kubectl), the real PostgreSQL, and the operator binary as a child
//! process, each test in its own namespace with its own database and operator
//! (operator_support).
//!
//! What a gateway does to account_sessions (a customer bind) is done here by hand with the
//! smpp-db functions the gateways use, so the operator's side is tested alone.
//! Prerequisites: `make env-up` (target/env.sh) and `cargo build --workspace --bins`.

mod operator_support;

use operator_support::{Harness, T, account_yaml, example};
use serde_json::Value;
use smpp_db::accounts::{self, Account, CustomerBindType};
use smpp_e2e::wait::until;

/// The password in examples/smppaccount-secret.yaml.
const PASSWORD: &str = "Acm3pw!x";
const ROTATED: &str = "r0tat3d!";
const OTHER: &str = "0ther!pw";
/// Nine characters: one more than SMPP 3.4 allows.
const TOO_LONG: &str = "t00l0ngpw";

impl Harness {
    async fn account(&self, system_id: &str) -> Option<Account> {
        accounts::get_by_system_id(&self.pool, system_id)
            .await
            .unwrap()
    }

    async fn wait_account<F: Fn(&Account) -> bool>(
        &self,
        system_id: &str,
        what: &str,
        pred: F,
    ) -> Account {
        until(what, T, || async {
            Ok(accounts::get_by_system_id(&self.pool, system_id)
                .await?
                .filter(|a| pred(a)))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", self.log_text()))
    }

    /// Waits until `.status.<field>` of account `name` is `want`; returns the account.
    async fn wait_account_status(&self, name: &str, field: &str, want: Value) -> Value {
        until(&format!("{name} status.{field} = {want}"), T, || async {
            let a = self.account_json(name)?;
            if a["status"][field] == want {
                Ok(Some(a))
            } else {
                Err(anyhow::anyhow!("status now: {}", a["status"]))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", self.log_text()))
    }

    /// Waits for `n` more reconcile rounds than `metrics` shows.
    async fn wait_rounds(&self, metrics: &str, n: u64) {
        let ok = |m: &str| {
            m.lines()
                .find(|l| l.starts_with("smpp_operator_reconciles_total{result=\"ok\"}"))
                .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let from = ok(metrics);
        until(&format!("{n} more reconcile rounds"), T, || async {
            Ok((ok(&self.metrics().await) >= from + n).then_some(()))
        })
        .await
        .unwrap();
    }

    /// `kubectl get <args>` as rows of cells, header first.
    fn table(&self, args: &[&str]) -> Vec<Vec<String>> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        self.kubectl(&all)
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect()
    }

    /// The type (Normal, Warning) of the Events with `reason`.
    fn event_types(&self, reason: &str) -> Vec<String> {
        let ev: Value =
            serde_json::from_str(&self.kubectl(&["get", "events", "-o", "json"]).unwrap()).unwrap();
        ev["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == reason)
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

fn matches(a: &Account, password: &str) -> bool {
    accounts::password_matches(&a.config.password_hash, password.as_bytes())
}

/// The example account, run by an operator with only crds/rbac.yaml's rights: every column
/// from the spec and a hash of the Secret's password (never the password), Ready and 0/4 in
/// `kubectl get smppaccounts`, no rehash while nothing changes, a spec change and a password
/// rotation reaching the row, and the row gone before the finalizer lets the resource go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_account_row_hash_status_rotation_and_delete() {
    let (env, suffix, db_url, pool) = Harness::fresh_db("acct-life").await;
    let h = Harness::start_as(env, "acct-life", &suffix, db_url, pool, true).await;
    h.apply_ok(&example(&h.ns, "smppaccount-secret.yaml"));
    h.apply_ok(&example(&h.ns, "smppaccount.yaml"));

    let row = h.wait_account("acme", "row of the example", |_| true).await;
    let c = &row.config;
    assert_eq!(c.allowed_cidrs, ["203.0.113.0/24", "2001:db8:5::/48"]);
    assert_eq!((c.max_binds, c.max_messages_per_second), (4, Some(100)));
    assert_eq!(c.allowed_senders, ["ACME", "12025550100"]);
    assert_eq!(c.allowed_destination_prefixes, ["1", "44"]);
    let route: Vec<(&str, i32)> = c
        .route
        .0
        .iter()
        .map(|r| (r.vendor.as_str(), r.priority))
        .collect();
    assert_eq!(
        route,
        [("messaging.sinch-atlanta", 10), ("messaging.backup", 20)]
    );
    assert!(c.forward_receipts && !c.suspended);
    assert!(
        c.password_hash.starts_with("$argon2id$"),
        "{}",
        c.password_hash
    );
    assert!(matches(&row, PASSWORD), "the hash verifies the password");
    assert!(!matches(&row, ROTATED));
    // The whole row, as PostgreSQL returns it, never holds the password.
    let text: String =
        sqlx::query_scalar("SELECT row_to_json(a)::text FROM vendor_mgmt.customer_accounts a")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    smpp_e2e::leak::assert_no_secret("the customer_accounts row", &text, &[PASSWORD]);
    let a = h.account_json("acme").unwrap();
    assert_eq!(row.owner_uid.as_deref(), a["metadata"]["uid"].as_str());
    assert_eq!(row.owner_namespace.as_deref(), Some(h.ns.as_str()));

    h.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "smppaccount/acme",
        "--timeout=30s",
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", h.log_text()));
    let a = h.account_json("acme").unwrap();
    assert_eq!(a["status"]["accountId"], row.id.to_string());
    assert_eq!(
        a["status"]["observedGeneration"],
        a["metadata"]["generation"]
    );
    assert_eq!(
        (&a["status"]["bound"], &a["status"]["boundSessions"]),
        (&Value::from("0/4"), &Value::from(0))
    );
    assert!(
        a["metadata"]["finalizers"]
            .to_string()
            .contains("smpp.io/row-cleanup")
    );
    // The printer columns, by the short name too.
    let rows = h.table(&["smppa"]);
    assert_eq!(
        rows[0],
        ["NAME", "SYSTEM-ID", "BOUND", "READY", "REASON", "AGE"]
    );
    assert_eq!(rows[1][..5], ["acme", "acme", "0/4", "True", "Ready"]);
    assert_eq!(h.table(&["smppaccounts"])[1][..5], rows[1][..5]);
    h.wait_event("Created").await;
    let note = h.wait_event("Ready").await;
    assert!(note.contains("\"acme\""), "{note}");

    // No rehash while nothing changes: the row (hash, version) stays as written.
    h.wait_rounds(&h.metrics().await, 4).await;
    let same = h.account("acme").await.unwrap();
    assert_eq!(
        (same.config_version, &same.config.password_hash),
        (row.config_version, &row.config.password_hash),
        "a resync rewrote the row"
    );

    // A spec change updates the row and keeps the hash (the password did not change).
    h.apply_ok(&example(&h.ns, "smppaccount.yaml").replace("maxBinds: 4", "maxBinds: 6"));
    let changed = h
        .wait_account("acme", "maxBinds 6", |a| a.config.max_binds == 6)
        .await;
    assert_eq!(changed.config.password_hash, row.config.password_hash);
    assert_eq!(changed.id, row.id);
    let note = h.wait_event_with("Updated", "max_binds").await;
    assert!(!note.contains("password_hash"), "{note}");
    h.wait_account_status("acme", "bound", "0/6".into()).await;

    // Rotation: a new hash, for the new password only, with no restart.
    let pid = h.operator_pid();
    h.secret("acme-smpp", ROTATED);
    let rotated = h
        .wait_account("acme", "a hash of the rotated password", |a| {
            a.config.password_hash != row.config.password_hash
        })
        .await;
    assert!(matches(&rotated, ROTATED), "the new password binds");
    assert!(!matches(&rotated, PASSWORD), "the old one no longer does");
    assert!(rotated.config_version > changed.config_version);
    assert_eq!(h.operator_pid(), pid);
    h.wait_event_with("Updated", "password_hash").await;

    let log = smpp_e2e::leak::read_log(&h.op.log);
    assert!(
        !log.contains("forbidden"),
        "the operator hit RBAC denials:\n{log}"
    );
    h.assert_no_secret_leaks_in(&["smppaccounts"], &[PASSWORD, ROTATED]);

    // Delete: the row goes, then the resource (the finalizer).
    h.kubectl(&["delete", "smppaccount", "acme", "--timeout=30s"])
        .unwrap();
    assert!(
        h.account("acme").await.is_none(),
        "row deleted before the finalizer was removed"
    );
    h.assert_no_secret_leaks_in(&["smppaccounts"], &[PASSWORD, ROTATED]);
}

/// Credentials problems, each as CredentialsResolved=False and the Ready reason with one
/// Warning Event, and none of them touching the last good row: the Secret missing (no row
/// yet), then created (Ready, Normal Event), a password too long for SMPP 3.4, a key that is
/// not in the Secret, and the Secret deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_missing_too_long_or_without_the_key_is_reported_and_the_last_hash_stays() {
    let h = Harness::start("acct-creds").await;
    h.apply_ok(&account_yaml("cust", "cust", ""));
    let c = h
        .wait_account_condition(
            "cust",
            "CredentialsResolved",
            "False",
            Some("SecretNotFound"),
        )
        .await;
    let fix = format!("kubectl -n {} create secret generic cust-smpp", h.ns);
    assert!(c["message"].as_str().unwrap().contains(&fix), "{c}");
    h.wait_account_condition("cust", "Ready", "False", Some("SecretNotFound"))
        .await;
    h.wait_warning("SecretNotFound").await;
    assert!(
        h.account("cust").await.is_none(),
        "no row without a password"
    );
    assert_eq!(
        h.table(&["smppaccounts"])[1][2..5],
        ["0/1", "False", "SecretNotFound"]
    );

    h.secret("cust-smpp", PASSWORD);
    h.wait_account_condition("cust", "Ready", "True", Some("Ready"))
        .await;
    let row = h
        .wait_account("cust", "row", |a| matches(a, PASSWORD))
        .await;
    let note = h.wait_event_with("Ready", "was SecretNotFound").await;
    assert!(note.contains("Ready again"), "{note}");

    h.secret("cust-smpp", TOO_LONG);
    let c = h
        .wait_account_condition(
            "cust",
            "CredentialsResolved",
            "False",
            Some("PasswordTooLong"),
        )
        .await;
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("at most 8 characters"),
        "{c}"
    );
    h.wait_account_condition("cust", "Ready", "False", Some("PasswordTooLong"))
        .await;
    h.wait_warning("PasswordTooLong").await;
    let kept = h.account("cust").await.unwrap();
    assert_eq!(
        (kept.config_version, &kept.config.password_hash),
        (row.config_version, &row.config.password_hash),
        "the last good hash stays"
    );

    h.kubectl(&[
        "patch",
        "smppaccount",
        "cust",
        "--type=merge",
        "-p",
        r#"{"spec":{"passwordSecretRef":{"name":"cust-smpp","key":"pw"}}}"#,
    ])
    .unwrap();
    let c = h
        .wait_account_condition("cust", "Ready", "False", Some("SecretKeyMissing"))
        .await;
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("keys present: password"),
        "{c}"
    );
    h.wait_warning("SecretKeyMissing").await;

    // The Secret watch sees a deletion too.
    h.kubectl(&["delete", "secret", "cust-smpp"]).unwrap();
    h.wait_account_condition(
        "cust",
        "CredentialsResolved",
        "False",
        Some("SecretNotFound"),
    )
    .await;
    assert!(matches(&h.account("cust").await.unwrap(), PASSWORD));
    h.assert_no_secret_leaks_in(&["smppaccounts"], &[PASSWORD, TOO_LONG]);
}

/// Two SmppAccounts with one systemId: the older owns the row, the newer reports Conflict
/// (naming the owner) and never writes it. When the older one moves to another systemId, its
/// old one is deleted and the other account takes it; deleting it removes its new row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_one_system_id_the_older_owns_it_until_it_moves() {
    let h = Harness::start("acct-conflict").await;
    h.secret("first-smpp", PASSWORD);
    h.secret("second-smpp", OTHER);
    h.apply_ok(&account_yaml("first", "shared", ""));
    let row = h
        .wait_account("shared", "first's row", |a| {
            a.owner_name.as_deref() == Some("first")
        })
        .await;
    // creationTimestamp has 1 s resolution: make sure "second" is strictly newer.
    let created: chrono::DateTime<chrono::Utc> =
        h.account_json("first").unwrap()["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    until("a second after first's creation", T, || async {
        Ok((chrono::Utc::now() > created + chrono::Duration::milliseconds(1100)).then_some(()))
    })
    .await
    .unwrap();
    h.apply_ok(&account_yaml("second", "shared", ""));

    let c = h
        .wait_account_condition("second", "Ready", "False", Some("Conflict"))
        .await;
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("older SmppAccount {}/first", h.ns)) && msg.contains("systemId"),
        "{c}"
    );
    let synced = h
        .wait_account_condition("second", "Synced", "False", Some("Conflict"))
        .await;
    assert_eq!(h.wait_warning("Conflict").await, synced["message"]);
    assert_eq!(
        h.account_json("second").unwrap()["status"]["accountId"],
        Value::Null
    );
    h.wait_rounds(&h.metrics().await, 4).await;
    let now = h.account("shared").await.unwrap();
    assert_eq!(
        now.config_version, row.config_version,
        "the loser never wrote the row"
    );
    assert!(matches(&now, PASSWORD) && !matches(&now, OTHER));
    h.wait_account_condition("first", "Ready", "True", Some("Ready"))
        .await;

    // first moves to another systemId: its old login goes, second takes it over.
    h.apply_ok(&account_yaml("first", "moved", ""));
    h.wait_account("moved", "first's new row", |a| {
        a.owner_name.as_deref() == Some("first") && matches(a, PASSWORD)
    })
    .await;
    h.wait_event("Renamed").await;
    h.wait_account("shared", "second's row", |a| {
        a.owner_name.as_deref() == Some("second") && matches(a, OTHER)
    })
    .await;
    h.wait_account_condition("second", "Ready", "True", Some("Ready"))
        .await;
    let first_row = h.account("moved").await.unwrap();
    assert_ne!(first_row.id, row.id, "a new login is a new row");

    h.kubectl(&["delete", "smppaccount", "first", "--timeout=30s"])
        .unwrap();
    assert!(h.account("moved").await.is_none());
    assert!(h.account("shared").await.is_some(), "second's row stays");
    h.assert_no_secret_leaks_in(&["smppaccounts"], &[PASSWORD, OTHER]);
}

/// What a gateway does to account_sessions when a customer binds and unbinds, done by hand:
/// status.bound, status.sessions and the BOUND column follow at once (NOTIFY; the periodic
/// refresh is ten minutes away here, so each 30 s wait can only pass through it), counting
/// binds on live pods only. Suspending is Ready=False Suspended with a Normal Event, and the
/// row says so for the gateways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_show_in_status_at_once_and_suspend_is_reported() {
    let mut h = Harness::start("acct-binds").await;
    h.restart_with_resync(600).await;
    h.secret("binds-smpp", PASSWORD);
    h.apply_ok(&account_yaml("binds", "binds", "  maxBinds: 2\n"));
    h.wait_account_condition("binds", "Ready", "True", Some("Ready"))
        .await;
    h.wait_account_status("binds", "bound", "0/2".into()).await;
    let id = h.account("binds").await.unwrap().id;

    // A pod that died holding a bind (slot 1): its heartbeat is an hour old.
    smpp_db::sessions::heartbeat_pod(&h.pool, "gw-dead", None)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE vendor_mgmt.gateway_pods SET heartbeat = now() - interval '1 hour' WHERE pod = 'gw-dead'",
    )
    .execute(&h.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO vendor_mgmt.account_sessions (account_id, slot, pod, bind_type, remote_addr) \
         VALUES ($1, 1, 'gw-dead', 'TRX', '198.51.100.9:1000')",
    )
    .bind(id)
    .execute(&h.pool)
    .await
    .unwrap();
    // A live pod's customer bind, claimed as the gateway claims it.
    smpp_db::sessions::heartbeat_pod(&h.pool, "gw-live", None)
        .await
        .unwrap();
    let ttl = smpp_db::sessions::SLOT_TTL;
    let slot = accounts::claim_slot(
        &h.pool,
        id,
        2,
        "gw-live",
        CustomerBindType::Receiver,
        "203.0.113.7:40001",
        ttl,
    )
    .await
    .unwrap()
    .expect("a free slot");
    assert_eq!(slot, 0);
    let a = h.wait_account_status("binds", "bound", "1/2".into()).await;
    assert_eq!(a["status"]["boundSessions"], 1);
    let sessions = a["status"]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "the dead pod's bind is not counted: {a}");
    assert_eq!(sessions[0]["pod"], "gw-live");
    assert_eq!(sessions[0]["bindType"], "RX");
    assert_eq!(sessions[0]["remoteAddr"], "203.0.113.7:40001");
    assert!(
        sessions[0]["since"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    assert_eq!(
        h.table(&["smppaccounts"])[1][..5],
        ["binds", "binds", "1/2", "True", "Ready"]
    );

    // The customer unbinds.
    accounts::release_slot(&h.pool, id, slot, "gw-live")
        .await
        .unwrap();
    let a = h.wait_account_status("binds", "bound", "0/2".into()).await;
    assert_eq!(a["status"]["sessions"], Value::Array(vec![]));

    // Suspend: the row tells the gateways, Ready says why, a Normal Event (it was asked for).
    h.kubectl(&[
        "patch",
        "smppaccount",
        "binds",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ])
    .unwrap();
    h.wait_account("binds", "suspended row", |a| a.config.suspended)
        .await;
    h.wait_account_condition("binds", "Ready", "False", Some("Suspended"))
        .await;
    h.wait_event("Suspended").await;
    assert_eq!(h.event_types("Suspended"), ["Normal"]);
    assert_eq!(
        h.table(&["smppaccounts"])[1][2..5],
        ["0/2", "False", "Suspended"]
    );
    h.kubectl(&[
        "patch",
        "smppaccount",
        "binds",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ])
    .unwrap();
    h.wait_account("binds", "resumed row", |a| !a.config.suspended)
        .await;
    h.wait_account_condition("binds", "Ready", "True", Some("Ready"))
        .await;
    h.wait_event_with("Ready", "was Suspended").await;
    h.assert_no_secret_leaks_in(&["smppaccounts"], &[PASSWORD]);
}
