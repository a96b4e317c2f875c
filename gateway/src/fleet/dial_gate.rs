//! Connection attempts in flight per vendor address. A start with many vendors on one SMSC
//! host (an aggregator, or the benchmark's sink) would otherwise open them all in one burst:
//! the host's accept queue overflows and the dropped SYNs are retried only after TCP's 1 s
//! timeout (1,000 binds to one address took ~1.1 s instead of ~0.2 s). Per address, so a host
//! that does not answer holds back only its own binds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Attempts (DNS, TCP, TLS, bind) in flight to one host:port.
pub const PER_ADDRESS: usize = 64;

pub struct DialGate {
    per: usize,
    open: Mutex<Open>,
}

/// Weak: an address nobody dials has no entry worth keeping; dead ones are pruned when the
/// map has doubled since the last pruning.
struct Open {
    by_address: HashMap<(String, u16), Weak<Semaphore>>,
    prune_at: usize,
}

impl DialGate {
    pub fn new(per: usize) -> Self {
        Self {
            per: per.max(1),
            open: Mutex::new(Open {
                by_address: HashMap::new(),
                prune_at: 64,
            }),
        }
    }

    /// Waits for a turn to dial `host:port`; the turn ends when the permit is dropped.
    pub async fn enter(&self, host: &str, port: u16) -> OwnedSemaphorePermit {
        let sem = {
            let mut open = self.open.lock().expect("dial gate");
            let key = (host.to_string(), port);
            match open.by_address.get(&key).and_then(Weak::upgrade) {
                Some(s) => s,
                None => {
                    if open.by_address.len() >= open.prune_at {
                        open.by_address.retain(|_, w| w.strong_count() > 0);
                        open.prune_at = (open.by_address.len() * 2).max(64);
                    }
                    let s = Arc::new(Semaphore::new(self.per));
                    open.by_address.insert(key, Arc::downgrade(&s));
                    s
                }
            }
        };
        sem.acquire_owned()
            .await
            .expect("the gate's semaphores are never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn turns_are_per_address_and_come_back_when_dropped() {
        let gate = DialGate::new(2);
        let a1 = gate.enter("a", 1).await;
        let _a2 = gate.enter("a", 1).await;
        // A third attempt to the same address waits; another address does not.
        assert!(gate.enter("a", 1).now_or_never().is_none());
        assert!(gate.enter("a", 2).now_or_never().is_some());
        assert!(gate.enter("b", 1).now_or_never().is_some());
        drop(a1);
        assert!(gate.enter("a", 1).now_or_never().is_some());
    }

    #[tokio::test]
    async fn addresses_nobody_dials_are_forgotten() {
        let gate = DialGate::new(1);
        for port in 0..200 {
            drop(gate.enter("h", port).await);
        }
        assert!(gate.open.lock().unwrap().by_address.len() <= 128);
    }
}
