//! What runs before `main`: mpcore's hook, steered by hostile values of
//! its variables; and what a program that cannot run afresh is told.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mpcore::{StartMethod, process};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{ForkResult, fork, getpid};

/// A function that no task names: if the hook ever calls it, it says so
/// and exits with 42.
#[unsafe(no_mangle)]
pub extern "C" fn mpcore_test_steered() {
    let _ = std::io::stdout().write_all(b"steered\n");
    let _ = std::io::stdout().flush();
    // SAFETY: `_exit` ends the process at once; nothing is left to run.
    unsafe { libc::_exit(42) }
}

/// Keeps [`mpcore_test_steered`] in the binary, as a function nothing
/// calls.
pub(crate) fn keep_the_steered_function() {
    std::hint::black_box(mpcore_test_steered as extern "C" fn());
}

/// `main-ran`: says that `main` runs, whether the run is under secure
/// execution, and which of mpcore's variables it sees.
pub(crate) fn main_ran() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: `getauxval` reads the auxiliary vector.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) };
    let seen: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with("MPCORE_"))
        .collect();
    println!("main ran");
    println!("secure: {secure}");
    if seen.is_empty() {
        println!("mpcore variables: none");
    } else {
        println!("mpcore variables: {}", seen.join(" "));
    }
    Ok(())
}

/// `attack VAR HOW TARGET`: runs `TARGET main-ran` with mpcore's variable
/// `VAR` set to a hostile value, waits for it (20 s at most), and prints
/// how it ended. `HOW`:
///
/// - `value:TEXT`: the variable is `TEXT`;
/// - `pipe`: it names a pipe, and our pid, the target's parent's;
/// - `stranger`: it names a socket pair that this process made (and holds
///   the other end of, with a well-formed task in it), and the pid of the
///   target's parent, which is a child of ours, not us;
/// - `steer`: it names a socket pair that this process, the target's
///   parent, made, holding a well-formed task whose entry is
///   `mpcore_test_steered`, a function that mpcore did not register; our
///   end is closed once the target has started;
/// - `orphan`: as `steer`, from a child of ours that ends before the
///   target's hook runs (the target, reparented, is ours to wait for).
pub(crate) fn attack(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [var, how, target] = args else {
        return Err("attack VAR HOW TARGET".into());
    };
    let mut command = Command::new(target);
    command.arg("main-ran");
    let status = if let Some(text) = how.strip_prefix("value:") {
        command.env(var, text);
        wait(command.spawn()?)
    } else if how == "pipe" {
        let (read, _write) = nix::unistd::pipe()?;
        inherit(&mut command, &read);
        command.env(var, format!("{} {}", read.as_raw_fd(), getpid()));
        wait(command.spawn()?)
    } else if how == "orphan" {
        orphaned(var, command)?
    } else if how == "steer" || how == "stranger" {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        send_steering_task(&ours)?;
        inherit(&mut command, &theirs);
        let value = format!("{} {}", theirs.as_raw_fd(), getpid());
        if how == "steer" {
            command.env(var, value);
            let child = command.spawn()?;
            // The task waits in the target's end; a fork server that obeys
            // finds the end of file behind it, and leaves.
            drop((ours, theirs));
            wait(child)
        } else {
            // The target's parent is a child of ours, which names itself.
            std::io::stdout().flush()?;
            // SAFETY: this helper has one thread here.
            match unsafe { fork() }? {
                ForkResult::Child => {
                    let value = format!("{} {}", theirs.as_raw_fd(), getpid());
                    command.env(var, value);
                    let code = match command.spawn() {
                        Ok(child) => wait(child),
                        Err(_) => 99,
                    };
                    // SAFETY: this forked child ends here, at once.
                    unsafe { libc::_exit(code) }
                }
                ForkResult::Parent { child } => {
                    drop(theirs);
                    match nix::sys::wait::waitpid(child, None)? {
                        nix::sys::wait::WaitStatus::Exited(_, code) => code,
                        other => return Err(format!("the go-between ended: {other:?}").into()),
                    }
                }
            }
        }
    } else {
        return Err(format!("attack: unknown HOW {how:?}").into());
    };
    println!("target: exit {status}");
    Ok(())
}

