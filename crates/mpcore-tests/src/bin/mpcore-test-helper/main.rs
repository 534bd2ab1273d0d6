//! Scenarios that need a process of their own, run by mpcore's integration
//! tests (`tests/*.rs`) with a deadline: they start this binary with
//! `testkit::run` and `env!("CARGO_BIN_EXE_mpcore-test-helper")`.
//!
//! - `orphan [fork|spawn|forkserver]`: starts a child that sleeps (forked,
//!   spawned with `StartMethod::Spawn`, or forked by the fork server),
//!   prints `child-pid N`, then sleeps itself until the test kills it with
//!   SIGKILL.
//! - `manager-orphan [fork|spawn|forkserver]`: the same with a `Manager`
//!   (its server started by that method) in use: prints the server's pid
//!   as `child-pid N`.
//! - `forkserver-killed`: starts a fork-server child that reports its
//!   parent (the server) and one that sleeps, kills the server with
//!   SIGKILL, and prints what joining the sleeper says; then starts another
//!   child and prints whether a new server started it, its result, and
//!   whether the dead server was reaped.
//! - `forkserver-sigchld-ignored`: with `SIGCHLD` set to `SIG_IGN`, starts
//!   fork-server children that exit with code 3, return 5 and are killed,
//!   and prints what `join` and `exitcode` say of each.
//! - `forkserver-drop DIR` (as root): starts fork-server children, a
//!   fork-server pool and two fork pools (one with a worker busy for
//!   7 s), drops its privileges to `nobody` for good, then prints what a
//!   child started after the drop is (its user, groups, and whether it
//!   can write into `DIR`, a directory only root may write in), what
//!   `kill` and `terminate` of the children from before the drop do,
//!   whether dropping each pool ends, and whether the busy worker, which
//!   no kill can reach, is reaped when its task ends.
//! - `forkserver-fd-limit`: starts the fork server with a low soft limit
//!   on open files and asks it for 40 children that nap; then lowers the
//!   server's own limits so that it cannot make room, and asks for 40
//!   more. Prints how many started, why the others did not, and whether
//!   every child that started returned its value.
//! - `forkserver-cwd DIR`: starts the fork server in `DIR/first`, moves to
//!   `DIR/second`, and prints where a fork-server child's relative write
//!   landed.
//! - `forkserver-zombie`: kills its fork server, prints `server N`, and
//!   waits for a line on standard input, so that the test can look for a
//!   zombie meanwhile.
//! - `pool-orphan [fork|spawn|forkserver]`: the same with a pool of one
//!   worker (started by that method): prints the worker's pid as
//!   `child-pid N`.
//! - `shm normal|panic|killed`: makes one of each shared object (`Value`,
//!   `Array`, `Lock`, `Event`), uses them from a child, checks that none is
//!   under `/dev/shm`, then ends normally, panics, or (for `killed`) holds
//!   the locks, starts a child waiting on an event, prints `ready PID` and
//!   sleeps until the test kills it.
//! - `print-storm N`: one thread prints in a tight loop while the main
//!   thread spawns and joins N processes that print; prints `joined N`.
//! - `buffered`: with this one thread only, prints half a line, spawns a
//!   child that prints without a newline, joins it, ends the line: the
//!   output must hold each piece once, in order.
//! - `stdout-held`: holds `stdout().lock()` while it makes a pool, spawns
//!   from a second thread, and iterates `imap` on a pool that must replace
//!   its workers; each must end (in an error), not hang. Then it lets go
//!   and checks that all works again.
//! - `unwind serialize|drop-result|drop-payload`: starts a daemon sibling
//!   that sleeps, then a child whose result panics when serialized, whose
//!   result panics when dropped in the child, or whose panic payload panics
//!   when dropped; prints `result: ...` as the parent's `join` saw it and
//!   `sibling: alive` or `sibling: dead`. A child that unwound into this
//!   `main` would print too, or kill the sibling as it dropped the handle.
//! - `sigchld-ignored`: with `SIGCHLD` set to `SIG_IGN`, so that the kernel
//!   reaps children itself, checks what `join`, `is_alive`, `exitcode` and
//!   `kill` say, and prints each answer.
//! - `pool-panic [fork|spawn]`: a pool of one worker (started by that
//!   method) runs a task that panics; prints the
//!   panic message `join` returned (the worker prints its own on stderr).
//! - `no-free-fd`: fills its descriptor table, then takes a 1 MiB result
//!   from a `Process` (twice), from a `Pool` task and from a `Queue`,
//!   printing each error (the queue needs no descriptor: it prints its
//!   item's check);
//!   frees the table, takes both again, and prints whether the pool kept
//!   its workers.
//! - `fork-retry`: a pool whose one worker retires after each task, run
//!   with a full descriptor table, so that the replacement's fork fails
//!   until the table is freed 300 ms later; prints both tasks' results.
//! - `named create NAME`: creates the `SharedMemory` NAME of ten `u64`s,
//!   writes 0, 1, 4, ..., 81 in it, prints `created NAME`, then waits for
//!   a line on standard input (or end of file, or a SIGKILL) and exits.
//! - `named read NAME`: opens NAME as a program that is no child of its
//!   creator, prints `opened NAME`, waits for a line on standard input (or
//!   its end), then prints the values it finds and their sum.
//! - `named many PREFIX N`, `named open-many PREFIX N STEP`, `named nproc
//!   NAME ROOM`, `named small-shm`, `named tracker-killed PREFIX`, `named
//!   fork-child PREFIX`: named segments and their tracker under many
//!   segments, a process limit, a small `/dev/shm`, a killed tracker, a
//!   forked child (each is described in `named.rs`).
//! - `main-ran`: prints `main ran`, `secure: N` (the kernel's `AT_SECURE`)
//!   and the names of mpcore's variables it sees (`mpcore variables:
//!   none`); the target of `attack`.
//! - `attack VAR HOW TARGET`: runs `TARGET main-ran` with mpcore's
//!   variable VAR set to a hostile value (garbage, a pipe, a socket pair of
//!   a process that is not the target's parent, a task whose entry is a
//!   function that mpcore did not register, a request whose maker has
//!   ended), and prints `target: exit N`.
//! - `interpreter`: prints the dynamic loader named in this binary.
//! - `spawn-square spawn|forkserver`: starts `square(7)` by that method
//!   and prints `result: 49` or `error: ...` (run through the dynamic
//!   loader, or without `/proc`, by the tests).
//! - `args-and-name`: prints its arguments and name, then those a spawned
//!   child and a fork-server child see.
//!
//! One module per group of scenarios: `orphans`, `fork_server`, `shared`
//! (`shm`, `named create|read`), `named` (the other `named` ones),
//! `output` (`print-storm`, `buffered`, `stdout-held`), `children`
//! (`unwind`, `sigchld-ignored`, `pool-panic`), `descriptors`
//! (`no-free-fd`, `fork-retry`) and `before_main` (`main-ran`, `attack`,
//! `interpreter`, `spawn-square`, `args-and-name`).
//!
//! This binary is how mpcore's tests give a scenario a process of its own
//! when the scenario is not a test: a parent that the test kills from
//! outside, output that the test harness must not capture, a process that
//! changes its signal dispositions, limits or user for good. A test that
//! only needs to be safe from the harness's other threads runs in the test
//! process under `testkit::within`'s deadline instead.

