//! The bind-slot queries (smpp_db::sessions) on the real PostgreSQL: what keeps the fleet
//! within max_binds. Claims are exclusive while the holder heartbeats, taken over once its
//! heartbeat is older than the TTL, all-or-nothing for a TX+RX pair, and released only by
//! their holder.
//!
//! Run: make env-up; cargo test -p smpp-e2e --test gateway_slots

mod gateway_support;

use std::time::Duration;

use gateway_support::{Result, TestDb};
use smpp_db::sessions::{self, SlotReport, SlotState};

const TTL: Duration = Duration::from_secs(15);

async fn vendor(db: &TestDb) -> Result<uuid::Uuid> {
    let id: String = db
        .insert_legacy("slots", 2775, "sys", "pw", &[("max_binds", "2")])
        .await?;
    Ok(id.parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_exclusive_until_the_holder_goes_stale() -> Result {
    let db = TestDb::new().await?;
    smpp_db::migrate(&db.pool).await?;
    let v = vendor(&db).await?;
    let p = &db.pool;

    assert!(sessions::claim(p, v, &[0], "a", 1, TTL).await?);
    assert!(
        !sessions::claim(p, v, &[0], "b", 1, TTL).await?,
        "b must not take a live slot"
    );
    assert!(
        sessions::claim(p, v, &[0], "a", 2, TTL).await?,
        "re-claiming our own slot is fine"
    );
    // A pair: slot 1 is free but slot 0 is a's, so b gets neither.
    assert!(!sessions::claim(p, v, &[0, 1], "b", 1, TTL).await?);
    assert!(
        sessions::slots(p, v).await?.iter().all(|s| s.slot == 0),
        "all-or-nothing"
    );
    assert_eq!(
        sessions::slots_held_by_others(p, v, "b", TTL).await?,
        vec![0]
    );

    // a stops heartbeating: after the TTL, b takes the slot over.
    db.exec(&format!(
        "UPDATE vendor_mgmt.vendor_sessions SET heartbeat = now() - interval '16 seconds' WHERE vendor_id = '{v}'"
    ))
    .await?;
    assert!(
        sessions::slots_held_by_others(p, v, "b", TTL)
            .await?
            .is_empty()
    );
    assert!(sessions::claim(p, v, &[0, 1], "b", 3, TTL).await?);
    let slots = sessions::slots(p, v).await?;
    assert_eq!(slots.len(), 2);
    assert!(
        slots
            .iter()
            .all(|s| s.pod == "b" && s.state == "claimed" && s.config_version == Some(3))
    );
    // a's heartbeat now tells it the slot is gone.
    assert!(sessions::heartbeat_slots(p, "a").await?.is_empty());
    assert_eq!(sessions::heartbeat_slots(p, "b").await?.len(), 2);

    // States: batched, only the holder's rows, since moves on change only.
    sessions::report_many(
        p,
        "b",
        &[
            SlotReport {
                vendor_id: v,
                slot: 0,
                state: SlotState::Bound,
                last_error: None,
                config_version: 3,
            },
            SlotReport {
                vendor_id: v,
                slot: 1,
                state: SlotState::Backoff,
                last_error: Some("tcp_refused: x".into()),
                config_version: 3,
            },
        ],
    )
    .await?;
    assert!(
        !sessions::report(p, v, 0, "a", SlotState::Bound, None, 3).await?,
        "a no longer holds slot 0"
    );
    let slots = sessions::slots(p, v).await?;
    assert_eq!(
        (slots[0].state.as_str(), slots[1].state.as_str()),
        ("bound", "backoff")
    );
    assert_eq!(slots[1].last_error.as_deref(), Some("tcp_refused: x"));

    // Only the holder releases; removing a pod drops its slots and its pod row.
    sessions::release(p, v, &[0], "a").await?;
    assert_eq!(sessions::slots(p, v).await?.len(), 2);
    sessions::release(p, v, &[0], "b").await?;
    assert_eq!(sessions::slots(p, v).await?.len(), 1);
    sessions::heartbeat_pod(p, "b", None).await?;
    sessions::heartbeat_pod(p, "c", None).await?;
    assert_eq!(sessions::live_pods(p, TTL).await?, 2);
    sessions::remove_pod(p, "b").await?;
    assert!(sessions::slots(p, v).await?.is_empty());
    assert_eq!(sessions::live_pods(p, TTL).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_exceed_the_slots() -> Result {
    let db = TestDb::new().await?;
    smpp_db::migrate(&db.pool).await?;
    let v = vendor(&db).await?;
    // 20 pods race for slots 0 and 1 at once: exactly one winner per slot.
    let mut tasks = Vec::new();
    for pod in 0..20 {
        for slot in 0..2 {
            let pool = db.pool.clone();
            tasks.push(tokio::spawn(async move {
                sessions::claim(&pool, v, &[slot], &format!("pod-{pod}"), 1, TTL)
                    .await
                    .map(|won| won as u32)
            }));
        }
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await??;
    }
    assert_eq!(wins, 2);
    assert_eq!(sessions::slots(&db.pool, v).await?.len(), 2);
    Ok(())
}

async fn vendor_named(db: &TestDb, name: &str) -> Result<uuid::Uuid> {
    let id: String = db
        .insert_legacy(name, 2775, name, "pw", &[("max_binds", "4")])
        .await?;
    Ok(id.parse()?)
}

fn unit(vendor_id: uuid::Uuid, slots: &[i32]) -> sessions::UnitClaim {
    sessions::UnitClaim {
        vendor_id,
        slots: slots.to_vec(),
        config_version: 7,
    }
}

/// Who holds each slot of `v`, by slot.
async fn holders(db: &TestDb, v: uuid::Uuid) -> Result<Vec<(i32, String)>> {
    Ok(sessions::slots(&db.pool, v)
        .await?
        .into_iter()
        .map(|s| (s.slot, s.pod))
        .collect())
}

/// The batched forms the gateway uses at scale (one statement for many vendors) answer as the
/// one-vendor forms do: per unit all or nothing, never a live other pod's slot, a stale one
/// taken over; a slot asked twice in one batch is served in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_claims_answer_as_single_claims_do() -> Result {
    let db = TestDb::new().await?;
    smpp_db::migrate(&db.pool).await?;
    let p = &db.pool;
    let (v1, v2) = (
        vendor_named(&db, "b1").await?,
        vendor_named(&db, "b2").await?,
    );
    assert!(sessions::claim(p, v1, &[0], "a", 1, TTL).await?);
    assert!(sessions::claim(p, v1, &[3], "a", 1, TTL).await?);

    let got = sessions::claim_many(
        p,
        &[
            unit(v1, &[0]),    // a's, live
            unit(v1, &[1]),    // free
            unit(v1, &[2, 3]), // a pair whose second slot is a's: neither
            unit(v2, &[0]),    // another vendor's free slot, same statement
            unit(v1, &[1]),    // asked twice: the second sees b's own row
        ],
        "b",
        TTL,
    )
    .await?;
    assert_eq!(got, vec![false, true, false, true, true]);
    assert_eq!(
        holders(&db, v1).await?,
        vec![(0, "a".into()), (1, "b".into()), (3, "a".into())],
        "slot 2 stays free: all or nothing"
    );
    assert_eq!(holders(&db, v2).await?, vec![(0, "b".into())]);
    assert!(
        sessions::slots(p, v1)
            .await?
            .iter()
            .any(|s| s.slot == 1 && s.state == "claimed" && s.config_version == Some(7))
    );
    assert_eq!(
        sessions::slots_held_by_others_many(p, &[v1, v2, v1], "b", TTL).await?,
        vec![vec![0, 3], vec![], vec![0, 3]]
    );

    // a goes stale: its slots are taken over, the pair whole.
    db.exec(
        "UPDATE vendor_mgmt.vendor_sessions SET heartbeat = now() - interval '16 seconds' WHERE pod = 'a'",
    )
    .await?;
    assert!(sessions::slots_held_by_others_many(p, &[v1], "b", TTL).await?[0].is_empty());
    assert_eq!(
        sessions::claim_many(p, &[unit(v1, &[2, 3]), unit(v1, &[0])], "b", TTL).await?,
        vec![true, true]
    );
    assert!(holders(&db, v1).await?.iter().all(|(_, pod)| pod == "b"));
    Ok(())
}

/// Pods racing with batches of pairs and singles: every slot has one holder, and no pair is
/// held half by one pod (a pair partly lost in a race is rolled back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batched_claims_never_split_a_pair() -> Result {
    let db = TestDb::new().await?;
    smpp_db::migrate(&db.pool).await?;
    let vendors = [
        vendor_named(&db, "r1").await?,
        vendor_named(&db, "r2").await?,
    ];
    let mut tasks = Vec::new();
    for pod in 0..12 {
        let pool = db.pool.clone();
        // Half the pods claim the pairs in one order, half in the other, with singles that
        // overlap the pairs' slots.
        let mut claims = vec![
            unit(vendors[0], &[0, 1]),
            unit(vendors[1], &[2, 3]),
            unit(vendors[0], &[3]),
        ];
        if pod % 2 == 1 {
            claims.reverse();
            claims.push(unit(vendors[1], &[1]));
        }
        tasks.push(tokio::spawn(async move {
            let got = sessions::claim_many(&pool, &claims, &format!("pod-{pod}"), TTL).await?;
            Ok::<_, smpp_db::DbError>((format!("pod-{pod}"), claims, got))
        }));
    }
    for t in tasks {
        let (pod, claims, got) = t.await??;
        for (c, won) in claims.iter().zip(got) {
            let held = holders(&db, c.vendor_id).await?;
            let mine = c
                .slots
                .iter()
                .filter(|s| held.iter().any(|(slot, p)| slot == *s && *p == pod))
                .count();
            if won {
                assert_eq!(mine, c.slots.len(), "{pod} won {c:?} but holds {held:?}");
            } else {
                assert_eq!(mine, 0, "{pod} lost {c:?} but holds part: {held:?}");
            }
        }
    }
    for v in vendors {
        let held = holders(&db, v).await?;
        let mut slots: Vec<i32> = held.iter().map(|(s, _)| *s).collect();
        slots.dedup();
        assert_eq!(slots.len(), held.len(), "one holder per slot: {held:?}");
    }
    Ok(())
}
