//! The timestamp at the start of every log line: UTC with milliseconds,
//! computed from the Unix time without a time-zone database.

use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC (times before 1970 work too).
pub(super) fn timestamp(t: SystemTime) -> String {
    let ms: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis())
            .map(|m| -m)
            .unwrap_or(i64::MIN),
    };
    format_unix_millis(ms)
}

/// RFC 3339 in UTC with milliseconds, `YYYY-MM-DDTHH:MM:SS.mmmZ` (the
/// time of events).
pub fn rfc3339(t: SystemTime) -> String {
    let mut s = timestamp(t).replacen(' ', "T", 1);
    s.push('Z');
    s
}

/// `YYYY-MM-DD HH:MM:SS.mmm` for milliseconds since the Unix epoch, UTC.
fn format_unix_millis(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (hh, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (mm, rest) = (rest / 60_000, rest % 60_000);
    let (ss, milli) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{milli:03}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm). No overflow for any i64 millisecond count.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(format_unix_millis(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            format_unix_millis(951_782_400_000),
            "2000-02-29 00:00:00.000"
        );
        assert_eq!(
            format_unix_millis(1_772_366_096_789),
            "2026-03-01 11:54:56.789"
        );
        assert_eq!(
            format_unix_millis(4_107_542_400_000),
            "2100-03-01 00:00:00.000"
        );
        assert_eq!(format_unix_millis(-1), "1969-12-31 23:59:59.999");
        assert_eq!(
            format_unix_millis(253_402_300_799_999),
            "9999-12-31 23:59:59.999"
        );
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123);
        assert_eq!(timestamp(t), "2000-02-29 00:00:00.123");
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        // Extremes must not panic.
        let _ = format_unix_millis(i64::MAX);
        let _ = format_unix_millis(i64::MIN);
        assert_eq!(timestamp(SystemTime::now()).len(), 23);
    }
}
