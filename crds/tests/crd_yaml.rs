//! The committed CRD must be what the Rust types generate.

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("smppvendor.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == smpp_crds::crd_yaml(),
        "{} is stale: regenerate it (and the chart's copy) with `make crds`",
        path.display()
    );
}
