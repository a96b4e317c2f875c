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
    path
}
