//! Named segments and their tracker: many segments, a process limit, a
//! `/dev/shm` too small, a tracker killed, a forked child that makes a
//! segment.

use std::io::{BufRead, Write};

use mpcore::{Process, SharedMemory};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::{Uid, getpid, setuid};

type Res = Result<(), Box<dyn std::error::Error>>;

/// The user the kernel does not exempt from `RLIMIT_NPROC`, as root is.
const NOBODY: u32 = 65534;

pub(crate) fn scenario(args: &[String]) -> Res {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("a missing argument");
    match arg(0)? {
        "many" => many(arg(1)?, arg(2)?.parse()?),
        "open-many" => open_many(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?),
        "nproc" => nproc(arg(1)?, arg(2)?.parse()?),
        "small-shm" => small_shm(),
        "tracker-killed" => tracker_killed(arg(1)?),
        "fork-child" => fork_child(arg(1)?),
        other => Err(format!("unknown named scenario {other:?}").into()),
    }
}

/// Reads one line of standard input (end of file counts).
fn wait_for_line() -> Result<String, std::io::Error> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn say(line: &str) -> Res {
    println!("{line}");
    std::io::stdout().flush()?;
    Ok(())
}

/// Room for a descriptor per segment.
fn raise_open_file_limit() -> Res {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}

/// `many PREFIX N`: touches 256 MiB, creates N segments named PREFIX-i
/// holding i, frees the 256 MiB, prints `created N`; on a line `drop-even`
/// drops the even ones and prints `dropped K`; exits on the next line.
fn many(prefix: &str, n: u64) -> Res {
    raise_open_file_limit()?;
    // Memory that a tracker forked from this process would copy.
    let ballast = vec![1u8; 256 << 20];
    let mut segments = Vec::new();
    for i in 0..n {
        let shm = SharedMemory::create(&format!("{prefix}-{i}"), 8)?;
        shm.lock()?.view_mut::<u64>()?[0] = i;
        segments.push(Some(shm));
    }
    std::hint::black_box(&ballast);
    drop(ballast);
    say(&format!("created {n}"))?;
    if wait_for_line()? == "drop-even" {
        let mut dropped = 0;
        for segment in segments.iter_mut().step_by(2) {
            dropped += usize::from(segment.take().is_some());
        }
        say(&format!("dropped {dropped}"))?;
        wait_for_line()?;
    }
    Ok(())
}

/// `open-many PREFIX N STEP`: opens PREFIX-i for every i below N that is a
/// multiple of STEP, checks that it holds i, prints `opened K`, and exits
/// on a line.
fn open_many(prefix: &str, n: u64, step: usize) -> Res {
    raise_open_file_limit()?;
    let mut segments = Vec::new();
    for i in (0..n).step_by(step) {
        let shm = SharedMemory::open(&format!("{prefix}-{i}"))?;
        let held = shm.lock()?.view::<u64>()?[0];
        if held != i {
            return Err(format!("{prefix}-{i} holds {held}").into());
        }
        segments.push(shm);
    }
    say(&format!("opened {}", segments.len()))?;
    wait_for_line()?;
    Ok(())
}

/// `nproc NAME ROOM`: as user nobody (the kernel exempts root from the
/// limit), with room for ROOM more processes under `RLIMIT_NPROC` (none at
/// all for 0: a limit of 0), creates the segment NAME and prints `result:
/// ok` or `result: error: ...`.
fn nproc(name: &str, room: u64) -> Res {
    if Uid::effective().is_root() {
        setuid(Uid::from_raw(NOBODY))?;
    }
    let limit = match room {
        0 => 0,
        room => tasks_of(Uid::current().as_raw())? + room,
    };
    setrlimit(Resource::RLIMIT_NPROC, limit, limit)?;
    match SharedMemory::create(name, 64) {
        Ok(shm) => {
            say("result: ok")?;
            drop(shm);
        }
        Err(e) => say(&format!("result: error: {e}"))?,
    }
    Ok(())
}

/// How many tasks (threads included: the limit counts them) user `uid`
/// runs, by its real id.
fn tasks_of(uid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        };
        if field("Uid:") == Some(uid.into()) {
            count += field("Threads:").unwrap_or(1);
        }
    }
    Ok(count)
}

/// `small-shm`: in a mount namespace of its own whose `/dev/shm` holds
/// 1 MiB, creates and fills a segment of 600 KiB (`A`), then tries a
/// second one (`B`, more than is left) and one of 2 MiB (`C`, more than
/// all of it), filling each it gets; prints `X: ok` or `X: error: ...`
/// for each. Prints `skipped: ...` if it may not make the namespace.
fn small_shm() -> Res {
    // SAFETY: this process has one thread; `unshare` and `mount` change
    // only its own view of the file systems, and read only the strings.
    let made = unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                c"tmpfs".as_ptr(),
                c"/dev/shm".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=1m".as_ptr().cast(),
            ) == 0
    };
    if !made {
        return say(&format!(
            "skipped: no mount namespace of its own: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut kept = Vec::new();
    for (label, size) in [("A", 600 << 10), ("B", 600 << 10), ("C", 2 << 20)] {
        match SharedMemory::create(&format!("small-{label}"), size) {
            Ok(shm) => {
                // Every page: one that the file system cannot give is a
                // SIGBUS here.
                shm.lock()?.fill(1);
                say(&format!("{label}: ok"))?;
                kept.push(shm);
            }
            Err(e) => say(&format!("{label}: error: {e}"))?,
        }
    }
    Ok(())
}

/// The live children of this process.
fn children() -> Vec<i32> {
    let me = getpid().as_raw().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let mut fields = stat
                    .rsplit_once(')')
                    .map_or("", |(_, r)| r)
                    .split_whitespace();
                let state = fields.next();
                fields.next() == Some(me.as_str()) && state != Some("Z")
            })
        })
        .collect()
}

/// `tracker-killed PREFIX`: creates PREFIX-a, kills its tracker (this
/// process's one child) with SIGKILL, waits until it has died, creates
/// PREFIX-b, and prints `reaped: yes|no` (whether the dead tracker is gone
/// from the process table, not left a zombie) and `trackers: N`; exits on
/// a line.
fn tracker_killed(prefix: &str) -> Res {
    let a = SharedMemory::create(&format!("{prefix}-a"), 8)?;
    let [tracker] = children()[..] else {
        return Err(format!("not one tracker: {:?}", children()).into());
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracker),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    while !std::fs::read_to_string(format!("/proc/{tracker}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    }) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let b = SharedMemory::create(&format!("{prefix}-b"), 8)?;
    let reaped = !std::path::Path::new(&format!("/proc/{tracker}")).exists();
    say(&format!("reaped: {}", if reaped { "yes" } else { "no" }))?;
    say(&format!("trackers: {}", children().len()))?;
    wait_for_line()?;
    drop((a, b));
    Ok(())
}

/// `fork-child PREFIX`: creates PREFIX-parent, then a forked child creates
/// PREFIX-child and returns; prints `trackers: N` (this process's live
/// children once the child is joined: its tracker, and a second one if
/// the child started its own), and exits on a line.
fn fork_child(prefix: &str) -> Res {
    let parent = SharedMemory::create(&format!("{prefix}-parent"), 8)?;
    let name = format!("{prefix}-child");
    let mut child = Process::spawn(move || {
        SharedMemory::create(&name, 8)
            .map(drop)
            .map_err(|e| e.to_string())
    })?;
    child.join()??;
    say(&format!("trackers: {}", children().len()))?;
    wait_for_line()?;
    drop(parent);
    Ok(())
}
