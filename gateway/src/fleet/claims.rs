//! Bind-slot claims of all of this pod's vendors, batched. Each supervisor still decides on
//! its own (which units are free, then a claim per unit), but what the supervisors ask while a
//! statement is in flight goes into the next statement: a start with N vendors costs a few
//! statements instead of ~4 round trips per vendor through the 8-connection pool (and the
//! connections that pool would open for them, each with its own SCRAM handshake).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use smpp_db::sessions::{self as db, UnitClaim};
use smpp_db::{DbError, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most requests one statement carries.
const MAX_BATCH: usize = 1000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClaimError {
    #[error("{0}")]
    Db(Arc<DbError>),
    #[error("the slot claimer has stopped (the gateway is shutting down)")]
    Stopped,
}

type Reply<A> = oneshot::Sender<Result<A, ClaimError>>;

/// Runs one call of `run` per batch of the requests queued meanwhile, one batch at a time.
struct Batcher<Q, A> {
    tx: mpsc::UnboundedSender<(Q, Reply<A>)>,
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    fn start<F, Fut>(run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<A>, DbError>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Q, Reply<A>)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let (asks, replies): (Vec<Q>, Vec<Reply<A>>) = batch.into_iter().unzip();
                match run(asks).await {
                    // One answer per request, in order; a missing one reads as Stopped.
                    Ok(answers) => {
                        for (reply, a) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(a));
                        }
                    }
                    Err(e) => {
                        let e = ClaimError::Db(Arc::new(e));
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    async fn call(&self, ask: Q) -> Result<A, ClaimError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((ask, tx)).map_err(|_| ClaimError::Stopped)?;
        rx.await.map_err(|_| ClaimError::Stopped)?
    }
}

/// The two slot questions a supervisor asks, each batched across vendors.
pub struct Claims {
    others: Batcher<Uuid, Vec<i32>>,
    units: Batcher<UnitClaim, bool>,
}

impl Claims {
    /// Starts the batching tasks for `pod` (they end when the Claims is dropped).
    pub fn start(pool: PgPool, pod: String, ttl: Duration) -> Arc<Self> {
        let (p, o) = (pool.clone(), pod.clone());
        let others = Batcher::start(move |vendors: Vec<Uuid>| {
            let (pool, pod) = (p.clone(), o.clone());
            async move { db::slots_held_by_others_many(&pool, &vendors, &pod, ttl).await }
        });
        let units = Batcher::start(move |claims: Vec<UnitClaim>| {
            let (pool, pod) = (pool.clone(), pod.clone());
            async move { db::claim_many(&pool, &claims, &pod, ttl).await }
        });
        Arc::new(Self { others, units })
    }

    /// The vendor's slots held by a live pod other than this one.
    pub async fn held_by_others(&self, vendor: Uuid) -> Result<Vec<i32>, ClaimError> {
        self.others.call(vendor).await
    }

    /// Claims all of `slots` (one unit) for this pod, or none; see `smpp_db::sessions::claim`.
    pub async fn claim(
        &self,
        vendor: Uuid,
        slots: Vec<i32>,
        config_version: i64,
    ) -> Result<bool, ClaimError> {
        self.units
            .call(UnitClaim {
                vendor_id: vendor,
                slots,
                config_version,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    #[tokio::test]
    async fn what_is_asked_during_a_batch_goes_into_the_next_one() {
        let seen: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let (gate_tx, gate) = tokio::sync::watch::channel(false);
        let log = seen.clone();
        let b = Arc::new(Batcher::start(move |asks: Vec<u32>| {
            log.lock().unwrap().push(asks.clone());
            let mut gate = gate.clone();
            async move {
                // Every batch waits for the gate: the test queues the rest meanwhile.
                let _ = gate.wait_for(|open| *open).await;
                Ok(asks.into_iter().map(|a| a * 10).collect())
            }
        }));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(1).await }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the first batch never ran");
            tokio::task::yield_now().await;
        }
        // Three more queued while the first statement is in flight.
        let rest: Vec<_> = (2..=4)
            .map(|a| {
                let (tx, rx) = oneshot::channel();
                b.tx.send((a, tx)).unwrap();
                rx
            })
            .collect();
        gate_tx.send_replace(true);
        assert_eq!(first.await.unwrap().unwrap(), 10);
        let mut answers = Vec::new();
        for r in rest {
            answers.push(r.await.unwrap().unwrap());
        }
        assert_eq!(answers, vec![20, 30, 40]);
        assert_eq!(*seen.lock().unwrap(), vec![vec![1], vec![2, 3, 4]]);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_requests() {
        let b = Batcher::<u32, u32>::start(|_| async {
            Err(DbError::Unavailable(sqlx::Error::PoolTimedOut))
        });
        assert!(matches!(b.call(1).await, Err(ClaimError::Db(_))));
    }
}
