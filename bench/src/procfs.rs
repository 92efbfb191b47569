//! What both benchmark binaries need of a sluice child: finding the binary,
//! starting it, and reading its memory and CPU time from /proc.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};

/// Finds the sluice binary: `explicit` if given, else `sluice` next to this
/// executable (both are built into `target/release/`).
pub fn locate(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) => p,
        None => std::env::current_exe()
            .context("cannot find the path of this executable")?
            .parent()
            .context("this executable has no parent directory")?
            .join(format!("sluice{}", std::env::consts::EXE_SUFFIX)),
    };
    if !path.is_file() {
        bail!(
            "sluice binary not found at {}: build it first with `cargo build --release -p sluice` \
             (or pass --sluice PATH)",
            path.display()
        );
    }
    Ok(path)
}

/// Start `bin serve -c config`, its output in `log`; the child is killed when
/// dropped. Returns the child and its pid.
pub fn spawn_serve(
    bin: &Path,
    config: &Path,
    log: File,
) -> anyhow::Result<(tokio::process::Child, u32)> {
    let log_err = log.try_clone().context("cannot share the sluice log")?;
    let child = tokio::process::Command::new(bin)
        .args(["serve", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id().context("sluice exited at once")?;
    Ok((child, pid))
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// User plus system CPU time of all threads of `pid` (`/proc/<pid>/stat`).
pub fn cpu(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("malformed {path}"))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(
        total as f64 / clock_ticks_per_second() as f64,
    ))
}

/// `getconf CLK_TCK` (the unit of /proc CPU times); 100, Linux's USER_HZ, if unknown.
fn clock_ticks_per_second() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}
