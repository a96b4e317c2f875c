//! SmppVendor custom resource types. Filled in by the operator work (issue 3).
