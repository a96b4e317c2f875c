//! The Redis store (against the environment's real Redis) and the memory store the fast
//! tests use answer the same steps the same way: customer origins, the receipt due when a
//! customer's message turns final, `mark_outboxed`, and resent receipts; the account that
//! submitted a message (what query_sm checks).
//!
//! Run: cargo test -p smpp-gateway --test store_parity

use std::sync::Arc;
use std::time::Duration;

type Result<T = ()> = anyhow::Result<T>;
use chrono::Utc;
use smpp_e2e::env::Env;
use smpp_gateway::messaging::customer::Origin;
use smpp_gateway::messaging::model::{HistoryEntry, MessageStatus};
use smpp_gateway::messaging::store::memory::MemoryStore;
use smpp_gateway::messaging::store::{self, MessageStore, NewMessage, RedisStore, StatusChange};
use uuid::Uuid;

fn message(id: &str, parts: u32, origin: Option<Origin>) -> NewMessage {
    NewMessage {
        id: id.into(),
        vendor: "v".into(),
        vendor_id: Uuid::nil(),
        parts,
        vendor_message_ids: (0..parts).map(|p| format!("{id}-{p}")).collect(),
        submitted_at: Utc::now(),
        status: MessageStatus::Submitted,
        error_code: None,
        client_ref: None,
        callback_url: None,
        account: origin.as_ref().map(|o| o.account),
        origin,
    }
}

/// What a step answered, without the clock: (from, to, the customer's origin and error code
/// when a receipt is due, whether done_at is after submitted_at).
type Seen = Option<(
    MessageStatus,
    MessageStatus,
    Option<(Origin, Option<String>, bool)>,
)>;

fn seen(c: Option<StatusChange>) -> Seen {
    c.map(|c| {
        let customer = c
            .customer
            .map(|f| (f.origin, f.error_code, f.done_at >= f.submitted_at));
        (c.from, c.to, customer)
    })
}

/// The Redis store on the environment's Redis.
async fn redis_store() -> Result<RedisStore> {
    let env = Env::load()?;
    Ok(RedisStore::new(
        store::connect(&env.redis_url).await?,
        Duration::from_secs(600),
    ))
}

/// The scenario, on one store; `tag` keeps the two stores' ids apart in Redis.
async fn scenario(s: &dyn MessageStore, tag: &str) -> Result<Vec<Seen>> {
    let origin = Origin {
        account: Uuid::from_u128(42),
        to: "+15551234567".into(),
        from: "ACME".into(),
    };
    let (two, one, http) = (
        format!("{tag}-two-{}", Uuid::new_v4()),
        format!("{tag}-one-{}", Uuid::new_v4()),
        format!("{tag}-http-{}", Uuid::new_v4()),
    );
    s.create(&message(&two, 2, Some(origin.clone())), &[], &[])
        .await?;
    s.create(&message(&one, 1, Some(origin)), &[], &[]).await?;
    s.create(&message(&http, 1, None), &[], &[]).await?;
    let h = HistoryEntry::new("receipt");
    let mut out = Vec::new();
    let mut step = async |id: &str, part: u32, st: MessageStatus, err: Option<&str>| {
        let r = s.apply_receipt(id, part, st, err, &h).await;
        out.push(seen(r.expect("apply_receipt")));
    };
    // Two parts: not final after the first, due after the second.
    step(&two, 0, MessageStatus::Delivered, None).await;
    step(&two, 1, MessageStatus::Delivered, None).await;
    // Resent before it was marked (the first push failed, or the gateway stopped between
    // applying and pushing): due again. Applying must not mark, or that receipt is lost.
    step(&two, 1, MessageStatus::Delivered, None).await;
    // A non-final receipt for a final message: nothing due.
    step(&two, 1, MessageStatus::Submitted, None).await;
    // An unknown part changes nothing.
    step(&two, 7, MessageStatus::Delivered, None).await;
    // A failure with its error code.
    step(&one, 0, MessageStatus::Undeliverable, Some("011")).await;
    // No origin (an HTTP submit): never due.
    step(&http, 0, MessageStatus::Delivered, None).await;
    // Not stored.
    step("nobody", 0, MessageStatus::Delivered, None).await;
    s.mark_outboxed(&two).await?;
    s.mark_outboxed(&one).await?;
    s.mark_outboxed("nobody").await?;
    out.push(seen(
        s.apply_receipt(&two, 1, MessageStatus::Delivered, None, &h)
            .await?,
    ));
    out.push(seen(
        s.apply_receipt(&one, 0, MessageStatus::Undeliverable, Some("011"), &h)
            .await?,
    ));
    // Marking a missing message did not create it.
    assert!(s.get("nobody").await?.is_none());
    Ok(out)
}

