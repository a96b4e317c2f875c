//! The environment written by `make env-up` to target/env.sh (issue 2, harness work).
