//! The fork server killed under its children, and a program that ignores
//! `SIGCHLD`, under `StartMethod::ForkServer`.

use mpcore::StartMethod;
use mpcore::process::Builder;

use crate::sleep_for;

/// The pid of this process's parent: for a fork-server child, the server.
fn parent_pid(_: ()) -> u32 {
    std::os::unix::process::parent_id()
}

pub(crate) fn fork_server_killed() -> Result<(), Box<dyn std::error::Error>> {
    let by_server = || Builder::new().start_method(StartMethod::ForkServer);
    let server = by_server().spawn_fn(parent_pid, ())?.join()?;
    let mut sleeper = by_server().spawn_fn(sleep_for, 120)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    match sleeper.join() {
        Ok(()) => println!("sleeper: returned"),
        Err(e) => println!(
            "sleeper: {}",
            e.to_string().replace(&sleeper.pid().to_string(), "N")
        ),
    }
    println!("sleeper alive: {}", sleeper.is_alive());
    let new_server = by_server().spawn_fn(parent_pid, ())?.join()?;
    println!("new server: {}", new_server != server);
    println!(
        "new server is ours: {}",
        std::fs::read_to_string(format!("/proc/{new_server}/stat"))?
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
            == Some(std::process::id())
    );
    println!(
        "old server reaped: {}",
        !std::path::Path::new(&format!("/proc/{server}")).exists()
    );
    Ok(())
}

fn exit_with(code: i32) -> u8 {
    std::process::exit(code)
}

pub(crate) fn fork_server_sigchld_ignored() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no
    // handler; nothing else in this helper handles SIGCHLD.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }?;
    let by_server = || Builder::new().start_method(StartMethod::ForkServer);
    // The server reaps its children itself, whatever this program does
    // with SIGCHLD: every status arrives.
    let mut exits = by_server().spawn_fn(exit_with, 3)?;
    let joined = exits
        .join()
        .map_err(|e| e.to_string().replace(&exits.pid().to_string(), "N"));
    println!("join: {joined:?} exitcode {:?}", exits.exitcode());
    let mut returns = by_server().spawn_fn(exit_with, 5)?;
    let _ = returns.join();
    println!("exitcode {:?}", returns.exitcode());
    let mut killed = by_server().spawn_fn(sleep_for, 120)?;
    killed.kill()?;
    let _ = killed.join();
    println!("killed: exitcode {:?}", killed.exitcode());
    Ok(())
}
