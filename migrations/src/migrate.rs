//! Running the sqlx migrations in sql/ under a lock (operator-side work, issue 3).
