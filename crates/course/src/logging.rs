//! Log lines in the format of the tutorial's `logging.basicConfig`.
//!
//! The wongwonggoods tutorial configures Python's logging with
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
use std::time::SystemTime;

use time::OffsetDateTime;

/// Installs the logger: level `info` unless `RUST_LOG` says otherwise.
/// Calling it twice is harmless (the second call does nothing).
///
/// ```
/// course::logging::init();
/// log::info!("Producer is working...");
/// // stderr: 2026-11-23 12:52:04,123.123.0:rust_out:4242:INFO:4242:Producer is working...
/// ```
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
///
/// The date comes from the `time` crate in UTC, which is arithmetic on the
/// seconds since the epoch and nothing else. Local time would be the wrong
/// tool here: glibc's `localtime_r` takes its time-zone lock (and may read
/// `/etc/localtime` under it), and a child forked while another thread of
/// the parent is inside it would wait for that lock for ever. `time` only
/// asks the C library for the offset with its `local-offset` feature,
/// which this crate leaves off; `tests/logging.rs` forks a child while a
/// thread holds that very lock, and checks that the child still logs.
fn asctime(now: SystemTime) -> (String, u32) {
    let t = OffsetDateTime::from(now);
    let millis = u32::from(t.millisecond());
    (
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{millis:03}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        millis,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
