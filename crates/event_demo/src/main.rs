//! The wongwonggoods tutorial's program: a `Producer` thread and a `Consumer` process, each
//! saying that it is working once a second until its stop event is set.
//!
//! The Python it mirrors (shortened; the tutorial prints with `print`, under a
//! `logging.basicConfig` whose format is used here):
//!
//! ```python
//! class Producer(threading.Thread):
//!     def __init__(self):
//!         threading.Thread.__init__(self)
//!         self.stop_event = threading.Event()
//!     def stop(self):
//!         self.stop_event.set()
//!     def run(self):
//!         while not self.stop_event.is_set():
//!             print("Producer is working...")
//!             time.sleep(1)
//!
//! class Consumer(multiprocessing.Process):  # the same, with multiprocessing.Event()
//!     ...
//!
//! def main():
//!     tasks = [Producer(), Consumer()]
//!     for t in tasks: t.start()
//!     time.sleep(3600)
//!     for task in tasks: task.stop()
//!     for task in tasks: task.join()
//! ```
//!
//! Run it with
//!
//!     cargo run -p event_demo -- --seconds 3
//!
//! (3 is the default; fractions such as `0.2` work). It logs, in the tutorial's
//! format, `Producer is working...` from the thread and `Consumer is
//! working...` from the child process about once a second, then stops and
//! joins both. Ctrl-C stops it early, the same clean way.

use std::thread::{self, JoinHandle};
use std::time::Duration;

use clap::Parser;
use log::info;
use mpcore::{Event, Process};

/// A Producer thread and a Consumer process, stopped by events.
#[derive(Parser)]
struct Args {
    /// How long to let them work, in seconds (the tutorial waits an hour).
    #[arg(long, default_value = "3", value_parser = parse_seconds)]
    seconds: Duration,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

/// Both classes' `run`: say so once a second until stopped.
fn run(name: &str, stop: &Event) {
    while !stop.is_set() {
        info!("{name} is working...");
        // The tutorial sleeps a whole second; waiting on the event instead
        // wakes as soon as it is set. A timeout is the normal case.
        if let Err(e) = stop.wait_timeout(Duration::from_secs(1)) {
            if !e.is_timeout() {
                log::error!("{name} cannot wait: {e}");
                return;
            }
        }
    }
}

/// Python's `Producer(threading.Thread)`. An mpcore `Event` serves a
/// thread as well as a process, and holds no lock a fork could copy.
struct Producer {
    stop_event: Event,
    thread: JoinHandle<()>,
}

impl Producer {
    fn start() -> mpcore::Result<Producer> {
        let stop_event = Event::new()?;
        let stop = stop_event.clone();
        let thread = thread::spawn(move || run("Producer", &stop));
        Ok(Producer { stop_event, thread })
    }

    fn stop(&self) {
        self.stop_event.set();
    }

    fn join(self) -> Result<(), &'static str> {
        self.thread
            .join()
            .map_err(|_| "the Producer thread panicked")
    }
}

/// Python's `Consumer(multiprocessing.Process)`.
struct Consumer {
    stop_event: Event,
    process: Process<()>,
}

impl Consumer {
    fn start() -> mpcore::Result<Consumer> {
        let stop_event = Event::new()?;
        let stop = stop_event.clone();
        let process = Process::spawn(move || run("Consumer", &stop))?;
        Ok(Consumer {
            stop_event,
            process,
        })
    }

    fn stop(&self) {
        self.stop_event.set();
    }

    fn join(mut self) -> mpcore::Result<()> {
        self.process.join()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    course::logging::init();
    // Ctrl-C (or SIGTERM) sets this event instead of killing us, so an
    // interrupted run stops the same clean way as a finished one.
    let interrupted = Event::new()?;
    interrupted.set_on_interrupt()?;

    // The tutorial's order: the thread first, then the fork. A fork while
    // another thread runs is the hazard the chapter explains; mpcore holds
    // the stdout and stderr locks across it, so the child can log.
    let producer = Producer::start()?;
    let consumer = Consumer::start()?;

    // time.sleep(3600), cut short by Ctrl-C.
    let waited = interrupted.wait_timeout(args.seconds);
    match &waited {
        Ok(()) => info!("interrupted: stopping the Producer and the Consumer"),
        Err(_) => info!("time is up: stopping the Producer and the Consumer"),
    }
    producer.stop();
    consumer.stop();
    producer.join()?;
    consumer.join()?;
    info!("both stopped and joined");
    match waited {
        Err(e) if !e.is_timeout() => Err(e.into()),
        _ => Ok(()),
    }
}
