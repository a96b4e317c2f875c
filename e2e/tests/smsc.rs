//! The SMSC simulator (e2e/smsc/), checked from Rust SMPP clients: the rusmpp codec over
//! tokio (+ tokio-rustls with the test CA) for exact control of the wire, and rusmppc once, as
//! a library client would use it. Every test starts its own private simulator; no env-up needed.
//!
//! Run: cargo test -p smpp-e2e --test smsc

use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rusmpp::pdus::{BindTransceiver, DeliverSmResp, SubmitSm};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{EsmClass, InterfaceVersion, MessageState, RegisteredDelivery};
use rusmpp::{CommandId, CommandStatus, Pdu};
use smpp_e2e::esme::{EXPECT, Esme, Read, Receipt, bind_status, message_id};
use smpp_e2e::smsc::{
    Behaviour, BindType, PASSWORD, ReceiptSettings, SYSTEM_ID, ServerCert, Smsc, SmscConfig,
    client_tls_config,
};
use smpp_e2e::wait;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type Result<T = ()> = anyhow::Result<T>;

/// How long a test watches for a PDU that must NOT come.
const SILENCE: Duration = Duration::from_millis(1500);

/// TLS to `listener` of `smsc`, verified against the test CA for "localhost".
async fn connect_tls(smsc: &Smsc, listener: &str) -> Result<Esme> {
    let config = client_tls_config(&smsc.ca_file(), None)?;
    Ok(Esme::tls(smsc.port(listener), config, "localhost").await?)
}

