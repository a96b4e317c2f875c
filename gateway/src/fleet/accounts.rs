//! Customer accounts (SmppAccount rows in vendor_mgmt.customer_accounts) as this pod uses
//! them: parsed once per row change, looked up by system_id at bind time and by id when a
//! receipt is on its way back.
//!
//! A row that does not parse (a hand edit with a bad CIDR or route) is kept out of the
//! registry and its error is kept instead, so binds to that account fail with the reason in
//! the log while every other account keeps working.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use smpp_db::accounts::{Account, RouteEntry};
use uuid::Uuid;

/// One account, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerAccount {
    pub id: Uuid,
    pub system_id: String,
    /// argon2id PHC string; check with `smpp_db::accounts::password_matches`.
    pub password_hash: String,
    /// Empty: any source address.
    pub allowed_cidrs: Vec<IpNet>,
    pub max_binds: u32,
    pub max_messages_per_second: Option<u32>,
    /// Empty: any sender.
    pub allowed_senders: Vec<String>,
    /// Empty: any destination.
    pub allowed_destination_prefixes: Vec<String>,
    /// Preferred vendors by instance_name, lowest priority first; empty: default routing.
    pub route: Vec<RouteEntry>,
    pub forward_receipts: bool,
    pub suspended: bool,
    pub config_version: i64,
}

/// Why a row could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("account {system_id:?}: allowed_cidrs entry {value:?} is not a CIDR (e.g. 10.0.0.0/8)")]
    BadCidr { system_id: String, value: String },
    #[error("account {system_id:?}: max_binds {value} must be at least 1")]
    BadMaxBinds { system_id: String, value: i32 },
    #[error("account {system_id:?}: max_messages_per_second {value} must be at least 1")]
    BadRate { system_id: String, value: i32 },
}

