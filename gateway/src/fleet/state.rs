//! What this pod knows about its vendors right now: the source of /ready and /api/v1/vendors.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use smpp_db::sessions::SlotState;
use uuid::Uuid;

use crate::smpp::trace::Tracer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub state: SlotState,
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
    pub connected_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone)]
pub struct VendorInfo {
    pub bind_mode: String,
    pub tls: bool,
    pub config_version: i64,
    /// Binds this pod aims to hold (its fair share).
    pub desired: u32,
    pub config_error: Option<String>,
    /// The newest error of any of this vendor's binds, kept after the slot is gone.
    pub last_error: Option<String>,
}

pub struct VendorState {
    pub id: Uuid,
    pub name: String,
    pub info: Mutex<VendorInfo>,
    pub slots: Mutex<BTreeMap<i32, SlotInfo>>,
    pub tracer: Arc<Tracer>,
    pub messages_sent: AtomicU64,
    pub messages_success: AtomicU64,
    pub messages_failed: AtomicU64,
    pub dlrs_received: AtomicU64,
}

impl VendorState {
    pub fn set_slot(&self, slot: i32, state: SlotState, last_error: Option<String>) {
        let now = Utc::now();
        let mut slots = self.slots.lock().expect("slots");
        let entry = slots.entry(slot).or_insert(SlotInfo {
            state,
            since: now,
            last_error: None,
            connected_at: None,
        });
        if entry.state != state {
            entry.since = now;
        }
        entry.state = state;
        if state == SlotState::Bound {
            entry.connected_at = Some(now);
        } else if state != SlotState::Unbinding {
            entry.connected_at = None;
        }
        if let Some(e) = &last_error {
            self.info.lock().expect("info").last_error = Some(e.clone());
        }
        if last_error.is_some() || state == SlotState::Bound {
            entry.last_error = last_error;
        }
    }

    pub fn remove_slot(&self, slot: i32) {
        self.slots.lock().expect("slots").remove(&slot);
    }

    pub fn bound(&self) -> u32 {
        self.slots
            .lock()
            .expect("slots")
            .values()
            .filter(|s| s.state == SlotState::Bound)
            .count() as u32
    }

    pub fn view(&self) -> VendorView {
        let info = self.info.lock().expect("info").clone();
        let slots = self.slots.lock().expect("slots");
        let bound: Vec<&SlotInfo> = slots
            .values()
            .filter(|s| s.state == SlotState::Bound)
            .collect();
        let connected_at = bound.iter().filter_map(|s| s.connected_at).min();
        // The error shown is the current one: a config error, else the newest slot error, else
        // (nothing bound) the last one seen.
        let slot_error = slots
            .values()
            .filter_map(|s| s.last_error.clone())
            .next_back();
        let last_error = info
            .config_error
            .clone()
            .or(slot_error)
            .or(if bound.is_empty() {
                info.last_error.clone()
            } else {
                None
            });
        VendorView {
            vendor_id: self.id,
            vendor_name: self.name.clone(),
            status: if !bound.is_empty() {
                "connected"
            } else if info.config_error.is_some() {
                "invalid"
            } else {
                "disconnected"
            },
            connected_at,
            last_error,
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            messages_success: self.messages_success.load(Ordering::Relaxed),
            messages_failed: self.messages_failed.load(Ordering::Relaxed),
            dlrs_received: self.dlrs_received.load(Ordering::Relaxed),
            sessions_bound: bound.len() as u32,
            sessions_desired: info.desired,
            bind_mode: info.bind_mode,
            tls: info.tls,
            config_version: info.config_version,
            trace: self.tracer.enabled(),
            sessions: slots
                .iter()
                .map(|(slot, s)| SlotView {
                    slot: *slot,
                    state: s.state,
                    since: s.since,
                    last_error: s.last_error.clone(),
                })
                .collect(),
        }
    }
}

/// One vendor in GET /api/v1/vendors: the existing gateway's fields plus the added ones.
#[derive(Debug, Clone, Serialize)]
pub struct VendorView {
    pub vendor_id: Uuid,
    pub vendor_name: String,
    pub status: &'static str,
    pub connected_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub messages_sent: u64,
    pub messages_success: u64,
    pub messages_failed: u64,
    pub dlrs_received: u64,
    pub sessions_bound: u32,
    pub sessions_desired: u32,
    pub bind_mode: String,
    pub tls: bool,
    pub config_version: i64,
    pub trace: bool,
    pub sessions: Vec<SlotView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    pub slot: i32,
    pub state: SlotState,
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
}

#[derive(Default)]
pub struct Registry {
    vendors: RwLock<HashMap<Uuid, Arc<VendorState>>>,
}

impl Registry {
    /// A fresh state for a vendor whose supervisor starts (replacing any previous one).
    pub fn insert(&self, id: Uuid, name: &str) -> Arc<VendorState> {
        let v = Arc::new(VendorState {
            id,
            name: name.to_string(),
            info: Mutex::default(),
            slots: Mutex::default(),
            tracer: Arc::new(Tracer::default()),
            messages_sent: AtomicU64::new(0),
            messages_success: AtomicU64::new(0),
            messages_failed: AtomicU64::new(0),
            dlrs_received: AtomicU64::new(0),
        });
        self.vendors
            .write()
            .expect("registry")
            .insert(id, v.clone());
        v
    }

    /// Removes `v` unless a newer state for the same vendor replaced it meanwhile.
    pub fn remove(&self, v: &Arc<VendorState>) {
        let mut map = self.vendors.write().expect("registry");
        if map.get(&v.id).is_some_and(|cur| Arc::ptr_eq(cur, v)) {
            map.remove(&v.id);
        }
    }

    pub fn all(&self) -> Vec<Arc<VendorState>> {
        self.vendors
            .read()
            .expect("registry")
            .values()
            .cloned()
            .collect()
    }

    pub fn by_id(&self, id: Uuid) -> Option<Arc<VendorState>> {
        self.vendors.read().expect("registry").get(&id).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<VendorState>> {
        self.vendors
            .read()
            .expect("registry")
            .values()
            .find(|v| v.name == name)
            .cloned()
    }

    pub fn bound_total(&self) -> u32 {
        self.all().iter().map(|v| v.bound()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_errors() {
        let r = Registry::default();
        let v = r.insert(Uuid::new_v4(), "a");
        assert_eq!(v.view().status, "disconnected");
        v.set_slot(0, SlotState::Backoff, Some("tcp_refused: x".into()));
        assert_eq!(v.view().last_error.as_deref(), Some("tcp_refused: x"));
        v.set_slot(0, SlotState::Bound, None);
        let view = v.view();
        assert_eq!(view.status, "connected");
        assert_eq!(view.sessions_bound, 1);
        assert_eq!(view.last_error, None);
        assert!(view.connected_at.is_some());
        assert_eq!(r.bound_total(), 1);
        v.remove_slot(0);
        assert_eq!(v.view().status, "disconnected");
        // A newer state for the same vendor is not removed by the old supervisor.
        let newer = r.insert(v.id, "a");
        r.remove(&v);
        assert_eq!(r.all().len(), 1);
        r.remove(&newer);
        assert!(r.all().is_empty());
        // the last error stays visible once nothing is bound
        assert_eq!(v.view().last_error.as_deref(), Some("tcp_refused: x"));
    }
}
