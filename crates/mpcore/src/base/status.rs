//! How a child process ended, and the signal that may have ended it, in
//! mpcore's own types (no `nix` type in the public API: a major release
//! of nix is not one of mpcore's).

use std::fmt;

/// A signal, as the kernel numbers it (`SIGKILL` is 9 on Linux). The
/// common ones have names ([`Signal::SIGKILL`], ...); any other number,
/// a real-time signal say, is a `Signal` too.
///
/// ```
/// use mpcore::Signal;
///
/// assert_eq!(Signal::SIGKILL.number(), 9);
/// assert_eq!(Signal::SIGTERM.to_string(), "SIGTERM");
/// assert_eq!(Signal::from_number(40).to_string(), "signal 40");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// Hang-up (1).
    pub const SIGHUP: Signal = Signal(libc::SIGHUP);
    /// Interrupt, Ctrl-C (2).
    pub const SIGINT: Signal = Signal(libc::SIGINT);
    /// Quit, Ctrl-\ (3).
    pub const SIGQUIT: Signal = Signal(libc::SIGQUIT);
    /// Illegal instruction (4).
    pub const SIGILL: Signal = Signal(libc::SIGILL);
    /// Abort, as `std::process::abort` raises it (6).
    pub const SIGABRT: Signal = Signal(libc::SIGABRT);
    /// Bus error: a mapping's file shrank under it, say (7).
    pub const SIGBUS: Signal = Signal(libc::SIGBUS);
    /// Floating-point or integer arithmetic fault (8).
    pub const SIGFPE: Signal = Signal(libc::SIGFPE);
    /// Kill, which cannot be caught (9).
    pub const SIGKILL: Signal = Signal(libc::SIGKILL);
    /// User-defined signal 1 (10).
    pub const SIGUSR1: Signal = Signal(libc::SIGUSR1);
    /// Invalid memory reference (11).
    pub const SIGSEGV: Signal = Signal(libc::SIGSEGV);
    /// User-defined signal 2 (12).
    pub const SIGUSR2: Signal = Signal(libc::SIGUSR2);
    /// Write to a pipe with no reader (13).
    pub const SIGPIPE: Signal = Signal(libc::SIGPIPE);
    /// Alarm clock (14).
    pub const SIGALRM: Signal = Signal(libc::SIGALRM);
    /// Termination, what `terminate` sends (15).
    pub const SIGTERM: Signal = Signal(libc::SIGTERM);
    /// A child stopped or ended (17).
    pub const SIGCHLD: Signal = Signal(libc::SIGCHLD);
    /// Continue if stopped (18).
    pub const SIGCONT: Signal = Signal(libc::SIGCONT);
    /// Stop, which cannot be caught (19).
    pub const SIGSTOP: Signal = Signal(libc::SIGSTOP);
    /// Stop from the terminal, Ctrl-Z (20).
    pub const SIGTSTP: Signal = Signal(libc::SIGTSTP);
    /// CPU time limit exceeded (24).
    pub const SIGXCPU: Signal = Signal(libc::SIGXCPU);
    /// File size limit exceeded (25).
    pub const SIGXFSZ: Signal = Signal(libc::SIGXFSZ);
    /// Bad system call, as a seccomp filter raises it (31).
    pub const SIGSYS: Signal = Signal(libc::SIGSYS);

    /// The signal with this number.
    pub const fn from_number(number: i32) -> Signal {
        Signal(number)
    }

    /// Its number (Python's `-p.exitcode` for a child it ended).
    pub const fn number(self) -> i32 {
        self.0
    }

    /// The name the C library gives it, if it is a standard signal.
    fn name(self) -> Option<&'static str> {
        nix::sys::signal::Signal::try_from(self.0)
            .ok()
            .map(nix::sys::signal::Signal::as_str)
    }
}

impl fmt::Display for Signal {
    /// Its name (`SIGKILL`), or `signal N` for one without.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "signal {}", self.0),
        }
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

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
            ExitStatus::Signal(signal) => -signal.number(),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => match signal.name() {
                Some(name) => write!(f, "signal {name}"),
                None => write!(f, "{signal}"),
            },
        }
    }
}
