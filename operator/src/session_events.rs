//! Reconcile a resource as soon as a gateway changes one of its sessions, so BOUND in
//! `kubectl get smppvendors` / `smppaccounts` follows the gateways within a moment instead of
//! at the next periodic refresh. The periodic refresh stays as the safety net (missed
//! notifications, heartbeats going stale).
//!
//! Both tables NOTIFY with the row id as payload: vendor_sessions on
//! [`smpp_db::status::SESSIONS_CHANNEL`] (the vendor id), account_sessions on
//! [`smpp_db::accounts::SESSIONS_CHANNEL`] (the account id).

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use smpp_crds::{SmppAccount, SmppVendor};
use smpp_db::PgPool;
use smpp_db::providers::OwnerRef;
use sqlx::postgres::PgListener;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Aborts the listener task when the controller (and so this stream) is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SmppVendors whose row's vendor_sessions changed.
pub fn vendor_triggers(pool: PgPool) -> impl Stream<Item = ObjectRef<SmppVendor>> + Send {
    triggers(
        pool,
        smpp_db::status::SESSIONS_CHANNEL,
        |pool, id| async move { smpp_db::providers::get(&pool, id).await.ok()??.owner() },
    )
}

/// SmppAccounts whose account's account_sessions changed.
pub fn account_triggers(pool: PgPool) -> impl Stream<Item = ObjectRef<SmppAccount>> + Send {
    triggers(
        pool,
        smpp_db::accounts::SESSIONS_CHANNEL,
        |pool, id| async move { smpp_db::accounts::get(&pool, id).await.ok()??.owner() },
    )
}

/// The resources owning the rows whose ids arrive on `channel`, as reconcile triggers.
/// `owner_of` looks the row's owner up (rows managed by hand have none).
fn triggers<K, F, Fut>(
    pool: PgPool,
    channel: &'static str,
    owner_of: F,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
    F: Fn(PgPool, Uuid) -> Fut + Send + 'static,
    Fut: Future<Output = Option<OwnerRef>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Uuid>(4096);
    let guard = AbortOnDrop(tokio::spawn(listen(pool.clone(), channel, tx)));
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|id| (id, (rx, guard)))
    })
    .filter_map(move |id| {
        let owner = owner_of(pool.clone(), id);
        async move {
            let owner = owner.await?;
            Some(ObjectRef::new(&owner.name).within(&owner.namespace))
        }
    })
}

/// LISTENs on `channel`, reconnecting with backoff while PostgreSQL is away.
async fn listen(pool: PgPool, channel: &'static str, tx: mpsc::Sender<Uuid>) {
    let mut delay = Duration::from_millis(500);
    loop {
        match listen_once(&pool, channel, &tx).await {
            Ok(()) => return, // the controller is gone
            Err(e) => {
                tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "LISTEN {channel} interrupted")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn listen_once(
    pool: &PgPool,
    channel: &str,
    tx: &mpsc::Sender<Uuid>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    loop {
        // try_recv: Ok(None) when the connection dropped, so we notice and resubscribe.
        let Some(n) = listener.try_recv().await? else {
            return Err(sqlx::Error::PoolClosed);
        };
        if let Ok(id) = Uuid::parse_str(n.payload())
            && tx.send(id).await.is_err()
        {
            return Ok(());
        }
    }
}
