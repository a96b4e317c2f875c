//! Child processes that die with the test: a guard kills the process group on drop, so a
//! failing (panicking) test leaves nothing behind.

use std::path::PathBuf;
use std::process::{Child, Command};

/// Kills the child (and its process group) when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` in its own process group.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("failed to start {name}: {e}"))?;
        Ok(Self {
            child: Some(child),
            name: name.to_string(),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `signal` (e.g. libc SIGTERM = 15, SIGKILL = 9) to the process group.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            let _ = kill_group(signal, c.id());
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Kills the process group and waits for the child.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill_group(9, c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` to process group `pgid` with kill(2) directly. Shelling out is a trap here:
/// procps-ng 4.0.2's kill parses `kill -9 -1234` as kill(-1, SIGKILL), every process on the machine.
fn kill_group(signal: i32, pgid: u32) -> std::io::Result<()> {
    let pgid = i32::try_from(pgid).map_err(std::io::Error::other)?;
    // A pgid of 0 or 1 would address our own group or every process; never send those.
    if pgid <= 1 {
        return Err(std::io::Error::other(
            "refusing to signal process group <= 1",
        ));
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Repository root (the workspace), from this crate's manifest dir.
///
/// `cargo test` sets CARGO_MANIFEST_DIR at run time (to e2e/ or another member, all one level
/// below the root); prefer it to the compile-time value, because the shared, cached target dir
/// may hold a build made from another checkout of the same sources.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("workspace members sit in the workspace root")
        .to_path_buf()
}

/// Path of a workspace binary (`smpp-gateway`, `smpp-operator`) built by `cargo build --bins`,
/// next to the running test executable (target/<profile>/deps/..).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("test executable lives under target/<profile>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    assert_built_here(&path);
    path
}

/// Fails unless the test executable and the binary at `path` were both built from this
/// checkout. Clones that share a cargo target dir (CARGO_TARGET_DIR) overwrite each other's
/// artifacts, and cargo may take another clone's build as fresh: without this, a test could
/// pass or fail on code that is not the code under test. `smpp-gateway` and `smpp-operator`
/// name their checkout in `--version` ("… (built from <crate dir>)"). Checked once per binary.
pub fn assert_built_here(path: &std::path::Path) {
    static CHECKED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut checked = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    if checked.iter().any(|p| p == path) {
        return;
    }
    let here = canonical(&repo_root());
    let fix = "the cargo target dir is shared with another clone: use the per-clone default \
               (unset CARGO_TARGET_DIR; see README), or force a rebuild here \
               (`touch gateway/src/main.rs operator/src/main.rs e2e/src/lib.rs`)";
    let test_built_in = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let test_root = canonical(test_built_in.parent().unwrap_or(&test_built_in));
    assert!(
        test_root == here,
        "this test executable was built from {}, not from this checkout {}: {fix}",
        test_root.display(),
        here.display()
    );
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", path.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let built = built_from(&text).unwrap_or_else(|| {
        panic!(
            "{} --version does not say where it was built from: {text:?}",
            path.display()
        )
    });
    let built_root = canonical(built.parent().unwrap_or(&built));
    assert!(
        built_root == here,
        "{} was built from {}, not from this checkout {}: {fix}",
        path.display(),
        built_root.display(),
        here.display()
    );
    checked.push(path.to_path_buf());
}

/// The crate directory in a `--version` line "<name> <version> (built from <dir>)".
pub fn built_from(version: &str) -> Option<PathBuf> {
    let (_, rest) = version.split_once("(built from ")?;
    let (dir, _) = rest.trim_end().rsplit_once(')')?;
    Some(PathBuf::from(dir))
}

fn canonical(p: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod built_from_tests {
    use super::*;

    #[test]
    fn parses_the_version_line() {
        assert_eq!(
            built_from("smpp-gateway 0.1.0 (built from /src/a b/gateway)\n"),
            Some(PathBuf::from("/src/a b/gateway"))
        );
        assert_eq!(built_from("smpp-gateway 0.1.0\n"), None);
    }

    fn fake_binary(name: &str, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = repo_root().join("target/process-tests");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(format!("{name}-{}", std::process::id()));
        std::fs::write(&path, format!("#!/bin/sh\necho '{version}'\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    #[should_panic(expected = "not from this checkout")]
    fn a_binary_of_another_clone_is_refused() {
        assert_built_here(&fake_binary(
            "other-clone",
            "smpp-gateway 0.1.0 (built from /elsewhere/clone/gateway)",
        ));
    }

    #[test]
    #[should_panic(expected = "does not say where it was built from")]
    fn a_binary_that_does_not_say_is_refused() {
        assert_built_here(&fake_binary("silent", "smpp-gateway 0.1.0"));
    }

    #[test]
    fn a_binary_of_this_checkout_passes() {
        let here = repo_root().join("gateway");
        let version = format!("smpp-gateway 0.1.0 (built from {})", here.display());
        assert_built_here(&fake_binary("this-clone", &version));
    }
}
