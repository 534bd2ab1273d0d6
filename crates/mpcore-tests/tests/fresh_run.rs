//! A child started by `Spawn` or `ForkServer` is a fresh run of the
//! program (`/proc/self/exe`): what it gets (the program's arguments and
//! name), and the clear errors where a fresh run cannot work: mpcore in a
//! library loaded with `dlopen`, a program started through the dynamic
//! loader, no `/proc`, no room in the child for its argument's handles.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mpcore::{StartMethod, Value, process};

const HELPER: &str = env!("CARGO_BIN_EXE_mpcore-test-helper");
const LIMIT: Duration = Duration::from_secs(60);

/// What mpcore says when it is in a library loaded with `dlopen`.
const LOADED_LATER: &str = "invalid argument: StartMethod::Spawn and ForkServer start a fresh \
     run of the program (/proc/self/exe), but mpcore is in a shared library that the program \
     did not load at start-up (it was loaded with dlopen, as a plugin or a Python extension \
     is): the fresh run would run the program's own main again, not the task. Use \
     StartMethod::Fork, or link the library into the program so that it is loaded at start-up";

/// A directory of this test's own under the system's temporary one,
/// removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("mpcore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This package's shared library (`src/lib.rs`), which holds mpcore: built
/// beside the test binaries.
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let library = exe.with_file_name("libmpcore_tests.so");
    assert!(library.exists(), "{} was not built", library.display());
    library
}

/// Builds `tests/dlopen/host.c` into `dir` with `flags`; `None` (and the
/// reason printed) if there is no C compiler.
fn build_host(dir: &Path, flags: &[&str]) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dlopen/host.c");
    let host = dir.join("host");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = Command::new(&compiler)
        .arg("-o")
        .arg(&host)
        .arg(&source)
        .args(flags)
        .status();
    match built {
        Ok(status) if status.success() => Some(host),
        Ok(status) => panic!("{compiler} could not build {}: {status}", source.display()),
        Err(e) => {
            println!("skipped: no C compiler to build the host program ({compiler}: {e})");
            None
        }
    }
}

#[test]
fn spawn_from_a_library_loaded_with_dlopen_is_refused_and_the_host_main_runs_once() {
    let dir = TempDir::new("dlopen");
    let Some(host) = build_host(&dir.0, &["-ldl"]) else {
        return;
    };
    let run = testkit::run(
        host.to_str().unwrap(),
        &[library().to_str().unwrap()],
        LIMIT,
    );
    run.assert_success();
    assert_eq!(
        run.lines(),
        [
            "host main ran with 2 arguments".to_owned(),
            "fork: value: 49".to_owned(),
            format!("spawn: error: {LOADED_LATER}"),
            format!("forkserver: error: {LOADED_LATER}"),
        ],
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn spawn_from_a_library_the_host_loads_at_start_up_works() {
    let dir = TempDir::new("linked");
    let library = library();
    let directory = library.parent().unwrap().to_str().unwrap();
    let flags = [
        "-DLINKED",
        &format!("-L{directory}"),
        "-lmpcore_tests",
        &format!("-Wl,-rpath,{directory}"),
    ];
    let Some(host) = build_host(&dir.0, &flags) else {
        return;
    };
    let expected = [
        "host main ran with 1 arguments",
        "fork: value: 49",
        "spawn: value: 49",
        "forkserver: value: 49",
    ];
    let run = testkit::run(host.to_str().unwrap(), &[], LIMIT);
    run.assert_success();
    assert_eq!(run.lines(), expected, "stderr: {}", run.stderr);

    // Again with its standard input and error closed (a Rust program never
    // has them closed: std opens /dev/null in their place). mpcore's
    // sockets then take their numbers: the one a child reads its task from
    // is moved above them, where the child's hook looks for it.
    let mut command = Command::new(&host);
    // SAFETY: the closure runs in the forked child before `exec`, and
    // makes two system calls, async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::close(0);
            libc::close(2);
            Ok(())
        });
    }
    let run = testkit::run_command(&mut command, LIMIT);
    run.assert_success();
    assert_eq!(run.lines(), expected, "without standard input and error");
}

