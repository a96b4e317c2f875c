//! Running the sqlx migrations in sql/.
//!
//! sqlx's Postgres migrator takes `pg_advisory_lock` (keyed on the database name) on the
//! connection before it reads `_sqlx_migrations`, so concurrent callers (operator replicas,
//! gateway pods, tests) queue behind each other; the second finds everything applied and
//! does nothing. The SQL itself is written idempotently as well, for databases that already
//! have the legacy service_providers table.

use crate::DbError;
use sqlx::PgPool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./sql");

/// Brings the vendor_mgmt schema up to date. Safe to call from many processes at once.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    debug_assert!(
        MIGRATOR.locking,
        "migrations must run under the advisory lock"
    );
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Versions of the migrations this build knows, newest last.
pub fn known_versions() -> Vec<i64> {
    MIGRATOR.iter().map(|m| m.version).collect()
}
