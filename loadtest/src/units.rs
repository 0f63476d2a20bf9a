//! Parsing the command line's quantities: bitrates ("1500k", "1.5M") and durations
//! ("30s", "2m", "500ms").

use std::time::Duration;

/// A bitrate in bits per second: plain bits/s (`800000`), or with a decimal `k` or `M`
/// suffix (`1500k`, `1.5M`; `kbps`/`Mbps` accepted too).
pub fn parse_bitrate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let lower = lower
        .strip_suffix("bps")
        .or_else(|| lower.strip_suffix("bit/s"))
        .unwrap_or(&lower);
    let (number, scale) = if let Some(n) = lower.strip_suffix('k') {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix('g') {
        (n, 1e9)
    } else {
        (lower, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{t}`: expected a bitrate such as 1500k, 1.5M or 800000"))?;
    let bps = value * scale;
    if !bps.is_finite() || bps < 1000.0 {
        return Err(format!("`{t}`: a bitrate of at least 1k is needed"));
    }
    if bps > 1e9 {
        return Err(format!(
            "`{t}`: more than 1G per publisher is not a meeting"
        ));
    }
    Ok(bps.round() as u64)
}

/// A duration: `30s`, `2m`, `1h`, `500ms`, or plain seconds (`30`, `2.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{t}`: expected a duration such as 30s, 2m or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("`{t}`: unknown unit `{other}` (ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 7.0 * 86_400.0 {
        return Err(format!("`{t}`: must be more than 0 and at most a week"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates() {
        assert_eq!(parse_bitrate("1500k"), Ok(1_500_000));
        assert_eq!(parse_bitrate("1.5M"), Ok(1_500_000));
        assert_eq!(parse_bitrate("1.5m"), Ok(1_500_000));
        assert_eq!(parse_bitrate("800000"), Ok(800_000));
        assert_eq!(parse_bitrate("300kbps"), Ok(300_000));
        assert_eq!(parse_bitrate(" 2Mbps "), Ok(2_000_000));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("0").is_err());
        assert!(parse_bitrate("-1M").is_err());
        assert!(parse_bitrate("5G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }
}
