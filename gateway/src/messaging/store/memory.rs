//! An in-process `MessageStore` with the Redis store's semantics, for fast tests of the
//! messaging core (no TTL: tests are short). `set_down` makes every call fail, as Redis being
//! unreachable does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;

use super::{
    Callback, Correlated, CustomerFinal, IdemBegin, MessageStore, NewMessage, StatusChange,
    StoreError,
};
use crate::messaging::customer::Origin;
use crate::messaging::model::{self, HistoryEntry, MessageStatus, MessageView};

struct Message {
    view: MessageView,
    parts: Vec<MessageStatus>,
    callback_url: Option<String>,
    origin: Option<Origin>,
    outboxed: bool,
}

impl Message {
    /// The customer's receipt when one is due (the rule of `MessageStore::apply_receipt`).
    fn customer(&self, final_receipt: bool) -> Option<CustomerFinal> {
        if !final_receipt || !self.view.status.is_final() || self.outboxed {
            return None;
        }
        Some(CustomerFinal {
            origin: self.origin.clone()?,
            submitted_at: self.view.submitted_at,
            done_at: self.view.done_at.unwrap_or_else(Utc::now),
            error_code: self.view.error_code.clone(),
        })
    }
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

/// Sets one part's final status and derives the message's; returns the message's status
/// after it. A part already final, or a message already final, keeps its status.
fn record_part(
    m: &mut Message,
    part: u32,
    status: MessageStatus,
    error_code: Option<&str>,
) -> MessageStatus {
    let from = m.view.status;
    let Some(p) = m.parts.get_mut(part as usize) else {
        return from;
    };
    if !status.is_final() || p.is_final() {
        return from;
    }
    *p = status;
    if from.is_final() {
        return from;
    }
    let to = model::overall(&m.parts);
    if to.is_final() {
        m.view.status = to;
        m.view.done_at = Some(Utc::now());
        if let Some(e) = error_code {
            m.view.error_code = Some(e.to_string());
        }
    }
    to
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
                    account: m.account,
                },
                parts: vec![m.status; m.parts as usize],
                callback_url: m.callback_url.clone(),
                origin: m.origin.clone(),
                outboxed: false,
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
    ) -> Result<Option<Correlated>, StoreError> {
        let mut s = self.up()?;
        if let Some((i, v)) = keys
            .iter()
            .enumerate()
            .find_map(|(i, k)| s.mappings.get(k).map(|v| (i, v)))
        {
            return super::parse_mapping(v, i).map(Some);
        }
        for k in keys {
            s.parked
                .entry(k.clone())
                .or_default()
                .push(receipt_json.to_string());
        }
        Ok(None)
    }

    async fn unpark(&self, key: &str, receipt_json: &str) -> Result<bool, StoreError> {
        let mut s = self.up()?;
        let Some(list) = s.parked.get_mut(key) else {
            return Ok(false);
        };
        let Some(at) = list.iter().position(|r| r == receipt_json) else {
            return Ok(false);
        };
        list.remove(at);
        Ok(true)
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
        let to = record_part(m, part, status, error_code);
        Ok(Some(StatusChange {
            from,
            to,
            callback: m.callback_url.clone().map(|url| Callback {
                url,
                client_ref: m.view.client_ref.clone(),
                parts: m.view.parts,
                done_at: m.view.done_at,
                error_code: m.view.error_code.clone(),
            }),
            customer: m.customer(status.is_final()),
        }))
    }

    async fn mark_outboxed(&self, id: &str) -> Result<(), StoreError> {
        if let Some(m) = self.up()?.messages.get_mut(id) {
            m.outboxed = true;
        }
        Ok(())
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
