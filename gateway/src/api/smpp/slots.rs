//! Fleet-wide bind slots of customer accounts: one vendor_mgmt.account_sessions row per
//! customer bind, claimed at bind and given back at close, so `maxBinds` holds across every
//! pod (a dead pod's rows stop counting once its gateway_pods heartbeat is stale).
//!
//! A claimed slot is fenced: when this pod's heartbeat finds its row gone or another pod's
//! (this pod was frozen past the TTL and another took the slot over, or the row was deleted),
//! the token given at the claim fires and that session unbinds at once, so `maxBinds` is not
//! exceeded by a pod that wakes up.

use std::sync::Arc;
use std::time::Duration;

use smpp_db::DbError;
use smpp_db::accounts::{self, CustomerBindType};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fleet::budget::Fleet;

/// Where bind slots are kept: PostgreSQL in the gateway, memory in in-process tests.
#[async_trait::async_trait]
pub trait BindSlots: Send + Sync + 'static {
    /// A free slot of `account` for a bind from `remote`; None when all `max_binds` are held.
    /// `lost` fires if the slot stops being this pod's while held (until `release`).
    async fn claim(
        &self,
        account: Uuid,
        max_binds: u32,
        kind: CustomerBindType,
        remote: &str,
        lost: &CancellationToken,
    ) -> Result<Option<i32>, DbError>;
    /// Gives the slot back (its `lost` token is dropped first: a release is no loss).
    async fn release(&self, account: Uuid, slot: i32) -> Result<(), DbError>;
    /// The account's binds held by live pods (this one included).
    async fn live_binds(&self, account: Uuid) -> Result<u32, DbError>;
}

/// account_sessions in PostgreSQL, for the fleet's pod, fenced by its heartbeat.
pub struct PgSlots {
    pub fleet: Arc<Fleet>,
    pub ttl: Duration,
}

#[async_trait::async_trait]
impl BindSlots for PgSlots {
    async fn claim(
        &self,
        account: Uuid,
        max_binds: u32,
        kind: CustomerBindType,
        remote: &str,
        lost: &CancellationToken,
    ) -> Result<Option<i32>, DbError> {
        let f = &self.fleet;
        let max = i32::try_from(max_binds).unwrap_or(i32::MAX);
        let slot =
            accounts::claim_slot(&f.pool, account, max, &f.pod, kind, remote, self.ttl).await?;
        // After the claim committed: the next heartbeat's answer judges it.
        if let Some(s) = slot {
            f.hold_customer(account, s, lost.clone());
        }
        Ok(slot)
    }

    async fn release(&self, account: Uuid, slot: i32) -> Result<(), DbError> {
        self.fleet.forget_customer(account, slot);
        accounts::release_slot(&self.fleet.pool, account, slot, &self.fleet.pod).await
    }

    async fn live_binds(&self, account: Uuid) -> Result<u32, DbError> {
        let n = accounts::live_binds(&self.fleet.pool, account, self.ttl).await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// Slots in memory: one pod, no database (in-process tests).
#[cfg(test)]
#[derive(Default)]
pub struct MemorySlots {
    held: std::sync::Mutex<std::collections::HashMap<Uuid, Vec<(i32, CancellationToken)>>>,
    /// Binds other pods hold, by account.
    elsewhere: std::sync::Mutex<std::collections::HashMap<Uuid, u32>>,
}

#[cfg(test)]
impl MemorySlots {
    /// Other pods hold `n` binds of `account` (counted by `live_binds`).
    pub fn set_elsewhere(&self, account: Uuid, n: u32) {
        self.elsewhere.lock().expect("slots").insert(account, n);
    }

    /// Another pod takes `slot` of `account` over (as after this pod's missed heartbeats).
    pub fn take_over(&self, account: Uuid, slot: i32) {
        if let Some(v) = self.held.lock().expect("slots").get_mut(&account) {
            v.retain(|(s, lost)| {
                if *s == slot {
                    lost.cancel();
                }
                *s != slot
            });
        }
    }
}

#[cfg(test)]
#[async_trait::async_trait]
impl BindSlots for MemorySlots {
    async fn claim(
        &self,
        account: Uuid,
        max_binds: u32,
        _kind: CustomerBindType,
        _remote: &str,
        lost: &CancellationToken,
    ) -> Result<Option<i32>, DbError> {
        let mut held = self.held.lock().expect("slots");
        let mine = held.entry(account).or_default();
        let free = (0..max_binds as i32).find(|s| !mine.iter().any(|(m, _)| m == s));
        if let Some(s) = free {
            mine.push((s, lost.clone()));
        }
        Ok(free)
    }

    async fn release(&self, account: Uuid, slot: i32) -> Result<(), DbError> {
        if let Some(v) = self.held.lock().expect("slots").get_mut(&account) {
            v.retain(|(s, _)| *s != slot);
        }
        Ok(())
    }

    async fn live_binds(&self, account: Uuid) -> Result<u32, DbError> {
        let here = self
            .held
            .lock()
            .expect("slots")
            .get(&account)
            .map_or(0, |v| v.len() as u32);
        let there = self.elsewhere.lock().expect("slots").get(&account).copied();
        Ok(here + there.unwrap_or(0))
    }
}
