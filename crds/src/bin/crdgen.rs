//! Prints a CRD as YAML:
//! `cargo run -p smpp-crds --bin crdgen > crds/smppvendor.yaml` (SmppVendor, the default) and
//! `cargo run -p smpp-crds --bin crdgen -- account > crds/smppaccount.yaml` (SmppAccount).

fn main() {
    match std::env::args().nth(1).as_deref() {
        None | Some("vendor") => print!("{}", smpp_crds::crd_yaml()),
        Some("account") => print!("{}", smpp_crds::account::crd_yaml()),
        Some(other) => {
            eprintln!("crdgen: unknown CRD {other:?} (expected vendor or account)");
            std::process::exit(2);
        }
    }
}
