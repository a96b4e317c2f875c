//! The customer-facing SMPP server of real smpp-gateway processes: customers bind with the
//! shared Rust ESME (smpp_e2e::esme), Python smpplib and the node `smpp` client; the vendor is
//! the environment's node SMSC simulator; accounts are customer_accounts rows written with
//! smpp_db::accounts::upsert_owned (the SmppAccount operator path is tested in
//! operator_accounts.rs); PostgreSQL and Redis are the environment's. Receipts back to
//! customers are in smpp_receipts.rs.
//!
//! Run: make env-up; cargo build --bins; cargo test -p smpp-e2e --test smpp_server

mod gateway_support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gateway_support::{
    Result, SmppGateway, TestDb, customer_account, customer_config, messaging_env, metric, send,
};
use rusmpp::values::InterfaceVersion;
use rusmpp::{CommandId, CommandStatus, Pdu};
use smpp_db::accounts::{AccountConfig, RouteEntry};
use smpp_db::providers::Owner;
use smpp_e2e::env::Env;
use smpp_e2e::esme::{Esme, Read, Submit};
use smpp_e2e::process::repo_root;
use smpp_e2e::smsc::{BindType, client_tls_config};
use smpp_e2e::wait;

/// Customer passwords (SMPP allows 8 characters): distinctive, to search the logs for.
const PASSWORD: &str = "Cu5tPw9k";
const OTHER_PASSWORD: &str = "Zq7mWx2e";
/// Bounds a hang, not a latency.
const SETTLE: Duration = Duration::from_secs(30);
const VENDOR: &str = "envsmsc";

fn config(system_id: &str, f: impl FnOnce(&mut AccountConfig)) -> AccountConfig {
    customer_config(system_id, PASSWORD, f)
}

/// The environment's simulator as the vendor of `db`, bound once on each of `gws`.
async fn vendor(db: &TestDb, gws: &[&SmppGateway]) -> Result<()> {
    let env = Env::load()?;
    let binds = gws.len().to_string();
    db.insert_legacy(
        VENDOR,
        env.smsc.port,
        &env.smsc.system_id,
        &env.smsc.password,
        &[("max_binds", &binds)],
    )
    .await?;
    for g in gws {
        g.gw.wait_bound(VENDOR, 1, SETTLE).await?;
    }
    Ok(())
}

async fn esme(port: u16) -> Result<Esme> {
    Ok(Esme::plain(port).await?.with_timeout(SETTLE))
}

/// Binds `system_id` on `port` once the account has reached that gateway.
async fn bind_when_known(port: u16, kind: BindType, system_id: &str) -> Result<Esme> {
    wait::until(&format!("{system_id} binds on {port}"), SETTLE, || async {
        let mut e = esme(port).await?;
        let s = e
            .bind_status(kind, system_id, PASSWORD, InterfaceVersion::Smpp3_4)
            .await?;
        Ok((s == CommandStatus::EsmeRok).then_some(e))
    })
    .await
}

async fn bind_status(port: u16, kind: BindType, id: &str, pw: &str) -> Result<CommandStatus> {
    Ok(esme(port)
        .await?
        .bind_status(kind, id, pw, InterfaceVersion::Smpp3_4)
        .await?)
}

/// Reads until the server closes the connection (answering an unbind on the way).
async fn closed(e: &mut Esme) -> bool {
    loop {
        match e.read(SETTLE).await {
            Read::Closed => return true,
            Read::Silent => return false,
            Read::Pdu(c) if c.id() == CommandId::Unbind => {
                let _ = e.respond(&c, CommandStatus::EsmeRok, Pdu::UnbindResp).await;
            }
            Read::Pdu(_) => {}
        }
    }
}

async fn live_binds(db: &TestDb, account: uuid::Uuid) -> Result<i64> {
    Ok(smpp_db::accounts::live_binds(&db.pool, account, smpp_db::sessions::SLOT_TTL).await?)
}

