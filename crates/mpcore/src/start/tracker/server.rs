//! The tracker's own loop: a single-threaded process that takes files
//! from its program, and removes each one's name once nobody uses it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};
use nix::unistd::{Pid, getppid};

use super::super::request::take_request;
use super::watch::Files;
use super::{CONNECT, READY, TRACK, TRACKER_ENV, is_file_name};
use crate::base::catch;
use crate::os::{fds, poll};
use crate::start::child::{UNCAUGHT_PANIC_CODE, exit_now};

/// The signals whose default action ends a process and that only ask it
/// to (a terminal's Ctrl-C, `kill`, `killall`, `systemctl stop`, a
/// hang-up, a timer or a user signal meant for the program): the tracker
/// ignores them all, so that it outlives the program it cleans up after.
/// The signals of a fault (`SIGSEGV`, `SIGBUS`, ...) keep their action,
/// and `SIGKILL` cannot be ignored.
const IGNORED: [libc::c_int; 13] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGIO,
    libc::SIGPROF,
    libc::SIGVTALRM,
    libc::SIGPWR,
    libc::SIGSTKFLT,
];

/// How long to wait before looking again after the poll itself failed
/// (out of kernel memory, say).
const POLL_FAILED: Duration = Duration::from_millis(10);

/// Called by mpcore's constructor before `main`: if this run of the
/// program is the tracker, tracks, and exits without returning.
pub(crate) fn serve_if_asked() {
    // The same checks as for a spawned child or the fork server: not under
    // secure execution, and only for a socket our parent made for us.
    let Some((socket, program)) = take_request(TRACKER_ENV) else {
        return;
    };
    let code = catch(|| serve(socket, program)).unwrap_or(UNCAUGHT_PANIC_CODE);
    exit_now(code)
}

/// The tracker's life; returns the exit code.
fn serve(socket: OwnedFd, program: Pid) -> i32 {
    if getppid() != program {
        // The program is gone already, and sent nothing: it waits for
        // `READY` before it does.
        return 0;
    }
    let Some(socket) = detach(socket) else {
        return 1;
    };
    if reply(socket.as_fd(), &[READY]).is_err() {
        return 0;
    }
    let mut connections = vec![socket];
    let mut files = Files::new();
    let mut buf = [0u8; 1 + super::NAME_MAX + 1];
    // Until the program, and every child of it that connected, has closed
    // its end, and every name is gone.
    while !(connections.is_empty() && files.is_empty()) {
        let watch = files.watch_fd();
        let mut waited: Vec<BorrowedFd<'_>> = connections.iter().map(|c| c.as_fd()).collect();
        waited.extend(watch);
        let Ok(ready) = poll::readable_any(&waited, files.next_due()) else {
            drop(waited);
            std::thread::sleep(POLL_FAILED);
            continue;
        };
        drop(waited);
        if watch.is_some() && ready[connections.len()] {
            files.read_events();
        }
        // From the last, so that a connection removed leaves the indices
        // of those still to do as they were.
        for i in (0..connections.len()).rev() {
            if !ready[i] {
                continue;
            }
            match fds::recv_with_fds::<1>(connections[i].as_fd(), &mut buf) {
                Ok((0, received)) if received.is_empty() => closed(&mut connections, i, &mut files),
                Ok((len, received)) => {
                    if let Some(new) = request(&buf[..len], received, &mut files) {
                        connections.push(new);
                    }
                }
                Err(_) => closed(&mut connections, i, &mut files),
            }
        }
        files.check_due();
    }
    0
}

/// Connection `i` has closed: a process of the program has ended, or its
/// copy of the connection is gone. Either way some users may have let go
/// just now: look at every file.
fn closed(connections: &mut Vec<OwnedFd>, i: usize, files: &mut Files) {
    connections.swap_remove(i);
    files.all_due_now();
}

/// Serves one request; returns a new connection to listen on, if the
/// request was one.
fn request(packet: &[u8], mut received: Vec<OwnedFd>, files: &mut Files) -> Option<OwnedFd> {
    match packet.first() {
        Some(&TRACK) => {
            let name = &packet[1..];
            // No descriptor: the kernel drops what it cannot install (this
            // process had no free descriptor); nothing can be done for it.
            if let (Some(file), true) = (received.pop(), is_file_name(name)) {
                files.take(file, name);
            }
            None
        }
        Some(&CONNECT) if received.len() == 1 && fds::is_socket(received[0].as_raw_fd()) => {
            received.pop()
        }
        // Not a request of mpcore's: nothing else writes here.
        _ => None,
    }
}

/// Sends one packet without waiting (the program waits for it, so its
/// buffer has room).
fn reply(socket: BorrowedFd<'_>, packet: &[u8]) -> nix::Result<()> {
    loop {
        match send(
            socket.as_raw_fd(),
            packet,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// Leaves the program behind: a session of its own, the signals that
/// only ask a process to stop ignored, a name of its own, the root
/// directory as its working directory, and no descriptor but `socket`
/// (its standard streams become the read end of a pipe that nobody
/// writes to: nothing can print into a file of the program's). Returns
/// the socket, moved above the standard streams if need be.
fn detach(socket: OwnedFd) -> Option<OwnedFd> {
    // SAFETY: this process has one thread (it runs before `main`); these
    // calls change its session, its signal dispositions (to "ignore": no
    // handler of ours), its name and its directory, and touch no memory
    // of ours but the strings they read.
    unsafe {
        libc::setsid();
        for signal in IGNORED {
            libc::signal(signal, libc::SIG_IGN);
        }
        for signal in libc::SIGRTMIN()..=libc::SIGRTMAX() {
            libc::signal(signal, libc::SIG_IGN);
        }
        libc::prctl(libc::PR_SET_NAME, c"mpcore-tracker".as_ptr(), 0, 0, 0);
        libc::chdir(c"/".as_ptr());
    }
    let socket = if socket.as_raw_fd() <= 2 {
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor of an open one.
        let moved = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if moved < 0 {
            return None;
        }
        // SAFETY: `fcntl` has just made this descriptor for us.
        unsafe { OwnedFd::from_raw_fd(moved) }
    } else {
        socket
    };
    let keep = socket.as_raw_fd() as libc::c_uint;
    close_range(0, keep - 1);
    close_range(keep + 1, libc::c_uint::MAX);
    let mut pipe = [0; 2];
    // SAFETY: `pipe` is ours and holds two ints. With 0, 1 and 2 closed
    // just above, the pipe is 0 and 1; 1 and 2 then become its read end
    // too (the write end closes as 1 is replaced). Descriptors that only
    // this process holds, and no Rust object owns.
    unsafe {
        if libc::pipe(pipe.as_mut_ptr()) == 0 && pipe == [0, 1] {
            libc::dup2(0, 1);
            libc::dup2(0, 2);
        }
    }
    // Room for a descriptor per file it tracks: as many as the program
    // may have open, and more.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    Some(socket)
}

/// Closes descriptors `first..=last` (none of them owned by a Rust
/// object: this runs before `main`, on what the exec left open).
fn close_range(first: libc::c_uint, last: libc::c_uint) {
    if first > last {
        return;
    }
    // SAFETY: closing descriptors that nothing in this process uses (see
    // above); `close_range` touches no memory.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if rc != 0 {
        // A kernel before 5.9: one by one, up to the descriptor limit.
        // SAFETY: `sysconf` reads a limit.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 1 << 20) as libc::c_uint;
        for fd in first..=last.min(max) {
            // SAFETY: as above.
            unsafe { libc::close(fd as libc::c_int) };
        }
    }
}
