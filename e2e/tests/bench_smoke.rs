//! The benchmarks of `make bench`, run with tiny counts (`smpp-bench run --quick`), so a suite
//! that no longer runs shows here rather than at the next `make bench`. Only that it measures
//! is checked: the figures of a debug build on tiny loads say nothing about speed.
//!
//! Run: make env-up; cargo build --bins; cargo test -p smpp-e2e --test bench_smoke

use std::time::Duration;

use smpp_e2e::process::{repo_root, workspace_bin};

/// Bounds a hang; the quick customers suite takes seconds.
const LIMIT: Duration = Duration::from_secs(180);

/// `smpp-bench run --quick --only <suite>` into target/bench-smoke/<suite>.md; the report.
async fn quick(suite: &str) -> String {
    // smpp-bench starts the smpp-gateway next to itself: this checkout's build, checked.
    workspace_bin("smpp-gateway");
    let dir = repo_root().join("target/bench-smoke");
    std::fs::create_dir_all(&dir).expect("target/bench-smoke");
    let out = dir.join(format!("{suite}.md"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_smpp-bench"))
        .args([
            "run",
            "--quick",
            "--only",
            suite,
            "--command",
            "bench_smoke",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting smpp-bench");
    let status = match tokio::time::timeout(LIMIT, child.wait()).await {
        Ok(s) => s.expect("waiting for smpp-bench"),
        Err(_) => {
            // SIGTERM: smpp-bench stops every process it started before it exits.
            if let Some(pid) = child.id() {
                // SAFETY: a signal to our own child.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
            panic!("smpp-bench --only {suite} did not finish within {LIMIT:?}");
        }
    };
    let report = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success(),
        "smpp-bench --only {suite} failed ({status}); its report says:\n{report}"
    );
    report
}

#[tokio::test]
async fn customers_suite_measures_both_shapes() {
    let md = quick("customers").await;
    for shape in ["1 bind × window 10", "4 binds × window 100"] {
        let title = format!("## Customers over SMPP: {shape}");
        let section = md
            .split_once(&title)
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(""))
            .unwrap_or_else(|| panic!("no section {title:?} in:\n{md}"));
        assert!(!section.contains("**Not measured:**"), "{section}");
        let row = section
            .lines()
            .find(|l| l.starts_with("| receipts back to the customer"))
            .unwrap_or_else(|| panic!("no receipts row in:\n{section}"));
        // | metric | target | median | met | runs |: a number, not "not measured".
        let median = row.split('|').nth(3).unwrap_or("").trim();
        assert!(median.ends_with("msg/s"), "{row}");
        assert!(
            section.contains("every receipt came back to the customer"),
            "{section}"
        );
    }
    // Run alone, the Kannel comparison says where its figure comes from.
    assert!(md.contains("--only messages,customers"), "{md}");
}

/// The figure of a row (`| metric | target | median | met | runs |`) in `md`, or a panic naming
/// what is missing.
fn median_of<'a>(md: &'a str, metric: &str) -> &'a str {
    let row = md
        .lines()
        .find(|l| l.starts_with(&format!("| {metric} |")))
        .unwrap_or_else(|| panic!("no row {metric:?} in:\n{md}"));
    row.split('|').nth(3).unwrap_or("").trim()
}

#[tokio::test]
async fn session_suite_measures_the_session_layer_and_the_raw_exchange() {
    let md = quick("session").await;
    assert!(!md.contains("**Not measured:**"), "{md}");
    for shape in ["1 bind × window 10", "4 binds × window 100"] {
        for what in ["raw exchange: submits/s", "session layer: submits/s"] {
            let m = median_of(&md, &format!("{shape}: {what}"));
            assert!(m.ends_with("msg/s"), "{shape}: {what}: {m}");
        }
        let ratio = median_of(
            &md,
            &format!("{shape}: session layer / raw exchange (goal ≥ 50 %)"),
        );
        assert!(ratio.ends_with('%'), "{ratio}");
    }
}

#[tokio::test]
async fn forward_suite_measures_what_a_forward_adds() {
    let md = quick("forward").await;
    assert!(!md.contains("**Not measured:**"), "{md}");
    for metric in [
        "direct (the pod holding the bind), p50",
        "forwarded (a pod without a bind), p50",
        "added by the forward, p50",
    ] {
        let m = median_of(&md, metric);
        assert!(m.ends_with("ms"), "{metric}: {m}");
    }
}
