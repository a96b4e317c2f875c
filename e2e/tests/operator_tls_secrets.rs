//! SmppVendor TLS Secrets holding unusable PEM, on the real kube-apiserver and PostgreSQL with
//! the operator binary: `kubectl get smppvendors` says which Secret and key is wrong
//! (InvalidCACertificate / InvalidClientCertificate), no row is written for it, a vendor
//! already running keeps its last good row, and fixing the Secret heals it through the watch.
//!
//! Prerequisites: `make env-up` (target/env.sh) and `cargo build --workspace --bins`.

mod operator_support;

use operator_support::{Harness, vendor_yaml};
use smpp_e2e::process::repo_root;

const PASSWORD: &str = "tlsPw123";
/// A PEM CERTIFICATE block with valid base64 ("garbage-not-a-cert") that is no certificate.
const NOT_A_CERT: &str =
    "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZS1ub3QtYS1jZXJ0\n-----END CERTIFICATE-----\n";

/// The operator's unit-test PKI: a CA, a client certificate it signed, its key, and an
/// unrelated key.
fn pki(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("operator/src/testdata").join(file)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_ca_and_client_cert_are_named_in_kubectl_and_heal_on_fix() {
    let mut op = Harness::start("tlssec").await;
    // A minute: whatever heals sooner was driven by the Secret watch.
    op.restart_with_resync(60).await;
    let instance = format!("{}.tlsv", op.ns);
    let (ca, client_crt, client_key, other_key) = (
        pki("ca.crt"),
        pki("client.crt"),
        pki("client.key"),
        pki("other.key"),
    );
    op.secret_data("tlsv-smpp", "Opaque", &[("password", PASSWORD)]);
    op.secret_data("vendor-ca", "Opaque", &[("ca.crt", NOT_A_CERT)]);
    op.apply_ok(&vendor_yaml(
        "tlsv",
        "  tls: {enabled: true, caSecretRef: {name: vendor-ca, key: ca.crt}}\n",
    ));

    // A CA that is no certificate: named in the conditions, the REASON column and an Event.
    let c = op
        .wait_condition(
            "tlsv",
            "CredentialsResolved",
            "False",
            Some("InvalidCACertificate"),
        )
        .await;
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("Secret {}/vendor-ca key \"ca.crt\"", op.ns))
            && msg.contains("not a valid X.509 certificate"),
        "{msg}"
    );
    assert!(!msg.contains("Z2FyYmFnZS"), "Secret content in the message");
    op.wait_condition("tlsv", "Ready", "False", Some("InvalidCACertificate"))
        .await;
    let table = op.kubectl(&["get", "smppvendors", "tlsv"]).unwrap();
    assert!(
        table.lines().next().unwrap_or("").contains("REASON")
            && table.contains("InvalidCACertificate"),
        "{table}"
    );
    op.wait_warning("InvalidCACertificate").await;
    assert!(
        op.row(&instance).await.is_none(),
        "a row was written with an unusable CA"
    );

    // The right CA: healed by the Secret watch (the resync is a minute away).
    op.secret_data("vendor-ca", "Opaque", &[("ca.crt", &ca)]);
    op.wait_condition("tlsv", "CredentialsResolved", "True", Some("Resolved"))
        .await;
    let good = op
        .wait_row(&instance, "row with the CA", |r| {
            r.config.tls_ca_pem.as_deref() == Some(ca.as_str())
        })
        .await;

    // A client certificate whose key belongs to another certificate: named, and the last
    // good row stays as it was.
    op.secret_data(
        "vendor-client",
        "kubernetes.io/tls",
        &[("tls.crt", &client_crt), ("tls.key", &other_key)],
    );
    op.apply_ok(&vendor_yaml("tlsv", "  tls: {enabled: true, caSecretRef: {name: vendor-ca, key: ca.crt}, clientCertSecretRef: {name: vendor-client}}\n"));
    let c = op
        .wait_condition(
            "tlsv",
            "CredentialsResolved",
            "False",
            Some("InvalidClientCertificate"),
        )
        .await;
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("Secret {}/vendor-client key \"tls.key\"", op.ns))
            && msg.contains("does not belong to the certificate"),
        "{msg}"
    );
    op.wait_condition("tlsv", "Ready", "False", Some("InvalidClientCertificate"))
        .await;
    op.wait_warning("InvalidClientCertificate").await;
    let kept = op.row(&instance).await.expect("the last good row");
    assert_eq!(kept.config_version, good.config_version);
    assert!(kept.config.tls_client_cert_pem.is_none());

    // The matching key: healed, the row carries the pair.
    op.secret_data(
        "vendor-client",
        "kubernetes.io/tls",
        &[("tls.crt", &client_crt), ("tls.key", &client_key)],
    );
    op.wait_condition("tlsv", "CredentialsResolved", "True", Some("Resolved"))
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
    assert!(secrets.iter().all(|s| !s.is_empty()), "empty key line");
    op.assert_no_secret_leaks(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
}