impl CustomerAccount {
    pub fn from_row(a: &Account) -> Result<Self, AccountError> {
        let c = &a.config;
        let system_id = c.system_id.clone();
        let allowed_cidrs = c
            .allowed_cidrs
            .iter()
            .map(|s| {
                s.parse::<IpNet>().map_err(|_| AccountError::BadCidr {
                    system_id: system_id.clone(),
                    value: s.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_binds = u32::try_from(c.max_binds)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| AccountError::BadMaxBinds {
                system_id: system_id.clone(),
                value: c.max_binds,
            })?;
        let max_messages_per_second = match c.max_messages_per_second {
            None => None,
            Some(v) if v >= 1 => Some(v as u32),
            Some(v) => {
                return Err(AccountError::BadRate {
                    system_id,
                    value: v,
                });
            }
        };
        let mut route = c.route.0.clone();
        route.sort_by_key(|r| r.priority);
        Ok(Self {
            id: a.id,
            system_id,
            password_hash: c.password_hash.clone(),
            allowed_cidrs,
            max_binds,
            max_messages_per_second,
            allowed_senders: c.allowed_senders.clone(),
            allowed_destination_prefixes: c.allowed_destination_prefixes.clone(),
            route,
            forward_receipts: c.forward_receipts,
            suspended: c.suspended,
            config_version: a.config_version,
        })
    }

    /// Whether a bind from `ip` is allowed. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn allows_source(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allowed_cidrs.is_empty() || self.allowed_cidrs.iter().any(|n| n.contains(&ip))
    }

    pub fn allows_sender(&self, source_addr: &str) -> bool {
        self.allowed_senders.is_empty() || self.allowed_senders.iter().any(|s| s == source_addr)
    }

    pub fn allows_destination(&self, dest: &str) -> bool {
        let digits = dest.trim_start_matches('+');
        self.allowed_destination_prefixes.is_empty()
            || self
                .allowed_destination_prefixes
                .iter()
                .any(|p| digits.starts_with(p.as_str()))
    }
}

/// Every account this pod knows, replaced row by row as the watcher sees changes.
#[derive(Default)]
pub struct AccountRegistry {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Uuid, Arc<CustomerAccount>>,
    by_system_id: HashMap<String, Uuid>,
    /// Rows that did not parse, by id: the reason.
    errors: HashMap<Uuid, (String, AccountError)>,
}

impl AccountRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces everything with `rows` (start, and a resync after a lost connection).
    pub fn replace_all(&self, rows: &[Account]) {
        let mut fresh = Inner::default();
        for r in rows {
            fresh.put(r);
        }
        *self.inner.write().expect("registry lock") = fresh;
    }

    /// Inserts or replaces one row.
    pub fn upsert(&self, row: &Account) {
        let mut g = self.inner.write().expect("registry lock");
        g.remove(row.id);
        g.put(row);
    }

    /// Forgets the row `id` (deleted).
    pub fn remove(&self, id: Uuid) {
        self.inner.write().expect("registry lock").remove(id);
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<CustomerAccount>> {
        self.inner
            .read()
            .expect("registry lock")
            .by_id
            .get(&id)
            .cloned()
    }

    /// The account customers bind to as `system_id`; Err with the row's error when its row
    /// exists but does not parse.
    pub fn by_system_id(
        &self,
        system_id: &str,
    ) -> Result<Option<Arc<CustomerAccount>>, AccountError> {
        let g = self.inner.read().expect("registry lock");
        if let Some(id) = g.by_system_id.get(system_id) {
            return Ok(g.by_id.get(id).cloned());
        }
        match g.errors.values().find(|(sid, _)| sid == system_id) {
            Some((_, e)) => Err(e.clone()),
            None => Ok(None),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("registry lock").by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn put(&mut self, row: &Account) {
        match CustomerAccount::from_row(row) {
            Ok(a) => {
                self.by_system_id.insert(a.system_id.clone(), a.id);
                self.by_id.insert(a.id, Arc::new(a));
            }
            Err(e) => {
                tracing::warn!(account = %row.config.system_id, error = %e, "customer account row ignored");
                self.errors
                    .insert(row.id, (row.config.system_id.clone(), e));
            }
        }
    }

    fn remove(&mut self, id: Uuid) {
        if let Some(a) = self.by_id.remove(&id) {
            self.by_system_id.remove(&a.system_id);
        }
        self.errors.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smpp_db::accounts::AccountConfig;

    fn row(system_id: &str, cidrs: &[&str]) -> Account {
        Account {
            id: Uuid::new_v4(),
            config: AccountConfig {
                system_id: system_id.into(),
                password_hash: "$argon2id$x".into(),
                allowed_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
                max_binds: 2,
                max_messages_per_second: Some(50),
                allowed_senders: vec!["ACME".into()],
                allowed_destination_prefixes: vec!["46".into()],
                route: sqlx::types::Json(vec![
                    RouteEntry {
                        vendor: "b".into(),
                        priority: 20,
                    },
                    RouteEntry {
                        vendor: "a".into(),
                        priority: 10,
                    },
                ]),
                forward_receipts: true,
                suspended: false,
            },
            owner_namespace: None,
            owner_name: None,
            owner_uid: None,
            owner_generation: None,
            config_version: 1,
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_row_parses_into_checks() {
        let a = CustomerAccount::from_row(&row("acme", &["10.0.0.0/8", "::1/128"])).unwrap();
        assert!(a.allows_source("10.1.2.3".parse().unwrap()));
        assert!(a.allows_source("::ffff:10.1.2.3".parse().unwrap()));
        assert!(a.allows_source("::1".parse().unwrap()));
        assert!(!a.allows_source("192.0.2.1".parse().unwrap()));
        assert!(a.allows_sender("ACME"));
        assert!(!a.allows_sender("acme"));
        assert!(a.allows_destination("+46701234567"));
        assert!(!a.allows_destination("4470123"));
        assert_eq!(a.route[0].vendor, "a");
        let open = CustomerAccount::from_row(&row("open", &[])).unwrap();
        assert!(open.allows_source("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn a_bad_row_is_reported_for_its_account_only() {
        let reg = AccountRegistry::new();
        let good = row("good", &["127.0.0.0/8"]);
        let bad = row("bad", &["10.0.0.300/8"]);
        reg.replace_all(&[good.clone(), bad.clone()]);
        assert_eq!(reg.len(), 1);
        assert!(reg.by_system_id("good").unwrap().is_some());
        let e = reg.by_system_id("bad").unwrap_err();
        assert!(e.to_string().contains("10.0.0.300/8"), "{e}");
        assert_eq!(reg.by_system_id("nobody").unwrap(), None);
        // Fixed by hand: the error goes, the account comes.
        let mut fixed = bad.clone();
        fixed.config.allowed_cidrs = vec!["10.0.0.0/8".into()];
        reg.upsert(&fixed);
        assert!(reg.by_system_id("bad").unwrap().is_some());
        reg.remove(good.id);
        assert!(reg.by_system_id("good").unwrap().is_none());
        assert!(reg.get(fixed.id).is_some());
    }
}