async fn metrics(g: &SmppGateway) -> Result<String> {
    g.gw.metrics().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_good_bad_password_wrong_source_and_too_many_across_two_gateways() -> Result {
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let a = SmppGateway::start(&db, &m, "gw-smpp-bind-a", &[]).await?;
    let b = SmppGateway::start(&db, &m, "gw-smpp-bind-b", &[]).await?;
    let acme = customer_account(&db, &config("acme", |c| c.max_binds = 2)).await?;
    // Only 127.0.0.2 may bind as "local2"; and "office" only from 10.0.0.0/8.
    customer_account(
        &db,
        &config("local2", |c| c.allowed_cidrs = vec!["127.0.0.2/32".into()]),
    )
    .await?;
    customer_account(
        &db,
        &config("office", |c| c.allowed_cidrs = vec!["10.0.0.0/8".into()]),
    )
    .await?;

    // The rows reach both gateways through NOTIFY: poll until the good bind works.
    let mut first = bind_when_known(a.smpp, BindType::Transceiver, "acme").await?;
    first.enquire_link().await?;

    assert_eq!(
        bind_status(a.smpp, BindType::Transceiver, "acme", OTHER_PASSWORD).await?,
        CommandStatus::EsmeRinvpaswd
    );
    assert_eq!(
        bind_status(a.smpp, BindType::Transceiver, "nobody", PASSWORD).await?,
        CommandStatus::EsmeRinvsysid
    );
    // Wrong source address: refused like an unknown system_id, though the password is right.
    assert_eq!(
        bind_status(b.smpp, BindType::Transmitter, "office", PASSWORD).await?,
        CommandStatus::EsmeRinvsysid
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], b.smpp));
    let from2: IpAddr = "127.0.0.2".parse()?;
    let mut e = Esme::connect_from(from2, addr).await?.with_timeout(SETTLE);
    e.bind(BindType::Transmitter, "local2", PASSWORD).await?;
    e.unbind().await?;
    assert_eq!(
        bind_status(b.smpp, BindType::Transmitter, "local2", PASSWORD).await?,
        CommandStatus::EsmeRinvsysid,
        "local2 from 127.0.0.1"
    );

    // maxBinds 2 across the fleet: one on each gateway, and the third is refused on either.
    let mut second = esme(b.smpp).await?;
    second.bind(BindType::Receiver, "acme", PASSWORD).await?;
    assert_eq!(live_binds(&db, acme).await?, 2);
    for port in [a.smpp, b.smpp] {
        assert_eq!(
            bind_status(port, BindType::Transmitter, "acme", PASSWORD).await?,
            CommandStatus::EsmeRbindfail
        );
    }
    let pods: Vec<String> = sqlx::query_scalar(
        "SELECT pod FROM vendor_mgmt.account_sessions WHERE account_id = $1 ORDER BY pod",
    )
    .bind(acme)
    .fetch_all(&db.pool)
    .await?;
    let mut want = vec![a.gw.pod.clone(), b.gw.pod.clone()];
    want.sort();
    assert_eq!(pods, want, "one bind slot per gateway");
    // An unbind gives the slot back: a bind on the other gateway takes it.
    second.unbind().await?;
    wait::until("the slot is free", SETTLE, || async {
        Ok((live_binds(&db, acme).await? == 1).then_some(()))
    })
    .await?;
    let mut third = esme(a.smpp).await?;
    third.bind(BindType::Transmitter, "acme", PASSWORD).await?;

    let text = metrics(&a).await?;
    assert_eq!(
        metric(
            &text,
            "smpp_customer_bind_failures_total",
            &["bad_password"]
        ),
        1.0
    );
    assert!(metric(&text, "smpp_customer_bind_failures_total", &["bind_limit"]) >= 1.0);
    assert_eq!(
        metric(&text, "smpp_customer_binds", &["acme", "bind_type=\"TRX\""]),
        1.0
    );
    let text = metrics(&b).await?;
    assert_eq!(
        metric(
            &text,
            "smpp_customer_bind_failures_total",
            &["source_not_allowed"]
        ),
        2.0
    );
    for g in [&a, &b] {
        g.gw.assert_no_secret_in_log(&[PASSWORD, OTHER_PASSWORD, &m.token]);
    }
    Ok(())
}

/// Python smpplib: bind TRX, submit one text, print its message id.
const SMPPLIB: &str = r#"
import sys, smpplib.client
host, port, sid, pw, dest, text = sys.argv[1:7]
c = smpplib.client.Client(host, int(port), timeout=30)
ids = []
c.set_message_sent_handler(lambda pdu: ids.append(pdu.message_id))
c.connect()
c.bind_transceiver(system_id=sid, password=pw)
c.send_message(source_addr_ton=1, source_addr_npi=1, source_addr='12345',
               dest_addr_ton=1, dest_addr_npi=1, destination_addr=dest,
               short_message=text.encode(), data_coding=1)
while not ids:
    c.read_once()
mid = ids[0].decode() if isinstance(ids[0], bytes) else ids[0]
print("ID " + mid, flush=True)
c.unbind()
c.disconnect()
"#;

/// The node `smpp` client (the simulator's own library): bind, submit, print the answer.
const NODE: &str = r#"
const smpp = require('smpp');
const [host, port, sid, pw, dest, text] = process.argv.slice(1);
const s = smpp.connect({url: `smpp://${host}:${port}`});
s.on('error', (e) => { console.log('ERROR ' + e.message); process.exit(3); });
s.bind_transceiver({system_id: sid, password: pw}, (b) => {
  console.log('BIND ' + b.command_status);
  if (b.command_status !== 0) { s.close(); process.exit(0); }
  s.submit_sm({source_addr: '12345', destination_addr: dest, short_message: text}, (r) => {
    console.log('SUBMIT ' + r.command_status + ' ' + (r.message_id || ''));
    s.unbind(() => { s.close(); process.exit(0); });
  });
});
"#;

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {what}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

