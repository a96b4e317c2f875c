//! Read-only aggregation of vendor_sessions for the operator status (issue 3).
