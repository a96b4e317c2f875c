//! Prints the SmppVendor CRD as YAML: `cargo run -p smpp-crds --bin crdgen > crds/smppvendor.yaml`.

fn main() {
    print!("{}", smpp_crds::crd_yaml());
}
