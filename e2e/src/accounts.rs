//! Customer accounts of the SMPP server (vendor_mgmt.customer_accounts) as the SmppAccount
//! operator writes them: for the end-to-end tests and the customer benchmark.

use smpp_db::PgPool;
use smpp_db::accounts::{AccountConfig, AccountUpsert};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("writing the customer account {system_id}: {source}")]
    Db {
        system_id: String,
        #[source]
        source: smpp_db::DbError,
    },
    #[error("the customer account {system_id} is owned by another resource ({owner})")]
    OwnedByOther { system_id: String, owner: String },
}

/// An account for `system_id` with `password`: binds from 127.0.0.0/8, up to 4 binds fleet-wide,
/// receipts forwarded; `f` changes the rest. (Hashing only fails when the OS has no
/// randomness: a panic in a test tool is fine then.)
pub fn customer_config(
    system_id: &str,
    password: &str,
    f: impl FnOnce(&mut AccountConfig),
) -> AccountConfig {
    let mut c = AccountConfig {
        system_id: system_id.into(),
        password_hash: smpp_db::accounts::hash_password(&smpp_db::Secret::new(password))
            .expect("argon2id hash of a test password"),
        allowed_cidrs: vec!["127.0.0.0/8".into()],
        max_binds: 4,
        max_messages_per_second: None,
        allowed_senders: vec![],
        allowed_destination_prefixes: vec![],
        route: sqlx::types::Json(vec![]),
        forward_receipts: true,
        suspended: false,
    };
    f(&mut c);
    c
}

/// Writes the account row as the SmppAccount operator would (owner e2e/<system_id>), and
/// returns its id.
pub async fn write_account(pool: &PgPool, c: &AccountConfig) -> Result<uuid::Uuid, AccountError> {
    let owner = smpp_db::providers::Owner {
        namespace: "e2e".into(),
        name: c.system_id.clone(),
        uid: format!("uid-{}", c.system_id),
        generation: 1,
    };
    match smpp_db::accounts::upsert_owned(pool, &owner, c).await {
        Ok(AccountUpsert::Created(a) | AccountUpsert::Updated(a) | AccountUpsert::Unchanged(a)) => {
            Ok(a.id)
        }
        Ok(AccountUpsert::OwnedByOther { owner, .. }) => Err(AccountError::OwnedByOther {
            system_id: c.system_id.clone(),
            owner: format!("{owner:?}"),
        }),
        Err(source) => Err(AccountError::Db {
            system_id: c.system_id.clone(),
            source,
        }),
    }
}
