//! The environment scripts under bad input: each failure ends with exactly one
//! "<stage>: FAILED: <reason>" line, and no half-started server stays behind.
//! These start their own servers in private directories; they don't need `make env-up`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use smpp_e2e::process::repo_root;
use smpp_e2e::wait;

/// A scratch directory under target/env. On drop, the script that used it stops whatever it
/// started there (a test that fails must not leave a server behind), then the dir goes.
struct Scratch {
    dir: PathBuf,
    stop_with: Option<(&'static str, &'static str)>,
}

impl Scratch {
    fn new(what: &str) -> Self {
        let dir = repo_root().join(format!(
            "target/env/bad-{what}-{:08x}",
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            stop_with: None,
        }
    }

    /// A scratch dir for e2e/scripts/`script`, stopped on drop with its `verb`.
    fn for_script(script: &'static str, verb: &'static str) -> Self {
        let mut scratch = Self::new(script.trim_end_matches(".sh"));
        scratch.stop_with = Some((script, verb));
        scratch
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some((name, verb)) = self.stop_with {
            let _ = script(name).arg(verb).arg(&self.dir).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn script(name: &str) -> Command {
    Command::new(repo_root().join("e2e/scripts").join(name))
}

/// Asserts the run failed with exactly one FAILED line, and returns that line.
fn one_failure_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr:\n{stderr}"
    );
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(": FAILED: "))
        .collect();
    assert_eq!(failed.len(), 1, "want one FAILED line, stderr:\n{stderr}");
    assert_eq!(
        stderr.lines().rev().find(|l| !l.trim().is_empty()),
        Some(failed[0]),
        "the FAILED line is the last word; stderr:\n{stderr}"
    );
    failed[0].to_string()
}

fn alive(pid_file: &Path) -> bool {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

#[test]
fn taken_port_fails_fast_and_starts_nothing() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    for (name, var, stage, stop) in [
        ("postgres.sh", "PG_PORT", "postgres", "destroy"),
        ("redis.sh", "REDIS_PORT", "redis", "down"),
        ("controlplane.sh", "APISERVER_PORT", "controlplane", "down"),
    ] {
        let dir = Scratch::for_script(name, stop);
        let out = script(name)
            .args(["up"])
            .arg(&dir.dir)
            .env(var, &port)
            .output()
            .unwrap();
        let line = one_failure_line(&out);
        assert!(
            line.starts_with(&format!("{stage}: FAILED: port {port} "))
                && line.contains("already in use"),
            "{line}"
        );
        for pid_file in [
            "redis.pid",
            "etcd.pid",
            "apiserver.pid",
            "data/postmaster.pid",
        ] {
            assert!(
                !alive(&dir.dir.join(pid_file)),
                "{stage}: {pid_file} names a live process"
            );
        }
    }
}

#[test]
fn server_not_up_by_its_deadline_is_stopped() {
    let dir = Scratch::for_script("controlplane.sh", "down");
    // kube-apiserver needs a few seconds for its post-start hooks; 1 s is too short.
    let out = script("controlplane.sh")
        .arg("up")
        .arg(&dir.dir)
        .env("APISERVER_DEADLINE", "1")
        .output()
        .unwrap();
    let line = one_failure_line(&out);
    assert!(
        line.contains("kube-apiserver") && line.contains("not up within 1s"),
        "{line}"
    );
    // The stop removes the pid files, so check the ports: nothing may answer there.
    for port_file in ["etcd.port", "apiserver.port"] {
        let port: u16 = std::fs::read_to_string(dir.dir.join(port_file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a server on {port} ({port_file}) was left running"
        );
    }
}

#[tokio::test]
async fn apiserver_killed_mid_startup_is_reported_and_etcd_stopped() {
    let dir = Scratch::for_script("controlplane.sh", "down");
    let child = script("controlplane.sh")
        .arg("up")
        .arg(&dir.dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = dir.dir.join("apiserver.pid");
    let pid = wait::until("kube-apiserver spawned", Duration::from_secs(60), || {
        let pid_file = pid_file.clone();
        async move {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            Ok(pid.filter(|p| Path::new(&format!("/proc/{p}")).exists()))
        }
    })
    .await
    .unwrap();
    let etcd_pid_file = dir.dir.join("etcd.pid");
    assert!(
        alive(&etcd_pid_file),
        "etcd runs before the apiserver starts"
    );
    let etcd_pid = std::fs::read_to_string(&etcd_pid_file).unwrap();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();

    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let line = one_failure_line(&out);
    assert!(
        line.contains("kube-apiserver") && line.contains("exited during startup"),
        "{line}"
    );
    let etcd_proc = format!("/proc/{}", etcd_pid.trim());
    assert!(
        !Path::new(&etcd_proc).exists(),
        "etcd ({etcd_proc}) left running after the failure"
    );
}

#[test]
fn package_that_cannot_be_installed_is_named() {
    let dir = Scratch::for_script("postgres.sh", "destroy");
    // There is no PostgreSQL 99 in Debian: apt-get install must fail, and say which package.
    let out = script("postgres.sh")
        .arg("up")
        .arg(&dir.dir)
        .env("PG_VERSION", "99")
        .output()
        .unwrap();
    let line = one_failure_line(&out);
    assert!(
        line.contains("could not install Debian package postgresql-99"),
        "{line}"
    );
}

#[test]
fn failing_go_build_is_named() {
    let bin = Scratch::new("go-bin");
    let cache = Scratch::new("go-cache");
    let modcache = Scratch::new("go-mod");
    // An empty module cache and no proxy: the first `go build` cannot fetch its modules.
    let out = Command::new(repo_root().join("e2e/controlplane/build.sh"))
        .env("CONTROLPLANE_BIN", &bin.dir)
        .env("CONTROLPLANE_CACHE", &cache.dir)
        .env("GOMODCACHE", &modcache.dir)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=readonly")
        .output()
        .unwrap();
    let line = one_failure_line(&out);
    assert!(
        line.starts_with("controlplane: FAILED: go build of etcd"),
        "{line}"
    );
    assert!(
        !bin.dir.join("etcd").exists(),
        "no half-built binary is left"
    );
}
