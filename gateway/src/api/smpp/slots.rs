//! Fleet-wide bind slots of customer accounts: one vendor_mgmt.account_sessions row per
//! customer bind, claimed at bind and given back at close, so `maxBinds` holds across every
//! pod (a dead pod's rows stop counting once its gateway_pods heartbeat is stale).

use std::time::Duration;

use smpp_db::accounts::{self, CustomerBindType};
use smpp_db::{DbError, PgPool};
use uuid::Uuid;

/// Where bind slots are kept: PostgreSQL in the gateway, memory in in-process tests.
#[async_trait::async_trait]
pub trait BindSlots: Send + Sync + 'static {
    /// A free slot of `account` for a bind from `remote`; None when all `max_binds` are held.
    async fn claim(
        &self,
        account: Uuid,
        max_binds: u32,
        kind: CustomerBindType,
        remote: &str,
    ) -> Result<Option<i32>, DbError>;
    async fn release(&self, account: Uuid, slot: i32) -> Result<(), DbError>;
    /// The account's binds held by live pods (this one included).
    async fn live_binds(&self, account: Uuid) -> Result<u32, DbError>;
}

/// account_sessions in PostgreSQL, for pod `pod`.
pub struct PgSlots {
    pub pool: PgPool,
    pub pod: String,
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
    ) -> Result<Option<i32>, DbError> {
        let max = i32::try_from(max_binds).unwrap_or(i32::MAX);
        accounts::claim_slot(&self.pool, account, max, &self.pod, kind, remote, self.ttl).await
    }

    async fn release(&self, account: Uuid, slot: i32) -> Result<(), DbError> {
        accounts::release_slot(&self.pool, account, slot, &self.pod).await
    }

    async fn live_binds(&self, account: Uuid) -> Result<u32, DbError> {
        let n = accounts::live_binds(&self.pool, account, self.ttl).await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// Slots in memory: one pod, no database (in-process tests).
#[cfg(test)]
#[derive(Default)]
pub struct MemorySlots {
    held: std::sync::Mutex<std::collections::HashMap<Uuid, Vec<i32>>>,
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
    ) -> Result<Option<i32>, DbError> {
        let mut held = self.held.lock().expect("slots");
        let mine = held.entry(account).or_default();
        let free = (0..max_binds as i32).find(|s| !mine.contains(s));
        if let Some(s) = free {
            mine.push(s);
        }
        Ok(free)
    }

    async fn release(&self, account: Uuid, slot: i32) -> Result<(), DbError> {
        if let Some(v) = self.held.lock().expect("slots").get_mut(&account) {
            v.retain(|s| *s != slot);
        }
        Ok(())
    }

    async fn live_binds(&self, account: Uuid) -> Result<u32, DbError> {
        Ok(self
            .held
            .lock()
            .expect("slots")
            .get(&account)
            .map_or(0, |v| v.len() as u32))
    }
}
