//! `--local N`: start N processes of this very program on loopback, as
//! `-n N -p 0` ... `-n N -p N-1` in N shells would, and wait for them.

use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cli::{Args, Error};

/// How long the others may take to report their own error once one
/// process has failed, before the launcher kills them.
const GRACE: Duration = Duration::from_secs(5);

/// Starts `n` processes, waits for all of them, and prints what each printed.
pub fn launch(n: usize, args: &Args) -> Result<(), Error> {
    let hostfile = Hostfile::on_loopback(n)?;
    println!("== --local {n}: hostfile {} ==", hostfile.path.display());
    for address in &hostfile.addresses {
        println!("{address}");
    }

    let mut processes = Processes(Vec::new());
    for p in 0..n {
        processes.0.push(Process::start(p, n, &hostfile, args)?);
    }
    // Each process has its own deadline; the launcher's is a little later.
    processes.wait(Instant::now() + args.timeout + GRACE);

    let mut failures = Vec::new();
    for (p, process) in processes.0.iter_mut().enumerate() {
        let status = process.describe();
        println!(
            "== process {p} of {n} (pid {}): {status} ==",
            process.child.id()
        );
        print!("{}", process.output());
        if !process.succeeded() {
            failures.push(format!("process {p} (pid {}) {status}", process.child.id()));
        }
    }
    match failures.is_empty() {
        true => Ok(()),
        false => Err(Error::ProcessesFailed(failures.join("; "))),
    }
}

/// A hostfile of `127.0.0.1:PORT` lines, one per process, with ports the
/// OS says are free. It is removed when dropped.
pub struct Hostfile {
    pub path: PathBuf,
    pub addresses: Vec<SocketAddr>,
}

impl Hostfile {
    pub fn on_loopback(n: usize) -> io::Result<Hostfile> {
        // Port 0 asks the kernel for a free port. All n are held at once,
        // so that they differ, and released just before the processes bind
        // them again. Another program could take one in between; then that
        // process fails with "address in use", an error, not a hang.
        let listeners = (0..n)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<io::Result<Vec<_>>>()?;
        let addresses = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let path = std::env::temp_dir().join(format!("cluster_demo-{}.hosts", std::process::id()));
        let lines: String = addresses.iter().map(|a| format!("{a}\n")).collect();
        fs::write(&path, lines)?;
        Ok(Hostfile { path, addresses })
    }
}

impl Drop for Hostfile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// One started process, with a thread that drains its stdout (a full pipe
/// would block it) and its exit status once it has ended.
struct Process {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    status: Option<ExitStatus>,
    /// Why the launcher killed it, if it did.
    killed_by_launcher: Option<String>,
}

impl Process {
    fn start(p: usize, n: usize, hostfile: &Hostfile, args: &Args) -> io::Result<Process> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg(format!("-n{n}"))
            .arg(format!("-p{p}"))
            .arg("-h")
            .arg(&hostfile.path)
            .arg(format!("--timeout={}", args.timeout.as_secs()));
        if let Some(threads) = args.matches.opt_str("w") {
            command.arg(format!("-w{threads}"));
        }
        if let Some(k) = args.kill_process {
            command.arg(format!("--kill-process={k}"));
        }
        // stderr is shared: a process's error reaches the terminal at once.
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let mut pipe = child.stdout.take().expect("stdout is piped");
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Ok(Process {
            child,
            stdout: Some(stdout),
            status: None,
            killed_by_launcher: None,
        })
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && self.killed_by_launcher.is_none()
    }

    fn output(&mut self) -> String {
        self.stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        let ended = match self.status {
            None => return "still running".into(),
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
                    Ok(name) => format!("was killed by signal {name}"),
                    Err(_) => format!("was killed by signal {signal}"),
                },
                (None, None) => format!("ended ({s})"),
            },
        };
        match &self.killed_by_launcher {
            Some(why) => format!("{ended}: the launcher killed it {why}"),
            None => ended,
        }
    }
}

/// The started processes; dropping them kills any still running, so an
/// early `?` in `launch` leaves none behind.
struct Processes(Vec<Process>);

impl Processes {
    /// Waits until every process has ended. Once one fails, the others
    /// get `GRACE` to end on their own (each notices a broken connection
    /// and says so); any still running then, or at `deadline`, are killed.
    fn wait(&mut self, deadline: Instant) {
        let (mut kill_at, mut why) = (deadline, "at the deadline".to_string());
        loop {
            for process in self.0.iter_mut().filter(|p| p.status.is_none()) {
                process.status = process.child.try_wait().ok().flatten();
                let failed = process.status.is_some_and(|s| !s.success());
                if failed && Instant::now() + GRACE < kill_at {
                    kill_at = Instant::now() + GRACE;
                    why = format!("{} s after a peer failed", GRACE.as_secs());
                }
            }
            if self.0.iter().all(|p| p.status.is_some()) {
                return;
            }
            if Instant::now() >= kill_at {
                for process in self.0.iter_mut().filter(|p| p.status.is_none()) {
                    let _ = process.child.kill();
                    process.status = process.child.wait().ok();
                    process.killed_by_launcher = Some(why.clone());
                }
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for process in self.0.iter_mut().filter(|p| p.status.is_none()) {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hostfile_holds_distinct_loopback_addresses_and_is_removed() {
        let hostfile = Hostfile::on_loopback(3).unwrap();
        let text = fs::read_to_string(&hostfile.path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        for (line, address) in lines.iter().zip(&hostfile.addresses) {
            assert!(line.starts_with("127.0.0.1:"), "{line}");
            assert_eq!(line.parse::<SocketAddr>().unwrap(), *address);
            assert!(address.ip().is_loopback());
        }
        let ports: std::collections::BTreeSet<u16> =
            hostfile.addresses.iter().map(SocketAddr::port).collect();
        assert_eq!(ports.len(), 3);
        let path = hostfile.path.clone();
        drop(hostfile);
        assert!(!path.exists());
    }
}
