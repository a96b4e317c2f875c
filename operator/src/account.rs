//! The SmppAccount controller's reconcile: the customer_accounts row from spec + password
//! Secret (only an argon2id hash of the password is written), the customer's live binds from
//! account_sessions in status, and the row's deletion in the finalizer's cleanup.
//!
//! A fresh hash has a fresh salt, so hashing on every reconcile would rewrite the row (and
//! make every gateway reload it) every resync. The row's hash is kept while it still matches
//! the Secret's password: checked with argon2 once per Secret version, then remembered.

use crate::account_status::{AccountObservation, build_account_status};
use crate::controller::{
    Context, Error, Reconciler, may_take_over, normal, now, owner_of, patch_status,
    transition_events,
};
use crate::credentials::{Material, Password};
use crate::events::Event;
use crate::row::{account_changes, desired_account};
use crate::status::{CredState, SyncState};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use smpp_crds::SmppAccount;
use smpp_db::DbError;
use smpp_db::accounts::{self, Account, AccountUpsert};
use smpp_db::providers::OwnerRef;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// A hash known to match the password of one version of an account's Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub hash: String,
    pub secret_version: String,
}

/// The last [`Verified`] hash of each account (by resource uid). Holds no password.
#[derive(Default)]
pub struct VerifiedHashes(Mutex<HashMap<String, Verified>>);

impl VerifiedHashes {
    fn get(&self, uid: &str) -> Option<Verified> {
        self.lock().get(uid).cloned()
    }

    fn set(&self, uid: &str, v: Verified) {
        self.lock().insert(uid.to_string(), v);
    }

    fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verified>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the hash to write comes from.
#[derive(Debug, PartialEq, Eq)]
enum HashPlan {
    /// The row's hash, already checked against this Secret version.
    Keep(String),
    /// The row's hash, to check against the password (argon2) before keeping it.
    Verify(String),
    /// No row of ours yet: hash the password.
    Fresh,
}

/// `current` is the hash in the row this account writes (None: there is none yet).
fn hash_plan(current: Option<&str>, verified: Option<&Verified>, secret_version: &str) -> HashPlan {
    let Some(current) = current else {
        return HashPlan::Fresh;
    };
    let known = verified.is_some_and(|v| {
        v.hash == current && !secret_version.is_empty() && v.secret_version == secret_version
    });
    if known {
        HashPlan::Keep(current.to_string())
    } else {
        HashPlan::Verify(current.to_string())
    }
}

/// argon2 takes milliseconds of CPU: off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, DbError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DbError::PasswordHash(format!("the hashing task failed: {e}")))
}

/// The hash to write for `password`: the row's own while it matches, else a fresh one.
async fn password_hash(
    ctx: &Context,
    uid: &str,
    current: Option<&str>,
    password: &Password,
) -> Result<String, DbError> {
    let plan = hash_plan(
        current,
        ctx.account_hashes.get(uid).as_ref(),
        &password.version,
    );
    let keep = match plan {
        HashPlan::Keep(h) => Some(h),
        HashPlan::Verify(h) => {
            let pw = password.value.clone();
            let candidate = h.clone();
            let ok =
                blocking(move || accounts::password_matches(&candidate, pw.expose().as_bytes()))
                    .await?;
            ok.then_some(h)
        }
        HashPlan::Fresh => None,
    };
    let hash = match keep {
        Some(h) => h,
        None => {
            let pw = password.value.clone();
            blocking(move || accounts::hash_password(&pw)).await??
        }
    };
    ctx.account_hashes.set(
        uid,
        Verified {
            hash: hash.clone(),
            secret_version: password.version.clone(),
        },
    );
    Ok(hash)
}

fn synced(row: &Account) -> SyncState {
    SyncState::Synced {
        name: row.config.system_id.clone(),
        id: row.id,
    }
}

fn conflict(system_id: &str, other: &OwnerRef) -> SyncState {
    SyncState::Conflict {
        name: system_id.to_string(),
        owner: format!("{}/{}", other.namespace, other.name),
    }
}

/// Takes the account over from `other` when it is gone or newer; false: a conflict.
async fn take_over(
    a: &SmppAccount,
    other: &OwnerRef,
    ctx: &Context,
    events: &mut Vec<Event>,
) -> Result<bool, DbError> {
    if !may_take_over(a, other, ctx).await {
        return Ok(false);
    }
    let system_id = &a.spec.system_id;
    if accounts::transfer(&ctx.pool, system_id, &other.uid, &owner_of(a))
        .await?
        .is_some()
    {
        events.push(normal(
            "TookOver",
            "AdoptRow",
            format!(
                "account {system_id:?} was owned by {}/{} (uid {}), which is gone or newer; this older resource now owns it",
                other.namespace, other.name, other.uid
            ),
        ));
    }
    Ok(true)
}

