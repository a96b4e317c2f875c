//! SmppVendor TLS Secrets holding unusable PEM, on the real kube-apiserver and PostgreSQL with
//! the operator binary: `kubectl get smppvendors` says which Secret and key is wrong
//! (InvalidCACertificate / InvalidClientCertificate), no row is written for it, a vendor
//! already running keeps its last good row, and fixing the Secret heals it through the watch.
//!
//! Prerequisites: `make env-up` (target/env.sh) and `cargo build --workspace --bins`.

use serde_json::Value;
use smpp_db::providers::{ServiceProvider, get_by_instance_name};
use smpp_e2e::env::Env;
use smpp_e2e::operator::{OperatorCmd, apply, namespace_with_crd, run};
use smpp_e2e::process::{ChildGuard, repo_root};
use smpp_e2e::wait::until;
use sqlx::PgPool;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const PASSWORD: &str = "tlsPw123";
/// A PEM CERTIFICATE block with valid base64 ("garbage-not-a-cert") that is no certificate.
const NOT_A_CERT: &str =
    "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZS1ub3QtYS1jZXJ0\n-----END CERTIFICATE-----\n";

/// The operator's unit-test PKI: a CA, a client certificate it signed, its key, and an
/// unrelated key.
fn pki(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("operator/src/testdata").join(file)).unwrap()
}

/// A namespace, a fresh database and an operator watching only that namespace.
struct Op {
    env: Env,
    ns: String,
    pool: PgPool,
    cmd: OperatorCmd,
    _operator: ChildGuard,
}

