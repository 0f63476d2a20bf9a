//! The server's CPU time and memory, read from Linux's /proc while the run goes on
//! (`--server-pid`): the generator and the server share the host.

use std::time::Duration;

/// One reading of the server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time of all its threads so far.
    pub cpu: Duration,
    /// Resident memory now (VmRSS) and its peak since the process started (VmHWM), KiB.
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Reads /proc/`pid`/stat and /proc/`pid`/status.
pub fn sample(pid: u32, ticks_per_second: u64) -> std::io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse(&stat, &status, ticks_per_second).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat or status"),
        )
    })
}

fn parse(stat: &str, status: &str, ticks_per_second: u64) -> Option<ProcSample> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses:
    // the fields that follow start after the last ')'. utime and stime are fields 14
    // and 15, in clock ticks.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    let cpu = Duration::from_secs(ticks / ticks_per_second)
        + Duration::from_nanos((ticks % ticks_per_second) * 1_000_000_000 / ticks_per_second);
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(ProcSample {
        cpu,
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
    })
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100, the kernel's
/// USER_HZ on every mainstream architecture, when getconf is missing). Asked once: the
/// lints forbid the unsafe `sysconf` call.
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        // A command name with a space and a parenthesis, as the kernel allows.
        let stat = "4242 (swi) tchy) S 1 4242 4242 0 -1 4194560 3810 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1073741824 5000 18446744073709551615";
        let status = "Name:\tswitchyard\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n";
        let s = parse(stat, status, 100).unwrap();
        assert_eq!(s.cpu, Duration::from_millis(3250));
        assert_eq!((s.rss_kib, s.hwm_kib), (102_400, 204_800));
        assert_eq!(parse("garbage", status, 100), None);
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id(), ticks_per_second()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib, "{s:?}");
    }
}
