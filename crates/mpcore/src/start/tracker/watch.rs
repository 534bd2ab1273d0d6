//! The tracker's files: for each, its own open of the segment file, the
//! name to remove, its `inotify` watch, and when to try its lock next.

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, fstat, lstat};

use super::SHM_DIR;

/// The first wait after a try that found the file still in use; each
/// next one is twice as long, up to [`AT_LEAST_EVERY`].
const FIRST_WAIT: Duration = Duration::from_millis(1);

/// How long a file is left alone at most: the longest a name outlives its
/// last user when no close was reported.
const AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// What the kernel reports when a file's open is closed for the last
/// time: an open for writing, or not.
const CLOSED: u32 = libc::IN_CLOSE_WRITE | libc::IN_CLOSE_NOWRITE;

/// A file, as the kernel names it: device and inode.
type Key = (u64, u64);

/// One file the tracker holds.
struct Tracked {
    /// The tracker's own open of it (read-only, no lock until the try
    /// that succeeds).
    file: OwnedFd,
    /// `/dev/shm/<name>`: what to remove once nobody uses the file, if it
    /// still names this file.
    path: CString,
    watch: Option<libc::c_int>,
    due: Instant,
    wait: Duration,
}

/// Every file the tracker holds, and when to try each one's lock.
pub(super) struct Files {
    /// Descriptors the program sent and the names they go by, not yet
    /// opened anew: the tracker answers first, and opens them after.
    arrived: Vec<(OwnedFd, CString)>,
    /// When to try again to open those anew, after a try failed (no free
    /// descriptor, say); `None`: at once.
    arrived_retry: Option<Instant>,
    files: HashMap<Key, Tracked>,
    /// (when, which): the next try of each file, soonest first.
    schedule: BTreeSet<(Instant, Key)>,
    /// `inotify`, if this user may have one more: the files' last closes.
    inotify: Option<OwnedFd>,
    watches: HashMap<libc::c_int, Key>,
}

impl Files {
    pub(super) fn new() -> Files {
        // SAFETY: `inotify_init1` makes a new descriptor, touching no
        // memory of ours.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        Files {
            arrived: Vec::new(),
            arrived_retry: None,
            files: HashMap::new(),
            schedule: BTreeSet::new(),
            // SAFETY: just made for us (when not -1).
            inotify: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
            watches: HashMap::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.arrived.is_empty()
    }

