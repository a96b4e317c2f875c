//! customer_accounts and account_sessions (migration 0005): the customers that bind to the
//! gateways' SMPP server, and the fleet's record of their binds.
//!
//! The operator writes an account from an SmppAccount resource and its password Secret; only
//! an argon2id hash of the password reaches the table. The gateways read the rows (and
//! hot-reload them on [`CHANNEL`]), verify binds against the hash, and claim one
//! account_sessions slot per customer bind, so `max_binds` holds across the whole fleet.
//!
//! Like service_providers, rows stay raw where a hand edit could break them (CIDRs, route as
//! JSON): the gateway parses them per account, so one bad row is reported for that account
//! alone.

use std::time::Duration;

use crate::providers::{Owner, OwnerRef};
use crate::{DbError, Secret};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// NOTIFY channel for customer_accounts: payload `{"op":"INSERT|UPDATE|DELETE","id":"<uuid>"}`.
pub const CHANNEL: &str = "vendor_mgmt_customer_accounts";
/// NOTIFY channel for account_sessions: payload the account id.
pub const SESSIONS_CHANNEL: &str = "vendor_mgmt_account_sessions";

/// One preferred vendor of an account's route (the `route` column holds a JSON list of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The vendor's instance_name.
    pub vendor: String,
    /// Lower is preferred.
    pub priority: i32,
}

/// The columns the operator writes from an SmppAccount.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct AccountConfig {
    pub system_id: String,
    /// argon2id PHC string ([`hash_password`]).
    pub password_hash: String,
    pub allowed_cidrs: Vec<String>,
    pub max_binds: i32,
    pub max_messages_per_second: Option<i32>,
    pub allowed_senders: Vec<String>,
    pub allowed_destination_prefixes: Vec<String>,
    /// Preferred vendors; empty means the default routing.
    pub route: sqlx::types::Json<Vec<RouteEntry>>,
    pub forward_receipts: bool,
    pub suspended: bool,
}

/// One customer_accounts row.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Account {
    pub id: Uuid,
    #[sqlx(flatten)]
    pub config: AccountConfig,
    pub owner_namespace: Option<String>,
    pub owner_name: Option<String>,
    pub owner_uid: Option<String>,
    pub owner_generation: Option<i64>,
    pub config_version: i64,
    pub updated_at: DateTime<Utc>,
}

impl Account {
    /// The resource that owns this row, if an operator manages it.
    pub fn owner(&self) -> Option<OwnerRef> {
        Some(OwnerRef {
            namespace: self.owner_namespace.clone()?,
            name: self.owner_name.clone()?,
            uid: self.owner_uid.clone()?,
        })
    }
}

/// What [`upsert_owned`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum AccountUpsert {
    Created(Account),
    Updated(Account),
    Unchanged(Account),
    /// Another resource owns the row with this system_id; it was not touched.
    OwnedByOther {
        row: Account,
        owner: OwnerRef,
    },
}

/// argon2id with 8 MiB and 2 passes: about 10 ms per check here. Binds are rare and the
/// gateway caches a verified password, so this cost is paid once per password change.
fn hasher() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(8 * 1024, 2, 1, None).expect("static argon2 params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// The PHC string stored in password_hash, with a fresh random salt.
pub fn hash_password(password: &Secret) -> Result<String, DbError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    hasher()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DbError::PasswordHash(e.to_string()))
}

/// Whether `presented` is the password behind `hash`. False for a malformed hash (a bad
/// hand-written row refuses every bind rather than panicking). Constant-time in the
/// password (argon2's own comparison).
pub fn password_matches(hash: &str, presented: &[u8]) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => hasher().verify_password(presented, &parsed).is_ok(),
        Err(_) => false,
    }
}

macro_rules! columns {
    () => {
        "id, system_id, password_hash, allowed_cidrs, max_binds, max_messages_per_second, \
         allowed_senders, allowed_destination_prefixes, route, forward_receipts, suspended, \
         owner_namespace, owner_name, owner_uid, owner_generation, config_version, updated_at"
    };
}

/// Every account, ordered by system_id.
pub async fn list_all(pool: &PgPool) -> Result<Vec<Account>, DbError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM vendor_mgmt.customer_accounts ORDER BY system_id"
    );
    Ok(sqlx::query_as(sql).fetch_all(pool).await?)
}

