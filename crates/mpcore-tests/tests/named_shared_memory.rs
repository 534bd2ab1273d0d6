//! `SharedMemory`, a segment with a name in `/dev/shm`: two programs that
//! are not parent and child share it by that name; the name goes away
//! once its last user has, even after a SIGKILL of the creator, and not
//! before; it is owner-only; bad names and sizes get clear errors.
//!
//! The two programs are two runs of the `mpcore-test-helper` binary
//! (`named create` and `named read`), started from the test, each under
//! a deadline.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mpcore::{Error, SharedMemory};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const HELPER: &str = env!("CARGO_BIN_EXE_mpcore-test-helper");
const LIMIT: Duration = Duration::from_secs(30);

/// A name no other test (or run) uses.
fn unique(what: &str) -> String {
    format!("mpcore-test-{what}-{}", std::process::id())
}

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

/// Whether `/dev/shm/<name>` is gone within `limit` (the tracker removes
/// it a moment after the last user lets go).
fn gone_within(name: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while Path::new(&shm_path(name)).exists() {
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Processes whose command line names `name`: the helpers (and a tracker
/// forked from one, which would have the same command line). None may be
/// left once the name is gone. The trackers of today are fresh runs of
/// the helper with no argument; `tests/named_tracker.rs` checks that
/// they end.
fn processes_naming(name: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let state = std::fs::read_to_string(e.path().join("stat")).ok()?;
            cmdline
                .contains(name)
                .then(|| format!("{} {cmdline}({state})", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Whether every process naming `name` has ended within `limit`.
fn no_process_left(name: &str, limit: Duration) -> Result<(), Vec<String>> {
    let start = Instant::now();
    loop {
        let left = processes_naming(name);
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(left);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A new file `/dev/shm/<name>`, mode 0600 as mpcore's segments are (one
/// that lets other users in is refused before anything else is looked
/// at).
fn owner_only_file(name: &str) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(shm_path(name))
        .expect("a file in /dev/shm")
}

/// A helper run with piped streams; it waits for a line on its stdin.
struct Helper {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn start(role: &str, name: &str) -> Helper {
        let mut child = Command::new(HELPER)
            .args(["named", role, name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the helper");
        let stdout: ChildStdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(LIMIT)
            .expect("the helper printed nothing in time")
    }

    /// Lets it go on (a line on stdin), and waits for it to end.
    fn finish(mut self) -> Vec<String> {
        let mut stdin = self.child.stdin.take().expect("piped");
        let _ = stdin.write_all(b"go\n");
        drop(stdin);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "the helper failed: {status:?}");
                break;
            }
            if start.elapsed() > LIMIT {
                let _ = self.child.kill();
                panic!("the helper did not end in time");
            }
            thread::sleep(Duration::from_millis(10));
        }
        // Up to the end of its output (which no tracker holds open).
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(LIMIT) {
            rest.push(line);
        }
        rest
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_programs_share_a_segment_by_name_and_the_name_goes_with_them() {
    let name = unique("share");
    let creator = Helper::start("create", &name);
    assert_eq!(creator.next_line(), format!("created {name}"));
    let reader = Helper::start("read", &name);
    assert_eq!(reader.next_line(), format!("opened {name}"));

    assert_eq!(
        reader.finish(),
        [
            "values [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]".to_owned(),
            "sum 285".to_owned()
        ]
    );
    assert!(
        Path::new(&shm_path(&name)).exists(),
        "the creator still uses it"
    );
    creator.finish();
    assert!(
        gone_within(&name, Duration::from_secs(10)),
        "{} was left behind",
        shm_path(&name)
    );
    no_process_left(&name, Duration::from_secs(10)).expect("a tracker or helper left running");
}

#[test]
fn a_sigkilled_creator_leaves_the_name_to_its_reader_then_nothing() {
    let name = unique("killed");
    let mut creator = Helper::start("create", &name);
    assert_eq!(creator.next_line(), format!("created {name}"));
    let reader = Helper::start("read", &name);
    assert_eq!(reader.next_line(), format!("opened {name}"));

    kill(Pid::from_raw(creator.child.id() as i32), Signal::SIGKILL).expect("kill");
    creator.child.wait().expect("reap the creator");
    // The reader still uses the segment: its name must stay.
    thread::sleep(Duration::from_millis(300));
    assert!(
        Path::new(&shm_path(&name)).exists(),
        "the name went while a live reader still used it"
    );
    assert_eq!(
        reader.finish()[1],
        "sum 285",
        "the reader saw the dead creator's data"
    );
    assert!(
        gone_within(&name, Duration::from_secs(10)),
        "{} was left behind after its creator was killed",
        shm_path(&name)
    );
    no_process_left(&name, Duration::from_secs(10)).expect("a tracker or helper left running");
}

#[test]
fn a_segment_is_owner_only_and_gone_when_dropped() {
    let name = unique("mode");
    let shm = SharedMemory::create(&name, 100).expect("create");
    let mode = std::fs::metadata(shm_path(&name))
        .expect("the name exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert_eq!(shm.size(), 100);
    assert_eq!(shm.name(), name);
    assert!(shm.lock().expect("lock").iter().all(|&b| b == 0));
    shm.close();
    assert!(gone_within(&name, Duration::from_secs(10)), "left behind");
}

#[test]
fn an_existing_name_a_missing_one_and_a_size_of_zero_are_clear_errors() {
    let name = unique("errors");
    let shm = SharedMemory::create(&name, 8).expect("create");
    let exists = SharedMemory::create(&name, 8).expect_err("the name is taken");
    assert!(matches!(exists, Error::NameExists { .. }), "{exists:?}");
    assert_eq!(
        exists.to_string(),
        format!(
            "a shared memory segment named {name:?} exists already: open it with \
             SharedMemory::open, or create yours under another name"
        )
    );

    let missing = SharedMemory::open(&unique("never-made")).expect_err("no such name");
    assert!(matches!(missing, Error::NoSuchName { .. }), "{missing:?}");
    assert!(
        missing
            .to_string()
            .starts_with("no shared memory segment is named "),
        "{missing}"
    );

    let zero = SharedMemory::create(&unique("zero"), 0).expect_err("a size of 0");
    assert_eq!(
        zero.to_string(),
        "cannot make a shared memory segment of 0 bytes: ask for at least one byte"
    );
    assert!(!Path::new(&shm_path(&unique("zero"))).exists());

    let slash = SharedMemory::create("a/b", 8).expect_err("a slash");
    assert!(matches!(slash, Error::BadSegment { .. }), "{slash:?}");
    assert_eq!(
        slash.to_string(),
        "a shared memory segment's name cannot hold a '/' or a NUL, nor be '.' or '..': \
         Python adds the leading '/' itself, and so does mpcore, so leave it out"
    );

    let bad_view = shm.lock().expect("lock").view::<[u8; 3]>().map(<[_]>::len);
    assert!(
        matches!(
            bad_view,
            Err(Error::BadView {
                bytes: 8,
                size: 3,
                ..
            })
        ),
        "{bad_view:?}"
    );
    drop(shm);
    assert!(gone_within(&name, Duration::from_secs(10)), "left behind");
}

#[test]
fn a_segment_whose_last_user_has_gone_cannot_be_joined() {
    // What an opener finds while the tracker removes a segment: the file
    // is there, and somebody holds the exclusive lock on it.
    let name = unique("removed");
    let file = owner_only_file(&name);
    file.set_len(4096).expect("size it");
    let locked = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .expect("take the tracker's lock");
    let e = SharedMemory::open(&name).expect_err("being removed");
    std::fs::remove_file(shm_path(&name)).expect("clean up");
    drop(locked);
    assert!(matches!(e, Error::SegmentRemoved { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "the shared memory segment {name:?} is being removed, because every program that \
             used it has closed it or ended: create a new one"
        )
    );
}

#[test]
fn unlink_removes_the_name_at_once_while_users_go_on() {
    let name = unique("unlink");
    let shm = SharedMemory::create(&name, 8).expect("create");
    let other = SharedMemory::open(&name).expect("open");
    shm.unlink().expect("unlink");
    assert!(!Path::new(&shm_path(&name)).exists());
    assert!(matches!(
        SharedMemory::open(&name),
        Err(Error::NoSuchName { .. })
    ));
    shm.lock().expect("lock")[0] = 7;
    assert_eq!(other.lock().expect("lock")[0], 7, "both still share it");
}

#[test]
fn a_segment_that_is_not_one_of_mpcores_is_refused_after_a_short_wait() {
    // Its creator would have marked it ready within a moment; a segment
    // that never is (another program's, or one whose creator died while
    // making it) is an error, not a hang and not a garbage lock.
    let name = unique("foreign");
    let file = owner_only_file(&name);
    file.set_len(4096).expect("size it");
    let e = testkit::within(Duration::from_secs(30), {
        let name = name.clone();
        move || SharedMemory::open(&name).map(drop)
    })
    .expect_err("not an mpcore segment");
    std::fs::remove_file(shm_path(&name)).expect("clean up");
    assert!(matches!(e, Error::BadSegment { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "cannot open the shared memory segment {name:?}: its creator never finished making it"
        )),
        "{e}"
    );
}

/// A file that looks like an mpcore segment (big enough, its ready word
/// set), with the given mode.
fn made_up_segment(name: &str, mode: u32) {
    use std::io::Write as _;
    let mut file = owner_only_file(name);
    let mut header = [0u8; 64];
    header[48..52].copy_from_slice(&0x6d70_7368u32.to_ne_bytes());
    file.write_all(&header).expect("write the header");
    file.set_len(4096).expect("size it");
    std::fs::set_permissions(shm_path(name), std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn a_segment_that_other_users_can_reach_is_refused() {
    // Open to others: anyone could shorten it under us (a SIGBUS in safe
    // code) or write it behind its lock.
    let open_to_all = unique("mode-0666");
    made_up_segment(&open_to_all, 0o666);
    let e = SharedMemory::open(&open_to_all).map(drop);
    let _ = std::fs::remove_file(shm_path(&open_to_all));
    let e = e.expect_err("a segment of mode 0666");
    assert!(matches!(e, Error::BadSegment { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "refusing to open the shared memory segment {open_to_all:?}: its mode 0666 lets \
             other users in, who could shorten it under us (a SIGBUS) or change it behind its \
             lock; mpcore makes its segments readable and writable by their owner only (0600)"
        )
    );

    // A symbolic link to one of ours.
    let ours = unique("link-target");
    let link = unique("link");
    let shm = SharedMemory::create(&ours, 8).expect("create");
    std::os::unix::fs::symlink(shm_path(&ours), shm_path(&link)).expect("symlink");
    let e = SharedMemory::open(&link).map(drop);
    let _ = std::fs::remove_file(shm_path(&link));
    let e = e.expect_err("a symbolic link");
    assert_eq!(
        e.to_string(),
        format!(
            "refusing to open the shared memory segment {link:?}: it is a symbolic link, not a \
             segment"
        )
    );
    drop(shm);

    // Another user's, owner-only: only root can make one here.
    if nix::unistd::Uid::effective().is_root() {
        let theirs = unique("other-user");
        made_up_segment(&theirs, 0o600);
        nix::unistd::chown(
            shm_path(&theirs).as_str(),
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
        )
        .expect("chown");
        let e = SharedMemory::open(&theirs).map(drop);
        let _ = std::fs::remove_file(shm_path(&theirs));
        assert_eq!(
            e.expect_err("another user's segment").to_string(),
            format!(
                "refusing to open the shared memory segment {theirs:?}: it belongs to user \
                 65534, not to user 0, whom this process runs as; another user could shorten it \
                 under us (a SIGBUS) or change it behind its lock"
            )
        );
    }
}

#[test]
fn a_segments_memory_is_reserved_when_it_is_made() {
    use std::os::unix::fs::MetadataExt;
    let name = unique("reserved");
    let shm = SharedMemory::create(&name, 4 << 20).expect("create");
    let file = std::fs::metadata(shm_path(&name)).expect("the name exists");
    assert_eq!(file.len(), (4 << 20) + 64);
    // Every block, not a sparse file whose pages come (or do not) at
    // their first use.
    assert!(
        file.blocks() * 512 >= file.len(),
        "{} of {} bytes reserved",
        file.blocks() * 512,
        file.len()
    );
    drop(shm);
    assert!(gone_within(&name, Duration::from_secs(10)), "left behind");
}

#[test]
fn a_segment_larger_than_dev_shm_can_hold_is_an_error_at_create_not_a_sigbus() {
    // A /dev/shm of 1 MiB (a container's is 64 MiB) in a mount namespace
    // of the helper's own: 600 KiB fit; another 600 KiB do not, nor do
    // 2 MiB. The helper fills each segment it gets: a segment whose pages
    // the file system cannot give kills it with SIGBUS.
    let run = testkit::run(HELPER, &["named", "small-shm"], LIMIT);
    if let Some(why) = run.stdout.strip_prefix("skipped: ") {
        eprintln!("not checked here: {why}");
        return;
    }
    run.assert_success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert_eq!(lines[0], "A: ok");
    assert!(
        lines[1].starts_with(
            "B: error: cannot make a shared memory segment of 614400 bytes: /dev/shm has "
        ) && lines[1].contains(" bytes free of 1048576 (ENOSPC): ask for less"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(
            "C: error: cannot make a shared memory segment of 2097152 bytes: /dev/shm has "
        ),
        "{}",
        lines[2]
    );
}

#[test]
fn a_size_no_file_can_have_is_refused_at_create_and_leaves_no_name() {
    for size in [1usize << 50, isize::MAX as usize, usize::MAX] {
        let name = unique("huge");
        let e = SharedMemory::create(&name, size).expect_err("far too big");
        assert!(matches!(e, Error::BadSegment { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(&format!(
                "cannot make a shared memory segment of {size} bytes: "
            )),
            "{e}"
        );
        assert!(
            !Path::new(&shm_path(&name)).exists(),
            "{size}: a name was left"
        );
    }
}
