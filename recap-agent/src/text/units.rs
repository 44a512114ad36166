//! Durations and sizes as users type them: `500ms`, `30s`, `5m`, `1h30m` (humantime); `100MiB`,
//! `10MB`, `4096` (bytesize). Anything that is not a finite, sensible amount is refused with a
//! message, never a panic.

use std::time::Duration;

/// Longer than any window could sensibly be; keeps `now + duration` far from overflowing.
const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; use e.g. 30s, 5m or 1h".into());
    }
    if s.starts_with('-') {
        return Err(format!("duration `{s}` is negative; use e.g. 30s"));
    }
    // A bare whole number means seconds.
    let parsed = match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s),
    };
    let d = parsed
        .map_err(|e| format!("cannot read duration `{s}` ({e}); use e.g. 500ms, 30s, 5m, 1h30m"))?;
    if d > LONGEST {
        return Err(format!(
            "duration `{s}` is longer than a year; use e.g. 30s, 5m or 1h"
        ));
    }
    Ok(d)
}

/// The largest size a file limit can be given to the kernel and to Docker (an i64).
const LARGEST_SIZE: u64 = i64::MAX as u64;

/// Bytes: a number with an optional unit (B, KB/MB/GB = 1000s, KiB/MiB/GiB = 1024s).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let size: bytesize::ByteSize = s
        .parse()
        .map_err(|e| format!("cannot read size `{s}` ({e}); use e.g. 100MiB, 10MB or 4096"))?;
    if size.as_u64() > LARGEST_SIZE {
        return Err(format!("size `{s}` is too large (at most 8EiB)"));
    }
    Ok(size.as_u64())
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown time unit"),
            "{:?}",
            parse_duration("5x")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        for nonsense in [
            "inf",
            "NaN",
            "1e99",
            "99999999999999999999s",
            "1e3",
            "100000000h",
        ] {
            assert!(parse_duration(nonsense).is_err(), "{nonsense}");
        }
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("9223372036854775808").is_err());
        assert!(parse_size("100000000000000000000").is_err());
    }

    #[test]
    fn formats_round_numbers() {
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
