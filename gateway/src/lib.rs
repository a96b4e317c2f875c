//! SMPP gateway library. Filled in by issue 4.