/// One account by id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Account>, DbError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM vendor_mgmt.customer_accounts WHERE id = $1"
    );
    Ok(sqlx::query_as(sql).bind(id).fetch_optional(pool).await?)
}

/// One account by system_id.
pub async fn get_by_system_id(pool: &PgPool, system_id: &str) -> Result<Option<Account>, DbError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM vendor_mgmt.customer_accounts WHERE system_id = $1"
    );
    Ok(sqlx::query_as(sql)
        .bind(system_id)
        .fetch_optional(pool)
        .await?)
}

/// Writes `config` for `owner`: inserts the row when no account has this system_id, rewrites
/// it when `owner` owns it (or nobody does) and it differs, and leaves another resource's row
/// alone. The row is locked while deciding, so concurrent writers serialise.
pub async fn upsert_owned(
    pool: &PgPool,
    owner: &Owner,
    config: &AccountConfig,
) -> Result<AccountUpsert, DbError> {
    let mut tx = pool.begin().await?;
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM vendor_mgmt.customer_accounts WHERE system_id = $1 FOR UPDATE"
    );
    let existing: Option<Account> = sqlx::query_as(sql)
        .bind(&config.system_id)
        .fetch_optional(&mut *tx)
        .await?;
    let outcome = match existing {
        None => {
            let sql = concat!(
                "INSERT INTO vendor_mgmt.customer_accounts (system_id, password_hash, \
                 allowed_cidrs, max_binds, max_messages_per_second, allowed_senders, \
                 allowed_destination_prefixes, route, forward_receipts, suspended, \
                 owner_namespace, owner_name, owner_uid, owner_generation) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) \
                 ON CONFLICT (system_id) DO NOTHING RETURNING ",
                columns!()
            );
            let row: Option<Account> = bind_all(sqlx::query_as(sql), config, owner)
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some(row) => AccountUpsert::Created(row),
                None => {
                    // Lost an insert race: decide again on the winner's row.
                    tx.rollback().await?;
                    return Box::pin(upsert_owned(pool, owner, config)).await;
                }
            }
        }
        Some(row) => match row.owner() {
            Some(o) if o.uid != owner.uid => AccountUpsert::OwnedByOther { row, owner: o },
            _ if row.config == *config
                && row.owner_uid.as_deref() == Some(owner.uid.as_str())
                && row.owner_generation == Some(owner.generation) =>
            {
                AccountUpsert::Unchanged(row)
            }
            _ => {
                let sql = concat!(
                    "UPDATE vendor_mgmt.customer_accounts SET password_hash=$2, \
                     allowed_cidrs=$3, max_binds=$4, max_messages_per_second=$5, \
                     allowed_senders=$6, allowed_destination_prefixes=$7, route=$8, \
                     forward_receipts=$9, suspended=$10, owner_namespace=$11, owner_name=$12, \
                     owner_uid=$13, owner_generation=$14 WHERE system_id = $1 RETURNING ",
                    columns!()
                );
                let row: Account = bind_all(sqlx::query_as(sql), config, owner)
                    .fetch_one(&mut *tx)
                    .await?;
                AccountUpsert::Updated(row)
            }
        },
    };
    tx.commit().await?;
    Ok(outcome)
}

type QueryAs<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, Account, sqlx::postgres::PgArguments>;

fn bind_all<'q>(q: QueryAs<'q>, c: &'q AccountConfig, o: &'q Owner) -> QueryAs<'q> {
    q.bind(&c.system_id)
        .bind(&c.password_hash)
        .bind(&c.allowed_cidrs)
        .bind(c.max_binds)
        .bind(c.max_messages_per_second)
        .bind(&c.allowed_senders)
        .bind(&c.allowed_destination_prefixes)
        .bind(&c.route)
        .bind(c.forward_receipts)
        .bind(c.suspended)
        .bind(&o.namespace)
        .bind(&o.name)
        .bind(&o.uid)
        .bind(o.generation)
}

