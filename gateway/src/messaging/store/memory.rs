//! An in-process `MessageStore` with the Redis store's semantics, for fast tests of the
//! messaging core (no TTL: tests are short). `set_down` makes every call fail, as Redis being
//! unreachable does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;

use super::{IdemBegin, MessageStore, NewMessage, StatusChange, StoreError};
use crate::messaging::model::{self, HistoryEntry, MessageStatus, MessageView};

struct Message {
    view: MessageView,
    parts: Vec<MessageStatus>,
    callback_url: Option<String>,
}

#[derive(Default)]
struct State {
    messages: HashMap<String, Message>,
    mappings: HashMap<String, String>,
    parked: HashMap<String, Vec<String>>,
    idem: HashMap<String, (String, Option<(u16, serde_json::Value)>)>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    down: AtomicBool,
}

impl MemoryStore {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    fn up(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(StoreError::Corrupt("the memory store is set down".into()));
        }
        Ok(self.state.lock().expect("memory store"))
    }

    /// Receipts parked under a key (for tests).
    pub fn parked(&self, key: &str) -> usize {
        self.state
            .lock()
            .expect("memory store")
            .parked
            .get(key)
            .map_or(0, Vec::len)
    }
}

#[async_trait::async_trait]
impl MessageStore for MemoryStore {
    fn healthy(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(3600)
    }

    async fn create(
        &self,
        m: &NewMessage,
        history: &[HistoryEntry],
        mappings: &[(String, u32)],
    ) -> Result<Vec<String>, StoreError> {
        let mut s = self.up()?;
        s.messages.insert(
            m.id.clone(),
            Message {
                view: MessageView {
                    id: m.id.clone(),
                    status: m.status,
                    vendor: m.vendor.clone(),
                    parts: m.parts,
                    vendor_message_ids: m.vendor_message_ids.clone(),
                    submitted_at: m.submitted_at,
                    done_at: m.status.is_final().then(Utc::now),
                    error_code: m.error_code.clone(),
                    client_ref: m.client_ref.clone(),
                    history: history.to_vec(),
                },
                parts: vec![m.status; m.parts as usize],
                callback_url: m.callback_url.clone(),
            },
        );
        let mut handed = Vec::new();
        for (key, part) in mappings {
            s.mappings.insert(key.clone(), format!("{}:{part}", m.id));
            handed.extend(s.parked.remove(key).unwrap_or_default());
        }
        Ok(handed)
    }

    async fn correlate_or_park(
        &self,
        keys: &[String],
        receipt_json: &str,
    ) -> Result<Option<(String, u32)>, StoreError> {
        let mut s = self.up()?;
        if let Some(v) = keys.iter().find_map(|k| s.mappings.get(k)) {
            return super::parse_mapping(v).map(Some);
        }
        for k in keys {
            s.parked
                .entry(k.clone())
                .or_default()
                .push(receipt_json.to_string());
        }
        Ok(None)
    }

    async fn apply_receipt(
        &self,
        id: &str,
        part: u32,
        status: MessageStatus,
        error_code: Option<&str>,
        entry: &HistoryEntry,
    ) -> Result<Option<StatusChange>, StoreError> {
        let mut s = self.up()?;
        let Some(m) = s.messages.get_mut(id) else {
            return Ok(None);
        };
        m.view.history.push(entry.clone());
        let from = m.view.status;
        let unchanged = StatusChange {
            from,
            to: from,
            callback_url: m.callback_url.clone(),
        };
        let Some(p) = m.parts.get_mut(part as usize) else {
            return Ok(Some(unchanged));
        };
        if !status.is_final() || p.is_final() {
            return Ok(Some(unchanged));
        }
        *p = status;
        if from.is_final() {
            return Ok(Some(unchanged));
        }
        let to = model::overall(&m.parts);
        if to.is_final() {
            m.view.status = to;
            m.view.done_at = Some(Utc::now());
            if let Some(e) = error_code {
                m.view.error_code = Some(e.to_string());
            }
        }
        Ok(Some(StatusChange {
            from,
            to,
            callback_url: m.callback_url.clone(),
        }))
    }

    async fn get(&self, id: &str) -> Result<Option<MessageView>, StoreError> {
        Ok(self.up()?.messages.get(id).map(|m| m.view.clone()))
    }

    async fn idem_begin(
        &self,
        owner: &str,
        key: &str,
        hash: &str,
    ) -> Result<IdemBegin, StoreError> {
        let mut s = self.up()?;
        let k = format!("{owner}:{key}");
        Ok(match s.idem.get(&k) {
            None => {
                s.idem.insert(k, (hash.to_string(), None));
                IdemBegin::Fresh
            }
            Some((h, _)) if h != hash => IdemBegin::Mismatch,
            Some((_, None)) => IdemBegin::InFlight,
            Some((_, Some((code, body)))) => IdemBegin::Done(*code, body.clone()),
        })
    }

    async fn idem_finish(
        &self,
        owner: &str,
        key: &str,
        hash: &str,
        code: u16,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.up()?.idem.insert(
            format!("{owner}:{key}"),
            (hash.to_string(), Some((code, body.clone()))),
        );
        Ok(())
    }

    async fn idem_abort(&self, owner: &str, key: &str) -> Result<(), StoreError> {
        self.up()?.idem.remove(&format!("{owner}:{key}"));
        Ok(())
    }
}
