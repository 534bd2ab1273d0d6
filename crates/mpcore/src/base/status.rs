//! How a child process ended.

use std::fmt;

use nix::sys::signal::Signal;

/// How a child process ended, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code (0 after a normal return or a handled error).
    Code(i32),
    /// A signal ended it.
    Signal(Signal),
}

impl ExitStatus {
    /// Python's `Process.exitcode`: the exit code, or minus the signal number.
    pub fn exitcode(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => -(signal as i32),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}