/// Moves the account with `system_id` from the resource `from_uid` to `owner`, when that
/// resource no longer exists or lost the claim to an older one. Compare-and-set on the uid, so
/// it fails (None) if ownership changed meanwhile. The config is left for `owner`'s next
/// [`upsert_owned`] (owner_generation is cleared so that write happens).
pub async fn transfer(
    pool: &PgPool,
    system_id: &str,
    from_uid: &str,
    owner: &Owner,
) -> Result<Option<Account>, DbError> {
    let sql = concat!(
        "UPDATE vendor_mgmt.customer_accounts SET owner_namespace=$3, owner_name=$4, \
         owner_uid=$5, owner_generation=NULL WHERE system_id = $1 AND owner_uid = $2 RETURNING ",
        columns!()
    );
    Ok(sqlx::query_as(sql)
        .bind(system_id)
        .bind(from_uid)
        .bind(&owner.namespace)
        .bind(&owner.name)
        .bind(&owner.uid)
        .fetch_optional(pool)
        .await?)
}

/// Deletes the account owned by `owner_uid` (its binds go with it: the gateways close them).
/// Returns whether a row was deleted.
pub async fn delete_owned(pool: &PgPool, owner_uid: &str) -> Result<bool, DbError> {
    let r = sqlx::query("DELETE FROM vendor_mgmt.customer_accounts WHERE owner_uid = $1")
        .bind(owner_uid)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Deletes the rows `owner_uid` owns under another system_id than `system_id`: the
/// resource's systemId changed, so the old one must stop accepting binds. Returns how many
/// rows went.
pub async fn delete_owned_except(
    pool: &PgPool,
    owner_uid: &str,
    system_id: &str,
) -> Result<u64, DbError> {
    let r = sqlx::query(
        "DELETE FROM vendor_mgmt.customer_accounts WHERE owner_uid = $1 AND system_id <> $2",
    )
    .bind(owner_uid)
    .bind(system_id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// How a customer bound: the bind_type column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CustomerBindType {
    #[serde(rename = "TX")]
    Transmitter,
    #[serde(rename = "RX")]
    Receiver,
    #[serde(rename = "TRX")]
    Transceiver,
}

impl CustomerBindType {
    pub const ALL: &'static [CustomerBindType] = &[
        CustomerBindType::Transmitter,
        CustomerBindType::Receiver,
        CustomerBindType::Transceiver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CustomerBindType::Transmitter => "TX",
            CustomerBindType::Receiver => "RX",
            CustomerBindType::Transceiver => "TRX",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }

    /// Whether receipts (deliver_sm) can be sent on such a bind.
    pub fn receives(self) -> bool {
        self != CustomerBindType::Transmitter
    }
}

/// Claims a free slot in 0..max_binds of `account_id` for a customer bind on `pod`: a slot is
/// free when no row holds it or its pod's heartbeat is older than `ttl`. Returns the slot, or
/// None when every slot is held by a live pod. `pod` must have a gateway_pods row
/// ([`crate::sessions::heartbeat_pod`]).
pub async fn claim_slot(
    pool: &PgPool,
    account_id: Uuid,
    max_binds: i32,
    pod: &str,
    bind_type: CustomerBindType,
    remote_addr: &str,
    ttl: Duration,
) -> Result<Option<i32>, DbError> {
    // Two pods can pick the same free slot at once; the loser's upsert matches nothing and
    // it tries the next candidate.
    for _ in 0..max_binds.max(1) {
        let got: Option<i32> = sqlx::query_scalar(
            "WITH free AS ( \
                 SELECT s FROM generate_series(0, $2 - 1) AS s \
                 WHERE NOT EXISTS ( \
                     SELECT 1 FROM vendor_mgmt.account_sessions a \
                     JOIN vendor_mgmt.gateway_pods p ON p.pod = a.pod \
                     WHERE a.account_id = $1 AND a.slot = s \
                       AND p.heartbeat > now() - make_interval(secs => $6)) \
                 ORDER BY s LIMIT 1) \
             INSERT INTO vendor_mgmt.account_sessions \
                 (account_id, slot, pod, bind_type, remote_addr, since) \
             SELECT $1, s, $3, $4, $5, now() FROM free \
             ON CONFLICT (account_id, slot) DO UPDATE SET pod = EXCLUDED.pod, \
                 bind_type = EXCLUDED.bind_type, remote_addr = EXCLUDED.remote_addr, \
                 since = now() \
             WHERE NOT EXISTS (SELECT 1 FROM vendor_mgmt.gateway_pods p \
                 WHERE p.pod = vendor_mgmt.account_sessions.pod \
                   AND p.heartbeat > now() - make_interval(secs => $6)) \
             RETURNING slot",
        )
        .bind(account_id)
        .bind(max_binds)
        .bind(pod)
        .bind(bind_type.as_str())
        .bind(remote_addr)
        .bind(ttl.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        if got.is_some() {
            return Ok(got);
        }
        if live_binds(pool, account_id, ttl).await? >= i64::from(max_binds) {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Gives a customer bind's slot back (the session closed).
pub async fn release_slot(
    pool: &PgPool,
    account_id: Uuid,
    slot: i32,
    pod: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "DELETE FROM vendor_mgmt.account_sessions WHERE account_id = $1 AND slot = $2 AND pod = $3",
    )
    .bind(account_id)
    .bind(slot)
    .bind(pod)
    .execute(pool)
    .await?;
    Ok(())
}

/// The (account, slot) rows `pod` holds, whatever its heartbeat. A slot missing here that the
/// pod thinks it holds was taken over by another pod (this one's heartbeat went stale) or its
/// row was deleted: the pod must unbind that customer session.
pub async fn slots_held_by_pod(pool: &PgPool, pod: &str) -> Result<Vec<(Uuid, i32)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT account_id, slot FROM vendor_mgmt.account_sessions WHERE pod = $1 \
         ORDER BY account_id, slot",
    )
    .bind(pod)
    .fetch_all(pool)
    .await?)
}

/// Binds of `account_id` held by live pods.
pub async fn live_binds(pool: &PgPool, account_id: Uuid, ttl: Duration) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM vendor_mgmt.account_sessions a \
         JOIN vendor_mgmt.gateway_pods p ON p.pod = a.pod \
         WHERE a.account_id = $1 AND p.heartbeat > now() - make_interval(secs => $2)",
    )
    .bind(account_id)
    .bind(ttl.as_secs_f64())
    .fetch_one(pool)
    .await?)
}

