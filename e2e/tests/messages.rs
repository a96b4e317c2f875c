//! Messages through one smpp-gateway: HTTP submit → SMSC simulator → delivery receipt → status,
//! against the environment's real Redis and PostgreSQL (a fresh database per test) and private
//! node simulators. The multi-gateway half is in messages_fleet.rs.
//!
//! Run: make env-up; cargo build --bins; cargo test -p smpp-e2e --test messages

mod gateway_support;

use std::collections::HashMap;
use std::time::Duration;

use gateway_support::{
    Answer, Gateway, Messaging, Result, TestDb, get_auth, history_events, message, messaging_env,
    metric, post_json, send,
};
use serde_json::{Value, json};
use smpp_e2e::smsc::{Behaviour, Smsc, SmscConfig};
use smpp_e2e::wait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The simulator credential of every vendor row here: distinctive, to search the logs for.
const SYSTEM_ID: &str = "msgtester";
const PASSWORD: &str = "Vq8rT3wz";
const TO: &str = "+15551234567";

/// Bounds a hang, not a latency.
const SETTLE: Duration = Duration::from_secs(20);

fn sim() -> SmscConfig {
    SmscConfig::new().credential(SYSTEM_ID, PASSWORD)
}

/// A gateway with messaging on (Redis, API keys, callback secret) and its database.
struct Rig {
    db: TestDb,
    m: Messaging,
    gw: Gateway,
}

impl Rig {
    async fn start(pod: &str, extra_env: &[(&str, &str)]) -> Result<Self> {
        let db = TestDb::new().await?;
        let m = messaging_env()?;
        let mut env = m.env_with(&[("DLR_TTL", "2h")]);
        env.extend_from_slice(extra_env);
        let gw = Gateway::start_with(&db, pod, &env).await?;
        db.wait_schema().await?;
        Ok(Self { db, m, gw })
    }

    /// Inserts a vendor row for the simulator listener `port` and waits until it is bound.
    async fn vendor(&self, name: &str, port: u16, extra: &[(&str, &str)]) -> Result<String> {
        let id = self
            .db
            .insert_legacy(name, port, SYSTEM_ID, PASSWORD, extra)
            .await?;
        self.gw.wait_bound(name, 1, SETTLE).await?;
        Ok(id)
    }

    async fn submit(&self, body: &Value) -> Result<Answer> {
        self.gw.submit(&self.m.token, body).await
    }

    /// Submits and expects 201.
    async fn submit_ok(&self, body: &Value) -> Result<Value> {
        let a = self.submit(body).await?;
        anyhow::ensure!(a.status == 201, "submit: {} {}", a.status, a.body);
        Ok(a.json)
    }

    async fn get(&self, id: &str) -> Result<Answer> {
        self.gw.message(&self.m.token, id).await
    }

    async fn delivered(&self, id: &str) -> Result<Value> {
        self.gw
            .wait_status(&self.m.token, id, "delivered", SETTLE)
            .await
    }

