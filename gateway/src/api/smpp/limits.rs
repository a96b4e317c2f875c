//! What bounds the server and each session, and each account's speed.
//!
//! An account's maxMessagesPerSecond holds across the fleet: each pod gets the share of its
//! binds, `max × binds here / binds in the fleet`, and its sessions of that account draw
//! from one token bucket (counting parts). A customer that sends on one of its binds only
//! gets that pod's share; spreading over every bind gets the whole rate. The counts come
//! from account_sessions (a NOTIFY on every bind and close, and a periodic refresh for pods
//! that died without closing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::smpp::session::{BucketState, take_tokens};

/// The server's bounds.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Open connections (plain and TLS together); beyond it new ones are closed at once.
    pub max_connections: usize,
    /// Requests of one session in flight at once; beyond it they get ESME_RMSGQFUL. Also the
    /// deliver_sm a session sends before their deliver_sm_resp.
    pub window: usize,
    /// Largest command_length accepted; a larger one closes the session (the stream cannot
    /// be re-synchronised).
    pub max_pdu: usize,
    /// No PDU from the customer (enquire_link included) for this long: unbind and close.
    /// Also the time a connection gets to bind.
    pub idle_timeout: Duration,
    /// PDUs queued for one session's writer; a customer that stops reading fills it and its
    /// session closes.
    pub writer_queue: usize,
    /// How long a deliver_sm waits for its deliver_sm_resp.
    pub response_timeout: Duration,
    /// How long an unbind waits for in-flight requests, and then for unbind_resp.
    pub unbind_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// Failed binds per minute one source address may make before its binds are refused.
    pub failed_binds_per_minute: u32,
    /// system_id in bind_resp.
    pub system_id: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_connections: 2000,
            window: 100,
            max_pdu: 70 * 1024,
            idle_timeout: Duration::from_secs(120),
            writer_queue: 1024,
            response_timeout: Duration::from_secs(10),
            unbind_timeout: Duration::from_secs(2),
            tls_handshake_timeout: Duration::from_secs(10),
            failed_binds_per_minute: 10,
            system_id: "smpp-gateway".into(),
        }
    }
}

impl Settings {
    /// The writer queue actually used: room for both windows' answers and some control PDUs,
    /// so only a customer that does not read can fill it.
    pub fn queue_len(&self) -> usize {
        self.writer_queue.max(2 * self.window + 16)
    }
}

/// This pod's share of an account's rate. None: unlimited. Pure.
pub fn pod_share(max: Option<u32>, here: u32, fleet: u32) -> Option<f64> {
    let max = f64::from(max?);
    let fleet = fleet.max(here).max(1);
    Some(max * f64::from(here.max(1)) / f64::from(fleet))
}

struct AccountRate {
    bucket: BucketState,
    here: u32,
    fleet: u32,
}

/// The token buckets of the accounts bound here.
#[derive(Default)]
pub struct Rates {
    accounts: RwLock<HashMap<Uuid, Arc<Mutex<AccountRate>>>>,
}

impl Rates {
    fn entry(&self, account: Uuid) -> Arc<Mutex<AccountRate>> {
        if let Some(e) = self.accounts.read().expect("rates").get(&account) {
            return e.clone();
        }
        self.accounts
            .write()
            .expect("rates")
            .entry(account)
            .or_insert_with(|| {
                Arc::new(Mutex::new(AccountRate {
                    // Full at the start: the first second's worth may go at once.
                    bucket: BucketState {
                        tokens: f64::MAX,
                        last: Instant::now(),
                    },
                    here: 1,
                    fleet: 1,
                }))
            })
            .clone()
    }

    /// Takes `parts` tokens of `account` (limit `max` per second across the fleet); false
    /// when the customer must slow down.
    pub fn take(&self, account: Uuid, max: Option<u32>, parts: u32) -> bool {
        if max.is_none() {
            return true;
        }
        let e = self.entry(account);
        let mut g = e.lock().expect("rate");
        let Some(rate) = pod_share(max, g.here, g.fleet) else {
            return true;
        };
        take_tokens(&mut g.bucket, Instant::now(), rate, parts).is_ok()
    }

    /// The account's binds here and in the whole fleet (this pod's included).
    pub fn set_binds(&self, account: Uuid, here: u32, fleet: u32) {
        let e = self.entry(account);
        let mut g = e.lock().expect("rate");
        g.here = here;
        g.fleet = fleet;
    }

    /// The account has no session here any more.
    pub fn forget(&self, account: Uuid) {
        self.accounts.write().expect("rates").remove(&account);
    }

    /// (binds here, binds in the fleet) as last set.
    pub fn binds(&self, account: Uuid) -> Option<(u32, u32)> {
        let e = self.accounts.read().expect("rates").get(&account)?.clone();
        let g = e.lock().expect("rate");
        Some((g.here, g.fleet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_gets_the_share_of_its_binds() {
        assert_eq!(pod_share(None, 1, 4), None);
        assert_eq!(pod_share(Some(100), 1, 4), Some(25.0));
        assert_eq!(pod_share(Some(100), 2, 4), Some(50.0));
        assert_eq!(pod_share(Some(100), 3, 3), Some(100.0));
        // Counts not refreshed yet (the fleet count lags our own bind): never more than all.
        assert_eq!(pod_share(Some(100), 2, 1), Some(100.0));
        assert_eq!(pod_share(Some(100), 0, 0), Some(100.0));
    }

    #[test]
    fn an_account_over_its_rate_is_refused_and_others_are_not() {
        let r = Rates::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        // 5/s with a burst of 5: a 3-part and a 2-part message pass, the next one does not.
        assert!(r.take(a, Some(5), 3));
        assert!(r.take(a, Some(5), 2));
        assert!(!r.take(a, Some(5), 1));
        assert!(r.take(b, Some(5), 1));
        assert!(
            r.take(a, None, 1000),
            "unlimited accounts are never refused"
        );
        r.set_binds(b, 1, 2);
        assert_eq!(r.binds(b), Some((1, 2)));
        r.forget(b);
        assert_eq!(r.binds(b), None);
    }
}