    /// The descriptor that becomes readable when a file is closed.
    pub(super) fn watch_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(OwnedFd::as_fd)
    }

    /// When the next try is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let arrived = if self.arrived.is_empty() {
            None
        } else {
            Some(self.arrived_retry.unwrap_or_else(Instant::now))
        };
        let scheduled = self.schedule.first().map(|&(due, _)| due);
        arrived.into_iter().chain(scheduled).min()
    }

    /// Takes `received`, a descriptor of the program's segment file named
    /// `name` in `/dev/shm`. The tracker holds the file from now on; it is
    /// opened anew a moment later ([`Files::check_due`]), after any other
    /// request that waits.
    pub(super) fn take(&mut self, received: OwnedFd, name: &[u8]) {
        let mut path = Vec::with_capacity(SHM_DIR.len() + 1 + name.len());
        path.extend_from_slice(SHM_DIR.as_bytes());
        path.push(b'/');
        path.extend_from_slice(name);
        // (`is_file_name` checked: no NUL.)
        if let Ok(path) = CString::new(path) {
            self.arrived.push((received, path));
        }
    }

    /// Opens anew each file that arrived: the received descriptor shares
    /// the program's open file, and with it the program's lock, so it is
    /// closed as soon as the tracker has an open of its own. One that
    /// cannot be opened now stays, and is tried again a little later.
    fn adopt_arrived(&mut self, now: Instant) {
        if self.arrived_retry.is_some_and(|retry| retry > now) {
            return;
        }
        self.arrived_retry = None;
        for (received, path) in std::mem::take(&mut self.arrived) {
            if let Err(received) = self.adopt(received, path.clone(), now) {
                self.arrived.push((received, path));
                self.arrived_retry = Some(now + AT_LEAST_EVERY / 100);
            }
        }
    }

    /// Opens `received` anew and tracks it under `path`; gives it back if
    /// it cannot be opened now.
    fn adopt(&mut self, received: OwnedFd, path: CString, now: Instant) -> Result<(), OwnedFd> {
        let opened = open(
            format!("/proc/self/fd/{}", received.as_raw_fd()).as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .and_then(|file| fstat(&file).map(|stat| (file, stat)));
        let Ok((file, stat)) = opened else {
            return Err(received);
        };
        let key = (stat.st_dev, stat.st_ino);
        if self.files.contains_key(&key) {
            // The same segment, opened again in the program.
            return Ok(());
        }
        let watch = self.watch(&file);
        if let Some(wd) = watch {
            self.watches.insert(wd, key);
        }
        // The program's descriptor closes here, once the watch is on: if
        // that was the last reference to the program's open (it has
        // dropped the segment already), the watch reports it.
        drop(received);
        // Its user holds it, most likely: first look again a moment later.
        let due = now + FIRST_WAIT;
        self.files.insert(
            key,
            Tracked {
                file,
                path,
                watch,
                due,
                wait: FIRST_WAIT,
            },
        );
        self.schedule.insert((due, key));
        Ok(())
    }

    /// An `inotify` watch for the last closes of `file`'s opens; `None`
    /// when this user has no more watches to give (the file is then only
    /// looked at on schedule).
    fn watch(&self, file: &OwnedFd) -> Option<libc::c_int> {
        let inotify = self.inotify.as_ref()?;
        let path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        // SAFETY: both descriptors are open; `path` is a NUL-terminated
        // string that lives across the call.
        let wd = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), CLOSED) };
        (wd >= 0).then_some(wd)
    }

    /// Reads what `inotify` reports: each file that was closed is tried
    /// now.
    pub(super) fn read_events(&mut self) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        let mut closed = Vec::new();
        let mut overflow = false;
        let mut buf = [0u8; 4096];
        // One read: if more is waiting, the next poll says so at once.
        // SAFETY: reads into `buf`, which is ours and that long.
        let n = unsafe {
            libc::read(
                inotify.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
            )
        };
        let mut at = 0;
        let header = size_of::<libc::inotify_event>();
        while at + header <= n.max(0) as usize {
            let word = |i: usize| {
                let b = &buf[at + 4 * i..at + 4 * i + 4];
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
            };
            // struct inotify_event { int wd; uint32_t mask, cookie, len; char name[]; }
            let (wd, mask, len) = (word(0) as libc::c_int, word(1), word(3) as usize);
            if mask & libc::IN_Q_OVERFLOW != 0 {
                overflow = true;
            } else if mask & libc::IN_IGNORED != 0 {
                // The watch is gone (the kernel's own doing: the file has
                // lost its last name).
                if let Some(key) = self.watches.remove(&wd) {
                    if let Some(t) = self.files.get_mut(&key) {
                        t.watch = None;
                    }
                }
            } else if let Some(&key) = self.watches.get(&wd) {
                closed.push(key);
            }
            at += header + len;
        }
        if overflow {
            self.all_due_now();
        }
        for key in closed {
            self.due_now(key);
        }
    }

    /// Tries every file now: a process of the program has ended, and its
    /// locks with it.
    pub(super) fn all_due_now(&mut self) {
        let keys: Vec<Key> = self.files.keys().copied().collect();
        for key in keys {
            self.due_now(key);
        }
    }

    /// Tries `key` now, and soon again if it is still in use.
    fn due_now(&mut self, key: Key) {
        let now = Instant::now();
        if let Some(t) = self.files.get_mut(&key) {
            self.schedule.remove(&(t.due, key));
            t.due = now;
            t.wait = Duration::ZERO;
            self.schedule.insert((now, key));
        }
    }

    /// Tries the lock of every file whose turn has come: a file that
    /// nobody uses any more loses its name and leaves; the others are
    /// tried again later, each time after twice as long.
    pub(super) fn check_due(&mut self) {
        let now = Instant::now();
        if !self.arrived.is_empty() {
            self.adopt_arrived(now);
        }
        while let Some(&(due, key)) = self.schedule.first() {
            if due > now {
                break;
            }
            self.schedule.pop_first();
            let Some(t) = self.files.get_mut(&key) else {
                continue;
            };
            if try_exclusive(&t.file) {
                self.remove(key);
            } else {
                t.wait = (t.wait * 2).clamp(FIRST_WAIT, AT_LEAST_EVERY);
                t.due = now + t.wait;
                self.schedule.insert((t.due, key));
            }
        }
    }

    /// Nobody uses `key` any more, and we hold its exclusive lock:
    /// removes its name if the name still names it, then closes it.
    fn remove(&mut self, key: Key) {
        let Some(t) = self.files.remove(&key) else {
            return;
        };
        // The name may have been removed already (an `unlink`, or another
        // program's tracker), or given to a newer segment since: compare
        // the file it names (not following a symbolic link) with ours.
        let mut watch_gone = false;
        if let Ok(named) = lstat(t.path.as_c_str()) {
            if (named.st_dev, named.st_ino) == key {
                // A file that loses its last name loses its watches with
                // it (the kernel removes them).
                watch_gone = nix::unistd::unlink(t.path.as_c_str()).is_ok() && named.st_nlink == 1;
            }
        }
        if let Some(wd) = t.watch {
            self.watches.remove(&wd);
            match &self.inotify {
                Some(inotify) if !watch_gone => {
                    // SAFETY: removes a watch of our own inotify descriptor.
                    unsafe { libc::inotify_rm_watch(inotify.as_raw_fd(), wd) };
                }
                _ => {}
            }
        }
        // Dropping `t` closes the file, and with it the exclusive lock.
    }
}

/// Whether this open of the file got the exclusive lock: nobody holds a
/// shared one any more.
fn try_exclusive(file: &OwnedFd) -> bool {
    loop {
        // SAFETY: `flock` on a descriptor we own touches no memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        match Errno::result(rc) {
            Ok(_) => return true,
            Err(Errno::EINTR) => continue,
            // EWOULDBLOCK: still in use. Anything else (ENOLCK): try later.
            Err(_) => return false,
        }
    }
}
