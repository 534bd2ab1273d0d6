//! Log lines in the format of the tutorial's `logging.basicConfig`.
//!
//! Seed 000 configures Python's logging with
//! `%(asctime)s.%(msecs)s:%(name)s:%(thread)d:%(levelname)s:%(process)d:%(message)s`.
//! [`init`] sets up `log` + `env_logger` to print the same fields in the
//! same order, so a reader can lay a Rust line beside a Python one:
//!
//! ```text
//! 2026-11-23 12:52:04,123.123.0:event_demo:4242:INFO:4242:Producer is working...
//! ```
//!
//! Two fields differ on purpose. `asctime` is UTC (Python uses local time):
//! reading the time zone takes a lock inside glibc, and a lock is what a
//! `fork` must not copy while another thread holds it. `thread` is the
//! kernel's thread id (`gettid`), the number `top -H` and `/proc` show;
//! Python prints `pthread_self()`, an address. `name` is the `log` target,
//! the module path, where Python prints the logger's name (`root`).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Installs the logger: level `info` unless `RUST_LOG` says otherwise.
/// Calling it twice is harmless (the second call does nothing).
pub fn init() {
    let _ = env_logger::Builder::new()
        .parse_filters(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
        .format(|buf, record| {
            let (asctime, msecs) = asctime(SystemTime::now());
            writeln!(
                buf,
                "{asctime}.{msecs}.0:{}:{}:{}:{}:{}",
                record.target(),
                thread_id(),
                record.level(),
                std::process::id(),
                record.args()
            )
        })
        .try_init();
}

/// The kernel's id of the calling thread.
pub fn thread_id() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// Python's default `asctime` (`2026-11-23 12:52:04,123`, here in UTC) and
/// the milliseconds on their own, as `%(msecs)` prints them.
fn asctime(now: SystemTime) -> (String, u32) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    (
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02},{millis:03}"),
        millis,
    )
}

/// Days since 1970-01-01 to a (year, month, day) date in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn asctime_matches_known_dates() {
        let at =
            |secs, millis| UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
        assert_eq!(asctime(at(0, 0)).0, "1970-01-01 00:00:00,000");
        // 2000-02-29 is a leap day; 951_782_400 is its midnight.
        assert_eq!(
            asctime(at(951_782_400 + 3661, 7)),
            ("2000-02-29 01:01:01,007".to_owned(), 7)
        );
        assert_eq!(asctime(at(1_795_000_000, 999)).0, "2026-11-18 11:06:40,999");
    }
}