#[test]
fn under_an_explicit_dynamic_loader_spawn_says_so() {
    let interpreter = testkit::run(HELPER, &["interpreter"], LIMIT);
    let interpreter = interpreter.assert_success().stdout.trim();
    if interpreter == "none" || !Path::new(interpreter).exists() {
        println!("skipped: the helper names no dynamic loader that exists ({interpreter})");
        return;
    }
    for method in ["spawn", "forkserver"] {
        let run = testkit::run(interpreter, &[HELPER, "spawn-square", method], LIMIT);
        run.assert_success();
        assert_eq!(
            run.stdout,
            "error: invalid argument: StartMethod::Spawn and ForkServer start a fresh run of the \
             program through /proc/self/exe, but this program was started through the dynamic \
             loader (`ld.so PROGRAM`), so /proc/self/exe names the loader, not the program: start \
             the program directly, or use StartMethod::Fork\n",
            "{method}: stderr {}",
            run.stderr
        );
    }
    // Started directly, the same program spawns.
    let run = testkit::run(HELPER, &["spawn-square", "spawn"], LIMIT);
    assert_eq!(run.assert_success().stdout, "result: 49\n");
}

/// Has `command` run in a mount namespace of its own, where `/proc` is
/// not mounted.
fn without_proc(command: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before `exec`, and
    // makes three system calls, async-signal-safe, on constant strings.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) == -1
                || libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == -1
                || libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[test]
fn without_proc_spawn_says_so() {
    if let Err(e) = without_proc(&mut Command::new("true")).status() {
        println!("skipped: no mount namespace without /proc can be made here ({e})");
        return;
    }
    for method in ["spawn", "forkserver"] {
        let run = testkit::run_command(
            without_proc(Command::new(HELPER).args(["spawn-square", method])),
            LIMIT,
        );
        run.assert_success();
        assert!(
            run.stdout.starts_with(
                "error: exec of /proc/self/exe failed: StartMethod::Spawn and ForkServer start a \
                 fresh run of the program through /proc/self/exe, which names the program's file, \
                 and it cannot be read ("
            ) && run
                .stdout
                .ends_with("): is /proc mounted? Mount it, or use StartMethod::Fork\n"),
            "{method}: {:?}, stderr {:?}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn a_fresh_child_has_the_programs_arguments_and_name() {
    let run = testkit::run(HELPER, &["args-and-name", "two words", "", "-x"], LIMIT);
    run.assert_success();
    let lines = run.lines();
    let expected = format!(
        "{:?} | {}",
        [HELPER, "args-and-name", "two words", "", "-x"],
        // The kernel keeps the first 15 bytes of a program's name.
        &Path::new(HELPER).file_name().unwrap().to_str().unwrap()[..15]
    );
    assert_eq!(
        lines,
        [
            format!("parent {expected}"),
            format!("spawn {expected}"),
            format!("forkserver {expected}"),
        ],
        "stderr: {}",
        run.stderr
    );
}

/// Spawns a child whose argument holds `count` values while this process
/// (itself a spawned child, with a table of its own to lower) leaves its
/// children room for fewer descriptors; what joining it says.
fn spawn_with_more_handles_than_room(count: usize) -> String {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Low numbers taken while the values are made, so that theirs are
    // high; then given back, and the limit lowered below the values'.
    let placeholders: Vec<std::fs::File> = (0..count + 20)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let values: Vec<Value<u64>> = (0..count as u64).map(|i| Value::new(i).unwrap()).collect();
    drop(placeholders);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, (count / 2) as u64, hard).unwrap();
    fn sum(values: Vec<Value<u64>>) -> u64 {
        values.iter().map(|v| v.get().unwrap()).sum()
    }
    let outcome = process::Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn_fn(sum, values)
        .and_then(|mut child| child.join());
    match outcome {
        Ok(total) => format!("sum {total}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_child_without_room_for_its_handles_says_too_many_open_files() {
    testkit::within(LIMIT, || {
        let mut child = process::Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn_fn(spawn_with_more_handles_than_room, 60)
            .unwrap();
        let said = child.join().unwrap();
        assert!(
            said.ends_with(
                " could not start its task: too many open files: it could not receive the 60 \
                 descriptors of the handles in its argument (Queue, Value, Array, Lock, Event), \
                 because its open-file limit (ulimit -n, RLIMIT_NOFILE) was reached; raise the \
                 limit, or pass fewer handles"
            ),
            "{said}"
        );
    });
}
