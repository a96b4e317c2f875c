//! Who may bind: the account by system_id, its source CIDRs, its password, and a limit on
//! failed binds per source address.
//!
//! Order of the checks, each answered as `status::BindRefusal` says: a source over its
//! failure limit is refused before anything is looked at; then the account (unknown or
//! suspended), then the source address, and only then the password, so from outside an
//! account's CIDRs nothing can be learnt about its password.
//!
//! Passwords are argon2id hashes (smpp_db::accounts), about 10 ms of CPU each (much more in a
//! debug build), run on the blocking pool and never more at once than there are cores. A
//! password that verified is remembered per account and config_version as an HMAC under a
//! key drawn at start (never the password itself), so 1,000 binds of one account pay argon2
//! once; a changed row (new hash) drops it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::api::smpp::status::BindRefusal;
use crate::fleet::accounts::{AccountRegistry, CustomerAccount};

/// Failed binds per source address: each failure takes one of `per_minute` allowances, which
/// come back at `per_minute` a minute. With none left, binds from that address are refused
/// unchecked until one is back. Pure (the caller passes the time).
pub struct FailedBinds {
    per_minute: u32,
    by_source: HashMap<IpAddr, (f64, Instant)>,
}

/// How many sources are remembered at most; full allowances are dropped first.
const MAX_SOURCES: usize = 10_000;

impl FailedBinds {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            by_source: HashMap::new(),
        }
    }

    fn rate(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn allowance(&self, ip: IpAddr, now: Instant) -> f64 {
        let cap = f64::from(self.per_minute);
        self.by_source.get(&ip).map_or(cap, |(left, at)| {
            (left + now.saturating_duration_since(*at).as_secs_f64() * self.rate()).min(cap)
        })
    }

    /// Whether binds from `ip` are refused now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.allowance(ip, now) < 1.0
    }

    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        let left = (self.allowance(ip, now) - 1.0).max(0.0);
        if self.by_source.len() >= MAX_SOURCES && !self.by_source.contains_key(&ip) {
            let cap = f64::from(self.per_minute);
            let rate = self.rate();
            self.by_source.retain(|_, (l, at)| {
                *l + now.saturating_duration_since(*at).as_secs_f64() * rate < cap
            });
            if self.by_source.len() >= MAX_SOURCES {
                // Still full of fresh failures: forget the one we looked at first.
                if let Some(k) = self.by_source.keys().next().copied() {
                    self.by_source.remove(&k);
                }
            }
        }
        self.by_source.insert(ip, (left, now));
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

type Digest = [u8; 32];

/// Bind checks with their caches.
pub struct Auth {
    key: [u8; 32],
    /// Account → (config_version, HMAC of the password that verified).
    verified: Mutex<HashMap<Uuid, (i64, Digest)>>,
    /// One verification per account at a time: 1,000 binds at once wait for the first.
    per_account: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    argon: Semaphore,
    failures: Mutex<FailedBinds>,
}

