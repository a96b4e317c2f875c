//! This pod's bound sessions, as the messaging layer needs them: which session of a vendor
//! takes the next submit, and where a vendor's deliver_sm go. The fleet fills it; it knows
//! nothing of messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use rusmpp::Command;
use uuid::Uuid;

use crate::fleet::config::VendorConfig;
use crate::smpp::session::{DeliverReply, SessionHandle};

/// Receives every deliver_sm of every vendor (receipts and MO). Implemented by the messaging
/// layer, so the fleet does not depend on it.
pub trait Inbound: Send + Sync + 'static {
    fn deliver_sm(&self, vendor: &VendorConfig, cmd: Command, reply: DeliverReply);
}

/// Acknowledges everything: for tools (probe) and tests that have no messaging layer.
pub struct AckAll;
impl Inbound for AckAll {
    fn deliver_sm(&self, _: &VendorConfig, _: Command, reply: DeliverReply) {
        reply.answer(rusmpp::CommandStatus::EsmeRok);
    }
}

/// Every valid vendor configuration this pod runs (bound or not: routes are chosen among the
/// whole fleet's binds), and the submit-capable sessions bound here.
#[derive(Default)]
pub struct SessionIndex {
    configs: RwLock<HashMap<Uuid, Arc<VendorConfig>>>,
    vendors: RwLock<HashMap<Uuid, Arc<VendorSessions>>>,
}

/// One vendor's sessions that may submit (transmitter and transceiver binds), and its current
/// configuration (encoding, id formats).
pub struct VendorSessions {
    config: RwLock<Arc<VendorConfig>>,
    slots: RwLock<Vec<(i32, SessionHandle)>>,
    next: AtomicUsize,
}

impl VendorSessions {
    /// The next session, round-robin; None while nothing is bound.
    pub fn pick(&self) -> Option<SessionHandle> {
        let s = self.slots.read().expect("senders");
        if s.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % s.len();
        Some(s[i].1.clone())
    }

    pub fn bound(&self) -> usize {
        self.slots.read().expect("senders").len()
    }

    pub fn config(&self) -> Arc<VendorConfig> {
        self.config.read().expect("config").clone()
    }
}

impl SessionIndex {
    pub fn set_config(&self, c: &Arc<VendorConfig>) {
        self.configs
            .write()
            .expect("configs")
            .insert(c.id, c.clone());
    }

    pub fn remove_config(&self, id: Uuid) {
        self.configs.write().expect("configs").remove(&id);
    }

    /// Every vendor's configuration, with the number of its sessions bound here.
    pub fn configs(&self) -> Vec<(Arc<VendorConfig>, usize)> {
        let vendors = self.vendors.read().expect("sessions");
        self.configs
            .read()
            .expect("configs")
            .values()
            .map(|c| (c.clone(), vendors.get(&c.id).map_or(0, |v| v.bound())))
            .collect()
    }

    /// Records a bound session (or the newer configuration of an existing one).
    pub fn add(&self, config: &Arc<VendorConfig>, slot: i32, handle: SessionHandle) {
        let v = self
            .vendors
            .write()
            .expect("sessions")
            .entry(config.id)
            .or_insert_with(|| {
                Arc::new(VendorSessions {
                    config: RwLock::new(config.clone()),
                    slots: RwLock::default(),
                    next: AtomicUsize::new(0),
                })
            })
            .clone();
        *v.config.write().expect("config") = config.clone();
        let mut s = v.slots.write().expect("senders");
        s.retain(|(n, _)| *n != slot);
        s.push((slot, handle));
    }

    pub fn remove(&self, vendor: Uuid, slot: i32) {
        let mut map = self.vendors.write().expect("sessions");
        if let Some(v) = map.get(&vendor) {
            let mut s = v.slots.write().expect("senders");
            s.retain(|(n, _)| *n != slot);
            if s.is_empty() {
                drop(s);
                map.remove(&vendor);
            }
        }
    }

    /// The vendor's sessions on this pod, if any is bound.
    pub fn vendor(&self, id: Uuid) -> Option<Arc<VendorSessions>> {
        self.vendors.read().expect("sessions").get(&id).cloned()
    }
}
