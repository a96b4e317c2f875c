//! The committed CRDs must be what the Rust types generate.

fn check(file: &str, generated: String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate it (and the chart's copy) with `make crds`",
        path.display()
    );
}

#[test]
fn committed_crd_yaml_is_up_to_date() {
    check("smppvendor.yaml", smpp_crds::crd_yaml());
}

#[test]
fn committed_account_crd_yaml_is_up_to_date() {
    check("smppaccount.yaml", smpp_crds::account::crd_yaml());
}