/// Writes the account row, adopting a hand-written one and resolving ownership conflicts.
/// Events to publish are pushed to `events`.
async fn write_account(
    a: &SmppAccount,
    ctx: &Context,
    password: &Password,
    events: &mut Vec<Event>,
) -> Result<SyncState, DbError> {
    ctx.ensure_schema().await?;
    let owner = owner_of(a);
    let system_id = &a.spec.system_id;
    // A takeover changes ownership; then the next round writes the config.
    for _ in 0..3 {
        let row = accounts::get_by_system_id(&ctx.pool, system_id).await?;
        let row_owner = row.as_ref().and_then(Account::owner);
        if let Some(other) = row_owner.as_ref().filter(|o| o.uid != owner.uid) {
            // Decided before hashing: a losing account costs no argon2 per resync.
            if !take_over(a, other, ctx, events).await? {
                return Ok(conflict(system_id, other));
            }
            continue;
        }
        let current = row.as_ref().map(|r| r.config.password_hash.as_str());
        let hash = password_hash(ctx, &owner.uid, current, password).await?;
        let config = desired_account(a, hash);
        let written = match accounts::upsert_owned(&ctx.pool, &owner, &config).await? {
            AccountUpsert::Created(r) => {
                tracing::info!(account = %system_id, id = %r.id, "account created");
                events.push(normal(
                    "Created",
                    "CreateRow",
                    format!(
                        "created account {system_id:?} (id {}) in vendor_mgmt.customer_accounts",
                        r.id
                    ),
                ));
                r
            }
            AccountUpsert::Updated(r) => {
                let fields = row
                    .as_ref()
                    .map(|old| account_changes(&old.config, &config).join(", "))
                    .unwrap_or_default();
                tracing::info!(account = %system_id, id = %r.id, columns = %fields, "account updated");
                if row_owner.is_none() {
                    events.push(normal("Adopted", "AdoptRow", format!("took over account {system_id:?} (id {}), which was managed by hand; it now follows this resource", r.id)));
                } else if !fields.is_empty() {
                    events.push(normal(
                        "Updated",
                        "UpdateRow",
                        format!("updated account {system_id:?}: {fields}"),
                    ));
                }
                r
            }
            AccountUpsert::Unchanged(r) => r,
            // Someone else wrote it since we looked: decide again.
            AccountUpsert::OwnedByOther { owner: other, .. } => {
                if !take_over(a, &other, ctx, events).await? {
                    return Ok(conflict(system_id, &other));
                }
                continue;
            }
        };
        release_renamed(a, ctx, events).await?;
        return Ok(synced(&written));
    }
    Ok(SyncState::DatabaseError(format!(
        "ownership of account {system_id:?} kept changing; will retry"
    )))
}

/// After a change of spec.systemId, the old login stops working.
async fn release_renamed(
    a: &SmppAccount,
    ctx: &Context,
    events: &mut Vec<Event>,
) -> Result<(), DbError> {
    let uid = a.uid().unwrap_or_default();
    let system_id = &a.spec.system_id;
    if accounts::delete_owned_except(&ctx.pool, &uid, system_id).await? > 0 {
        events.push(normal(
            "Renamed",
            "DeleteRow",
            format!("spec.systemId is now {system_id:?}: deleted this resource's account under its old systemId; customers bound with it are unbound"),
        ));
    }
    Ok(())
}

/// Id of the account this resource owns, if any (best effort: used for status only).
async fn owned_account_id(a: &SmppAccount, ctx: &Context) -> Option<Uuid> {
    let row = accounts::get_by_system_id(&ctx.pool, &a.spec.system_id)
        .await
        .ok()??;
    (row.owner_uid == a.uid()).then_some(row.id)
}

impl Reconciler for SmppAccount {
    const KIND: &'static str = "account";

    fn secret_names(&self) -> Vec<&str> {
        SmppAccount::secret_names(self)
    }

