//! service_providers rows: the typed row and its queries (operator-side work, issue 3).
