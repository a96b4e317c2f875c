//! The customer sessions bound on this pod, by account: what an account change (suspended,
//! deleted, its CIDRs narrowed) unbinds, and what this pod's share of the account's rate is
//! counted from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use smpp_db::accounts::CustomerBindType;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why the server ends a bound session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    Suspended,
    Deleted,
    /// The account's allowed CIDRs no longer include the session's source.
    SourceNotAllowed,
    /// The session's bind slot is no longer this pod's (another pod took it over while this
    /// pod's heartbeat was stale, or its row was deleted).
    SlotTakenOver,
    Shutdown,
}

impl Kick {
    pub fn as_str(self) -> &'static str {
        match self {
            Kick::Suspended => "account_suspended",
            Kick::Deleted => "account_deleted",
            Kick::SourceNotAllowed => "source_not_allowed",
            Kick::SlotTakenOver => "slot_taken_over",
            Kick::Shutdown => "shutdown",
        }
    }
}

/// How a session learns that it must unbind, and why.
#[derive(Clone, Default)]
pub struct KickSignal {
    token: CancellationToken,
    why: Arc<OnceLock<Kick>>,
}

impl KickSignal {
    pub fn child_of(parent: &CancellationToken) -> Self {
        Self {
            token: parent.child_token(),
            why: Arc::default(),
        }
    }

    pub fn kick(&self, why: Kick) {
        let _ = self.why.set(why);
        self.token.cancel();
    }

    pub async fn kicked(&self) {
        self.token.cancelled().await
    }

    /// Why; a cancelled parent (the server's stop) is a shutdown.
    pub fn reason(&self) -> Option<Kick> {
        self.token
            .is_cancelled()
            .then(|| self.why.get().copied().unwrap_or(Kick::Shutdown))
    }
}

struct Entry {
    id: u64,
    kind: CustomerBindType,
    source: IpAddr,
    kick: KickSignal,
}

#[derive(Default)]
pub struct BoundSessions {
    by_account: Mutex<HashMap<Uuid, Vec<Entry>>>,
    next: AtomicU64,
}

/// A session's place in [`BoundSessions`]; dropping it removes the session.
pub struct Registration {
    sessions: Arc<BoundSessions>,
    account: Uuid,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut g = self.sessions.by_account.lock().expect("bound");
        if let Some(v) = g.get_mut(&self.account) {
            v.retain(|e| e.id != self.id);
            if v.is_empty() {
                g.remove(&self.account);
            }
        }
    }
}

impl BoundSessions {
    pub fn register(
        self: &Arc<Self>,
        account: Uuid,
        kind: CustomerBindType,
        source: IpAddr,
        kick: KickSignal,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.by_account
            .lock()
            .expect("bound")
            .entry(account)
            .or_default()
            .push(Entry {
                id,
                kind,
                source,
                kick,
            });
        Registration {
            sessions: self.clone(),
            account,
            id,
        }
    }

    /// Sessions of `account` here.
    pub fn count(&self, account: Uuid) -> u32 {
        self.by_account
            .lock()
            .expect("bound")
            .get(&account)
            .map_or(0, |v| v.len() as u32)
    }

    /// Sessions of `account` here by bind type.
    pub fn count_kind(&self, account: Uuid, kind: CustomerBindType) -> usize {
        self.by_account
            .lock()
            .expect("bound")
            .get(&account)
            .map_or(0, |v| v.iter().filter(|e| e.kind == kind).count())
    }

    pub fn accounts(&self) -> Vec<Uuid> {
        self.by_account
            .lock()
            .expect("bound")
            .keys()
            .copied()
            .collect()
    }

    /// Unbinds the sessions of `account` that `why` applies to (`keep` says which stay).
    pub fn kick(&self, account: Uuid, why: Kick, keep: impl Fn(IpAddr) -> bool) -> usize {
        let g = self.by_account.lock().expect("bound");
        let mut n = 0;
        for e in g.get(&account).into_iter().flatten() {
            if !keep(e.source) {
                e.kick.kick(why);
                n += 1;
            }
        }
        n
    }

    pub fn total(&self) -> usize {
        self.by_account
            .lock()
            .expect("bound")
            .values()
            .map(Vec::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_register_kick_and_leave() {
        let stop = CancellationToken::new();
        let b = Arc::new(BoundSessions::default());
        let a = Uuid::new_v4();
        let (k1, k2) = (KickSignal::child_of(&stop), KickSignal::child_of(&stop));
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let there: IpAddr = "192.0.2.1".parse().unwrap();
        let r1 = b.register(a, CustomerBindType::Transmitter, here, k1.clone());
        let _r2 = b.register(a, CustomerBindType::Receiver, there, k2.clone());
        assert_eq!((b.count(a), b.total()), (2, 2));
        assert_eq!(b.count_kind(a, CustomerBindType::Receiver), 1);
        // Only the session outside the narrowed CIDRs goes.
        assert_eq!(b.kick(a, Kick::SourceNotAllowed, |ip| ip == here), 1);
        assert_eq!(k2.reason(), Some(Kick::SourceNotAllowed));
        assert_eq!(k1.reason(), None);
        drop(r1);
        assert_eq!(b.count(a), 1);
        // The server's stop reaches every session as a shutdown.
        stop.cancel();
        assert_eq!(k1.reason(), Some(Kick::Shutdown));
    }
}
