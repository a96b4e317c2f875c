//! The fleet-wide bind budget: each pod heartbeats, learns how many pods are alive, and
//! aims for a fair share of each vendor's units. The slot rows themselves (smpp_db::sessions)
//! guarantee the fleet never holds more than max_binds; the fair share only spreads them.
//! Each heartbeat also fences this pod: a vendor slot or a customer bind slot (account_sessions)
//! that is no longer ours (taken over while our heartbeat was stale, or deleted) ends its
//! session here at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smpp_db::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;

pub use smpp_db::sessions::SLOT_TTL;
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

/// Units this pod should hold: ceil(units / live pods). Rounding up lets the budget fill even
/// when pods outnumber nothing; the slot rows stop any excess.
pub fn fair_share(units: u32, live_pods: u32) -> u32 {
    units.div_ceil(live_pods.max(1))
}

/// Which units to try to claim: the lowest ones neither held by us nor by a live other pod,
/// as many as needed to reach `share`. Pure.
pub fn units_to_claim(units: u32, share: u32, mine: &[u32], others: &[u32]) -> Vec<u32> {
    let want = share.saturating_sub(mine.len() as u32) as usize;
    (0..units)
        .filter(|u| !mine.contains(u) && !others.contains(u))
        .take(want)
        .collect()
}

/// Which of our units to give back: those beyond the budget, then the highest beyond the share.
pub fn units_to_release(units: u32, share: u32, mine: &[u32]) -> Vec<u32> {
    let mut sorted: Vec<u32> = mine.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<u32> = sorted.iter().copied().filter(|u| *u >= units).collect();
    let keep: Vec<u32> = sorted.into_iter().filter(|u| *u < units).collect();
    let excess = keep.len().saturating_sub(share as usize);
    out.extend(keep.iter().rev().take(excess));
    out
}

/// Slots we held before a heartbeat that its answer no longer lists. Pure.
pub fn lost_slots(
    before: &[((Uuid, i32), u64)],
    still: &std::collections::HashSet<(Uuid, i32)>,
) -> Vec<((Uuid, i32), u64)> {
    before
        .iter()
        .filter(|(k, _)| !still.contains(k))
        .copied()
        .collect()
}

/// The slots of a unit: one per bind, consecutive.
pub fn unit_slots(unit: u32, binds_per_unit: u32) -> Vec<i32> {
    (0..binds_per_unit)
        .map(|i| (unit * binds_per_unit + i) as i32)
        .collect()
}

/// The unit a slot belongs to.
pub fn slot_unit(slot: i32, binds_per_unit: u32) -> u32 {
    slot as u32 / binds_per_unit.max(1)
}

/// Slots this pod holds (a vendor's or a customer account's, by (id, slot)), each with the
/// token the heartbeat cancels when it finds the slot no longer ours.
#[derive(Default)]
pub struct HeldSlots {
    /// Slot → (generation, token). The generation tells a slot held since before a heartbeat
    /// from one claimed again while it ran.
    held: Mutex<HashMap<(Uuid, i32), (u64, CancellationToken)>>,
    generation: std::sync::atomic::AtomicU64,
}

impl HeldSlots {
    /// Registers a claimed slot (after its claim committed); `lost` fires if it is lost.
    pub fn hold(&self, id: Uuid, slot: i32, lost: CancellationToken) {
        let g = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.held
            .lock()
            .expect("held")
            .insert((id, slot), (g, lost));
    }

    pub fn forget(&self, id: Uuid, slot: i32) {
        self.held.lock().expect("held").remove(&(id, slot));
    }

    /// What is held now: take it before the query whose answer [`HeldSlots::lose_missing`]
    /// judges, so only slots whose claim committed before the query are judged.
    pub fn snapshot(&self) -> Vec<((Uuid, i32), u64)> {
        self.held
            .lock()
            .expect("held")
            .iter()
            .map(|(k, (g, _))| (*k, *g))
            .collect()
    }