async fn wait_open_binds(smsc: &Smsc, total: u64) -> Result {
    wait::until(
        &format!("{total} open binds for {SYSTEM_ID} in /stats"),
        EXPECT,
        || async { Ok((smsc.stats().await?.open_binds(SYSTEM_ID).total == total).then_some(())) },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Normal behaviour

#[tokio::test]
async fn tls_bind_verified_against_the_test_ca_is_counted_and_released() -> Result {
    let smsc = Smsc::start(SmscConfig::standard()).await?;
    let mut esme = connect_tls(&smsc, "tls").await?;
    let resp = esme
        .bind_raw(
            BindType::Transceiver,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    let Read::Pdu(resp) = resp else {
        anyhow::bail!("no bind_resp: {resp:?}")
    };
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    let Some(Pdu::BindTransceiverResp(body)) = resp.pdu() else {
        anyhow::bail!("{resp:?}")
    };
    assert_eq!(body.system_id.to_string(), "SMSCSIM");

    let stats = smsc.stats().await?;
    assert_eq!(stats.open_binds(SYSTEM_ID).transceiver, 1, "{stats:?}");
    assert_eq!(stats.open_binds(SYSTEM_ID).total, 1);
    assert_eq!(stats.listeners["tls"].connections_open, 1);

    esme.unbind().await?;
    wait_open_binds(&smsc, 0).await?;
    assert!(
        matches!(esme.read(EXPECT).await, Read::Closed),
        "simulator closes after unbind_resp"
    );
    assert_eq!(smsc.stats().await?.binds_total, 1);
    Ok(())
}

#[tokio::test]
async fn tls_handshake_fails_against_an_unrelated_ca_and_a_wrong_name() -> Result {
    let smsc = Smsc::start(SmscConfig::standard().tls_with(
        "wrong-name",
        ServerCert::WrongName,
        false,
        Behaviour::default(),
    ))
    .await?;
    let wrong_ca = client_tls_config(&smsc.pki_dir().join("wrong-ca.crt"), None)?;
    let err = Esme::tls(smsc.port("tls"), wrong_ca, "localhost")
        .await
        .expect_err("must fail");
    assert!(format!("{err:#}").contains("UnknownIssuer"), "{err:#}");

    let right_ca = client_tls_config(&smsc.ca_file(), None)?;
    let err = Esme::tls(smsc.port("wrong-name"), right_ca.clone(), "localhost")
        .await
        .expect_err("must fail");
    assert!(format!("{err:#}").contains("not valid for name"), "{err:#}");
    // The same certificate is fine for the name it carries: only the name was wrong.
    Esme::tls(smsc.port("wrong-name"), right_ca, "wrong.example").await?;
    Ok(())
}

#[tokio::test]
async fn tls_listener_requiring_a_client_certificate() -> Result {
    let smsc = Smsc::start(SmscConfig::new().tls_with(
        "mtls",
        ServerCert::Valid,
        true,
        Behaviour::default(),
    ))
    .await?;
    let pki = smsc.pki_dir();
    let with_cert = client_tls_config(
        &smsc.ca_file(),
        Some((&pki.join("client.crt"), &pki.join("client.key"))),
    )?;
    let mut esme = Esme::tls(smsc.port("mtls"), with_cert, "localhost").await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;

    // Without a certificate the server aborts the handshake (TLS 1.3: seen on first read).
    let without = client_tls_config(&smsc.ca_file(), None)?;
    let outcome = match Esme::tls(smsc.port("mtls"), without, "localhost").await {
        Err(_) => Read::Closed,
        Ok(mut e) => {
            e.bind_raw(
                BindType::Transceiver,
                SYSTEM_ID,
                PASSWORD,
                InterfaceVersion::Smpp3_4,
            )
            .await?
        }
    };
    assert!(matches!(outcome, Read::Closed), "{outcome:?}");
    Ok(())
}

#[tokio::test]
async fn wrong_credentials_are_refused() -> Result {
    const GOOD: &str = "Zq7pW2x"; // distinctive, so the log check below cannot match by accident
    const BAD: &str = "Yq8oV1z";
    let smsc = Smsc::start(SmscConfig::standard().credential("audit", GOOD)).await?;
    let mut esme = Esme::plain(smsc.port("plain")).await?;
    let got = esme
        .bind_raw(
            BindType::Transceiver,
            "audit",
            BAD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(bind_status(got)?, CommandStatus::EsmeRinvpaswd);
    let mut esme = connect_tls(&smsc, "tls").await?;
    let got = esme
        .bind_raw(
            BindType::Transceiver,
            "nobody",
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(bind_status(got)?, CommandStatus::EsmeRinvsysid);
    let got = esme
        .bind_raw(
            BindType::Transceiver,
            "audit",
            GOOD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(
        bind_status(got)?,
        CommandStatus::EsmeRok,
        "the right one still works"
    );

    let stats = smsc.stats().await?;
    assert_eq!((stats.bind_rejects, stats.binds_total), (2, 1), "{stats:?}");
    assert_eq!(stats.open_binds("audit").total, 1);
    let log = smsc.log();
    assert!(
        log.contains("wrong password"),
        "the refusal is logged: {log}"
    );
    assert!(
        !log.contains(GOOD) && !log.contains(BAD),
        "passwords never in the log: {log}"
    );

    // POST /reset zeroes the counters but not the open binds.
    smsc.reset_stats().await?;
    let stats = smsc.stats().await?;
    assert_eq!((stats.bind_rejects, stats.binds_total), (0, 0), "{stats:?}");
    assert_eq!(stats.open_binds("audit").total, 1);
    Ok(())
}

#[tokio::test]
async fn all_bind_types_are_accepted_and_counted_per_system_id() -> Result {
    let smsc = Smsc::start(SmscConfig::standard().credential("other", "secret")).await?;
    let mut tx = Esme::plain(smsc.port("plain")).await?;
    tx.bind(BindType::Transmitter, SYSTEM_ID, PASSWORD).await?;
    let mut rx = connect_tls(&smsc, "tls").await?;
    rx.bind(BindType::Receiver, SYSTEM_ID, PASSWORD).await?;
    let mut trx = Esme::plain(smsc.port("plain")).await?;
    let got = trx
        .bind_raw(
            BindType::Transceiver,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp5_0,
        )
        .await?;
    assert_eq!(bind_status(got)?, CommandStatus::EsmeRok);
    let mut other = Esme::plain(smsc.port("plain")).await?;
    let got = other
        .bind_raw(
            BindType::Transmitter,
            "other",
            "secret",
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(bind_status(got)?, CommandStatus::EsmeRok);

    let stats = smsc.stats().await?;
    let mine = stats.open_binds(SYSTEM_ID);
    assert_eq!(
        (
            mine.transmitter,
            mine.receiver,
            mine.transceiver,
            mine.total
        ),
        (1, 1, 1, 3),
        "{stats:?}"
    );
    assert_eq!(stats.open_binds("other").total, 1);
    assert_eq!(stats.binds_total, 4);

    // A bind on an already bound session is refused.
    let again = tx
        .bind_raw(
            BindType::Transmitter,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(bind_status(again)?, CommandStatus::EsmeRalybnd);

    drop(rx); // connection closed without unbind: the bind is released too
    wait_open_binds(&smsc, 2).await?;
    assert_eq!(smsc.stats().await?.open_binds(SYSTEM_ID).receiver, 0);
    Ok(())
}

#[tokio::test]
async fn bind_marks_record_every_overlap_and_dip_since_the_reset() -> Result {
    let smsc = Smsc::start(SmscConfig::standard().credential("other", "secret")).await?;
    let stats = smsc.stats().await?;
    assert!(
        stats.bind_marks.is_empty() && stats.bind_marks_all.is_none(),
        "{stats:?}"
    );
    let mut a = Esme::plain(smsc.port("plain")).await?;
    a.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD).await?;
    let mut b = connect_tls(&smsc, "tls").await?;
    b.bind(BindType::Transmitter, SYSTEM_ID, PASSWORD).await?;
    // Up to 2, then a dip to 1 (unbind) and back to 2: the marks keep both extremes.
    a.unbind().await?;
    wait_open_binds(&smsc, 1).await?;
    let mut c = Esme::plain(smsc.port("plain")).await?;
    c.bind(BindType::Receiver, SYSTEM_ID, PASSWORD).await?;
    let stats = smsc.stats().await?;
    let mine = stats.marks(SYSTEM_ID).expect("marks for the system_id");
    assert_eq!((mine.high, mine.low), (2, 1), "{stats:?}");
    assert!(
        stats.marks("other").is_none(),
        "no bind of other yet: {stats:?}"
    );

    // A reset starts the marks again from the binds open now (2).
    smsc.reset_stats().await?;
    let stats = smsc.stats().await?;
    assert_eq!(
        stats.marks(SYSTEM_ID).map(|m| (m.high, m.low)),
        Some((2, 2))
    );
    assert_eq!(stats.bind_marks_all.map(|m| (m.high, m.low)), Some((2, 2)));
    // A close without unbind counts too; so does another system_id, in the total only.
    let mut o = Esme::plain(smsc.port("plain")).await?;
    let got = o
        .bind_raw(
            BindType::Transmitter,
            "other",
            "secret",
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(bind_status(got)?, CommandStatus::EsmeRok);
    drop(b);
    drop(c);
    wait_open_binds(&smsc, 0).await?;
    let stats = smsc.stats().await?;
    assert_eq!(
        stats.marks(SYSTEM_ID).map(|m| (m.high, m.low)),
        Some((2, 0))
    );
    assert_eq!(stats.marks("other").map(|m| (m.high, m.low)), Some((1, 1)));
    assert_eq!(
        stats.bind_marks_all.map(|m| (m.high, m.low)),
        Some((3, 1)),
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn enquire_link_is_answered_before_and_after_bind() -> Result {
    let smsc = Smsc::start(SmscConfig::standard()).await?;
    let mut esme = connect_tls(&smsc, "tls").await?;
    for bound in [false, true] {
        if bound {
            esme.bind(BindType::Transmitter, SYSTEM_ID, PASSWORD)
                .await?;
        }
        let seq = esme.send(Pdu::EnquireLink).await?;
        let resp = esme.response(seq, "enquire_link_resp").await?;
        assert_eq!(
            (resp.id(), resp.status()),
            (CommandId::EnquireLinkResp, CommandStatus::EsmeRok)
        );
    }
    assert_eq!(smsc.stats().await?.enquire_links, 2);
    Ok(())
}

#[tokio::test]
async fn submits_get_unique_ids_and_receipts_with_text_and_tlvs() -> Result {
    let smsc = Smsc::start(SmscConfig::standard()).await?;
    let mut esme = connect_tls(&smsc, "tls").await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let texts = ["first message, longer than twenty", "second", "third one"];
    let mut ids = Vec::new();
    for text in texts {
        let seq = esme.submit(text, true).await?;
        let resp = esme.expect("submit_sm_resp").await?;
        assert_eq!(
            resp.sequence_number(),
            seq,
            "responses come before receipts (100 ms later)"
        );
        ids.push(message_id(&resp)?);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "message ids must be unique: {ids:?}");

    for _ in 0..3 {
        let c = esme.expect("a delivery receipt").await?;
        let r = Receipt::from_command(&c)?;
        let i = ids
            .iter()
            .position(|id| r.receipted_id.as_deref() == Some(id))
            .expect("receipt for a submitted id");
        assert_eq!(r.esm_class, 0x04, "{r:?}");
        assert_eq!(r.state, Some(MessageState::Delivered), "{r:?}");
        assert_eq!(r.id.as_deref(), Some(ids[i].as_str()));
        let expected_text: String = texts[i].chars().take(20).collect();
        assert!(
            r.text
                .ends_with(&format!(" stat:DELIVRD err:000 text:{expected_text}")),
            "{}",
            r.text
        );
        assert!(
            r.text.contains(" sub:001 dlvrd:001 submit date:"),
            "{}",
            r.text
        );
        let date = r
            .text
            .split("done date:")
            .nth(1)
            .map(|s| &s[..10])
            .unwrap_or_default();
        assert!(
            date.len() == 10 && date.bytes().all(|b| b.is_ascii_digit()),
            "YYMMDDhhmm: {}",
            r.text
        );
        esme.answer(&c).await?;
    }
    wait::until("3 receipts acknowledged in /stats", EXPECT, || async {
        let s = smsc.stats().await?;
        Ok((s.receipts_acked == 3).then_some(s))
    })
    .await?;

    // No receipt was asked for: none comes.
    let seq = esme.submit("no receipt please", false).await?;
    message_id(&esme.response(seq, "submit_sm_resp").await?)?;
    assert!(matches!(esme.read(SILENCE).await, Read::Silent));
    let s = smsc.stats().await?;
    assert_eq!((s.submits, s.receipts_sent), (4, 3), "{s:?}");
    Ok(())
}

#[tokio::test]
async fn receipts_go_to_a_receiver_of_the_same_system_id() -> Result {
    let smsc = Smsc::start(SmscConfig::standard()).await?;
    let mut tx = Esme::plain(smsc.port("plain")).await?;
    tx.bind(BindType::Transmitter, SYSTEM_ID, PASSWORD).await?;
    let mut rx = connect_tls(&smsc, "tls").await?;
    rx.bind(BindType::Receiver, SYSTEM_ID, PASSWORD).await?;
    let seq = tx.submit("via the receiver", true).await?;
    let id = message_id(&tx.response(seq, "submit_sm_resp").await?)?;
    let c = rx.expect("receipt on the receiver").await?;
    assert_eq!(Receipt::from_command(&c)?.receipted_id, Some(id));
    rx.answer(&c).await?;
    assert!(
        matches!(tx.read(SILENCE).await, Read::Silent),
        "nothing on the transmitter"
    );
    Ok(())
}

#[tokio::test]
async fn receipt_answered_with_a_temporary_error_is_sent_again() -> Result {
    let smsc = Smsc::start(SmscConfig::standard()).await?;
    let mut esme = Esme::plain(smsc.port("plain")).await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let seq = esme.submit("retry me", true).await?;
    let id = message_id(&esme.response(seq, "submit_sm_resp").await?)?;

    let first = esme.expect("receipt").await?;
    assert_eq!(
        Receipt::from_command(&first)?.receipted_id.as_deref(),
        Some(id.as_str())
    );
    esme.answer_with(&first, CommandStatus::EsmeRxTAppn).await?;
    let second = esme.expect("the receipt again").await?;
    assert_eq!(
        Receipt::from_command(&second)?.receipted_id.as_deref(),
        Some(id.as_str())
    );
    assert_ne!(second.sequence_number(), first.sequence_number());
    esme.answer_with(&second, CommandStatus::EsmeRthrottled)
        .await?;
    let third = esme.expect("the receipt a third time").await?;
    esme.answer(&third).await?;

    let s = wait::until("receipt acknowledged", EXPECT, || async {
        let s = smsc.stats().await?;
        Ok((s.receipts_acked == 1).then_some(s))
    })
    .await?;
    assert_eq!(
        (s.receipts_sent, s.receipts_retried, s.receipts_pending),
        (3, 2, 0),
        "{s:?}"
    );
    // Acknowledged: it does not come again.
    assert!(matches!(esme.read(SILENCE).await, Read::Silent));
    Ok(())
}

#[tokio::test]
async fn unanswered_receipt_is_sent_again_and_retries_are_bounded() -> Result {
    let receipts = ReceiptSettings {
        resp_timeout_ms: 300,
        retry_delay_ms: 50,
        max_attempts: 3,
    };
    let smsc = Smsc::start(SmscConfig::standard().receipts(receipts)).await?;
    let mut esme = Esme::plain(smsc.port("plain")).await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let seq = esme.submit("nobody answers", true).await?;
    let id = message_id(&esme.response(seq, "submit_sm_resp").await?)?;
    for attempt in 1..=3 {
        let c = esme.expect(&format!("receipt attempt {attempt}")).await?;
        assert_eq!(
            Receipt::from_command(&c)?.receipted_id.as_deref(),
            Some(id.as_str())
        );
    }
    let s = wait::until("receipt given up", EXPECT, || async {
        let s = smsc.stats().await?;
        Ok((s.receipts_failed == 1).then_some(s))
    })
    .await?;
    assert_eq!(
        (s.receipts_sent, s.receipts_retried, s.receipts_acked),
        (3, 2, 0),
        "{s:?}"
    );
    assert!(
        matches!(esme.read(SILENCE).await, Read::Silent),
        "no 4th attempt"
    );
    Ok(())
}

#[tokio::test]
async fn a_window_of_submits_gets_all_ids_and_receipts() -> Result {
    const N: usize = 5000;
    const WINDOW: usize = 50;
    let smsc = Smsc::start(SmscConfig::standard()).await?;
    let mut esme = Esme::plain(smsc.port("plain")).await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let started = Instant::now();
    let (mut sent, mut inflight) = (0, 0);
    let mut ids = std::collections::HashSet::new();
    let mut receipted = std::collections::HashSet::new();
    while ids.len() < N || receipted.len() < N {
        while sent < N && inflight < WINDOW {
            esme.submit(&format!("bulk {sent}"), true).await?;
            sent += 1;
            inflight += 1;
        }
        let c = esme.expect("submit_sm_resp or receipt").await?;
        match c.id() {
            CommandId::SubmitSmResp => {
                inflight -= 1;
                assert!(ids.insert(message_id(&c)?), "duplicate message id in {c:?}");
            }
            CommandId::DeliverSm => {
                receipted.insert(
                    Receipt::from_command(&c)?
                        .receipted_id
                        .expect("receipted_message_id"),
                );
                esme.answer(&c).await?;
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    let rate = N as f64 / started.elapsed().as_secs_f64();
    println!("{N} submits with receipts, window {WINDOW}, 1 connection: {rate:.0} msg/s");
    assert_eq!(ids, receipted, "every id got exactly its receipt");
    let s = wait::until("all receipts acknowledged", EXPECT, || async {
        let s = smsc.stats().await?;
        Ok((s.receipts_acked == N as u64).then_some(s))
    })
    .await?;
    assert_eq!(
        (s.submits, s.receipts_sent, s.receipts_retried),
        (N as u64, N as u64, 0)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Misbehaviour modes, one test each

#[tokio::test]
async fn mode_close_after_handshake() -> Result {
    let mode = Behaviour {
        close_after_handshake: true,
        ..Default::default()
    };
    let smsc = Smsc::start(SmscConfig::new().tls("eof", mode)).await?;
    // The TLS handshake itself succeeds (certificate verified) ...
    let mut esme = connect_tls(&smsc, "eof").await?;
    // ... and then the peer hangs up without a word: no bind_resp ("failed to create session: EOF").
    let got = esme
        .bind_raw(
            BindType::Transceiver,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert!(matches!(got, Read::Closed), "{got:?}");
    let s = smsc.stats().await?;
    assert_eq!((s.connections_total, s.binds_total), (1, 0), "{s:?}");
    Ok(())
}

#[tokio::test]
async fn mode_only_some_bind_types_and_versions() -> Result {
    let only_tx_34 = Behaviour {
        bind_types: Some(vec![BindType::Transmitter]),
        interface_versions: Some(vec!["3.4".into()]),
        ..Default::default()
    };
    let closing = Behaviour {
        bind_types: Some(vec![BindType::Receiver]),
        reject_action: Some("close".into()),
        ..Default::default()
    };
    let smsc = Smsc::start(
        SmscConfig::new()
            .tls("tx34", only_tx_34)
            .plain("rx-or-close", closing),
    )
    .await?;

    let mut e = connect_tls(&smsc, "tx34").await?;
    let got = e
        .bind_raw(
            BindType::Transceiver,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(
        bind_status(got)?,
        CommandStatus::EsmeRbindfail,
        "transceiver not provisioned"
    );
    let got = e
        .bind_raw(
            BindType::Transmitter,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp5_0,
        )
        .await?;
    assert_eq!(
        bind_status(got)?,
        CommandStatus::EsmeRbindfail,
        "version 5.0 not provisioned"
    );
    let got = e
        .bind_raw(
            BindType::Transmitter,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(
        bind_status(got)?,
        CommandStatus::EsmeRok,
        "transmitter 3.4 is provisioned"
    );

    let mut e = Esme::plain(smsc.port("rx-or-close")).await?;
    let got = e
        .bind_raw(
            BindType::Transceiver,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert!(
        matches!(got, Read::Closed),
        "closed with no bind_resp: {got:?}"
    );
    let mut e = Esme::plain(smsc.port("rx-or-close")).await?;
    e.bind(BindType::Receiver, SYSTEM_ID, PASSWORD).await?;

    let s = smsc.stats().await?;
    assert_eq!((s.bind_rejects, s.binds_total), (3, 2), "{s:?}");
    Ok(())
}

#[tokio::test]
async fn mode_bind_limit_per_system_id() -> Result {
    let limit = Behaviour {
        max_binds_per_system_id: Some(2),
        ..Default::default()
    };
    let limit_close = Behaviour {
        max_binds_per_system_id: Some(2),
        max_binds_action: Some("close".into()),
        ..Default::default()
    };
    let smsc = Smsc::start(
        SmscConfig::new()
            .tls("two", limit)
            .plain("two-close", limit_close),
    )
    .await?;
    let mut first = connect_tls(&smsc, "two").await?;
    first
        .bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let mut second = connect_tls(&smsc, "two").await?;
    second
        .bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let mut third = connect_tls(&smsc, "two").await?;
    let got = third
        .bind_raw(
            BindType::Transceiver,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(bind_status(got)?, CommandStatus::EsmeRalybnd);
    // The limit counts binds across listeners, and this one closes instead.
    let mut fourth = Esme::plain(smsc.port("two-close")).await?;
    let got = fourth
        .bind_raw(
            BindType::Transmitter,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert!(matches!(got, Read::Closed), "{got:?}");

    // Releasing one bind makes room again.
    first.unbind().await?;
    wait_open_binds(&smsc, 1).await?;
    let got = third
        .bind_raw(
            BindType::Transceiver,
            SYSTEM_ID,
            PASSWORD,
            InterfaceVersion::Smpp3_4,
        )
        .await?;
    assert_eq!(bind_status(got)?, CommandStatus::EsmeRok);
    assert_eq!(smsc.stats().await?.open_binds(SYSTEM_ID).total, 2);
    Ok(())
}

#[tokio::test]
async fn mode_every_kth_submit_throttled() -> Result {
    let mode = Behaviour {
        throttle_every: Some(3),
        ..Default::default()
    };
    let smsc = Smsc::start(SmscConfig::new().tls("k3", mode)).await?;
    let mut esme = connect_tls(&smsc, "k3").await?;
    esme.bind(BindType::Transmitter, SYSTEM_ID, PASSWORD)
        .await?;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let seq = esme.submit(&format!("msg {i}"), false).await?;
        statuses.push(esme.response(seq, "submit_sm_resp").await?.status());
    }
    use CommandStatus::{EsmeRok as Ok_, EsmeRthrottled as Thr};
    assert_eq!(statuses, vec![Ok_, Ok_, Thr, Ok_, Ok_, Thr]);
    let s = smsc.stats().await?;
    assert_eq!(
        (s.submits, s.submits_throttled, s.submits_answered),
        (6, 2, 4),
        "{s:?}"
    );
    Ok(())
}

#[tokio::test]
async fn mode_never_answer_submits() -> Result {
    let mode = Behaviour {
        never_answer_submits: true,
        ..Default::default()
    };
    let smsc = Smsc::start(SmscConfig::new().tls("mute", mode)).await?;
    let mut esme = connect_tls(&smsc, "mute").await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let submit = esme.submit("into the void", true).await?;
    // The session itself stays alive: enquire_link is answered, the submit never is.
    let el = esme.send(Pdu::EnquireLink).await?;
    let resp = esme.expect("enquire_link_resp").await?;
    assert_eq!(resp.sequence_number(), el);
    let got = esme.read(SILENCE).await;
    assert!(
        matches!(got, Read::Silent),
        "submit {submit} must stay unanswered: {got:?}"
    );
    let s = smsc.stats().await?;
    assert_eq!(
        (s.submits, s.submits_unanswered, s.receipts_sent),
        (1, 1, 0),
        "{s:?}"
    );
    Ok(())
}

#[tokio::test]
async fn mode_drop_after_n_pdus() -> Result {
    let mode = Behaviour {
        drop_after_pdus: Some(3),
        ..Default::default()
    };
    let smsc = Smsc::start(SmscConfig::new().tls("drop3", mode)).await?;
    let mut esme = connect_tls(&smsc, "drop3").await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?; // PDU 1
    let seq = esme.send(Pdu::EnquireLink).await?; // PDU 2
    assert_eq!(
        esme.response(seq, "enquire_link_resp").await?.id(),
        CommandId::EnquireLinkResp
    );
    esme.submit("the third PDU", true).await?; // PDU 3: dropped, unanswered
    let got = esme.read(EXPECT).await;
    assert!(
        matches!(got, Read::Closed),
        "connection dropped at PDU 3: {got:?}"
    );
    wait_open_binds(&smsc, 0).await?;
    Ok(())
}

#[tokio::test]
async fn mode_response_delay() -> Result {
    const DELAY: Duration = Duration::from_millis(400);
    // What the client can see of it: node's timers count from the event loop's cached clock,
    // whole milliseconds that can start just before the PDU arrived, so a 400 ms timer was
    // seen answering after 399.98 ms. Without the delay the answer takes about 1 ms.
    const SEEN: Duration = Duration::from_millis(395);
    let slow = Behaviour {
        response_delay_ms: Some(DELAY.as_millis() as u64),
        ..Default::default()
    };
    let smsc = Smsc::start(
        SmscConfig::new()
            .tls("slow", slow)
            .tls("fast", Behaviour::default()),
    )
    .await?;
    let mut slow = connect_tls(&smsc, "slow").await?;
    let t = Instant::now();
    slow.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    assert!(t.elapsed() >= SEEN, "bind_resp after {:?}", t.elapsed());
    for _ in 0..2 {
        let t = Instant::now();
        let seq = slow.send(Pdu::EnquireLink).await?;
        slow.response(seq, "enquire_link_resp").await?;
        assert!(
            t.elapsed() >= SEEN,
            "enquire_link_resp after {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let seq = slow.submit("slowly", false).await?;
        message_id(&slow.response(seq, "submit_sm_resp").await?)?;
        assert!(
            t.elapsed() >= SEEN,
            "submit_sm_resp after {:?}",
            t.elapsed()
        );
    }
    // A normal listener of the same simulator still answers. (How quickly is not asserted: an
    // upper bound on a response time is noise on a loaded machine; the lower bounds above
    // are not, within the timers' millisecond granularity.)
    let mut fast = connect_tls(&smsc, "fast").await?;
    fast.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let seq = fast.send(Pdu::EnquireLink).await?;
    fast.response(seq, "enquire_link_resp").await?;
    Ok(())
}

#[tokio::test]
async fn mode_hex_id_in_response_decimal_in_receipt() -> Result {
    let mode = Behaviour {
        hex_message_ids: true,
        ..Default::default()
    };
    let smsc = Smsc::start(SmscConfig::new().tls("hex", mode)).await?;
    let mut esme = connect_tls(&smsc, "hex").await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let seq = esme.submit("hex please", true).await?;
    let resp_id = message_id(&esme.response(seq, "submit_sm_resp").await?)?;
    let c = esme.expect("receipt").await?;
    let r = Receipt::from_command(&c)?;
    esme.answer(&c).await?;

    let receipt_id = r.receipted_id.clone().expect("receipted_message_id TLV");
    assert_eq!(
        r.id.as_deref(),
        Some(receipt_id.as_str()),
        "text and TLV agree"
    );
    assert!(
        receipt_id.bytes().all(|b| b.is_ascii_digit()),
        "decimal in the receipt: {receipt_id}"
    );
    assert_ne!(resp_id, receipt_id, "the two spellings differ");
    assert_eq!(
        u64::from_str_radix(&resp_id, 16)?,
        receipt_id.parse::<u64>()?,
        "{resp_id} (hex) vs {receipt_id}"
    );
    Ok(())
}

#[tokio::test]
async fn mode_receipt_before_submit_resp() -> Result {
    let mode = Behaviour {
        receipt_before_resp: true,
        ..Default::default()
    };
    let smsc = Smsc::start(SmscConfig::new().tls("early", mode)).await?;
    let mut esme = connect_tls(&smsc, "early").await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    let seq = esme.submit("early receipt", true).await?;
    let first = esme.expect("receipt").await?;
    assert_eq!(
        first.id(),
        CommandId::DeliverSm,
        "the receipt comes first: {first:?}"
    );
    let second = esme.expect("submit_sm_resp").await?;
    assert_eq!(
        (second.id(), second.sequence_number()),
        (CommandId::SubmitSmResp, seq)
    );
    assert_eq!(
        Receipt::from_command(&first)?.receipted_id,
        Some(message_id(&second)?)
    );
    esme.answer(&first).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Harness and library client

#[tokio::test]
async fn killed_simulator_restarts_on_the_same_ports() -> Result {
    let mut smsc = Smsc::start(SmscConfig::standard()).await?;
    let (plain, tls) = (smsc.port("plain"), smsc.port("tls"));
    let mut esme = connect_tls(&smsc, "tls").await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    smsc.kill();
    assert!(matches!(esme.read(EXPECT).await, Read::Closed));
    assert!(
        Esme::plain(plain).await.is_err(),
        "nothing listens while it is down"
    );

    smsc.restart().await?;
    assert_eq!((smsc.port("plain"), smsc.port("tls")), (plain, tls));
    let mut esme = connect_tls(&smsc, "tls").await?;
    esme.bind(BindType::Transceiver, SYSTEM_ID, PASSWORD)
        .await?;
    assert_eq!(smsc.stats().await?.open_binds(SYSTEM_ID).total, 1);
    Ok(())
}

#[tokio::test]
async fn rusmppc_client_binds_as_3_4_over_tls_and_gets_a_receipt() -> Result {
    let smsc = Smsc::start(SmscConfig::standard()).await?;
    let config = client_tls_config(&smsc.ca_file(), None)?;
    let tcp = TcpStream::connect(("127.0.0.1", smsc.port("tls"))).await?;
    let tls = TlsConnector::from(config)
        .connect(rustls_pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    // rusmppc binds as 5.0 unless told otherwise, and refuses a 3.4 peer unless the check is off.
    let (client, mut events) = rusmppc::ConnectionBuilder::new()
        .disable_interface_version_check()
        .response_timeout(EXPECT)
        .connected(tls);
    client
        .bind_transceiver(
            BindTransceiver::builder()
                .system_id(COctetString::from_str(SYSTEM_ID)?)
                .password(COctetString::from_str(PASSWORD)?)
                .interface_version(InterfaceVersion::Smpp3_4)
                .build(),
        )
        .await?;
    let resp = client
        .submit_sm(
            SubmitSm::builder()
                .destination_addr(COctetString::from_str("4915112345678")?)
                .registered_delivery(RegisteredDelivery::from(1))
                .short_message(OctetString::from_slice(b"via rusmppc")?)
                .build(),
        )
        .await?;
    let id = resp.message_id().to_string();
    let deliver = tokio::time::timeout(EXPECT, async {
        while let Some(event) = events.next().await {
            if let rusmppc::Event::Incoming(c) = event
                && let Some(Pdu::DeliverSm(d)) = c.pdu()
            {
                return Some((c.sequence_number(), d.clone()));
            }
        }
        None
    })
    .await?
    .expect("a deliver_sm event");
    let r = Receipt::of(&deliver.1);
    assert_eq!(r.receipted_id.as_deref(), Some(id.as_str()));
    assert_eq!(EsmClass::from(r.esm_class), EsmClass::from(0x04));
    client
        .deliver_sm_resp(deliver.0, DeliverSmResp::default())
        .await?;
    wait::until("receipt acked", EXPECT, || async {
        Ok((smsc.stats().await?.receipts_acked == 1).then_some(()))
    })
    .await?;
    client.unbind().await?;
    wait_open_binds(&smsc, 0).await?;
    Ok(())
}

#[tokio::test]
async fn env_scripts_start_and_stop_a_simulator() -> Result {
    use std::process::Command as Cmd;
    let dir = smpp_e2e::process::repo_root()
        .join("target")
        .join("smsc-private")
        .join(format!("{}-env", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scripts = smpp_e2e::process::repo_root().join("e2e").join("smsc");
    let out = Cmd::new(scripts.join("up.sh")).arg(&dir).output()?;
    let down = || Cmd::new(scripts.join("down.sh")).arg(&dir).status();
    if !out.status.success() {
        let _ = down();
        anyhow::bail!("up.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8(out.stdout)?;
    let vars: std::collections::HashMap<_, _> = stdout
        .lines()
        .map(|l| {
            let (k, v) = l
                .strip_prefix("export ")
                .and_then(|l| l.split_once('='))
                .expect("only export lines");
            (k.to_string(), v.to_string())
        })
        .collect();
    let names: Vec<_> = stdout
        .lines()
        .map(|l| l.split('=').next().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "export SMSC_HOST",
            "export SMSC_PORT",
            "export SMSC_TLS_PORT",
            "export SMSC_CA_FILE",
            "export SMSC_SYSTEM_ID",
            "export SMSC_PASSWORD",
            "export SMSC_STATS_URL"
        ]
    );
    let pid: i32 = std::fs::read_to_string(dir.join("smsc.pid"))?
        .trim()
        .parse()?;
    let check = async {
        let config = client_tls_config(std::path::Path::new(&vars["SMSC_CA_FILE"]), None)?;
        let mut esme = Esme::tls(vars["SMSC_TLS_PORT"].parse()?, config, "localhost").await?;
        let got = esme
            .bind_raw(
                BindType::Transceiver,
                &vars["SMSC_SYSTEM_ID"],
                &vars["SMSC_PASSWORD"],
                InterfaceVersion::Smpp3_4,
            )
            .await?;
        anyhow::ensure!(bind_status(got)? == CommandStatus::EsmeRok);
        let mut plain = Esme::plain(vars["SMSC_PORT"].parse()?).await?;
        plain
            .bind(BindType::Transmitter, SYSTEM_ID, PASSWORD)
            .await?;
        anyhow::ensure!(vars["SMSC_STATS_URL"].ends_with("/stats"));
        Ok(())
    };
    let result = check.await;
    let stopped = down()?;
    result?;
    assert!(stopped.success());
    // Gone, or a zombie waiting for init to reap it.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .trim_start()
        .chars()
        .next();
    assert!(
        matches!(state, None | Some('Z')),
        "down.sh stopped pid {pid} (state {state:?})"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
