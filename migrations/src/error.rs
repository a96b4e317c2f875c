//! One error type for every query, which tells "PostgreSQL is unreachable" (retry, report
//! DatabaseUnavailable) apart from everything else (a bug or a bad row: report it).

/// An error from the vendor_mgmt layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection to PostgreSQL: refused, reset, timed out, shutting down, pool exhausted.
    #[error("database unavailable (is PostgreSQL running and DATABASE_URL right?): {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Applying the schema migrations failed for a reason other than connectivity.
    #[error("schema migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The query reached PostgreSQL and failed there (constraint, type, SQL error).
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    /// Hashing an account password failed (the OS random source for the salt).
    #[error("cannot hash the account password: {0}")]
    PasswordHash(String),
}

impl DbError {
    /// True when the failure is about reaching PostgreSQL, not about the query itself.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        if is_connection_error(&e) {
            DbError::Unavailable(e)
        } else {
            DbError::Query(e)
        }
    }
}

impl From<sqlx::migrate::MigrateError> for DbError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(inner) if is_connection_error(&inner) => {
                DbError::Unavailable(inner)
            }
            other => DbError::Migrate(other),
        }
    }
}

/// Classifies a sqlx error as a connectivity problem. SQLSTATE class 08 is "connection
/// exception"; 57P01..57P03 are the server shutting down or still starting.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_pool_errors_are_unavailable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(DbError::from(io).is_unavailable());
        assert!(DbError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(DbError::from(sqlx::Error::PoolClosed).is_unavailable());
    }

    #[test]
    fn row_errors_are_not_unavailable() {
        assert!(!DbError::from(sqlx::Error::RowNotFound).is_unavailable());
        let e = DbError::from(sqlx::Error::ColumnNotFound("x".into()));
        assert!(matches!(e, DbError::Query(_)));
    }

    #[test]
    fn message_names_the_likely_cause() {
        let e = DbError::from(sqlx::Error::PoolTimedOut);
        assert!(e.to_string().contains("is PostgreSQL running"), "{e}");
    }
}
