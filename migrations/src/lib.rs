//! vendor_mgmt schema and typed queries. Filled in by issue 3.