/// One customer bind, as the operator shows it in SmppAccount status.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct CustomerBind {
    pub slot: i32,
    pub pod: String,
    pub bind_type: String,
    pub remote_addr: String,
    pub since: DateTime<Utc>,
}

/// The live binds of `account_id`, by slot.
pub async fn binds(
    pool: &PgPool,
    account_id: Uuid,
    ttl: Duration,
) -> Result<Vec<CustomerBind>, DbError> {
    Ok(sqlx::query_as(
        "SELECT a.slot, a.pod, a.bind_type, a.remote_addr, a.since \
         FROM vendor_mgmt.account_sessions a \
         JOIN vendor_mgmt.gateway_pods p ON p.pod = a.pod \
         WHERE a.account_id = $1 AND p.heartbeat > now() - make_interval(secs => $2) \
         ORDER BY a.slot",
    )
    .bind(account_id)
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

/// Pods with a live receiving bind (RX or TRX) of `account_id`: where its receipts can go.
pub async fn receiving_pods(
    pool: &PgPool,
    account_id: Uuid,
    ttl: Duration,
) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT a.pod FROM vendor_mgmt.account_sessions a \
         JOIN vendor_mgmt.gateway_pods p ON p.pod = a.pod \
         WHERE a.account_id = $1 AND a.bind_type IN ('RX', 'TRX') \
           AND p.heartbeat > now() - make_interval(secs => $2) ORDER BY a.pod",
    )
    .bind(account_id)
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_password(&Secret::new("s3cret")).unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("s3cret"));
        assert!(password_matches(&h, b"s3cret"));
        assert!(!password_matches(&h, b"s3cre"));
        assert!(!password_matches(&h, b""));
        // A fresh salt each time: the same password hashes differently.
        assert_ne!(h, hash_password(&Secret::new("s3cret")).unwrap());
    }

    #[test]
    fn a_malformed_hash_refuses_every_password() {
        assert!(!password_matches("", b""));
        assert!(!password_matches("plaintext", b"plaintext"));
    }

    #[test]
    fn bind_types_round_trip() {
        for t in CustomerBindType::ALL {
            assert_eq!(CustomerBindType::parse(t.as_str()), Some(*t));
        }
        assert!(!CustomerBindType::Transmitter.receives());
        assert!(CustomerBindType::Transceiver.receives());
        assert_eq!(CustomerBindType::parse("trx"), None);
    }
}