/// The `orphan` attack: a go-between makes the socket pair and starts the
/// target, which waits to exec until the go-between has ended. Returns
/// the target's exit code.
fn orphaned(var: &str, mut command: Command) -> Result<i32, Box<dyn std::error::Error>> {
    // The target, orphaned, becomes our child again.
    // SAFETY: `prctl(PR_SET_CHILD_SUBREAPER)` takes an integer.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } == -1 {
        return Err(std::io::Error::last_os_error().into());
    }
    std::io::stdout().flush()?;
    // SAFETY: this helper has one thread here.
    let go_between = match unsafe { fork() }? {
        ForkResult::Child => {
            let me = getpid();
            let started = (|| -> Result<(), Box<dyn std::error::Error>> {
                let (ours, theirs) = socketpair(
                    AddressFamily::Unix,
                    SockType::SeqPacket,
                    None,
                    SockFlag::SOCK_CLOEXEC,
                )?;
                send_steering_task(&ours)?;
                inherit(&mut command, &theirs);
                command.env(var, format!("{} {me}", theirs.as_raw_fd()));
                // SAFETY: the go-between has one thread.
                if let ForkResult::Child = unsafe { fork() }? {
                    // The target: once the go-between has ended.
                    while nix::unistd::getppid() == me {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let _ = command.exec();
                    // SAFETY: the exec failed; this process ends here.
                    unsafe { libc::_exit(98) }
                }
                Ok(())
            })();
            // SAFETY: the go-between ends here, at once.
            unsafe { libc::_exit(if started.is_ok() { 0 } else { 99 }) }
        }
        ForkResult::Parent { child } => child,
    };
    match nix::sys::wait::waitpid(go_between, None)? {
        nix::sys::wait::WaitStatus::Exited(_, 0) => {}
        other => return Err(format!("the go-between ended: {other:?}").into()),
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        match waitpid(None, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, code) => return Ok(code),
            WaitStatus::Signaled(_, signal, _) => return Ok(128 + signal as i32),
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return Ok(-1),
        }
    }
}

/// Lets the child of `command` inherit `fd` under its number.
fn inherit(command: &mut Command, fd: &OwnedFd) {
    let fd: RawFd = fd.as_raw_fd();
    // SAFETY: `fcntl` is async-signal-safe and touches only the descriptor.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Waits up to 20 s for `child`; its exit code, or 128 + the signal that
/// ended it (a child killed for hanging gives 128 + 9).
fn wait(mut child: Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return 128 + libc::SIGKILL;
            }
        }
    }
}

/// Writes into `socket` the two packets of a spawned child's task, as
/// mpcore writes them, but with `mpcore_test_steered` as the task's entry
/// and function: offsets from mpcore's anchor, read from this program's
/// symbol table.
fn send_steering_task(socket: &OwnedFd) -> Result<(), Box<dyn std::error::Error>> {
    let elf = std::fs::read("/proc/self/exe")?;
    let symbols = Elf(&elf).symbols()?;
    let find = |wanted: &dyn Fn(&str) -> bool| {
        symbols
            .iter()
            .find(|(name, _)| wanted(name))
            .map(|&(_, value)| value)
            .ok_or("a symbol is missing from the helper's symbol table")
    };
    let anchor = find(&|name| name.contains("6mpcore") && name.contains("9anchor_fn"))?;
    let steered = find(&|name| name == "mpcore_test_steered")?;
    let image_start = Elf(&elf).first_load()? & !0xfff;
    let offset = steered.wrapping_sub(anchor);
    // postcard: each integer a varint, an `Option` a 0 or a 1 before it.
    let mut entry = Vec::new();
    varint(&mut entry, offset);
    varint(&mut entry, offset);
    entry.push(1);
    varint(&mut entry, anchor - image_start);
    varint(&mut entry, 0);
    nix::sys::socket::send(
        socket.as_raw_fd(),
        &entry,
        nix::sys::socket::MsgFlags::empty(),
    )?;
    // The argument: an inline message (tag 0) of no bytes.
    nix::sys::socket::send(
        socket.as_raw_fd(),
        &[0],
        nix::sys::socket::MsgFlags::empty(),
    )?;
    Ok(())
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Just enough of a 64-bit little-endian ELF file.
struct Elf<'a>(&'a [u8]);