    async fn reconcile(&self, ctx: &Context) -> Result<Action, Error> {
        let mut events = Vec::new();
        let previous = self.status.as_ref();
        let ns = self.namespace().unwrap_or_default();
        let secret_ref = &self.spec.password_secret_ref;
        let password = ctx
            .secrets
            .password(&ns, secret_ref, Material::CustomerPassword)
            .await;
        let (creds, sync, db_error) = match password {
            Err(e) if e.is_transient() => return Err(Error::Credentials(e)),
            Err(e) => (
                CredState::Failed {
                    reason: e.reason(),
                    message: e.to_string(),
                },
                SyncState::WaitingForCredentials,
                None,
            ),
            Ok(pw) => match write_account(self, ctx, &pw, &mut events).await {
                Ok(sync) => (CredState::Resolved, sync, None),
                Err(e) => (CredState::Resolved, SyncState::from_db_error(&e), Some(e)),
            },
        };
        let previous_id = previous
            .and_then(|s| s.account_id.as_deref())
            .and_then(|s| Uuid::parse_str(s).ok());
        let account_id = match &sync {
            SyncState::Synced { id, .. } => Some(*id),
            SyncState::Conflict { .. } => None,
            SyncState::DatabaseUnavailable(_) | SyncState::DatabaseError(_) => previous_id,
            SyncState::WaitingForCredentials => owned_account_id(self, ctx).await.or(previous_id),
        };
        let ttl = ctx
            .settings
            .session_ttl
            .to_std()
            .unwrap_or(smpp_db::sessions::SLOT_TTL);
        let binds = match (account_id, db_error.is_some()) {
            (Some(id), false) => accounts::binds(&ctx.pool, id, ttl)
                .await
                .inspect_err(|e| tracing::warn!(account = %self.key(), error = %e, "cannot read account_sessions"))
                .ok(),
            _ => None,
        };
        let observation = AccountObservation {
            generation: self.metadata.generation.unwrap_or(0),
            system_id: self.spec.system_id.clone(),
            creds,
            sync,
            account_id,
            binds,
            max_binds: self.spec.max_binds,
            suspended: self.spec.suspend,
        };
        let status = build_account_status(&observation, previous, now());
        transition_events(
            previous.map(|p| p.conditions.as_slice()),
            &status.conditions,
            &mut events,
        );
        if previous != Some(&status) {
            patch_status(ctx, self, &status).await?;
        }
        for ev in events {
            ctx.publish(self, ev).await;
        }
        if let Some(e) = db_error {
            return Err(Error::Db(e));
        }
        Ok(Action::requeue(ctx.settings.resync))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Action, Error> {
        ctx.ensure_schema().await?;
        let uid = self.uid().unwrap_or_default();
        if accounts::delete_owned(&ctx.pool, &uid).await? {
            let system_id = &self.spec.system_id;
            ctx.publish(
                self,
                normal(
                    "Deleted",
                    "DeleteRow",
                    format!("deleted account {system_id:?} from vendor_mgmt.customer_accounts; gateways close its sessions"),
                ),
            )
            .await;
        }
        ctx.account_hashes.forget(&uid);
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(hash: &str, version: &str) -> Verified {
        Verified {
            hash: hash.into(),
            secret_version: version.into(),
        }
    }

    #[test]
    fn the_rows_hash_is_kept_while_neither_it_nor_the_secret_moved() {
        use HashPlan::*;
        assert_eq!(hash_plan(None, None, "7"), Fresh);
        assert_eq!(
            hash_plan(None, Some(&verified("h", "7")), "7"),
            Fresh,
            "no row (deleted by hand): write one"
        );
        assert_eq!(hash_plan(Some("h"), None, "7"), Verify("h".into()));
        assert_eq!(
            hash_plan(Some("h"), Some(&verified("h", "7")), "7"),
            Keep("h".into())
        );
        // The Secret changed (maybe its password): check again.
        assert_eq!(
            hash_plan(Some("h"), Some(&verified("h", "7")), "8"),
            Verify("h".into())
        );
        // The row's hash was edited by hand: check it, rewrite it if it does not match.
        assert_eq!(
            hash_plan(Some("x"), Some(&verified("h", "7")), "7"),
            Verify("x".into())
        );
        // A Secret with no resourceVersion proves nothing.
        assert_eq!(
            hash_plan(Some("h"), Some(&verified("h", "")), ""),
            Verify("h".into())
        );
    }

    #[test]
    fn verified_hashes_are_per_account() {
        let v = VerifiedHashes::default();
        v.set("a", verified("ha", "1"));
        v.set("b", verified("hb", "1"));
        v.forget("a");
        assert_eq!(v.get("a"), None);
        assert_eq!(v.get("b"), Some(verified("hb", "1")));
    }
}
