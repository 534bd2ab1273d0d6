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

fn by_server() -> Builder {
    Builder::new().start_method(StartMethod::ForkServer)
}

/// What a fork-server child is: its effective user and group, its
/// supplementary groups, and what became of its write into `dir`.
fn identity(dir: String) -> (u32, u32, Vec<u32>, String) {
    let groups = nix::unistd::getgroups()
        .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    let write = match std::fs::write(std::path::Path::new(&dir).join("written-by-a-child"), b"x") {
        Ok(()) => "written".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            "permission denied".to_owned()
        }
        Err(e) => e.to_string(),
    };
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
        groups,
        write,
    )
}

fn square(x: u64) -> u64 {
    x * x
}

/// What joining `child` (within ten seconds) says, with its pid as `N`.
fn joined<T: std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned>(
    child: &mut mpcore::Process<T>,
) -> String {
    let pid = child.pid().to_string();
    match child.join_timeout(std::time::Duration::from_secs(10)) {
        Ok(value) => format!("Ok({value:?})"),
        Err(e) => format!("Err({})", e.to_string().replace(&pid, "N")),
    }
}

/// `forkserver-drop DIR`, run as root: fork-server children and a
/// fork-server pool started as root, then the privileges dropped to
/// `nobody` for good; a child started after the drop, the children from
/// before it, and the pool.
pub(crate) fn fork_server_privilege_drop(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    use std::time::{Duration, Instant};

    let nobody = nix::unistd::User::from_name("nobody")?.ok_or("no user nobody")?;
    let (before, _, _, write) = by_server().spawn_fn(identity, dir.to_owned())?.join()?;
    println!("before the drop: euid {before}, write into the root-only directory: {write}");
    std::fs::remove_file(std::path::Path::new(dir).join("written-by-a-child"))?;
    let mut killed = by_server().daemon(true).spawn_fn(sleep_for, 120)?;
    let mut terminated = by_server().daemon(true).spawn_fn(sleep_for, 120)?;
    let pool = mpcore::pool::Builder::new()
        .processes(2)
        .start_method(StartMethod::ForkServer)
        .build()?;
    println!("pool before the drop: {:?}", pool.map(square, 0..4)?);
    // Forked workers, which this process will no longer be allowed to
    // signal: one busy with a task of 7 s, two idle. (The busy one first:
    // a fork made later holds copies of this process's descriptors, the
    // pool's end of an idle worker's socket among them.)
    let fork_pool = |size| {
        mpcore::pool::Builder::new()
            .processes(size)
            .start_method(StartMethod::Fork)
            .build()
    };
    let busy = fork_pool(1)?;
    let _running = busy.apply_async(sleep_for, 7)?;
    let busy_worker = busy.pids()[0];
    let idle = fork_pool(2)?;
    std::thread::sleep(Duration::from_millis(200));

    nix::unistd::setgroups(&[])?;
    nix::unistd::setgid(nobody.gid)?;
    nix::unistd::setuid(nobody.uid)?;

    let (euid, egid, groups, write) = by_server().spawn_fn(identity, dir.to_owned())?.join()?;
    println!(
        "after the drop: euid is nobody's: {}, egid is nobody's: {}, groups: {groups:?}, \
         write into the root-only directory: {write}",
        euid == nobody.uid.as_raw(),
        egid == nobody.gid.as_raw(),
    );
    println!(
        "kill: {:?}, join: {}",
        killed.kill().map_err(|e| e.to_string()),
        joined(&mut killed)
    );
    println!(
        "terminate: {:?}, join: {}",
        terminated.terminate().map_err(|e| e.to_string()),
        joined(&mut terminated)
    );
    println!("pool dropped within 20 s: {}", dropped_within(pool));
    println!(
        "idle fork pool dropped within 20 s: {}",
        dropped_within(idle)
    );
    println!(
        "busy fork pool dropped within 20 s: {}",
        dropped_within(busy)
    );
    // Its worker, which the kill did not reach, ends with its task; a
    // thread of mpcore's reaps it then.
    let deadline = Instant::now() + Duration::from_secs(20);
    let proc = format!("/proc/{busy_worker}");
    while std::path::Path::new(&proc).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "busy worker reaped when its task ended: {}",
        !std::path::Path::new(&proc).exists()
    );
    Ok(())
}