#[tokio::test]
async fn redis_and_memory_stores_agree_on_customer_receipts() -> Result {
    let redis = redis_store().await?;
    let memory = Arc::new(MemoryStore::default());
    let r = scenario(&redis, "redis").await?;
    let m = scenario(memory.as_ref(), "memory").await?;
    assert_eq!(r, m, "the stores disagree");
    // And what they agree on is the rule.
    use MessageStatus::{Delivered, Submitted, Undeliverable};
    let origin = Origin {
        account: Uuid::from_u128(42),
        to: "+15551234567".into(),
        from: "ACME".into(),
    };
    let due = |e: Option<&str>| Some((origin.clone(), e.map(String::from), true));
    assert_eq!(
        r,
        vec![
            Some((Submitted, Submitted, None)),
            Some((Submitted, Delivered, due(None))),
            Some((Delivered, Delivered, due(None))),
            Some((Delivered, Delivered, None)),
            Some((Delivered, Delivered, due(None))),
            Some((Submitted, Undeliverable, due(Some("011")))),
            Some((Submitted, Delivered, None)),
            None,
            Some((Delivered, Delivered, None)),
            Some((Undeliverable, Undeliverable, None)),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn both_stores_keep_the_account_that_submitted_a_message() -> Result {
    let redis = redis_store().await?;
    let memory = MemoryStore::default();
    let account = Uuid::new_v4();
    for s in [&redis as &dyn MessageStore, &memory] {
        // A customer's submit without a receipt asked for has no origin, but its account.
        let (quiet, http) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        s.create(
            &NewMessage {
                account: Some(account),
                ..message(&quiet, 1, None)
            },
            &[],
            &[],
        )
        .await?;
        s.create(&message(&http, 1, None), &[], &[]).await?;
        assert_eq!(s.get(&quiet).await?.expect("stored").account, Some(account));
        assert_eq!(s.get(&http).await?.expect("stored").account, None);
    }
    Ok(())
}

/// What a status callback says (without the clock: whether done_at is set).
type CallbackSeen = Option<(String, Option<String>, u32, bool, Option<String>)>;

async fn callback_scenario(s: &dyn MessageStore, tag: &str) -> Result<Vec<CallbackSeen>> {
    let with = format!("{tag}-cb-{}", Uuid::new_v4());
    let without = format!("{tag}-nocb-{}", Uuid::new_v4());
    let mut m = message(&with, 2, None);
    m.callback_url = Some("http://127.0.0.1:9/cb".into());
    m.client_ref = Some("order-42".into());
    s.create(&m, &[], &[]).await?;
    s.create(&message(&without, 1, None), &[], &[]).await?;
    let h = HistoryEntry::new("receipt");
    let mut out = Vec::new();
    for (id, part, st, err) in [
        (&with, 0, MessageStatus::Delivered, None),
        (&with, 1, MessageStatus::Undeliverable, Some("0x0000000B")),
        (&without, 0, MessageStatus::Delivered, None),
    ] {
        let c = s
            .apply_receipt(id, part, st, err, &h)
            .await?
            .expect("stored");
        out.push(c.callback.map(|c| {
            (
                c.url,
                c.client_ref,
                c.parts,
                c.done_at.is_some(),
                c.error_code,
            )
        }));
    }
    Ok(out)
}

#[tokio::test]
async fn redis_and_memory_stores_give_a_callback_what_it_says_without_a_second_read() -> Result {
    let redis = redis_store().await?;
    let r = callback_scenario(&redis, "redis").await?;
    let m = callback_scenario(&MemoryStore::default(), "memory").await?;
    assert_eq!(r, m, "the stores disagree");
    let url = "http://127.0.0.1:9/cb".to_string();
    let cref = Some("order-42".to_string());
    assert_eq!(
        r,
        vec![
            // Not final yet: the message's fields as stored.
            Some((url.clone(), cref.clone(), 2, false, None)),
            // Final now: done_at and the error code of the receipt that made it so.
            Some((url, cref, 2, true, Some("0x0000000B".into()))),
            // No callback_url: nothing to say.
            None,
        ]
    );
    Ok(())
}