    async fn trace(&self, vendor: &str, method: &str) -> Result<Answer> {
        let auth = format!("Bearer {}", self.m.token);
        send(
            self.gw.http,
            method,
            &format!("/api/v1/vendors/{vendor}/trace"),
            &[("Authorization", &auth)],
            b"",
        )
        .await
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn count(events: &[String], what: &str) -> usize {
    events.iter().filter(|e| *e == what).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_comes_back_delivered_with_history_counters_and_metrics() -> Result {
    let smsc = Smsc::start(sim().plain("plain", Behaviour::default())).await?;
    let rig = Rig::start("gw-msg-basic", &[]).await?;
    rig.vendor("basic", smsc.port("plain"), &[]).await?;

    // No vendor named: routed to the only bound one.
    let text = "Hello from the e2e test, basic delivery";
    let a = rig
        .submit_ok(&json!({"to": TO, "from": "ACME", "text": text, "client_ref": "ref-1"}))
        .await?;
    assert_eq!(a["status"], "submitted", "{a}");
    assert_eq!(a["vendor"], "basic", "{a}");
    assert_eq!(a["parts"], 1, "{a}");
    let vids = strs(&a["vendor_message_ids"]);
    assert_eq!(vids.len(), 1, "{a}");
    assert!(!vids[0].is_empty(), "{a}");
    let id = id_of(&a);

    let m = rig.delivered(&id).await?;
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["vendor"], "basic");
    assert_eq!(m["parts"], 1);
    assert_eq!(strs(&m["vendor_message_ids"]), vids);
    assert!(m["submitted_at"].is_string(), "{m}");
    assert!(m["done_at"].is_string(), "done_at not set: {m}");
    assert!(m["error_code"].is_null(), "{m}");
    assert_eq!(m["client_ref"], "ref-1", "{m}");
    let events = history_events(&m);
    for e in ["accepted", "submit_sm_resp", "receipt"] {
        assert!(events.contains(&e.to_string()), "no {e} in history {m}");
    }
    let pos = |e: &str| events.iter().position(|x| x == e).unwrap();
    assert!(pos("accepted") < pos("submit_sm_resp") && pos("submit_sm_resp") < pos("receipt"));
    let resp = &m["history"][pos("submit_sm_resp")];
    assert_eq!(resp["vendor"], "basic");
    assert!(
        resp["detail"].as_str().unwrap_or("").contains(&vids[0]),
        "{resp}"
    );
    assert!(
        m["history"][pos("receipt")]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("DELIVRD"),
        "{m}"
    );

    // The simulator saw exactly one submit, its receipt acknowledged.
    let s = smsc.stats().await?;
    assert_eq!(s.submits, 1);
    wait::until("receipt acknowledged", SETTLE, || async {
        Ok((smsc.stats().await?.receipts_acked == 1).then_some(()))
    })
    .await?;

    // The vendor API's counters and the metrics move.
    let v = wait::until("vendor counters", SETTLE, || async {
        let v = rig.gw.vendor("basic").await?.unwrap_or_default();
        let ok = v["messages_sent"].as_u64() == Some(1)
            && v["messages_success"].as_u64() == Some(1)
            && v["dlrs_received"].as_u64() == Some(1);
        if ok {
            Ok(Some(v))
        } else {
            Err(anyhow::anyhow!("{v}"))
        }
    })
    .await?;
    assert_eq!(v["messages_failed"], 0, "{v}");
    let text_m = rig.gw.metrics().await?;
    assert_eq!(
        metric(
            &text_m,
            "smpp_receipts_total",
            &["vendor=\"basic\"", "stat=\"DELIVRD\""]
        ),
        1.0,
        "{text_m}"
    );
    assert_eq!(
        metric(
            &text_m,
            "smpp_messages_submitted_total",
            &["vendor=\"basic\"", "status=\"submitted\""]
        ),
        1.0
    );
    assert!(
        metric(
            &text_m,
            "smpp_submit_duration_seconds_count",
            &["vendor=\"basic\""]
        ) >= 1.0
    );

    // An unknown id is a 404 in the API's error shape.
    let a = rig.get("0123456789abcdef0123456789abcdef").await?;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.code(), "message_not_found");
    assert_eq!(a.json["success"], false);

    // Trace off: neither secrets nor the text in the log.
    rig.gw
        .assert_no_secret_in_log(&[&rig.m.token, PASSWORD, &rig.m.secret, text]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hex_and_decimal_message_ids_correlate() -> Result {
    let hex = Behaviour {
        hex_message_ids: true,
        ..Default::default()
    };
    let smsc = Smsc::start(
        sim()
            .plain("hex", hex.clone())
            .plain("hex2", hex)
            .plain("dec", Behaviour::default()),
    )
    .await?;
    let rig = Rig::start("gw-msg-ids", &[]).await?;
    rig.vendor(
        "hexfmt",
        smsc.port("hex"),
        &[
            ("message_id_submit_format", "'Hex'"),
            ("message_id_receipt_format", "'Decimal'"),
        ],
    )
    .await?;
    rig.vendor("hexauto", smsc.port("hex2"), &[]).await?;
    rig.vendor(
        "decimal",
        smsc.port("dec"),
        &[
            ("message_id_submit_format", "'Decimal'"),
            ("message_id_receipt_format", "'Decimal'"),
        ],
    )
    .await?;
    for vendor in ["hexfmt", "hexauto", "decimal"] {
        let a = rig
            .submit_ok(&message(TO, &format!("ids via {vendor}"), Some(vendor)))
            .await?;
        let vid = strs(&a["vendor_message_ids"]).remove(0);
        if vendor == "decimal" {
            assert!(vid.bytes().all(|b| b.is_ascii_digit()), "{vendor}: {vid}");
        } else {
            // As the vendor wrote it: upper-case hex, shown as is (the simulator's ids are
            // above 0xA000_0000_0000, so they have letters and read differently in decimal).
            assert!(
                vid.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
                "{vendor}: {vid}"
            );
            assert!(
                vid.bytes().any(|b| b.is_ascii_alphabetic()),
                "{vendor}: {vid}"
            );
        }
        let m = rig.delivered(&id_of(&a)).await?;
        assert_eq!(strs(&m["vendor_message_ids"]), vec![vid], "{vendor}");
        assert_eq!(count(&history_events(&m), "receipt"), 1, "{vendor}: {m}");
    }
    let s = smsc.stats().await?;
    assert_eq!(s.submits, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_before_submit_resp_is_correlated() -> Result {
    let early = Behaviour {
        receipt_before_resp: true,
        ..Default::default()
    };
    let smsc = Smsc::start(sim().plain("early", early)).await?;
    let rig = Rig::start("gw-msg-early", &[]).await?;
    rig.vendor("early", smsc.port("early"), &[]).await?;
    let mut ids = Vec::new();
    for n in 0..5 {
        let a = rig
            .submit_ok(&message(TO, &format!("early receipt {n}"), Some("early")))
            .await?;
        ids.push(id_of(&a));
    }
    for id in &ids {
        let m = rig.delivered(id).await?;
        assert!(m["done_at"].is_string(), "{m}");
        assert_eq!(count(&history_events(&m), "receipt"), 1, "{m}");
    }
    let s = smsc.stats().await?;
    assert_eq!(s.submits, 5);
    // Every receipt was stored and acknowledged (none left to be re-sent or dropped).
    wait::until("receipts acknowledged", SETTLE, || async {
        let s = smsc.stats().await?;
        Ok((s.receipts_acked == 5 && s.receipts_pending == 0).then_some(()))
    })
    .await?;
    let parked = metric(&rig.gw.metrics().await?, "smpp_receipts_parked_total", &[]);
    eprintln!("receipts parked before their mapping: {parked}");
    Ok(())
}

/// Decimal ids 10..=16 under the default `Auto` formats, each receipt before its
/// submit_sm_resp: receipt "16" read as decimal is 0x10, which is message "10" read as hex.
/// Each message still gets its own receipt, and message "10" only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_receipt_goes_to_the_message_written_like_its_id() -> Result {
    let early = Behaviour {
        receipt_before_resp: true,
        ..Default::default()
    };
    let smsc = Smsc::start(sim().message_id_start(10).plain("early", early)).await?;
    let rig = Rig::start("gw-msg-early-ids", &[]).await?;
    rig.vendor("earlyids", smsc.port("early"), &[]).await?;
    let mut ids = Vec::new();
    for n in 10..=16 {
        let a = rig
            .submit_ok(&message(TO, &format!("early id {n}"), Some("earlyids")))
            .await?;
        assert_eq!(strs(&a["vendor_message_ids"]), [n.to_string()], "{a}");
        ids.push(id_of(&a));
    }
    for id in &ids {
        let m = rig.delivered(id).await?;
        assert_eq!(count(&history_events(&m), "receipt"), 1, "{m}");
    }
    wait::until("receipts acknowledged", SETTLE, || async {
        let s = smsc.stats().await?;
        Ok((s.receipts_acked == 7 && s.receipts_pending == 0).then_some(()))
    })
    .await?;
    // Receipt "16" matched "10" only through a reading; wait until that is settled (the exact
    // message took it), after which nothing more can go to "10".
    let settled = |outcome: &'static str| {
        let gw = &rig.gw;
        async move {
            Ok::<_, anyhow::Error>(metric(
                &gw.metrics().await?,
                "smpp_receipts_uncertain_total",
                &[&format!("outcome=\"{outcome}\"")],
            ))
        }
    };
    wait::until("the uncertain match settled", SETTLE, || async {
        Ok((settled("exact_won").await? >= 1.0).then_some(()))
    })
    .await?;
    assert_eq!(settled("reading_held").await?, 0.0);
    let first = rig.delivered(&ids[0]).await?;
    assert_eq!(count(&history_events(&first), "receipt"), 1, "{first}");
    Ok(())
}

/// A submit_sm as the PDU trace shows it.
#[derive(Debug)]
struct SubmitPdu {
    esm_class: u8,
    data_coding: u8,
    short_message: Vec<u8>,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses an outgoing trace line (`>> <hex> <debug>`) that is a submit_sm.
fn parse_submit(line: &str) -> Option<SubmitPdu> {
    let hex = line.strip_prefix(">> ")?.split_whitespace().next()?;
    let c = smpp_e2e::esme::decode(&unhex(hex)?)?;
    let Some(rusmpp::Pdu::SubmitSm(sm)) = c.pdu() else {
        return None;
    };
    Some(SubmitPdu {
        esm_class: u8::from(sm.esm_class),
        data_coding: u8::from(sm.data_coding),
        short_message: sm.short_message().as_ref().to_vec(),
    })
}

/// The submit_sm PDUs traced after the first `skip` trace lines.
async fn traced_submits(rig: &Rig, vendor: &str, skip: usize) -> Result<(Vec<SubmitPdu>, usize)> {
    let a = rig.trace(vendor, "GET").await?;
    anyhow::ensure!(a.status == 200, "trace: {} {}", a.status, a.body);
    let lines = strs(&a.json["lines"]);
    anyhow::ensure!(lines.len() < 500, "the trace ring buffer wrapped");
    let subs = lines
        .iter()
        .skip(skip)
        .filter_map(|l| parse_submit(l))
        .collect();
    Ok((subs, lines.len()))
}

/// Checks the UDH of each part (`05 00 03 ref total seq`) and returns the bodies in order.
fn udh_bodies(subs: &[SubmitPdu], total: usize) -> Vec<Vec<u8>> {
    assert_eq!(subs.len(), total, "submit_sm count");
    let reference = subs[0].short_message[3];
    let mut bodies: Vec<Option<Vec<u8>>> = vec![None; total];
    for s in subs {
        assert_eq!(s.esm_class & 0x40, 0x40, "UDHI not set: {s:?}");
        let sm = &s.short_message;
        assert_eq!(&sm[..3], &[5, 0, 3], "UDH header: {sm:02x?}");
        assert_eq!(sm[3], reference, "one reference for all parts");
        assert_eq!(sm[4] as usize, total, "UDH total");
        let seq = sm[5] as usize;
        assert!((1..=total).contains(&seq), "UDH seq {seq}");
        assert!(bodies[seq - 1].is_none(), "UDH seq {seq} twice");
        bodies[seq - 1] = Some(sm[6..].to_vec());
    }
    bodies.into_iter().map(Option::unwrap).collect()
}

/// Polls the message until delivered, asserting on the way that it is never delivered while
/// fewer than `parts` receipts are in its history.
async fn delivered_only_when_all(rig: &Rig, id: &str, parts: usize) -> Result<Value> {
    let saw_partial = std::sync::atomic::AtomicBool::new(false);
    let m = wait::until("delivered after every part's receipt", SETTLE, || async {
        let a = rig.get(id).await?;
        let receipts = count(&history_events(&a.json), "receipt");
        let status = a.json["status"].as_str().unwrap_or("").to_string();
        if receipts < parts {
            assert_eq!(
                status, "submitted",
                "{receipts} of {parts} receipts, yet {}",
                a.body
            );
            if receipts > 0 {
                saw_partial.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return Ok(None);
        }
        Ok((status == "delivered").then_some(a.json))
    })
    .await?;
    eprintln!(
        "observed a partly receipted message: {}",
        saw_partial.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_gsm_text_goes_as_seven_udh_parts_delivered_when_all_are() -> Result {
    // Receipts come 2 s after each submit, so the message is seen submitted first.
    let smsc = Smsc::start(
        sim()
            .plain("plain", Behaviour::default())
            .dlr_delay(Duration::from_secs(2)),
    )
    .await?;
    let rig = Rig::start("gw-msg-long", &[]).await?;
    rig.vendor("long", smsc.port("plain"), &[]).await?;
    let a = rig.trace("long", "POST").await?;
    assert_eq!(a.status, 200, "{}", a.body);
    let (_, mark) = traced_submits(&rig, "long", 0).await?;

    // 1,000 GSM characters (letters, digits, spaces: one septet each) → 7 × 153.
    let alphabet = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 ";
    let text: String = (0..1000)
        .map(|i| alphabet[i % alphabet.len()] as char)
        .collect();
    let a = rig.submit_ok(&message(TO, &text, Some("long"))).await?;
    assert_eq!(a["parts"], 7, "{a}");
    let vids = strs(&a["vendor_message_ids"]);
    assert_eq!(vids.len(), 7, "{a}");
    let mut uniq = vids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 7, "distinct vendor ids: {vids:?}");
    let id = id_of(&a);
    let first = rig.get(&id).await?;
    assert_eq!(
        first.json["status"], "submitted",
        "right after the 201: {}",
        first.body
    );
    let m = delivered_only_when_all(&rig, &id, 7).await?;
    assert_eq!(count(&history_events(&m), "receipt"), 7, "{m}");
    assert_eq!(count(&history_events(&m), "submit_sm_resp"), 7, "{m}");
    assert_eq!(strs(&m["vendor_message_ids"]), vids);
    let parts_seen: Vec<u64> = m["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "receipt")
        .filter_map(|e| e["part"].as_u64())
        .collect();
    let mut p = parts_seen.clone();
    p.sort();
    assert_eq!(p, (0..7).collect::<Vec<_>>(), "a receipt for each part");

    // On the wire: 7 submit_sm, UDH 05 00 03 ref 07 seq, GSM unpacked, ≤ 153 septets each.
    let (subs, _) = traced_submits(&rig, "long", mark).await?;
    let bodies = udh_bodies(&subs, 7);
    assert!(subs.iter().all(|s| s.data_coding == 0), "{subs:?}");
    assert!(bodies.iter().all(|b| b.len() <= 153));
    assert_eq!(bodies.concat(), text.as_bytes(), "the parts make the text");
    assert_eq!(smsc.stats().await?.submits, 7);
    Ok(())
}

/// Parts of a UCS-2 text: one when ≤ 70 UTF-16 units, else greedy 67-unit parts that never
/// cut a surrogate pair.
fn ucs2_parts(text: &str) -> usize {
    let units: usize = text.chars().map(char::len_utf16).sum();
    if units <= 70 {
        return 1;
    }
    let (mut parts, mut fill) = (1, 0);
    for c in text.chars() {
        let n = c.len_utf16();
        if fill + n > 67 {
            parts += 1;
            fill = 0;
        }
        fill += n;
    }
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emoji_goes_as_ucs2_and_extension_characters_count_double() -> Result {
    let smsc = Smsc::start(sim().plain("plain", Behaviour::default())).await?;
    let rig = Rig::start("gw-msg-enc", &[]).await?;
    rig.vendor("enc", smsc.port("plain"), &[]).await?;
    assert_eq!(rig.trace("enc", "POST").await?.status, 200);

    // (text, parts, data_coding)
    let long_emoji = format!("{}\u{1F600}{}", "a".repeat(66), "b".repeat(60));
    let many_emoji = "\u{1F680}\u{1F30D} ".repeat(30);
    let cases: Vec<(String, usize, u8)> = vec![
        ("Hi \u{1F600}".into(), 1, 8),
        // Unit 67 would cut the pair: the emoji starts part 2.
        (long_emoji.clone(), ucs2_parts(&long_emoji), 8),
        (many_emoji.clone(), ucs2_parts(&many_emoji), 8),
        // 81 × € = 162 septets: two parts (one if € counted one).
        ("€".repeat(81), 2, 0),
        // 16 × `€[]{}` = 160 septets: exactly one part; 17 × = 170: two.
        ("€[]{}".repeat(16), 1, 0),
        ("€[]{}".repeat(17), 2, 0),
        ("x".repeat(160), 1, 0),
        ("x".repeat(161), 2, 0),
    ];
    assert_eq!(cases[1].1, 2);
    assert_eq!(cases[2].1, 3, "90 chars, 150 units");
    let mut ids = Vec::new();
    for (text, parts, dc) in &cases {
        let (_, mark) = traced_submits(&rig, "enc", 0).await?;
        let a = rig.submit_ok(&message(TO, text, Some("enc"))).await?;
        assert_eq!(a["parts"], *parts as u64, "{text:?}: {a}");
        assert_eq!(strs(&a["vendor_message_ids"]).len(), *parts, "{a}");
        let (subs, _) = traced_submits(&rig, "enc", mark).await?;
        assert!(
            subs.iter().all(|s| s.data_coding == *dc),
            "{text:?}: data_coding {:?}",
            subs.iter().map(|s| s.data_coding).collect::<Vec<_>>()
        );
        let bodies = if *parts == 1 {
            assert_eq!(subs.len(), 1);
            assert_eq!(subs[0].esm_class & 0x40, 0, "no UDH on a single part");
            vec![subs[0].short_message.clone()]
        } else {
            udh_bodies(&subs, *parts)
        };
        if *dc == 8 {
            for b in &bodies {
                assert!(b.len() <= if *parts == 1 { 140 } else { 134 });
                let last = u16::from_be_bytes([b[b.len() - 2], b[b.len() - 1]]);
                assert!(
                    !(0xD800..0xDC00).contains(&last),
                    "a part ends inside a surrogate pair"
                );
            }
            let units: Vec<u16> = bodies
                .concat()
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            assert_eq!(&String::from_utf16(&units)?, text);
        } else {
            for b in &bodies {
                assert!(b.len() <= if *parts == 1 { 160 } else { 153 });
                assert_ne!(b.last(), Some(&0x1B), "a part ends inside an escape");
            }
            let all = bodies.concat();
            let septets: usize = text
                .chars()
                .map(|c| if "€[]{}".contains(c) { 2 } else { 1 })
                .sum();
            assert_eq!(
                all.len(),
                septets,
                "{text:?}: extension characters count two"
            );
            if text.starts_with('€') {
                assert_eq!(&all[..2], &[0x1B, 0x65], "€ is ESC e");
            }
        }
        ids.push(id_of(&a));
    }
    for id in &ids {
        rig.delivered(id).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_submits_are_retried_then_succeed_and_the_retries_are_bounded() -> Result {
    let smsc = Smsc::start(
        sim()
            .plain(
                "every2",
                Behaviour {
                    throttle_every: Some(2),
                    ..Default::default()
                },
            )
            .plain(
                "always",
                Behaviour {
                    throttle_every: Some(1),
                    ..Default::default()
                },
            ),
    )
    .await?;
    let rig = Rig::start("gw-msg-throttle", &[]).await?;
    rig.vendor("every2", smsc.port("every2"), &[]).await?;

    // Submit 1 of the connection passes, submit 2 is throttled and retried as submit 3.
    let a1 = rig.submit_ok(&message(TO, "first", Some("every2"))).await?;
    let a2 = rig
        .submit_ok(&message(TO, "second", Some("every2")))
        .await?;
    let m1 = rig.delivered(&id_of(&a1)).await?;
    let m2 = rig.delivered(&id_of(&a2)).await?;
    assert!(
        !history_events(&m1).contains(&"throttled".to_string()),
        "{m1}"
    );
    let ev = history_events(&m2);
    assert_eq!(count(&ev, "throttled"), 1, "{m2}");
    assert!(
        ev.iter().position(|e| e == "throttled") < ev.iter().position(|e| e == "submit_sm_resp"),
        "{m2}"
    );
    let s = smsc.stats().await?;
    assert_eq!((s.submits, s.submits_throttled), (3, 1), "{s:?}");
    let mt = rig.gw.metrics().await?;
    assert_eq!(
        metric(&mt, "smpp_submit_throttled_total", &["vendor=\"every2\""]),
        1.0
    );

    // A vendor that throttles everything: a bounded number of tries, then 502 naming the status.
    smsc.reset_stats().await?;
    rig.vendor("always", smsc.port("always"), &[]).await?;
    let a = rig.submit(&message(TO, "never", Some("always"))).await?;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.code(), "vendor_rejected");
    assert!(a.message().contains("ESME_RTHROTTLED"), "{}", a.body);
    let s = smsc.stats().await?;
    assert!(
        s.submits > 1 && s.submits <= 10,
        "tries of an always-throttled submit: {}",
        s.submits
    );
    assert_eq!(s.submits, s.submits_throttled);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_submit_times_out_with_504_and_a_failed_status() -> Result {
    let smsc = Smsc::start(sim().plain(
        "mute",
        Behaviour {
            never_answer_submits: true,
            ..Default::default()
        },
    ))
    .await?;
    let rig = Rig::start("gw-msg-timeout", &[("SUBMIT_TIMEOUT_SECONDS", "2")]).await?;
    rig.vendor("mute", smsc.port("mute"), &[]).await?;
    let a = rig
        .submit(&message(TO, "into the void", Some("mute")))
        .await?;
    assert_eq!(a.status, 504, "{}", a.body);
    assert_eq!(a.code(), "vendor_timeout", "{}", a.body);
    assert_eq!(a.json["success"], false);
    assert!(a.message().contains("mute"), "{}", a.body);
    let id = a.json["error"]["id"]
        .as_str()
        .expect("the 504 carries the message id")
        .to_string();
    let m = rig.get(&id).await?;
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(m.json["status"], "failed", "{}", m.body);
    assert_eq!(m.json["error_code"], "timeout", "{}", m.body);
    assert!(m.json["done_at"].is_string(), "{}", m.body);
    let h = m.json["history"].as_array().unwrap();
    let t = h
        .iter()
        .find(|e| e["event"] == "timeout")
        .unwrap_or_else(|| panic!("no timeout in the history: {}", m.body));
    assert_eq!(t["vendor"], "mute");
    assert!(
        t["detail"]
            .as_str()
            .unwrap_or("")
            .contains("no submit_sm_resp"),
        "{t}"
    );
    assert_eq!(smsc.stats().await?.submits, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_required_and_missing_keys_fail_closed() -> Result {
    let smsc = Smsc::start(sim().plain("plain", Behaviour::default())).await?;
    let rig = Rig::start("gw-msg-auth", &[]).await?;
    rig.vendor("auth", smsc.port("plain"), &[]).await?;
    let port = rig.gw.http;
    let body = message(TO, "auth test", Some("auth"));
    let wrong = "tokWRONG0000000000000000000000000";

    for (path, b) in [
        ("/api/v1/messages", body.clone()),
        (
            "/api/v1/messages/batch",
            json!({"messages": [body.clone()]}),
        ),
    ] {
        let a = post_json(port, path, None, &[], &b).await?;
        assert_eq!(
            (a.status, a.code()),
            (401, "unauthorized"),
            "{path}: {}",
            a.body
        );
        assert!(a.message().contains("Authorization"), "{}", a.body);
        let a = post_json(port, path, Some(wrong), &[], &b).await?;
        assert_eq!(
            (a.status, a.code()),
            (401, "unauthorized"),
            "{path}: {}",
            a.body
        );
        let basic = format!("Basic {}", rig.m.token);
        let a = post_json(port, path, None, &[("Authorization", &basic)], &b).await?;
        assert_eq!(a.status, 401, "{path} with Basic: {}", a.body);
    }
    let a = get_auth(port, "/api/v1/messages/abc", None).await?;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = get_auth(port, "/api/v1/messages/abc", Some(wrong)).await?;
    assert_eq!(a.status, 401, "{}", a.body);

    // The trace switch needs a key too.
    for method in ["POST", "DELETE", "GET"] {
        let a = send(port, method, "/api/v1/vendors/auth/trace", &[], b"").await?;
        assert_eq!(a.status, 401, "{method} trace without a key: {}", a.body);
    }
    let bearer = format!("Bearer {wrong}");
    let a = send(
        port,
        "POST",
        "/api/v1/vendors/auth/trace",
        &[("Authorization", &bearer)],
        b"",
    )
    .await?;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = rig.trace("auth", "GET").await?;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json["trace"], false);
    assert_eq!(smsc.stats().await?.submits, 0, "nothing sent without a key");

    // With the key: sent.
    let a = rig.submit_ok(&body).await?;
    rig.delivered(&id_of(&a)).await?;

    // The keys file is reloaded: a new token works, the old one no longer does.
    let new_token = format!("tok{:032x}", rand::random::<u128>());
    std::fs::write(
        &rig.m.keys_file,
        format!("{}:{new_token}\n", rig.m.key_name),
    )?;
    wait::until("the new key accepted", SETTLE, || async {
        let a = post_json(port, "/api/v1/messages", Some(&new_token), &[], &body).await?;
        Ok((a.status == 201).then_some(()))
    })
    .await?;
    let a = rig.submit(&body).await?;
    assert_eq!(a.status, 401, "old token after the reload: {}", a.body);

    // No keys file: submit, batch, GET and trace are refused with 503 no_api_keys.
    let db2 = TestDb::new().await?;
    let m = messaging_env()?;
    let env: Vec<_> = m
        .env()
        .into_iter()
        .filter(|(k, _)| *k != "API_KEYS_FILE")
        .collect();
    let gw2 = Gateway::start_with(&db2, "gw-msg-nokeys", &env).await?;
    db2.wait_schema().await?;
    db2.insert_legacy("nokeys", smsc.port("plain"), SYSTEM_ID, PASSWORD, &[])
        .await?;
    gw2.wait_bound("nokeys", 1, SETTLE).await?;
    let body2 = message(TO, "no keys", Some("nokeys"));
    for token in [None, Some(m.token.as_str())] {
        let a = post_json(gw2.http, "/api/v1/messages", token, &[], &body2).await?;
        assert_eq!((a.status, a.code()), (503, "no_api_keys"), "{}", a.body);
        let a = post_json(
            gw2.http,
            "/api/v1/messages/batch",
            token,
            &[],
            &json!({"messages": [body2.clone()]}),
        )
        .await?;
        assert_eq!((a.status, a.code()), (503, "no_api_keys"), "{}", a.body);
        let a = get_auth(gw2.http, "/api/v1/messages/abc", token).await?;
        assert_eq!((a.status, a.code()), (503, "no_api_keys"), "{}", a.body);
    }
    let a = send(gw2.http, "POST", "/api/v1/vendors/nokeys/trace", &[], b"").await?;
    assert_eq!((a.status, a.code()), (503, "no_api_keys"), "{}", a.body);
    assert_eq!(smsc.stats().await?.submits, 2, "only the two keyed submits");

    rig.gw
        .assert_no_secret_in_log(&[&rig.m.token, &new_token, wrong, PASSWORD]);
    gw2.assert_no_secret_in_log(&[&m.token, PASSWORD]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_and_size_limits_hold() -> Result {
    let smsc = Smsc::start(sim().plain("plain", Behaviour::default())).await?;
    let rig = Rig::start("gw-msg-400", &[]).await?;
    rig.vendor("v400", smsc.port("plain"), &[]).await?;
    let port = rig.gw.http;
    let tok = Some(rig.m.token.as_str());

    // (body, code, what the message must name)
    let cases: Vec<(Value, &str, &str)> = vec![
        (message("12ab", "x", None), "invalid_request", "to"),
        (message("", "x", None), "invalid_request", "to"),
        (message("+1555", "", None), "invalid_request", "text"),
        (
            json!({"to": TO, "from": "", "text": "x"}),
            "invalid_request",
            "from",
        ),
        (
            json!({"to": TO, "from": "ACME", "text": "x", "callback_url": "ftp://x"}),
            "invalid_request",
            "callback_url",
        ),
        (
            message(TO, "x", Some("nosuchvendor")),
            "unknown_vendor",
            "nosuchvendor",
        ),
        (
            json!({"to": TO, "from": "ACME", "text": "x", "colour": "red"}),
            "invalid_json",
            "colour",
        ),
        (json!({"to": TO, "from": "ACME"}), "invalid_json", "text"),
        (
            json!({"to": 15551234567u64, "from": "ACME", "text": "x"}),
            "invalid_json",
            "column",
        ),
        // 11 parts of GSM text with MAX_PARTS 10.
        (
            message(TO, &"y".repeat(153 * 11), None),
            "invalid_request",
            "text",
        ),
    ];
    for (body, code, field) in &cases {
        let a = post_json(port, "/api/v1/messages", tok, &[], body).await?;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert_eq!(a.json["success"], false, "{}", a.body);
        assert_eq!(a.code(), *code, "{body}: {}", a.body);
        assert!(a.message().contains(field), "{body}: {}", a.body);
        if *code == "invalid_request" {
            assert!(
                a.message().starts_with(&format!("{field}:")),
                "names the field first: {}",
                a.body
            );
        }
    }
    let auth = format!("Bearer {}", rig.m.token);
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let a = send(port, "POST", "/api/v1/messages", &h, b"{\"to\": \"+1555\",").await?;
    assert_eq!((a.status, a.code()), (400, "invalid_json"), "{}", a.body);
    assert!(a.message().contains("line 1"), "says where: {}", a.body);
    let a = send(port, "POST", "/api/v1/messages", &h, b"").await?;
    assert_eq!((a.status, a.code()), (400, "invalid_json"), "{}", a.body);

    // Over 4 MiB: 413, the body drained (not kept) so the client hears the answer.
    let huge = json!({"to": TO, "from": "ACME", "text": "z".repeat(4 * 1024 * 1024 + 16)});
    let a = post_json(port, "/api/v1/messages", tok, &[], &huge).await?;
    assert_eq!((a.status, a.code()), (413, "body_too_large"), "{}", a.body);
    let a = post_json(
        port,
        "/api/v1/messages/batch",
        tok,
        &[],
        &json!({"messages": [huge]}),
    )
    .await?;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(smsc.stats().await?.submits, 0, "nothing sent so far");

    // A batch answers each entry, in order.
    let a = rig
        .gw
        .batch(
            &rig.m.token,
            &[
                message(TO, "batch one", Some("v400")),
                message("not-a-number", "batch two", Some("v400")),
                json!({"to": TO, "from": "ACME", "text": "batch three", "client_ref": "c3"}),
            ],
        )
        .await?;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = a.json["results"].as_array().expect("results");
    assert_eq!(r.len(), 3, "{}", a.body);
    assert_eq!(r[0]["status"], "submitted", "{}", a.body);
    assert_eq!(r[1]["success"], false, "{}", a.body);
    assert_eq!(r[1]["error"]["code"], "invalid_request", "{}", a.body);
    assert!(
        r[1]["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("to:"),
        "{}",
        a.body
    );
    assert_eq!(r[2]["status"], "submitted", "{}", a.body);
    let (id0, id2) = (id_of(&r[0]), id_of(&r[2]));
    assert_ne!(id0, id2);
    rig.delivered(&id0).await?;
    let m2 = rig.delivered(&id2).await?;
    assert_eq!(m2["client_ref"], "c3");
    assert_eq!(smsc.stats().await?.submits, 2);
    // A batch entry with an unknown field is named by position.
    let a = rig
        .gw
        .batch(
            &rig.m.token,
            &[json!({"to": TO, "from": "ACME", "text": "x", "colour": 1})],
        )
        .await?;
    let e = &a.json["results"][0]["error"];
    assert!(
        e["message"].as_str().unwrap_or("").contains("messages[0]"),
        "{}",
        a.body
    );

    // Over 1,000 entries: 413, nothing sent.
    let many: Vec<Value> = (0..1001).map(|_| message(TO, "m", Some("v400"))).collect();
    let a = rig.gw.batch(&rig.m.token, &many).await?;
    assert_eq!((a.status, a.code()), (413, "batch_too_large"), "{}", a.body);
    assert!(a.message().contains("1000"), "{}", a.body);
    assert_eq!(smsc.stats().await?.submits, 2);
    Ok(())
}

/// A callback as the test server received it.
#[derive(Debug)]
struct Hook {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A small HTTP server on 127.0.0.1:0 that records each request; the first `fail_first`
/// requests are answered 500, the rest 200.
async fn hook_server(fail_first: usize) -> Result<(u16, mpsc::UnboundedReceiver<Hook>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut served = 0usize;
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head_end, len) = loop {
                let Ok(n) = s.read(&mut chunk).await else {
                    break (0, None);
                };
                if n == 0 {
                    break (0, None);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (p + 4, Some(len));
                }
            };
            let Some(len) = len else { continue };
            while buf.len() < head_end + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let body = buf[head_end..].to_vec();
            served += 1;
            let status = if served <= fail_first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
            let _ = s.shutdown().await;
            let _ = tx.send(Hook { headers, body });
        }
    });
    Ok((port, rx))
}

async fn next_hook(rx: &mut mpsc::UnboundedReceiver<Hook>) -> Result<Hook> {
    tokio::time::timeout(SETTLE, rx.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no callback within {SETTLE:?}"))?
        .ok_or_else(|| anyhow::anyhow!("the callback server stopped"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_callbacks_are_signed_retried_and_nothing_secret_is_logged() -> Result {
    use smpp_gateway::messaging::callbacks::{SIGNATURE_HEADER, verify};
    let smsc = Smsc::start(sim().plain("plain", Behaviour::default())).await?;
    let rig = Rig::start("gw-msg-callback", &[]).await?;
    rig.vendor("cb", smsc.port("plain"), &[]).await?;
    let secret = std::fs::read_to_string(&rig.m.secret_file)?;
    assert_eq!(secret, rig.m.secret);

    let (port, mut rx) = hook_server(0).await?;
    let text = "Callback text Quokka 7719";
    let url = format!("http://127.0.0.1:{port}/status?src=e2e");
    let a = rig
        .submit_ok(
            &json!({"to": TO, "from": "ACME", "text": text, "vendor": "cb",
            "callback_url": url}),
        )
        .await?;
    let id = id_of(&a);
    let hook = next_hook(&mut rx).await?;
    let sig = hook
        .headers
        .get(&SIGNATURE_HEADER.to_ascii_lowercase())
        .unwrap_or_else(|| panic!("no {SIGNATURE_HEADER}: {:?}", hook.headers));
    let now = chrono::Utc::now().timestamp();
    assert!(
        verify(secret.trim().as_bytes(), sig, &hook.body, now, 300),
        "signature {sig} does not verify"
    );
    assert!(!verify(b"another secret", sig, &hook.body, now, 300));
    let mut tampered = hook.body.clone();
    tampered.push(b' ');
    assert!(!verify(secret.as_bytes(), sig, &tampered, now, 300));
    assert_eq!(
        hook.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let body: Value = serde_json::from_slice(&hook.body)?;
    assert_eq!(body["id"], id.as_str(), "{body}");
    assert_eq!(body["status"], "delivered", "{body}");
    assert_eq!(body["vendor"], "cb", "{body}");
    rig.delivered(&id).await?;
    wait::until("callback counted", SETTLE, || async {
        let m = rig.gw.metrics().await?;
        Ok((metric(
            &m,
            "smpp_callbacks_total",
            &["kind=\"status\"", "outcome=\"delivered\""],
        ) == 1.0)
            .then_some(()))
    })
    .await?;

    // A receiver that fails first: retried, then delivered (the same body, signed afresh).
    let (port2, mut rx2) = hook_server(1).await?;
    let a = rig
        .submit_ok(
            &json!({"to": TO, "from": "ACME", "text": "retry me", "vendor": "cb",
            "callback_url": format!("http://127.0.0.1:{port2}/s")}),
        )
        .await?;
    let h1 = next_hook(&mut rx2).await?;
    let h2 = next_hook(&mut rx2).await?;
    assert_eq!(h1.body, h2.body);
    let b2: Value = serde_json::from_slice(&h2.body)?;
    assert_eq!(b2["id"], id_of(&a).as_str());
    let sig2 = &h2.headers[&SIGNATURE_HEADER.to_ascii_lowercase()];
    assert!(verify(
        secret.trim().as_bytes(),
        sig2,
        &h2.body,
        chrono::Utc::now().timestamp(),
        300
    ));
    wait::until("callback retried, then delivered", SETTLE, || async {
        let m = rig.gw.metrics().await?;
        let r = metric(
            &m,
            "smpp_callbacks_total",
            &["kind=\"status\"", "outcome=\"retried\""],
        );
        let d = metric(
            &m,
            "smpp_callbacks_total",
            &["kind=\"status\"", "outcome=\"delivered\""],
        );
        Ok((r == 1.0 && d == 2.0).then_some(()))
    })
    .await?;

    // A wrong key was tried too; none of the token, the password, the callback secret, the
    // message text or the callback URL's query is in the log (trace off).
    let wrong = "tokNOTAKEY11111111111111111111111";
    let a = rig.gw.submit(wrong, &message(TO, text, Some("cb"))).await?;
    assert_eq!(a.status, 401);
    rig.gw.assert_no_secret_in_log(&[
        &rig.m.token,
        wrong,
        PASSWORD,
        &rig.m.secret,
        text,
        "retry me",
        "src=e2e",
    ]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_retry_sends_once_and_another_body_is_409() -> Result {
    let smsc = Smsc::start(sim().plain("plain", Behaviour::default()).plain(
        "slow",
        Behaviour {
            response_delay_ms: Some(700),
            ..Default::default()
        },
    ))
    .await?;
    let rig = Rig::start("gw-msg-idem", &[]).await?;
    rig.vendor("idem", smsc.port("plain"), &[]).await?;
    let tok = &rig.m.token;
    let key = format!("order-{:016x}", rand::random::<u64>());
    let body = message(TO, "pay once", Some("idem"));

    let first = rig.gw.submit_idem(tok, &key, &body).await?;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = rig.gw.submit_idem(tok, &key, &body).await?;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.json, first.json, "the retry returns the first answer");
    assert_eq!(
        smsc.stats().await?.submits,
        1,
        "the simulator counts one submit"
    );

    let other = message(TO, "pay twice", Some("idem"));
    let a = rig.gw.submit_idem(tok, &key, &other).await?;
    assert_eq!(
        (a.status, a.code()),
        (409, "idempotency_key_reused"),
        "{}",
        a.body
    );
    assert_eq!(smsc.stats().await?.submits, 1);
    // Another key is another message.
    let key2 = format!("order-{:016x}", rand::random::<u64>());
    let b = rig.gw.submit_idem(tok, &key2, &body).await?;
    assert_eq!(b.status, 201, "{}", b.body);
    assert_ne!(b.json["id"], first.json["id"]);
    assert_eq!(smsc.stats().await?.submits, 2);
    rig.delivered(&id_of(&first.json)).await?;

    // Two at once with one key, while the vendor is slow to answer: one send, one answer.
    rig.vendor("slowidem", smsc.port("slow"), &[]).await?;
    smsc.reset_stats().await?;
    let key3 = format!("order-{:016x}", rand::random::<u64>());
    let slow = message(TO, "concurrent", Some("slowidem"));
    let (x, y) = tokio::join!(
        rig.gw.submit_idem(tok, &key3, &slow),
        rig.gw.submit_idem(tok, &key3, &slow)
    );
    let (x, y) = (x?, y?);
    assert_eq!(x.status, 201, "{}", x.body);
    assert!(
        y.status == 201 || y.status == 409,
        "the second waits for the first or gets 409: {}",
        y.body
    );
    if y.status == 201 {
        assert_eq!(x.json["id"], y.json["id"]);
    }
    assert_eq!(smsc.stats().await?.submits, 1, "one send for two requests");
    // An invalid request does not use the key up.
    let key4 = format!("order-{:016x}", rand::random::<u64>());
    let bad = rig
        .gw
        .submit_idem(tok, &key4, &message("x", "bad", None))
        .await?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let good = rig.gw.submit_idem(tok, &key4, &body).await?;
    assert_eq!(good.status, 201, "the key is free again: {}", good.body);
    Ok(())
}