/// Whether dropping `value` (on a thread of its own) ends within 20 s.
fn dropped_within<T: Send + 'static>(value: T) -> bool {
    let (dropped, gone) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(value);
        let _ = dropped.send(());
    });
    gone.recv_timeout(std::time::Duration::from_secs(20))
        .is_ok()
}

/// Sleeps a second, then returns `i`.
fn nap(i: u32) -> u32 {
    std::thread::sleep(std::time::Duration::from_secs(1));
    i
}

/// Asks the fork server for `count` children that nap; joins those that
/// started. Prints how many started, the distinct errors of those that
/// did not, and whether every started child returned its own value.
fn start_many(label: &str, count: u32) -> Result<(), Box<dyn std::error::Error>> {
    let mut started = Vec::new();
    let mut errors = std::collections::BTreeSet::new();
    for i in 0..count {
        match by_server().spawn_fn(nap, i) {
            Ok(child) => started.push((i, child)),
            Err(e) => {
                errors.insert(e.to_string());
            }
        }
    }
    let n = started.len();
    let mut all_joined = true;
    for (i, mut child) in started {
        let got = joined(&mut child);
        if got != format!("Ok({i})") {
            println!("{label}: child {i}: {got}");
            all_joined = false;
        }
    }
    println!(
        "{label}: some started: {}, all started joined with their values: {all_joined}",
        n > 0
    );
    println!("{label}: failed: {}", count as usize - n);
    for e in errors {
        println!("{label}: error: {e}");
    }
    Ok(())
}

/// `forkserver-fd-limit`: the fork server started while the program's
/// soft limit on open files was low; then the server's own limits are
/// lowered so that it cannot make room.
pub(crate) fn fork_server_fd_limit() -> Result<(), Box<dyn std::error::Error>> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, 32.min(hard), hard)?;
    let server = by_server().spawn_fn(parent_pid, ())?.join()?;
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
    start_many("started with a low limit", 40)?;

    let low = libc::rlimit {
        rlim_cur: 24,
        rlim_max: 24,
    };
    // SAFETY: `prlimit` reads `low`, a valid rlimit, and writes nothing
    // (the old-limit pointer is null).
    let rc = unsafe {
        libc::prlimit(
            server as i32,
            libc::RLIMIT_NOFILE,
            &low,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    start_many("no room", 40)?;
    let again = by_server().spawn_fn(parent_pid, ())?.join()?;
    println!("the same server still serves: {}", again == server);
    Ok(())
}

/// Writes a file by a relative path; returns the working directory.
fn write_relative(_: ()) -> std::path::PathBuf {
    let _ = std::fs::write("written-by-a-child", b"x");
    std::env::current_dir().unwrap_or_default()
}

/// `forkserver-cwd DIR`: starts the fork server in `DIR/first`, moves to
/// `DIR/second`, and has a fork-server child write a file by a relative
/// path.
pub(crate) fn fork_server_cwd(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(dir).canonicalize()?;
    let (first, second) = (dir.join("first"), dir.join("second"));
    std::fs::create_dir_all(&first)?;
    std::fs::create_dir_all(&second)?;
    std::env::set_current_dir(&first)?;
    by_server().spawn_fn(parent_pid, ())?.join()?;
    std::env::set_current_dir(&second)?;
    let cwd = by_server().spawn_fn(write_relative, ())?.join()?;
    println!("the child's directory is the new one: {}", cwd == second);
    println!(
        "the file is in the new directory: {}",
        second.join("written-by-a-child").exists()
    );
    println!(
        "the file is in the old directory: {}",
        first.join("written-by-a-child").exists()
    );
    Ok(())
}

/// `forkserver-zombie`: kills its fork server, prints `server N`, and
/// waits for a line (or the end) of standard input.
pub(crate) fn fork_server_zombie() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{BufRead, Write};
    let server = by_server().spawn_fn(parent_pid, ())?.join()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    println!("server {server}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}