use std::thread;
use std::time::Duration;

use mpcore::StartMethod;

mod before_main;
mod children;
mod descriptors;
mod fork_server;
mod named;
mod orphans;
mod output;
mod shared;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    before_main::keep_the_steered_function();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("main-ran") => before_main::main_ran(),
        Some("attack") => before_main::attack(&args[1..]),
        Some("interpreter") => before_main::interpreter(),
        Some("spawn-square") => before_main::spawn_square(args.get(1).map(String::as_str)),
        Some("args-and-name") => before_main::args_and_name(),
        Some("orphan") => orphans::orphan(args.get(1).map(String::as_str)),
        Some("pool-orphan") => orphans::pool_orphan(args.get(1).map(String::as_str)),
        Some("manager-orphan") => orphans::manager_orphan(args.get(1).map(String::as_str)),
        Some("forkserver-killed") => fork_server::fork_server_killed(),
        Some("forkserver-sigchld-ignored") => fork_server::fork_server_sigchld_ignored(),
        Some("forkserver-drop") => fork_server::fork_server_privilege_drop(
            args.get(1).ok_or("forkserver-drop: which directory?")?,
        ),
        Some("forkserver-fd-limit") => fork_server::fork_server_fd_limit(),
        Some("forkserver-cwd") => {
            fork_server::fork_server_cwd(args.get(1).ok_or("forkserver-cwd: which directory?")?)
        }
        Some("forkserver-zombie") => fork_server::fork_server_zombie(),
        Some("shm") => shared::shared_objects(args.get(1).map(String::as_str)),
        Some("print-storm") => output::print_storm(args.get(1).map_or(Ok(200), |n| n.parse())?),
        Some("buffered") => output::buffered(),
        Some("stdout-held") => output::stdout_held(),
        Some("unwind") => children::unwind_after_fork(args.get(1).map(String::as_str)),
        Some("sigchld-ignored") => children::sigchld_ignored(),
        Some("pool-panic") => children::pool_panic(args.get(1).map(String::as_str)),
        Some("no-free-fd") => descriptors::no_free_descriptor(),
        Some("fork-retry") => descriptors::fork_retry(),
        Some("named") if matches!(args.get(1).map(String::as_str), Some("create" | "read")) => {
            shared::named(
                args.get(1).map(String::as_str),
                args.get(2).ok_or("named: which name?")?,
            )
        }
        Some("named") => named::scenario(&args[1..]),
        other => Err(format!("unknown scenario {other:?}").into()),
    }
}

pub(crate) fn sleep_for(seconds: u64) {
    thread::sleep(Duration::from_secs(seconds));
}

pub(crate) fn start_method(name: Option<&str>) -> Result<StartMethod, Box<dyn std::error::Error>> {
    match name {
        None | Some("fork") => Ok(StartMethod::Fork),
        Some("spawn") => Ok(StartMethod::Spawn),
        Some("forkserver") => Ok(StartMethod::ForkServer),
        Some(other) => Err(format!("unknown start method {other:?}").into()),
    }
}
