//! Reconcile a vendor as soon as a gateway changes one of its bind slots, so BOUND in
//! `kubectl get smppvendors` follows the gateways within a moment instead of at the next
//! periodic refresh. The periodic refresh stays as the safety net (missed notifications,
//! heartbeats going stale).

use futures::{Stream, StreamExt};
use kube::runtime::reflector::ObjectRef;
use smpp_crds::SmppVendor;
use smpp_db::PgPool;
use smpp_db::status::SESSIONS_CHANNEL;
use sqlx::postgres::PgListener;
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

/// SmppVendors whose row's vendor_sessions changed, as reconcile triggers.
pub fn triggers(pool: PgPool) -> impl Stream<Item = ObjectRef<SmppVendor>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Uuid>(4096);
    let guard = AbortOnDrop(tokio::spawn(listen(pool.clone(), tx)));
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|id| (id, (rx, guard)))
    })
    .filter_map(move |id| {
        let pool = pool.clone();
        async move { owner_of(&pool, id).await }
    })
}

/// The SmppVendor owning row `id`, if any (rows managed by hand have none).
async fn owner_of(pool: &PgPool, id: Uuid) -> Option<ObjectRef<SmppVendor>> {
    let row = smpp_db::providers::get(pool, id).await.ok()??;
    let owner = row.owner()?;
    Some(ObjectRef::new(&owner.name).within(&owner.namespace))
}

/// LISTENs on the sessions channel, reconnecting with backoff while PostgreSQL is away.
async fn listen(pool: PgPool, tx: mpsc::Sender<Uuid>) {
    let mut delay = Duration::from_millis(500);
    loop {
        match listen_once(&pool, &tx).await {
            Ok(()) => return, // the controller is gone
            Err(e) => {
                tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "LISTEN {SESSIONS_CHANNEL} interrupted")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn listen_once(pool: &PgPool, tx: &mpsc::Sender<Uuid>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(SESSIONS_CHANNEL).await?;
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