fn smpplib(port: u16, id: &str, pw: &str, dest: &str, text: &str) -> Result<String> {
    let out = run(
        Command::new("python3").arg("-c").arg(SMPPLIB).args([
            "127.0.0.1",
            &port.to_string(),
            id,
            pw,
            dest,
            text,
        ]),
        "python3 smpplib (pip install -r e2e/requirements.txt)",
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("ID ").map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("smpplib printed no message id: {out}"))
}

fn node(port: u16, id: &str, pw: &str, dest: &str, text: &str) -> Result<String> {
    run(
        Command::new("node")
            .env("NODE_PATH", repo_root().join("e2e/smsc/node_modules"))
            .arg("-e")
            .arg(NODE)
            .args(["127.0.0.1", &port.to_string(), id, pw, dest, text]),
        "node smpp client",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_from_smpplib_node_and_the_rust_esme_are_delivered_and_queryable() -> Result {
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let g = SmppGateway::start(&db, &m, "gw-smpp-submit", &[]).await?;
    vendor(&db, &[&g]).await?;
    customer_account(
        &db,
        &config("clients", |c| {
            c.route = sqlx::types::Json(vec![RouteEntry {
                vendor: VENDOR.into(),
                priority: 1,
            }])
        }),
    )
    .await?;
    let mut rust = bind_when_known(g.smpp, BindType::Transceiver, "clients").await?;
    let from_rust = rust.submit_ok(&Submit::text("from the rust esme")).await?;
    // This TRX session is the account's receipt link: a receipt asked for comes back on it.
    rust.set_auto_answer(false);
    let with_receipt = rust
        .submit_ok(&Submit::text("with a receipt").receipt(true))
        .await?;
    let deliver = rust.expect("the receipt").await?;
    let receipt = smpp_e2e::esme::Receipt::from_command(&deliver)?;
    assert_eq!(receipt.receipted_id.as_deref(), Some(with_receipt.as_str()));
    assert_eq!(receipt.stat.as_deref(), Some("DELIVRD"), "{receipt:?}");
    rust.answer(&deliver).await?;
    rust.unbind().await?;

    let port = g.smpp;
    let from_python = tokio::task::spawn_blocking(move || {
        smpplib(port, "clients", PASSWORD, "4915100001", "from smpplib")
    })
    .await??;
    let out = tokio::task::spawn_blocking(move || {
        node(port, "clients", PASSWORD, "4915100002", "from node")
    })
    .await??;
    let from_node = out
        .lines()
        .find_map(|l| l.strip_prefix("SUBMIT 0 "))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("node client: {out}"))?;
    // A refused bind answered to a real client library: it reads the status.
    let out = tokio::task::spawn_blocking(move || node(port, "clients", OTHER_PASSWORD, "1", "x"))
        .await??;
    assert!(
        out.contains("BIND 14"),
        "ESME_RINVPASWD (14) to node: {out}"
    );

    // submit_sm_resp carries our message id: the HTTP API knows each one, and the vendor's
    // receipt makes it delivered.
    for id in [&from_rust, &from_python, &from_node] {
        let msg = g.gw.wait_status(&m.token, id, "delivered", SETTLE).await?;
        assert_eq!(msg["vendor"], VENDOR, "{msg}");
    }
    // query_sm answers from the same store.
    let mut e = esme(g.smpp).await?;
    e.bind(BindType::Transmitter, "clients", PASSWORD).await?;
    let q = rusmpp::pdus::QuerySm::new(
        rusmpp::types::COctetString::from_string(from_python.clone())?,
        rusmpp::values::Ton::Unknown,
        rusmpp::values::Npi::Unknown,
        rusmpp::types::COctetString::from_string("12345".into())?,
    );
    let seq = e.send(q).await?;
    let r = e.response(seq, "query_sm_resp").await?;
    let Some(Pdu::QuerySmResp(q)) = r.pdu() else {
        anyhow::bail!("not a query_sm_resp: {r:?}")
    };
    assert_eq!(q.message_state, rusmpp::values::MessageState::Delivered);
    assert_eq!(q.final_date.to_string().len(), 16, "{q:?}");
    let text = metrics(&g).await?;
    assert_eq!(
        metric(
            &text,
            "smpp_customer_submits_total",
            &["clients", "accepted"]
        ),
        4.0
    );
    g.gw.assert_no_secret_in_log(&[PASSWORD, OTHER_PASSWORD, &m.token]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_messages_in_message_payload_are_split_and_udh_parts_pass_through() -> Result {
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let g = SmppGateway::start(&db, &m, "gw-smpp-long", &[]).await?;
    vendor(&db, &[&g]).await?;
    customer_account(&db, &config("longtext", |_| {})).await?;
    let mut e = bind_when_known(g.smpp, BindType::Transmitter, "longtext").await?;
    // 400 GSM characters in message_payload: one message id, three parts at the vendor.
    let long = e.submit_ok(&Submit::payload(&[b'a'; 400])).await?;
    let msg =
        g.gw.wait_status(&m.token, &long, "delivered", SETTLE)
            .await?;
    assert_eq!(msg["parts"], 3, "{msg}");
    // The customer's own concatenation (UDH, reference 0x7B): each part is one message,
    // sent with the customer's UDH as it came.
    let auth = format!("Bearer {}", m.token);
    let trace = |method: &'static str| {
        let auth = auth.clone();
        let port = g.gw.http;
        async move {
            send(
                port,
                method,
                &format!("/api/v1/vendors/{VENDOR}/trace"),
                &[("Authorization", &auth)],
                b"",
            )
            .await
        }
    };
    assert_eq!(trace("POST").await?.status, 200);
    let mut ids = Vec::new();
    for seq in 1u8..=2 {
        let mut sm = vec![0x05, 0x00, 0x03, 0x7B, 0x02, seq];
        sm.extend_from_slice(format!("part {seq} of the customer's own long message").as_bytes());
        ids.push(
            e.submit_ok(&Submit::text("").raw(0x00, &sm).esm_class(0x40))
                .await?,
        );
    }
    for id in &ids {
        let msg = g.gw.wait_status(&m.token, id, "delivered", SETTLE).await?;
        assert_eq!(msg["parts"], 1, "{msg}");
    }
    let lines = trace("GET").await?.json["lines"].clone();
    let hex: Vec<String> = lines
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for seq in 1..=2 {
        let udh = format!("0500037b02{seq:02x}");
        assert!(
            hex.iter().any(|l| l.starts_with(">> ") && l.contains(&udh)),
            "the vendor got the customer's UDH {udh}: {hex:?}"
        );
    }
    g.gw.assert_no_secret_in_log(&[PASSWORD, &m.token]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_rate_is_throttled_counting_parts() -> Result {
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let g = SmppGateway::start(&db, &m, "gw-smpp-tps", &[]).await?;
    vendor(&db, &[&g]).await?;
    customer_account(
        &db,
        &config("slow", |c| c.max_messages_per_second = Some(1)),
    )
    .await?;
    let mut e = bind_when_known(g.smpp, BindType::Transmitter, "slow").await?;
    // 1/s: a 3-part message passes and owes 2 more seconds; what comes right after it waits.
    e.submit_ok(&Submit::payload(&[b'b'; 400])).await?;
    let seq = e.submit("right after", false).await?;
    let r = e.response(seq, "submit_sm_resp").await?;
    assert_eq!(r.status(), CommandStatus::EsmeRthrottled);
    // It is a rate, not a ban: the customer retries and gets through.
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let seq = e.submit("retry", false).await?;
        let r = e.response(seq, "submit_sm_resp").await?;
        if r.status() == CommandStatus::EsmeRok {
            assert!(!smpp_e2e::esme::message_id(&r)?.is_empty());
            break;
        }
        assert_eq!(r.status(), CommandStatus::EsmeRthrottled);
        assert!(
            tokio::time::Instant::now() < deadline,
            "never accepted again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = metrics(&g).await?;
    assert!(metric(&text, "smpp_customer_throttled_total", &["slow"]) >= 1.0);
    Ok(())
}

/// A private copy of the certificate files the TLS listener reads.
fn tls_files(tag: &str, from: &str) -> Result<(PathBuf, PathBuf)> {
    let pki = Env::load()?
        .smsc
        .ca_file
        .parent()
        .expect("pki dir")
        .to_path_buf();
    let dir = repo_root()
        .join("target/gateway-tests")
        .join(format!("tls-{tag}-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(pki.join(format!("{from}.crt")), &cert)?;
    std::fs::copy(pki.join(format!("{from}.key")), &key)?;
    Ok((cert, key))
}

/// Replaces a file by rename, as a Secret volume update does (no half-written file seen).
fn replace(src: &Path, dst: &Path) -> Result<()> {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp)?;
    std::fs::rename(&tmp, dst)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_test_ca_and_a_rotated_certificate_is_used_without_restart()
-> Result {
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    // Start with the certificate for "wrong.example" (signed by the test CA).
    let (cert, key) = tls_files("rot", "wrong-name")?;
    let g = SmppGateway::start_tls(&db, &m, "gw-smpp-tls", &cert, &key).await?;
    customer_account(&db, &config("secure", |_| {})).await?;
    let port = g.tls.expect("tls port");
    let ca = Env::load()?.smsc.ca_file;
    let roots = client_tls_config(&ca, None)?;
    let mut before = wait::until("a TLS bind as wrong.example", SETTLE, || async {
        let mut e = Esme::tls(port, roots.clone(), "wrong.example")
            .await?
            .with_timeout(SETTLE);
        let s = e
            .bind_status(
                BindType::Transceiver,
                "secure",
                PASSWORD,
                InterfaceVersion::Smpp3_4,
            )
            .await?;
        Ok((s == CommandStatus::EsmeRok).then_some(e))
    })
    .await?;
    // Verification is real: the name "localhost" does not match that certificate.
    let err = Esme::tls(port, roots.clone(), "localhost").await.err();
    assert!(
        err.is_some(),
        "TLS to localhost must fail before the rotation"
    );

    // Rotate to the localhost certificate in place: key first, then the certificate.
    let pki = ca.parent().expect("pki dir");
    let pid = g.gw.guard.id();
    replace(&pki.join("server.key"), &key)?;
    replace(&pki.join("server.crt"), &cert)?;
    let mut after = wait::until("the rotated certificate is served", SETTLE, || async {
        Ok(Esme::tls(port, roots.clone(), "localhost").await.ok())
    })
    .await?
    .with_timeout(SETTLE);
    after
        .bind(BindType::Transmitter, "secure", PASSWORD)
        .await?;
    assert!(
        Esme::tls(port, roots.clone(), "wrong.example")
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // Same process, and the session from before the rotation still works.
    assert_eq!(g.gw.guard.id(), pid);
    before.enquire_link().await?;
    after.enquire_link().await?;
    // The plain listener of the same gateway is not TLS.
    let mut plain = esme(g.smpp).await?;
    plain
        .bind(BindType::Transmitter, "secure", PASSWORD)
        .await?;
    g.gw.assert_no_secret_in_log(&[PASSWORD, &m.token]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pdus_and_oversized_lengths_close_only_that_session() -> Result {
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let g = SmppGateway::start(&db, &m, "gw-smpp-bad", &[("SMPP_MAX_PDU_BYTES", "4096")]).await?;
    vendor(&db, &[&g]).await?;
    let id = customer_account(&db, &config("robust", |_| {})).await?;
    let mut good = bind_when_known(g.smpp, BindType::Transceiver, "robust").await?;
    // A submit_sm whose body does not decode: generic_nack, and that session goes on.
    let mut odd = esme(g.smpp).await?;
    odd.bind(BindType::Transceiver, "robust", PASSWORD).await?;
    odd.send_raw(&[
        0, 0, 0, 20, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 77, 0xFF, 0xFF, 0xFF, 0xFF,
    ])
    .await?;
    let nack = odd.expect("generic_nack").await?;
    assert_eq!(
        (nack.id(), nack.sequence_number(), nack.status()),
        (CommandId::GenericNack, 77, CommandStatus::EsmeRinvcmdlen)
    );
    odd.enquire_link().await?;
    // Over --smpp-max-pdu-bytes, and an absurd command_length: those sessions are closed.
    let mut big = esme(g.smpp).await?;
    big.bind(BindType::Transceiver, "robust", PASSWORD).await?;
    let mut pdu = vec![0u8; 5000];
    pdu[..4].copy_from_slice(&5000u32.to_be_bytes());
    pdu[4..8].copy_from_slice(&4u32.to_be_bytes());
    big.send_raw(&pdu).await?;
    assert!(closed(&mut big).await, "over the PDU limit: closed");
    let mut absurd = esme(g.smpp).await?;
    absurd
        .bind(BindType::Transceiver, "robust", PASSWORD)
        .await?;
    absurd
        .send_raw(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1])
        .await?;
    assert!(closed(&mut absurd).await, "absurd length: closed");
    // The others go on, and the closed ones gave their slots back.
    good.enquire_link().await?;
    let msg_id = good.submit_ok(&Submit::text("still fine")).await?;
    assert!(!msg_id.is_empty());
    odd.enquire_link().await?;
    wait::until("two binds left", SETTLE, || async {
        Ok((live_binds(&db, id).await? == 2).then_some(()))
    })
    .await?;
    let text = metrics(&g).await?;
    assert_eq!(
        metric(
            &text,
            "smpp_customer_sessions_closed_total",
            &["bad_command_length"]
        ),
        2.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_customer_sessions_on_one_process() -> Result {
    const N: usize = 1000;
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let g =
        SmppGateway::start(&db, &m, "gw-smpp-1000", &[("SMPP_MAX_CONNECTIONS", "1100")]).await?;
    vendor(&db, &[&g]).await?;
    let id = customer_account(&db, &config("many", |c| c.max_binds = N as i32)).await?;
    // The first bind pays argon2 once; the others hit the verified-password cache.
    let first = bind_when_known(g.smpp, BindType::Transceiver, "many").await?;
    let port = g.smpp;
    let limit = Duration::from_secs(180);
    let sessions = tokio::time::timeout(limit, async move {
        let mut set = tokio::task::JoinSet::new();
        for i in 1..N {
            set.spawn(async move {
                let mut e = esme(port).await?;
                let kind = [
                    BindType::Transmitter,
                    BindType::Receiver,
                    BindType::Transceiver,
                ][i % 3];
                e.bind(kind, "many", PASSWORD).await?;
                Ok::<_, anyhow::Error>(e)
            });
        }
        let mut all = vec![first];
        while let Some(r) = set.join_next().await {
            all.push(r??);
        }
        Ok::<_, anyhow::Error>(all)
    })
    .await
    .map_err(|_| anyhow::anyhow!("1000 binds took longer than {limit:?}"))??;
    assert_eq!(sessions.len(), N);
    assert_eq!(live_binds(&db, id).await?, N as i64);
    let text = metrics(&g).await?;
    assert_eq!(metric(&text, "smpp_customer_binds", &["many"]), N as f64);
    assert_eq!(metric(&text, "smpp_customer_connections", &[]), N as f64);
    // All of them are live: each answers an enquire_link, and one of each kind submits.
    let mut sessions = tokio::time::timeout(limit, async move {
        let mut set = tokio::task::JoinSet::new();
        for mut e in sessions {
            set.spawn(async move {
                e.enquire_link().await?;
                Ok::<_, anyhow::Error>(e)
            });
        }
        let mut all = Vec::new();
        while let Some(r) = set.join_next().await {
            all.push(r??);
        }
        Ok::<_, anyhow::Error>(all)
    })
    .await
    .map_err(|_| anyhow::anyhow!("1000 enquire_links took longer than {limit:?}"))??;
    let mut sent = 0;
    for e in sessions.iter_mut() {
        let seq = e.submit("one of a thousand", false).await?;
        let r = e.response(seq, "submit_sm_resp").await?;
        if r.status() == CommandStatus::EsmeRok {
            sent += 1;
        } else {
            assert_eq!(
                r.status(),
                CommandStatus::EsmeRinvbndsts,
                "only receivers refuse"
            );
        }
        if sent == 3 {
            break;
        }
    }
    assert_eq!(sent, 3);
    drop(sessions);
    wait::until("every slot given back", SETTLE, || async {
        Ok((live_binds(&db, id).await? == 0).then_some(()))
    })
    .await?;
    g.gw.assert_no_secret_in_log(&[PASSWORD, &m.token]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_account_is_unbound_and_a_stopped_gateway_unbinds_its_customers() -> Result {
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let g = SmppGateway::start(&db, &m, "gw-smpp-stop", &[]).await?;
    let c = config("stopper", |_| {});
    let id = customer_account(&db, &c).await?;
    customer_account(&db, &config("stays", |_| {})).await?;
    let mut s = bind_when_known(g.smpp, BindType::Transceiver, "stopper").await?;
    let mut other = bind_when_known(g.smpp, BindType::Transceiver, "stays").await?;
    // Suspend: the gateway sees the row change and unbinds that account's session.
    let mut off = c.clone();
    off.suspended = true;
    let owner = Owner {
        namespace: "e2e".into(),
        name: "stopper".into(),
        uid: "uid-stopper".into(),
        generation: 2,
    };
    smpp_db::accounts::upsert_owned(&db.pool, &owner, &off).await?;
    let u = s.expect("unbind").await?;
    assert_eq!(u.id(), CommandId::Unbind);
    s.respond(&u, CommandStatus::EsmeRok, Pdu::UnbindResp)
        .await?;
    assert!(closed(&mut s).await);
    wait::until("its slot is free", SETTLE, || async {
        Ok((live_binds(&db, id).await? == 0).then_some(()))
    })
    .await?;
    other.enquire_link().await?;
    // SIGTERM: the remaining customer is unbound (it would reconnect to another pod).
    g.gw.guard.signal(libc::SIGTERM);
    let u = other.expect("unbind at shutdown").await?;
    assert_eq!(u.id(), CommandId::Unbind);
    other
        .respond(&u, CommandStatus::EsmeRok, Pdu::UnbindResp)
        .await?;
    assert!(closed(&mut other).await);
    g.gw.assert_no_secret_in_log(&[PASSWORD, &m.token]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_the_vendor_forwards_the_customers_submit_and_the_account_route_is_followed()
-> Result {
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    // Each pod advertises 127.0.0.1:<http port> (POD_IP) for forwarded submits.
    let a = SmppGateway::start(&db, &m, "gw-smpp-fwd-a", &[]).await?;
    let b = SmppGateway::start(&db, &m, "gw-smpp-fwd-b", &[]).await?;
    let env = Env::load()?;
    db.insert_legacy(
        VENDOR,
        env.smsc.port,
        &env.smsc.system_id,
        &env.smsc.password,
        &[("max_binds", "1")],
    )
    .await?;
    // One bind in the fleet: find the pod without it.
    let (holder, other) = wait::until("the vendor bound on one pod", SETTLE, || async {
        let (x, y) = (a.gw.bound(VENDOR).await?, b.gw.bound(VENDOR).await?);
        Ok(match (x, y) {
            (1, 0) => Some((&a, &b)),
            (0, 1) => Some((&b, &a)),
            _ => None,
        })
    })
    .await?;
    // The route names a vendor that does not exist first: the next one takes it.
    let route = |names: &[(&str, i32)]| {
        sqlx::types::Json(
            names
                .iter()
                .map(|(v, p)| RouteEntry {
                    vendor: (*v).into(),
                    priority: *p,
                })
                .collect::<Vec<_>>(),
        )
    };
    customer_account(
        &db,
        &config("routed", |c| c.route = route(&[("ghost", 1), (VENDOR, 2)])),
    )
    .await?;
    customer_account(
        &db,
        &config("nowhere", |c| c.route = route(&[("ghost", 1)])),
    )
    .await?;
    let mut e = bind_when_known(other.smpp, BindType::Transmitter, "routed").await?;
    // The peers snapshot is refreshed every second: until it lists the holder, the pod has
    // no route; then the submit goes one hop to the holder.
    let deadline = tokio::time::Instant::now() + SETTLE;
    let id = loop {
        // A receipt asked for: the hop carries the customer's origin (the internal route).
        let seq = e.submit("forwarded", true).await?;
        let r = e.response(seq, "submit_sm_resp").await?;
        if r.status() == CommandStatus::EsmeRok {
            break smpp_e2e::esme::message_id(&r)?;
        }
        assert_eq!(r.status(), CommandStatus::EsmeRsyserr, "no route yet");
        assert!(tokio::time::Instant::now() < deadline, "never forwarded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let msg = holder
        .gw
        .wait_status(&m.token, &id, "delivered", SETTLE)
        .await?;
    assert_eq!(msg["vendor"], VENDOR);
    assert!(metric(&metrics(other).await?, "smpp_forwards_total", &["ok"]) >= 1.0);
    // Only unknown vendors in the route: no route, ESME_RSYSERR (retry later).
    let mut n = bind_when_known(holder.smpp, BindType::Transmitter, "nowhere").await?;
    let seq = n.submit("nowhere to go", false).await?;
    let r = n.response(seq, "submit_sm_resp").await?;
    assert_eq!(r.status(), CommandStatus::EsmeRsyserr);
    for g in [&a, &b] {
        g.gw.assert_no_secret_in_log(&[PASSWORD, &m.token]);
    }
    Ok(())
}

/// Expects the server's unbind on `e`, answers it, and sees the connection close.
async fn unbound_by_server(e: &mut Esme, what: &str) -> Result<()> {
    let u = e.expect(what).await?;
    anyhow::ensure!(u.id() == CommandId::Unbind, "{what}: got {u:?}");
    e.respond(&u, CommandStatus::EsmeRok, Pdu::UnbindResp)
        .await?;
    anyhow::ensure!(closed(e).await, "{what}: the connection stays open");
    Ok(())
}

/// The pods holding `account`'s account_sessions rows, whatever their heartbeat.
async fn slot_pods(db: &TestDb, account: uuid::Uuid) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT pod FROM vendor_mgmt.account_sessions WHERE account_id = $1 ORDER BY slot",
    )
    .bind(account)
    .fetch_all(&db.pool)
    .await?)
}

/// maxBinds 1 across two gateways: A holds the bind and is frozen (SIGSTOP) past the slot TTL,
/// B takes the slot over for a new bind; when A wakes, its next heartbeat finds the slot gone
/// and unbinds its customer at once, so the fleet holds one bind again. A slot row deleted by
/// hand ends B's session the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_customer_slot_was_taken_over_unbinds_that_customer_at_once() -> Result {
    // The slot TTL and the heartbeat are in seconds: bound the wait by both, generously.
    let hang = smpp_db::sessions::SLOT_TTL + SETTLE;
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let a = SmppGateway::start(&db, &m, "gw-smpp-fence-a", &[]).await?;
    let b = SmppGateway::start(&db, &m, "gw-smpp-fence-b", &[]).await?;
    let id = customer_account(&db, &config("fenced", |c| c.max_binds = 1)).await?;
    let mut on_a = bind_when_known(a.smpp, BindType::Transceiver, "fenced").await?;
    assert_eq!(
        bind_status(b.smpp, BindType::Transmitter, "fenced", PASSWORD).await?,
        CommandStatus::EsmeRbindfail,
        "maxBinds 1: A holds it"
    );
    assert_eq!(slot_pods(&db, id).await?, [a.gw.pod.as_str()]);

    // A hangs: once its heartbeat is stale, B's bind takes the slot over (A's socket stays open).
    let resumed = a.gw.freeze();
    wait::until("A's bind stops counting", hang, || async {
        Ok((live_binds(&db, id).await? == 0).then_some(()))
    })
    .await?;
    let mut on_b = esme(b.smpp).await?;
    on_b.bind(BindType::Transceiver, "fenced", PASSWORD).await?;
    assert_eq!(slot_pods(&db, id).await?, [b.gw.pod.as_str()]);
    drop(resumed); // SIGCONT

    unbound_by_server(&mut on_a, "A unbinds the customer whose slot it lost").await?;
    assert!(
        a.gw.log_text().contains("customer bind slot taken over"),
        "A's log does not say why it unbound:\n{}",
        a.gw.log_text()
    );
    assert_eq!(
        metric(
            &metrics(&a).await?,
            "smpp_customer_sessions_closed_total",
            &["slot_taken_over"]
        ),
        1.0
    );
    // B's bind is untouched and still the only one; A gave nothing of B's back.
    on_b.enquire_link().await?;
    assert_eq!(slot_pods(&db, id).await?, [b.gw.pod.as_str()]);
    assert_eq!(live_binds(&db, id).await?, 1);

    // A row deleted by hand: B's next heartbeat ends that session, and the slot is free.
    db.exec(&format!(
        "DELETE FROM vendor_mgmt.account_sessions WHERE account_id = '{id}'"
    ))
    .await?;
    unbound_by_server(&mut on_b, "B unbinds the customer whose row was deleted").await?;
    assert_eq!(
        metric(
            &metrics(&b).await?,
            "smpp_customer_sessions_closed_total",
            &["slot_taken_over"]
        ),
        1.0
    );
    let mut again = esme(a.smpp).await?;
    again
        .bind(BindType::Transmitter, "fenced", PASSWORD)
        .await?;
    assert_eq!(slot_pods(&db, id).await?, [a.gw.pod.as_str()]);
    for g in [&a, &b] {
        g.gw.assert_no_secret_in_log(&[PASSWORD, &m.token]);
    }
    Ok(())
}

/// What one session's submits got over a window.
#[derive(Debug, Default)]
struct Outcomes {
    accepted: u32,
    throttled: u32,
}

/// Submits one-part texts back to back on `e` until `until` and until one was throttled
/// (bounded by SETTLE).
async fn submit_until(mut e: Esme, until: tokio::time::Instant) -> Result<Outcomes> {
    let mut o = Outcomes::default();
    let hang = until + SETTLE;
    while tokio::time::Instant::now() < until || o.throttled == 0 {
        anyhow::ensure!(tokio::time::Instant::now() < hang, "never throttled: {o:?}");
        let seq = e.submit("x", false).await?;
        match e.response(seq, "submit_sm_resp").await?.status() {
            CommandStatus::EsmeRok => o.accepted += 1,
            CommandStatus::EsmeRthrottled => o.throttled += 1,
            s => anyhow::bail!("a submit got {s:?}"),
        }
    }
    Ok(o)
}

/// maxMessagesPerSecond across two gateways, a customer bound on each: each pod gets half
/// (max × binds here / binds in the fleet), so the fleet accepts no more than the limit
/// however fast both sessions send, and both are throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_rate_holds_across_the_fleet_split_by_its_binds() -> Result {
    const MAX: u32 = 10;
    /// How long both sessions send: the load, not a deadline on anything.
    const WINDOW: Duration = Duration::from_secs(3);
    let db = TestDb::new().await?;
    let m = messaging_env()?;
    let a = SmppGateway::start(&db, &m, "gw-smpp-split-a", &[]).await?;
    let b = SmppGateway::start(&db, &m, "gw-smpp-split-b", &[]).await?;
    vendor(&db, &[&a, &b]).await?;
    customer_account(
        &db,
        &config("split", |c| {
            c.max_binds = 2;
            c.max_messages_per_second = Some(MAX as i32);
        }),
    )
    .await?;
    let on_a = bind_when_known(a.smpp, BindType::Transmitter, "split").await?;
    let on_b = bind_when_known(b.smpp, BindType::Transmitter, "split").await?;
    // Each pod has counted both binds (the other's through NOTIFY) before any submit.
    let share = f64::from(MAX) / 2.0;
    for g in [&a, &b] {
        wait::until("the pod's share is half the limit", SETTLE, || async {
            let s = metric(&metrics(g).await?, "smpp_customer_rate_share", &["split"]);
            Ok((s == share).then_some(()))
        })
        .await?;
    }
    let started = tokio::time::Instant::now();
    let until = started + WINDOW;
    let (on_a, on_b) = tokio::join!(submit_until(on_a, until), submit_until(on_b, until));
    let (on_a, on_b) = (on_a?, on_b?);
    let elapsed = started.elapsed().as_secs_f64();
    // Each pod's bucket starts full at its burst (one second of its share, at least 1) and
    // refills at its share: over `elapsed` it accepts at most burst + share × elapsed, so the
    // fleet at most MAX × (1 + elapsed). Without the split each pod would take MAX on its own.
    let accepted = on_a.accepted + on_b.accepted;
    let bound = f64::from(MAX) * (1.0 + elapsed);
    assert!(
        f64::from(accepted) <= bound,
        "{accepted} accepted in {elapsed:.2} s across the fleet, over {bound:.1} \
         (A {on_a:?}, B {on_b:?})"
    );
    for (g, o) in [(&a, &on_a), (&b, &on_b)] {
        assert!(o.accepted >= 1 && o.throttled >= 1, "{o:?}");
        let text = metrics(g).await?;
        assert_eq!(
            metric(&text, "smpp_customer_throttled_total", &["split"]),
            f64::from(o.throttled)
        );
    }
    Ok(())
}
