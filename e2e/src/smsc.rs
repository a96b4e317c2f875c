//! Private SMSC simulator instances for tests (issue 2, simulator work).
