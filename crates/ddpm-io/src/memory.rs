//! This process's resident memory, as the benches report it.

/// Peak resident memory of this process (`VmHWM`, Linux) since it started or since the last
/// [`reset_peak_host_bytes`], bytes; `None` where the system does not say.
pub fn peak_host_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Starts a new peak measurement (Linux: `5` into `/proc/self/clear_refs` sets `VmHWM` to the
/// current resident size); elsewhere, or where it is not permitted, the peak stays the process's.
pub fn reset_peak_host_bytes() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
