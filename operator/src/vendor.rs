//! The SmppVendor controller's reconcile: the service_providers row from spec + Secrets
//! (adopting a hand-written row, resolving ownership conflicts, reverting drift), the bind
//! state from vendor_sessions in status, and deletionPolicy in the finalizer's cleanup.

use crate::controller::{
    Context, Error, Reconciler, may_take_over, normal, now, owner_of, patch_status,
    transition_events, warning,
};
use crate::events::Event;
use crate::row::desired_config;
use crate::status::{CredState, Observation, SyncState, build_status};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use smpp_crds::{DeletionPolicy, SmppVendor};
use smpp_db::DbError;
use smpp_db::providers::{self, ServiceProvider, UpsertOutcome};
use uuid::Uuid;

fn synced(instance_name: &str, row: &ServiceProvider) -> SyncState {
    SyncState::Synced {
        name: instance_name.into(),
        id: row.id,
    }
}

/// Writes the row, adopting an unowned one and resolving ownership conflicts. Events to
/// publish are pushed to `events`.
async fn write_row(
    v: &SmppVendor,
    ctx: &Context,
    config: &providers::ProviderConfig,
    events: &mut Vec<Event>,
) -> Result<SyncState, DbError> {
    ctx.ensure_schema().await?;
    let owner = owner_of(v);
    let name = v.instance_name();
    // Adoption or takeover changes ownership; then the next round writes the config.
    for _ in 0..3 {
        match providers::upsert_owned(&ctx.pool, &name, &owner, config).await? {
            UpsertOutcome::Created(row) => {
                tracing::info!(instance = %name, id = %row.id, "row created");
                events.push(normal(
                    "Created",
                    "CreateRow",
                    format!(
                        "created row {name:?} (id {}) in vendor_mgmt.service_providers",
                        row.id
                    ),
                ));
                return Ok(synced(&name, &row));
            }
            UpsertOutcome::Updated {
                row,
                changed,
                drift,
            } => {
                let fields = changed.join(", ");
                tracing::info!(instance = %name, id = %row.id, columns = %fields, drift, "row updated");
                if drift {
                    ctx.metrics.drift_reverted.inc();
                    events.push(warning("DriftReverted", "RevertRow", format!("row {name:?} was edited outside the operator (columns: {fields}); reverted to the spec. Change the SmppVendor instead of the row")));
                } else if !changed.is_empty() {
                    events.push(normal(
                        "Updated",
                        "UpdateRow",
                        format!("updated row {name:?}: {fields}"),
                    ));
                }
                return Ok(synced(&name, &row));
            }
            UpsertOutcome::Unchanged(row) => return Ok(synced(&name, &row)),
            UpsertOutcome::Unowned(row) => {
                if providers::adopt(&ctx.pool, &name, &owner).await?.is_some() {
                    events.push(normal("Adopted", "AdoptRow", format!("took over row {name:?} (id {}), which was managed by hand; it now follows this resource", row.id)));
                }
            }
            UpsertOutcome::OwnedByOther { owner: other, .. } => {
                if !may_take_over(v, &other, ctx).await {
                    return Ok(SyncState::Conflict {
                        name,
                        owner: format!("{}/{}", other.namespace, other.name),
                    });
                }
                if providers::transfer(&ctx.pool, &name, &other.uid, &owner)
                    .await?
                    .is_some()
                {
                    events.push(normal("TookOver", "AdoptRow", format!("row {name:?} was owned by {}/{} (uid {}), which is gone or newer; this older resource now owns it", other.namespace, other.name, other.uid)));
                }
            }
        }
    }
    Ok(SyncState::DatabaseError(format!(
        "ownership of row {name:?} kept changing; will retry"
    )))
}

impl Reconciler for SmppVendor {
    const KIND: &'static str = "vendor";

    fn secret_names(&self) -> Vec<&str> {
        SmppVendor::secret_names(self)
    }

    async fn reconcile(&self, ctx: &Context) -> Result<Action, Error> {
        let mut events = Vec::new();
        let previous = self.status.as_ref();
        let (creds, sync, db_error) = match ctx.secrets.resolve(self).await {
            Err(e) if e.is_transient() => return Err(Error::Credentials(e)),
            Err(e) => (
                CredState::Failed {
                    reason: e.reason(),
                    message: e.to_string(),
                },
                SyncState::WaitingForCredentials,
                None,
            ),
            Ok(c) => match write_row(self, ctx, &desired_config(&self.spec, &c), &mut events).await
            {
                Ok(sync) => (CredState::Resolved, sync, None),
                Err(e) => (CredState::Resolved, SyncState::from_db_error(&e), Some(e)),
            },
        };
        let previous_id = previous
            .and_then(|s| s.vendor_id.as_deref())
            .and_then(|s| Uuid::parse_str(s).ok());
        let vendor_id = match &sync {
            SyncState::Synced { id, .. } => Some(*id),
            SyncState::Conflict { .. } => None,
            SyncState::DatabaseUnavailable(_) | SyncState::DatabaseError(_) => previous_id,
            SyncState::WaitingForCredentials => owned_row_id(self, ctx).await.or(previous_id),
        };
        let sessions = match (vendor_id, db_error.is_some()) {
            (Some(id), false) => {
                smpp_db::status::vendor_sessions(&ctx.pool, id, ctx.settings.session_ttl)
                    .await
                    // e.g. a state this version does not know (UnknownSlotState): Bound is Unknown.
                    .inspect_err(|e| tracing::warn!(vendor = %self.name_any(), error = %e, "cannot read vendor_sessions"))
                    .ok()
            }
            _ => None,
        };
        let observation = Observation {
            generation: self.metadata.generation.unwrap_or(0),
            creds,
            sync,
            vendor_id,
            sessions,
            desired: self.desired_sessions(),
            suspended: self.spec.suspend,
        };
        let status = build_status(&observation, previous, now());
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
        let name = self.instance_name();
        let uid = self.uid().unwrap_or_default();
        match self.spec.deletion_policy {
            DeletionPolicy::Delete => {
                if providers::delete_owned(&ctx.pool, &name, &uid).await? {
                    ctx.publish(
                        self,
                        normal(
                            "Deleted",
                            "DeleteRow",
                            format!(
                                "deleted row {name:?} (deletionPolicy Delete); gateways unbind"
                            ),
                        ),
                    )
                    .await;
                }
            }
            DeletionPolicy::Orphan => {
                if providers::orphan(&ctx.pool, &name, &uid).await? {
                    ctx.publish(self, normal("Orphaned", "OrphanRow", format!("kept row {name:?} and cleared its owner (deletionPolicy Orphan); it is managed by hand again"))).await;
                }
            }
        }
        Ok(Action::await_change())
    }
}

/// Id of the row this resource owns, if any (best effort: used for status only).
async fn owned_row_id(v: &SmppVendor, ctx: &Context) -> Option<Uuid> {
    let row = providers::get_by_instance_name(&ctx.pool, &v.instance_name())
        .await
        .ok()??;
    (row.owner_uid == v.uid()).then_some(row.id)
}
