//! Real-parts test harness. Filled in by issue 2.