impl Elf<'_> {
    fn u16_at(&self, at: usize) -> Option<u64> {
        Some(u16::from_le_bytes(self.0.get(at..at + 2)?.try_into().ok()?) as u64)
    }

    fn u32_at(&self, at: usize) -> Option<u64> {
        Some(u32::from_le_bytes(self.0.get(at..at + 4)?.try_into().ok()?) as u64)
    }

    fn u64_at(&self, at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(self.0.get(at..at + 8)?.try_into().ok()?))
    }

    /// The program headers: (type, offset, address, file size).
    fn segments(&self) -> Option<Vec<(u64, u64, u64, u64)>> {
        let (start, size, count) = (self.u64_at(0x20)?, self.u16_at(0x36)?, self.u16_at(0x38)?);
        (0..count)
            .map(|i| {
                let at = (start + i * size) as usize;
                Some((
                    self.u32_at(at)?,
                    self.u64_at(at + 8)?,
                    self.u64_at(at + 16)?,
                    self.u64_at(at + 32)?,
                ))
            })
            .collect()
    }

    /// The lowest address of a loaded segment.
    fn first_load(&self) -> Result<u64, &'static str> {
        self.segments()
            .and_then(|s| s.iter().filter(|s| s.0 == 1).map(|s| s.2).min())
            .ok_or("no loaded segment")
    }

    /// The path of the program's interpreter (`PT_INTERP`).
    fn interpreter(&self) -> Option<String> {
        let segments = self.segments()?;
        let &(_, offset, _, size) = segments.iter().find(|s| s.0 == 3)?;
        let bytes = self.0.get(offset as usize..(offset + size) as usize)?;
        let bytes = bytes.split(|&b| b == 0).next()?;
        String::from_utf8(bytes.to_vec()).ok()
    }

    /// The symbol table (`SHT_SYMTAB`): names and values.
    fn symbols(&self) -> Result<Vec<(String, u64)>, &'static str> {
        self.read_symbols().ok_or("no readable symbol table")
    }

    fn read_symbols(&self) -> Option<Vec<(String, u64)>> {
        let (start, size, count) = (self.u64_at(0x28)?, self.u16_at(0x3a)?, self.u16_at(0x3c)?);
        let section = |i: u64| start as usize + (i * size) as usize;
        let symtab = (0..count)
            .map(section)
            .find(|&at| self.u32_at(at + 4) == Some(2))?;
        let strtab = section(self.u32_at(symtab + 0x28)?);
        let names = self.u64_at(strtab + 0x18)? as usize;
        let (offset, total) = (self.u64_at(symtab + 0x18)?, self.u64_at(symtab + 0x20)?);
        let mut symbols = Vec::new();
        for at in (offset..offset + total).step_by(24) {
            let at = at as usize;
            let name_at = names + self.u32_at(at)? as usize;
            let name = self.0.get(name_at..)?.split(|&b| b == 0).next()?;
            symbols.push((
                String::from_utf8_lossy(name).into_owned(),
                self.u64_at(at + 8)?,
            ));
        }
        Some(symbols)
    }
}

/// `interpreter`: prints the path of this program's interpreter (the
/// dynamic loader named in its `PT_INTERP`), or `none`.
pub(crate) fn interpreter() -> Result<(), Box<dyn std::error::Error>> {
    let elf = std::fs::read("/proc/self/exe")?;
    println!(
        "{}",
        Elf(&elf).interpreter().unwrap_or_else(|| "none".into())
    );
    Ok(())
}

fn square(x: u64) -> u64 {
    x * x
}

/// `spawn-square spawn|forkserver`: starts `square(7)` by that method and
/// prints what came of it: `result: 49`, or `error: ...`.
pub(crate) fn spawn_square(method: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let method: StartMethod = crate::start_method(method)?;
    let outcome = process::Builder::new()
        .start_method(method)
        .spawn_fn(square, 7)
        .and_then(|mut child| child.join());
    match outcome {
        Ok(value) => println!("result: {value}"),
        Err(e) => println!("error: {e}"),
    }
    Ok(())
}

/// `args-and-name`: prints this program's arguments and name, then the
/// arguments and name that a child started by each method sees, one line
/// each: `METHOD ARGS | NAME`.
pub(crate) fn args_and_name() -> Result<(), Box<dyn std::error::Error>> {
    fn seen(_: ()) -> (Vec<OsString>, String) {
        let name = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
        (std::env::args_os().collect(), name.trim_end().to_owned())
    }
    let show = |label: &str, (args, name): (Vec<OsString>, String)| {
        println!("{label} {args:?} | {name}");
    };
    show("parent", seen(()));
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut child = process::Builder::new()
            .start_method(method)
            .spawn_fn(seen, ())?;
        show(&method.to_string(), child.join()?);
    }
    Ok(())
}
