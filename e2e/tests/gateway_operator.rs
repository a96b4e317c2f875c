//! The whole control loop: kubectl applies an SmppVendor → smpp-operator writes the row →
//! smpp-gateway binds over TLS to a private simulator and reports the slot → the operator
//! shows BOUND 1/1 and READY True in `kubectl get smppvendors`. Then it breaks it (wrong
//! password in the Secret, a vendor that closes right after the TLS handshake) and checks
//! the reason shown.
//!
//! Real parts: kube-apiserver + kubectl from `make env-up`, its PostgreSQL (a fresh database),
//! the operator and gateway binaries, the node simulator.
//! Run: make env-up; cargo build --bins; cargo test -p smpp-e2e --test gateway_operator

mod gateway_support;

use std::time::{Duration, Instant};

use gateway_support::{Gateway, Result, TestDb};
use smpp_e2e::env::Env;
use smpp_e2e::operator::{self, OperatorCmd, run};
use smpp_e2e::smsc::{Behaviour, Smsc, SmscConfig};
use smpp_e2e::wait;

const SYSTEM_ID: &str = "gwoperator";
const PASSWORD: &str = "Hx7pL2qe";
const WRONG: &str = "wR0ngpw1";
const T: Duration = Duration::from_secs(30);

/// `kubectl apply` that must be accepted.
fn apply(env: &Env, ns: &str, yaml: &str) -> Result<()> {
    let (ok, out) = operator::apply(env, ns, yaml)?;
    anyhow::ensure!(ok, "kubectl apply: {out}");
    Ok(())
}

/// `kubectl get smppvendors` columns of one vendor: NAME HOST PORT TLS MODE BOUND READY REASON AGE.
fn get_row(env: &Env, ns: &str, name: &str) -> Result<Vec<String>> {
    let out = run(env
        .kubectl()
        .args(["-n", ns, "get", "smppvendors", name, "--no-headers"]))?;
    Ok(out.split_whitespace().map(String::from).collect())
}

fn ready_message(env: &Env, ns: &str, name: &str) -> Result<String> {
    Ok(run(env.kubectl().args([
        "-n",
        ns,
        "get",
        "smppvendor",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].message}",
    ]))?)
}

fn vendor_yaml(name: &str, port: u16) -> String {
    format!(
        "apiVersion: smpp.io/v1alpha1
kind: SmppVendor
metadata: {{name: {name}}}
spec:
  host: 127.0.0.1
  port: {port}
  tls:
    enabled: true
    serverName: localhost
    caSecretRef: {{name: vendor-ca, key: ca.crt}}
  bind:
    mode: Transceiver
    systemId: {SYSTEM_ID}
    passwordSecretRef: {{name: {name}-smpp, key: password}}
  maxBinds: 1
  reconnect: {{initialDelaySeconds: 1, maxDelaySeconds: 2}}
"
    )
}

fn secret_yaml(name: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-smpp}}\nstringData: {{password: {password:?}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_bound_then_the_reason() -> Result {
    let env = Env::load()?;
    let smsc = Smsc::start(
        SmscConfig::new()
            .credential(SYSTEM_ID, PASSWORD)
            .tls("tls", Behaviour::default())
            .tls(
                "close-after-tls",
                Behaviour {
                    close_after_handshake: true,
                    ..Default::default()
                },
            ),
    )
    .await?;
    let db = TestDb::new().await?;
    let gw = Gateway::start(&db, "gw-operator").await?;
    db.wait_schema().await?;

    // The CRD (idempotent), a namespace of our own, and the operator watching only it.
    let ns = format!("gwop-{:08x}", rand::random::<u32>());
    operator::namespace_with_crd(&env, &ns).await?;
    let op = OperatorCmd::new(&env, &db.url, &ns)?;
    let _operator = op.spawn()?;

    run(env
        .kubectl()
        .args(["-n", &ns, "create", "secret", "generic", "vendor-ca"])
        .arg(format!("--from-file=ca.crt={}", smsc.ca_file().display())))?;
    apply(&env, &ns, &secret_yaml("sim", PASSWORD))?;
    let t0 = Instant::now();
    apply(&env, &ns, &vendor_yaml("sim", smsc.port("tls")))?;
    let row = wait::until(
        "kubectl get smppvendors: BOUND 1/1, READY True",
        T,
        || async {
            let row = get_row(&env, &ns, "sim")?;
            Ok((row.get(5).map(String::as_str) == Some("1/1")
                && row.get(6).map(String::as_str) == Some("True"))
            .then_some(row))
        },
    )
    .await?;
    let took = t0.elapsed();
    // Printed, not asserted: a speed figure is for `make bench`; T only bounds a hang.
    eprintln!("kubectl apply → BOUND 1/1 READY True shown by kubectl: {took:?}");
    assert_eq!(
        &row[1..5],
        [
            "127.0.0.1",
            &smsc.port("tls").to_string(),
            "true",
            "Transceiver"
        ]
    );
    assert_eq!(smsc.stats().await?.open_binds(SYSTEM_ID).total, 1);
    assert_eq!(
        gw.vendor(&format!("{ns}.sim"))
            .await?
            .expect("vendor on the gateway")["tls"],
        true
    );

    // Break it: a wrong password in the Secret → the reason, by name.
    apply(&env, &ns, &secret_yaml("sim", WRONG))?;
    let msg = wait::until("READY False with the bind_resp status named", T, || async {
        let row = get_row(&env, &ns, "sim")?;
        let msg = ready_message(&env, &ns, "sim")?;
        Ok((row.get(6).map(String::as_str) == Some("False")
            && row.get(7).map(String::as_str) == Some("BindFailed")
            && msg.contains("bind_esme_rinvpaswd"))
        .then_some((row, msg)))
    })
    .await?;
    eprintln!("wrong password: {:?} / {}", msg.0, msg.1);
    assert_eq!(msg.0[5], "0/1");
    assert_eq!(msg.0[7], "BindFailed", "REASON column");

    // A vendor that closes right after the TLS handshake: no more "EOF".
    apply(&env, &ns, &secret_yaml("sim", PASSWORD))?;
    apply(&env, &ns, &vendor_yaml("sim", smsc.port("close-after-tls")))?;
    let (row, msg) = wait::until("READY False with closed_before_bind_resp", T, || async {
        let row = get_row(&env, &ns, "sim")?;
        let msg = ready_message(&env, &ns, "sim")?;
        Ok((row.get(6).map(String::as_str) == Some("False")
            && row.get(7).map(String::as_str) == Some("BindFailed")
            && msg.contains("closed_before_bind_resp"))
        .then_some((row, msg)))
    })
    .await?;
    eprintln!("close after TLS: {row:?} / {msg}");
    assert!(
        msg.contains("after the TLS handshake") && msg.contains("allow-listed"),
        "{msg}"
    );
    assert!(!msg.to_lowercase().contains("eof"), "{msg}");

    let _ = run(env
        .kubectl()
        .args(["delete", "namespace", &ns, "--wait=false"]));
    gw.assert_no_secret_in_log(&[PASSWORD, WRONG]);
    op.assert_no_secret_in_log(&[PASSWORD, WRONG]);
    Ok(())
}
