//! The command line (timely's flags beside the demo's own) and the errors,
//! each of which reads as a sentence.

use std::fmt;
use std::time::Duration;

use timely::CommunicationConfig;

/// The command line: timely's flags, and the demo's own.
pub struct Args {
    /// Everything parsed, timely's flags included.
    pub matches: getopts::Matches,
    pub usage: String,
    pub help: bool,
    /// `--local N`: launch N processes instead of being one.
    pub local: Option<usize>,
    /// The whole run's deadline, connecting included.
    pub timeout: Duration,
    /// `--kill-process P`: process P kills itself once connected.
    pub kill_process: Option<usize>,
}

impl Args {
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Args, Error> {
        let mut opts = getopts::Options::new();
        // -w -n -p -h -r -z, exactly as timely's own examples take them.
        timely::Config::install_options(&mut opts);
        opts.optopt(
            "",
            "local",
            "start N processes of this program on loopback",
            "N",
        );
        opts.optopt(
            "",
            "timeout",
            "give up after SECS seconds (default 60)",
            "SECS",
        );
        opts.optopt(
            "",
            "kill-process",
            "process IDX sends itself SIGKILL once connected",
            "IDX",
        );
        opts.optflag("", "help", "print this help");
        let usage =
            opts.usage("Usage: cluster_demo [--local N | -n N -p IDX [-h HOSTFILE]] [-w THREADS]");
        let matches = opts.parse(args).map_err(|e| Error::Usage(e.to_string()))?;
        let number = |name: &str| -> Result<Option<u64>, Error> {
            matches
                .opt_get::<u64>(name)
                .map_err(|e| Error::Usage(format!("--{name}: {e}")))
        };
        let local = number("local")?.map(|n| n as usize);
        let timeout = Duration::from_secs(number("timeout")?.unwrap_or(60));
        let kill_process = number("kill-process")?.map(|p| p as usize);
        if local == Some(0) {
            return Err(Error::Usage("--local needs at least 1 process".into()));
        }
        if local.is_some() && ["n", "p", "h"].iter().any(|o| matches.opt_present(o)) {
            return Err(Error::Usage("--local chooses -n, -p and -h itself".into()));
        }
        Ok(Args {
            help: matches.opt_present("help"),
            matches,
            usage,
            local,
            timeout,
            kill_process,
        })
    }

    /// Timely's configuration from its own flags. Without a hostfile timely
    /// would use `localhost:2101`, ...; we spell out IPv4 loopback, so that a
    /// run on one machine never listens on any other address.
    pub fn timely_config(&self) -> Result<timely::Config, Error> {
        let mut config = timely::Config::from_matches(&self.matches).map_err(Error::Usage)?;
        if let CommunicationConfig::Cluster { addresses, .. } = &mut config.communication {
            if !self.matches.opt_present("h") {
                for (i, address) in addresses.iter_mut().enumerate() {
                    *address = format!("127.0.0.1:{}", 2101 + i);
                }
            }
        }
        Ok(config)
    }
}

/// Everything that can go wrong, each as a sentence.
#[derive(thiserror::Error)]
pub enum Error {
    #[error("{0} (try --help)")]
    Usage(String),
    #[error("process {process}: timely could not start: {message}")]
    Timely { process: usize, message: String },
    #[error(
        "process {process} lost its connection to process {peer} ({message}): a failed peer fails the job"
    )]
    PeerLost {
        process: usize,
        peer: String,
        message: String,
    },
    #[error("process {process}: thread '{thread}' panicked: {message}")]
    Panicked {
        process: usize,
        thread: String,
        message: String,
    },
    #[error("process {process}: no result after {secs} s: {why}")]
    Timeout {
        process: usize,
        secs: u64,
        why: &'static str,
    },
    #[error("could not start: {0}")]
    Io(#[from] std::io::Error),
    #[error("--local: {0}")]
    ProcessesFailed(String),
}

// `main` prints an `Err` with `Debug`: make that the sentence, not a struct.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