    /// Cancels the slots of `before` that `still` (the database's answer) no longer lists,
    /// unless claimed again since; returns them.
    pub fn lose_missing(
        &self,
        before: &[((Uuid, i32), u64)],
        still: &std::collections::HashSet<(Uuid, i32)>,
    ) -> Vec<(Uuid, i32)> {
        let held = self.held.lock().expect("held");
        let mut lost = Vec::new();
        for (key, g) in lost_slots(before, still) {
            if let Some((cur, token)) = held.get(&key)
                && *cur == g
            {
                token.cancel();
                lost.push(key);
            }
        }
        lost
    }
}

/// Live-pod count and the slots this pod holds, kept fresh by the heartbeat loop.
pub struct Fleet {
    pub pool: PgPool,
    pub pod: String,
    /// Where the other pods reach this pod's HTTP API (`--advertise-addr`), written to
    /// gateway_pods on every heartbeat so they can forward submits here. None: not advertised.
    pub advertise: Option<String>,
    live: watch::Sender<u32>,
    /// vendor_sessions slots.
    vendors: HeldSlots,
    /// account_sessions slots (customer binds of the SMPP server).
    customers: HeldSlots,
}

impl Fleet {
    pub fn new(pool: PgPool, pod: String, advertise: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            pool,
            pod,
            advertise,
            live: watch::channel(1).0,
            vendors: HeldSlots::default(),
            customers: HeldSlots::default(),
        })
    }

    pub fn live_pods(&self) -> watch::Receiver<u32> {
        self.live.subscribe()
    }

    /// Registers a claimed vendor slot; the token fires if another pod takes it over.
    pub fn hold(&self, vendor: Uuid, slot: i32) -> CancellationToken {
        let t = CancellationToken::new();
        self.vendors.hold(vendor, slot, t.clone());
        t
    }

    pub fn forget(&self, vendor: Uuid, slot: i32) {
        self.vendors.forget(vendor, slot);
    }

    /// Registers a claimed customer bind slot; `lost` fires when a heartbeat finds its
    /// account_sessions row no longer this pod's (taken over after this pod's heartbeat went
    /// stale, or deleted).
    pub fn hold_customer(&self, account: Uuid, slot: i32, lost: CancellationToken) {
        self.customers.hold(account, slot, lost);
    }

    pub fn forget_customer(&self, account: Uuid, slot: i32) {
        self.customers.forget(account, slot);
    }

    /// One heartbeat round: pod row, live pods, slot rows; cancels the slots we lost.
    pub async fn beat(&self) -> Result<(), smpp_db::DbError> {
        smpp_db::sessions::heartbeat_pod(&self.pool, &self.pod, self.advertise.as_deref()).await?;
        let live = smpp_db::sessions::live_pods(&self.pool, SLOT_TTL).await?;
        self.live
            .send_if_modified(|v| std::mem::replace(v, live) != live);
        // Only slots claimed before a query can be judged by its answer: a claim commits
        // before `hold`, so these were in the table when the query ran.
        let before = self.vendors.snapshot();
        let still = smpp_db::sessions::heartbeat_slots(&self.pool, &self.pod)
            .await?
            .into_iter()
            .collect();
        for (vendor, slot) in self.vendors.lose_missing(&before, &still) {
            tracing::warn!(vendor = %vendor, slot, "bind slot taken over by another pod (missed heartbeats); unbinding it here");
        }
        let before = self.customers.snapshot();
        let still = smpp_db::accounts::slots_held_by_pod(&self.pool, &self.pod)
            .await?
            .into_iter()
            .collect();
        for (account, slot) in self.customers.lose_missing(&before, &still) {
            tracing::warn!(account = %account, slot, "customer bind slot taken over by another pod (missed heartbeats) or its row deleted; unbinding that customer here");
        }
        Ok(())
    }

    /// Starts once `schema_ready` fires (the watcher applied the migrations), so a fresh
    /// database does not produce a burst of "relation does not exist" warnings.
    pub async fn run(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        schema_ready: CancellationToken,
        stop: CancellationToken,
    ) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = schema_ready.cancelled() => {}
        }
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.beat().await {
                        metrics.db_errors.with_label_values(&["heartbeat"]).inc();
                        tracing::warn!(error = %e, "heartbeat to PostgreSQL failed; keeping sessions, retrying");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_share_rounds_up() {
        assert_eq!(fair_share(2, 1), 2);
        assert_eq!(fair_share(2, 2), 1);
        assert_eq!(fair_share(2, 3), 1);
        assert_eq!(fair_share(3, 2), 2);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(5, 0), 5);
    }

    #[test]
    fn claims_fill_gaps_up_to_share() {
        assert_eq!(units_to_claim(2, 2, &[], &[]), vec![0, 1]);
        assert_eq!(units_to_claim(2, 1, &[], &[0]), vec![1]);
        assert_eq!(units_to_claim(2, 1, &[], &[0, 1]), Vec::<u32>::new());
        assert_eq!(units_to_claim(3, 2, &[1], &[0]), vec![2]);
        assert_eq!(units_to_claim(3, 1, &[1], &[]), Vec::<u32>::new());
    }

    #[test]
    fn releases_excess_and_out_of_budget() {
        assert_eq!(units_to_release(2, 1, &[0, 1]), vec![1]);
        assert_eq!(units_to_release(2, 2, &[0, 1]), Vec::<u32>::new());
        // max_binds lowered to 1: unit 1 is out of the budget even if the share allows 2
        assert_eq!(units_to_release(1, 2, &[0, 1]), vec![1]);
        assert_eq!(units_to_release(3, 1, &[2, 0]), vec![2]);
    }

    #[test]
    fn only_slots_missing_from_the_answer_are_lost() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let before = vec![((a, 0), 1), ((a, 1), 2), ((b, 0), 3)];
        let still: std::collections::HashSet<(Uuid, i32)> = [(a, 0), (b, 0)].into_iter().collect();
        assert_eq!(lost_slots(&before, &still), vec![((a, 1), 2)]);
        // A slot claimed after the snapshot is not judged at all.
        assert!(lost_slots(&[], &still).is_empty());
    }

    #[test]
    fn a_held_slot_missing_from_the_answer_fires_unless_claimed_again_since() {
        let h = HeldSlots::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (lost, kept, again, late) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        h.hold(a, 0, lost.clone());
        h.hold(b, 0, kept.clone());
        h.hold(a, 1, CancellationToken::new());
        let before = h.snapshot();
        // While the query runs: (a, 1) is given back and claimed again, (b, 1) is claimed.
        h.forget(a, 1);
        h.hold(a, 1, again.clone());
        h.hold(b, 1, late.clone());
        let still: std::collections::HashSet<(Uuid, i32)> = [(b, 0)].into_iter().collect();
        assert_eq!(h.lose_missing(&before, &still), vec![(a, 0)]);
        assert!(lost.is_cancelled());
        assert!(!kept.is_cancelled());
        assert!(!again.is_cancelled(), "claimed again after the snapshot");
        assert!(!late.is_cancelled(), "claimed after the snapshot");
        // A forgotten (released) slot is not judged at all.
        h.forget(b, 0);
        let gone = h.lose_missing(&h.snapshot(), &Default::default());
        assert!(!gone.contains(&(b, 0)), "{gone:?}");
        assert!(!kept.is_cancelled());
    }

    #[test]
    fn pairs_take_two_slots() {
        assert_eq!(unit_slots(0, 2), vec![0, 1]);
        assert_eq!(unit_slots(1, 2), vec![2, 3]);
        assert_eq!(unit_slots(3, 1), vec![3]);
        assert_eq!(slot_unit(3, 2), 1);
        assert_eq!(slot_unit(3, 1), 3);
    }
}