impl Op {
    async fn start(tag: &str) -> Op {
        let env = Env::load().expect("environment (make env-up)");
        let suffix = format!("{:08x}", rand::random::<u32>());
        let db = env
            .fresh_db(&format!("op_{tag}_{suffix}"))
            .await
            .expect("a database of the test's own");
        let (db_url, pool) = (db.url, db.pool);

        let ns = format!("op-{tag}-{suffix}");
        namespace_with_crd(&env, &ns).await.unwrap();
        let mut cmd = OperatorCmd::new(&env, &db_url, &ns).unwrap();
        // A minute: whatever heals sooner was driven by the Secret watch.
        cmd.resync_seconds = 60;
        let operator = cmd.spawn().unwrap();
        let port = cmd.http_port;
        let op = Op {
            env,
            ns,
            pool,
            cmd,
            _operator: operator,
        };
        let url = format!("http://127.0.0.1:{port}/ready");
        until("operator /ready", T, || async {
            Ok(
                run(Command::new("curl").args(["-fsS", "--max-time", "2", &url]))
                    .ok()
                    .map(|_| ()),
            )
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", op.log_text()));
        op
    }

    fn log_text(&self) -> String {
        self.cmd.log_text()
    }

    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(run(self.env.kubectl().arg("-n").arg(&self.ns).args(args))?)
    }

    fn apply(&self, yaml: &str) {
        let (ok, out) = apply(&self.env, &self.ns, yaml).unwrap();
        assert!(ok, "kubectl apply: {out}");
    }

    /// A Secret with `type` and `data` (key → text), as JSON so PEM needs no YAML quoting.
    fn secret(&self, name: &str, type_: &str, data: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": name}, "stringData": data,
        });
        self.apply(&doc.to_string());
    }

    /// Waits until condition `type_` of `name` has `status` and `reason`; returns it.
    async fn wait_condition(&self, name: &str, type_: &str, status: &str, reason: &str) -> Value {
        until(&format!("{name} {type_}={status} {reason}"), T, || async {
            let v: Value =
                serde_json::from_str(&self.kubectl(&["get", "smppvendor", name, "-o", "json"])?)?;
            let c = v["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned());
            match c {
                Some(c) if c["status"] == status && c["reason"] == reason => Ok(Some(c)),
                other => Err(anyhow::anyhow!("condition now: {other:?}")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", self.log_text()))
    }

    async fn row(&self, instance_name: &str) -> Option<ServiceProvider> {
        get_by_instance_name(&self.pool, instance_name)
            .await
            .unwrap()
    }

    async fn wait_row(
        &self,
        instance_name: &str,
        what: &str,
        pred: impl Fn(&ServiceProvider) -> bool,
    ) -> ServiceProvider {
        until(what, T, || async {
            Ok(get_by_instance_name(&self.pool, instance_name)
                .await?
                .filter(|r| pred(r)))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", self.log_text()))
    }

    /// Waits for an Event with `reason`; returns its message.
    async fn wait_event(&self, reason: &str) -> String {
        until(&format!("Event {reason}"), T, || async {
            let ev: Value = serde_json::from_str(&self.kubectl(&["get", "events", "-o", "json"])?)?;
            let found = ev["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["reason"] == reason && e["type"] == "Warning");
            Ok(found.map(|e| {
                e["note"]
                    .as_str()
                    .or(e["message"].as_str())
                    .unwrap_or("")
                    .to_string()
            }))
        })
        .await
        .unwrap()
    }
}

fn vendor_yaml(name: &str, tls: &str) -> String {
    format!(
        "apiVersion: smpp.io/v1alpha1
kind: SmppVendor
metadata: {{name: {name}}}
spec:
  host: {name}.example.net
  port: 3601
  tls: {tls}
  bind:
    systemId: sys-{name}
    passwordSecretRef: {{name: {name}-smpp}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_ca_and_client_cert_are_named_in_kubectl_and_heal_on_fix() {
    let op = Op::start("tlssec").await;
    let instance = format!("{}.tlsv", op.ns);
    let (ca, client_crt, client_key, other_key) = (
        pki("ca.crt"),
        pki("client.crt"),
        pki("client.key"),
        pki("other.key"),
    );
    op.secret("tlsv-smpp", "Opaque", &[("password", PASSWORD)]);
    op.secret("vendor-ca", "Opaque", &[("ca.crt", NOT_A_CERT)]);
    op.apply(&vendor_yaml(
        "tlsv",
        "{enabled: true, caSecretRef: {name: vendor-ca, key: ca.crt}}",
    ));

    // A CA that is no certificate: named in the conditions, the REASON column and an Event.
    let c = op
        .wait_condition(
            "tlsv",
            "CredentialsResolved",
            "False",
            "InvalidCACertificate",
        )
        .await;
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("Secret {}/vendor-ca key \"ca.crt\"", op.ns))
            && msg.contains("not a valid X.509 certificate"),
        "{msg}"
    );
    assert!(!msg.contains("Z2FyYmFnZS"), "Secret content in the message");
    op.wait_condition("tlsv", "Ready", "False", "InvalidCACertificate")
        .await;
    let table = op.kubectl(&["get", "smppvendors", "tlsv"]).unwrap();
    assert!(
        table.lines().next().unwrap_or("").contains("REASON")
            && table.contains("InvalidCACertificate"),
        "{table}"
    );
    op.wait_event("InvalidCACertificate").await;
    assert!(
        op.row(&instance).await.is_none(),
        "a row was written with an unusable CA"
    );

    // The right CA: healed by the Secret watch (the resync is a minute away).
    op.secret("vendor-ca", "Opaque", &[("ca.crt", &ca)]);
    op.wait_condition("tlsv", "CredentialsResolved", "True", "Resolved")
        .await;
    let good = op
        .wait_row(&instance, "row with the CA", |r| {
            r.config.tls_ca_pem.as_deref() == Some(ca.as_str())
        })
        .await;

    // A client certificate whose key belongs to another certificate: named, and the last
    // good row stays as it was.
    op.secret(
        "vendor-client",
        "kubernetes.io/tls",
        &[("tls.crt", &client_crt), ("tls.key", &other_key)],
    );
    op.apply(&vendor_yaml(
        "tlsv",
        "{enabled: true, caSecretRef: {name: vendor-ca, key: ca.crt}, clientCertSecretRef: {name: vendor-client}}",
    ));
    let c = op
        .wait_condition(
            "tlsv",
            "CredentialsResolved",
            "False",
            "InvalidClientCertificate",
        )
        .await;
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("Secret {}/vendor-client key \"tls.key\"", op.ns))
            && msg.contains("does not belong to the certificate"),
        "{msg}"
    );
    op.wait_condition("tlsv", "Ready", "False", "InvalidClientCertificate")
        .await;
    op.wait_event("InvalidClientCertificate").await;
    let kept = op.row(&instance).await.expect("the last good row");
    assert_eq!(kept.config_version, good.config_version);
    assert!(kept.config.tls_client_cert_pem.is_none());

    // The matching key: healed, the row carries the pair.
    op.secret(
        "vendor-client",
        "kubernetes.io/tls",
        &[("tls.crt", &client_crt), ("tls.key", &client_key)],
    );
    op.wait_condition("tlsv", "CredentialsResolved", "True", "Resolved")
        .await;
    op.wait_row(&instance, "row with the client certificate", |r| {
        r.config.tls_client_cert_pem.as_deref() == Some(client_crt.as_str())
            && r.config.tls_client_key_pem.as_ref().map(|k| k.expose()) == Some(client_key.as_str())
    })
    .await;

    // No key material or password anywhere a person or a log shipper reads.
    let key_lines = |pem: &str| pem.lines().nth(1).unwrap_or_default().to_string();
    let secrets = [
        PASSWORD.to_string(),
        key_lines(&client_key),
        key_lines(&other_key),
    ];
    for (what, text) in [
        ("operator log", op.log_text()),
        (
            "SmppVendors",
            op.kubectl(&["get", "smppvendors", "-o", "yaml"]).unwrap(),
        ),
        (
            "Events",
            op.kubectl(&["get", "events", "-o", "yaml"]).unwrap(),
        ),
    ] {
        for s in &secrets {
            assert!(
                !s.is_empty() && !text.contains(s.as_str()),
                "{what} leaks Secret content"
            );
        }
    }
}
