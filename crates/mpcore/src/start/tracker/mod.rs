//! The tracker of named shared memory segments: one small process per
//! program that removes a [`SharedMemory`](crate::SharedMemory)'s name
//! once the segment's last user, in any program, is gone.
//!
//! Every user of a segment (each process that created or opened it) holds
//! a shared `flock` on its own open of the file for as long as it uses the
//! segment; the kernel drops it when the process closes the file or dies,
//! `SIGKILL` included. The tracker holds an open of its own on each file
//! it was handed and tries for an exclusive lock: once it gets one, nobody
//! uses the segment any more, and it removes the name (if the name still
//! names that file) and closes the file.
//!
//! It is started on the program's first `create` or `open`, as a fresh
//! `exec` of the program reached before `main` by mpcore's constructor
//! (`start/hook.rs`), as the fork server is: it holds no copy of the
//! program's memory and none of its descriptors (it closes every one it
//! inherited but its socket, and puts an unreadable pipe in place of its
//! standard streams). One tracker serves the whole program, whatever the
//! number of segments: a forked child asks it for a connection of its own
//! rather than starting another. It is the program's child (the program
//! reaps it if it dies first), in a session of its own, named
//! `mpcore-tracker`, and ignores the signals that ask a process to stop
//! (`SIGTERM`, `SIGINT`, `SIGHUP`, ...): `killall -TERM`, `pkill` or
//! `systemctl stop` end the program, and the tracker cleans up after it.
//! When the program's end of its socket closes (however the program
//! ended), it goes on until every name it tracks is gone, then exits.
//!
//! How it learns that a file is free: an `inotify` watch on each file
//! reports every last close of an open of it, and a close is how a user
//! lets go (by dropping the segment or by dying). The kernel reports the
//! close an instant before it releases the lock, so a file whose lock is
//! still held is tried again 1, 2, 4, ... ms later, and at least once a
//! second whatever happens (the same schedule serves when `inotify` is
//! not available: its limits are per user).
//!
//! What the program and the tracker say to each other, one packet each on
//! a `SOCK_SEQPACKET` socket:
//!
//! - `R`: the tracker is ready (its first packet, and its only one);
//! - `T` + the segment's name, with the file's descriptor: track this
//!   file. No answer is awaited: once sent, the descriptor waits in the
//!   tracker's socket, and a name is given to a new segment only after
//!   that. The tracker opens the file anew through `/proc/self/fd` (a
//!   descriptor that came over a socket shares the sender's open file,
//!   and with it the sender's lock), then closes what it received;
//! - `C` with a socket's descriptor: a forked child's connection of its
//!   own.
//!
//! Files: `client.rs`, the program's side (start the tracker, hand it a
//! file); `server.rs`, the tracker's loop; `watch.rs`, its files and
//! their schedule; this file, what the two say to each other.

mod client;
pub(crate) mod server;
mod watch;

pub(crate) use client::{hold_across_fork, track};

/// The variable that tells a fresh run of the program that it is the
/// tracker: `"<socket descriptor> <program's pid>"`.
const TRACKER_ENV: &str = "MPCORE_TRACKER";

/// The first byte of each packet.
const READY: u8 = b'R';
const TRACK: u8 = b'T';
const CONNECT: u8 = b'C';

/// The longest name a file in `/dev/shm` can have (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Where POSIX shared memory lives on Linux: `shm_open("/x")` is
/// `/dev/shm/x`.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// Whether `name` is one file's name in [`SHM_DIR`].
pub(crate) fn is_file_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}