impl Auth {
    pub fn new(failed_binds_per_minute: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            key: rand::random(),
            verified: Mutex::default(),
            per_account: Mutex::default(),
            argon: Semaphore::new(cores),
            failures: Mutex::new(FailedBinds::new(failed_binds_per_minute)),
        }
    }

    fn digest(&self, password: &[u8]) -> Digest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    fn cached(&self, a: &CustomerAccount, digest: &Digest) -> bool {
        let v = self.verified.lock().expect("verified");
        matches!(v.get(&a.id), Some((ver, d)) if *ver == a.config_version && bool::from(d.ct_eq(digest)))
    }

    async fn password_ok(&self, a: &CustomerAccount, password: &[u8]) -> bool {
        let digest = self.digest(password);
        if self.cached(a, &digest) {
            return true;
        }
        let lock = self
            .per_account
            .lock()
            .expect("per account")
            .entry(a.id)
            .or_default()
            .clone();
        let _one = lock.lock().await;
        if self.cached(a, &digest) {
            return true;
        }
        let Ok(_core) = self.argon.acquire().await else {
            return false;
        };
        let hash = a.password_hash.clone();
        let presented = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || {
            smpp_db::accounts::password_matches(&hash, &presented)
        })
        .await
        .unwrap_or(false);
        if ok {
            self.verified
                .lock()
                .expect("verified")
                .insert(a.id, (a.config_version, digest));
        }
        ok
    }

    /// The account a bind from `ip` as `system_id` with `password` gets, or why not.
    pub async fn check(
        &self,
        accounts: &AccountRegistry,
        ip: IpAddr,
        system_id: &str,
        password: &[u8],
    ) -> Result<Arc<CustomerAccount>, BindRefusal> {
        let ip = canonical(ip);
        if self
            .failures
            .lock()
            .expect("failures")
            .blocked(ip, Instant::now())
        {
            return Err(BindRefusal::TooManyFailures);
        }
        let r = self.decide(accounts, ip, system_id, password).await;
        if let Err(why) = &r
            && why.is_credential_failure()
        {
            self.record_failure(ip);
        }
        r
    }

    /// Counts a failed bind that never reached [`Auth::check`] (a bind PDU that does not
    /// decode).
    pub fn record_failure(&self, ip: IpAddr) {
        self.failures
            .lock()
            .expect("failures")
            .record_failure(canonical(ip), Instant::now());
    }

    async fn decide(
        &self,
        accounts: &AccountRegistry,
        ip: IpAddr,
        system_id: &str,
        password: &[u8],
    ) -> Result<Arc<CustomerAccount>, BindRefusal> {
        let account = match accounts.by_system_id(system_id) {
            Ok(Some(a)) => a,
            Ok(None) => return Err(BindRefusal::UnknownSystemId),
            Err(e) => {
                tracing::warn!(system_id, error = %e, "bind to an account whose row cannot be used");
                return Err(BindRefusal::UnknownSystemId);
            }
        };
        if account.suspended {
            return Err(BindRefusal::Suspended);
        }
        if !account.allows_source(ip) {
            return Err(BindRefusal::SourceNotAllowed);
        }
        if !self.password_ok(&account, password).await {
            return Err(BindRefusal::BadPassword);
        }
        Ok(account)
    }

    /// Forgets verified passwords of accounts no longer known (their rows were deleted).
    pub fn retain(&self, accounts: &AccountRegistry) {
        self.verified
            .lock()
            .expect("verified")
            .retain(|id, _| accounts.get(*id).is_some());
        self.per_account
            .lock()
            .expect("per account")
            .retain(|id, l| accounts.get(*id).is_some() || Arc::strong_count(l) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smpp_db::accounts::{Account, AccountConfig};
    use std::time::Duration;

    fn row(system_id: &str, password: &str, cidrs: &[&str], suspended: bool) -> Account {
        Account {
            id: Uuid::new_v4(),
            config: AccountConfig {
                system_id: system_id.into(),
                password_hash: smpp_db::accounts::hash_password(&smpp_db::Secret::new(password))
                    .unwrap(),
                allowed_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
                max_binds: 2,
                max_messages_per_second: None,
                allowed_senders: vec![],
                allowed_destination_prefixes: vec![],
                route: sqlx::types::Json(vec![]),
                forward_receipts: true,
                suspended,
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
    fn failures_are_limited_per_source_and_come_back_with_time() {
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut f = FailedBinds::new(3);
        for _ in 0..3 {
            assert!(!f.blocked(a, t0));
            f.record_failure(a, t0);
        }
        assert!(f.blocked(a, t0));
        assert!(!f.blocked(b, t0), "another source is not affected");
        // 3 a minute: one allowance is back after 20 s.
        assert!(f.blocked(a, t0 + Duration::from_secs(19)));
        assert!(!f.blocked(a, t0 + Duration::from_secs(20)));
    }

    #[test]
    fn mapped_ipv6_is_the_ipv4_address() {
        assert_eq!(
            canonical("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn checks_in_order_and_a_verified_password_is_cached_per_config_version() {
        let reg = AccountRegistry::new();
        let ok = row("acme", "s3cret", &["127.0.0.0/8"], false);
        let off = row("off", "s3cret", &[], true);
        reg.replace_all(&[ok.clone(), off]);
        let auth = Auth::new(100);
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let away: IpAddr = "192.0.2.9".parse().unwrap();
        let check = |ip, sid: &'static str, pw: &'static str| {
            let (auth, reg) = (&auth, &reg);
            async move {
                auth.check(reg, ip, sid, pw.as_bytes())
                    .await
                    .map(|a| a.system_id.clone())
            }
        };
        assert_eq!(
            check(here, "nobody", "x").await,
            Err(BindRefusal::UnknownSystemId)
        );
        assert_eq!(
            check(here, "off", "s3cret").await,
            Err(BindRefusal::Suspended)
        );
        // From outside the CIDRs even the right password is refused.
        assert_eq!(
            check(away, "acme", "s3cret").await,
            Err(BindRefusal::SourceNotAllowed)
        );
        assert_eq!(
            check(here, "acme", "wrong").await,
            Err(BindRefusal::BadPassword)
        );
        assert_eq!(check(here, "acme", "s3cret").await, Ok("acme".into()));
        // Cached: a row whose hash can no longer verify anything still lets the cached
        // password in while its config_version is the same...
        let mut broken = ok.clone();
        broken.config.password_hash = "not a hash".into();
        reg.upsert(&broken);
        assert_eq!(check(here, "acme", "s3cret").await, Ok("acme".into()));
        assert_eq!(
            check(here, "acme", "other").await,
            Err(BindRefusal::BadPassword)
        );
        // ...and not once the row changed (a new config_version).
        broken.config_version = 2;
        reg.upsert(&broken);
        assert_eq!(
            check(here, "acme", "s3cret").await,
            Err(BindRefusal::BadPassword)
        );
    }

    #[tokio::test]
    async fn a_source_over_its_failure_limit_is_refused_unchecked() {
        let reg = AccountRegistry::new();
        reg.replace_all(&[row("acme", "s3cret", &[], false)]);
        let auth = Auth::new(2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..2 {
            assert_eq!(
                auth.check(&reg, ip, "acme", b"bad").await.err(),
                Some(BindRefusal::BadPassword)
            );
        }
        assert_eq!(
            auth.check(&reg, ip, "acme", b"s3cret").await.err(),
            Some(BindRefusal::TooManyFailures)
        );
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(auth.check(&reg, other, "acme", b"s3cret").await.is_ok());
    }
}
