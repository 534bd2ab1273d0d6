//! The supervisor's workers: each one's state, and how they are started,
//! replaced, reaped and killed.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::super::chunk::{Chunk, Lost};
use super::super::wire::ToWorker;
use super::super::worker::{name_worker_panics, worker_main, worker_name};
use super::{ANSWER_LOOK, BATCH_MAX, BATCH_MIN, FAST_CHUNK, FAST_IN_FLIGHT, State, Supervisor};
use crate::base::{Error, Result};
use crate::process::{self, Process};
use crate::wire::channel;
use crate::wire::codec;
use crate::wire::many::Parts;

/// How long to wait before trying again to fork a worker after a failure.
const FORK_RETRY: Duration = Duration::from_millis(100);
/// How long forks may keep failing, with no worker in service, before
/// the queued tasks fail.
const FORK_GIVE_UP: Duration = Duration::from_secs(2);
/// How long ending the pool waits for its killed workers to exit. A
/// killed worker exits at once; one that outlasts this is one the kill
/// could not reach (this process gave up the privileges it runs with),
/// whose socket is closed: it exits when its task ends, and a thread of
/// its own reaps it then.
const KILLED_WORKERS_WAIT: Duration = Duration::from_secs(5);

/// One worker process, as the supervisor sees it.
pub(crate) struct Worker {
    /// The pool's end of the worker's own socket: tasks out, results in.
    /// Declared (so dropped) before `process`: a worker whose socket
    /// closes leaves its loop and exits, even one that this process can
    /// no longer signal, and the process's drop waits for that exit.
    pub(super) conn: OwnedFd,
    pub(super) process: Process<()>,
    /// The chunks sent to it and not yet answered, oldest first: the
    /// first is the one it runs, the others have not started (at most
    /// [`FAST_IN_FLIGHT`] in all).
    pub(super) jobs: VecDeque<Chunk>,
    pub(super) tasks_done: usize,
    /// `Stop` was sent: it takes no more tasks and is about to exit.
    pub(super) stopping: bool,
    /// Its socket reported end of file or an error: nothing more to read.
    pub(super) hung_up: bool,
    /// A send to it failed: it gets nothing more, but what it sent before
    /// is still read (its exit fails only the chunk it was running).
    pub(super) unreachable: bool,
    /// Reaped; removed at the end of the round.
    pub(super) dead: bool,
    /// When its last result came in.
    pub(super) last_result: Instant,
    /// Why its socket could not be read, if it could not: the chunk it
    /// held fails with this, not as a death.
    pub(super) read_error: Option<Error>,
    /// A result that has come in part.
    pub(super) parts: Parts,
}

impl Worker {
    pub(super) fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// It holds one chunk, sent a moment ago, of a call whose chunks are
    /// not known to take longer than [`ANSWER_LOOK`].
    pub(super) fn may_answer_soon(&self) -> bool {
        match (&self.jobs.front(), self.jobs.len()) {
            (Some(chunk), 1) if !self.hung_up && !self.dead => {
                chunk.sent.is_some_and(|sent| sent.elapsed() < ANSWER_LOOK)
                    && chunk
                        .speed
                        .chunk_time()
                        .is_none_or(|time| time < ANSWER_LOOK)
            }
            _ => false,
        }
    }

    /// The chunk it runs belongs to a call whose chunks are known to be
    /// fast, and it holds more: worth collecting from in batches.
    pub(super) fn batch_wait(&self) -> Option<Duration> {
        let time = self.jobs.front()?.speed.chunk_time()?;
        (time < FAST_CHUNK && self.jobs.len() >= 2 && !self.hung_up)
            .then(|| (time * (self.jobs.len() as u32 / 2)).clamp(BATCH_MIN, BATCH_MAX))
    }

    /// How many chunks it may hold, with `next` the chunk to give.
    pub(super) fn depth(&self, next: &Chunk, max_tasks: Option<usize>) -> usize {
        let depth = match next.speed.chunk_time() {
            Some(time) if time < FAST_CHUNK => FAST_IN_FLIGHT,
            _ => 1,
        };
        match max_tasks {
            Some(max) => depth.min(max.saturating_sub(self.tasks_done)),
            None => depth,
        }
    }

    /// Takes the worker out of service: `Stop`, then it exits on its own.
    pub(super) fn stop(&mut self) {
        if !self.stopping {
            self.stopping = true;
            let stop = codec::encode(&ToWorker::Stop).unwrap_or_default();
            if channel::send_bytes(self.conn.as_fd(), &stop).is_err() {
                self.hung_up = true;
            }
        }
    }
}

/// Which descriptor a poll slot watches.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    Wake,
    Conn(usize),
    Exit(usize),
}

impl Supervisor {
    /// Forks replacements until `size` workers are in service, while
    /// there is work to do or may come.
    pub(super) fn keep_workers(&mut self) {
        let wanted = if self.state == State::Running || !self.queue.is_empty() {
            self.size
        } else {
            0
        };
        if self.retry_fork_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.retry_fork_at = None;
        while self.in_service() < wanted {
            let Err(e) = self.fork_worker() else {
                self.fork_failing_since = None;
                continue;
            };
            log::warn!("mpcore pool: could not start a worker: {e}");
            let now = Instant::now();
            self.retry_fork_at = Some(now + FORK_RETRY);
            // While some worker is in service, the queue just waits for
            // it or for the retry. With none, a shortage that passes (a
            // moment without a free descriptor or process slot) must
            // cost nothing: only when forks have failed for
            // FORK_GIVE_UP does the queue fail, rather than let its
            // callers wait for ever.
            if self.in_service() > 0 || self.queue.is_empty() {
                return;
            }
            let since = *self.fork_failing_since.get_or_insert(now);
            if now.duration_since(since) >= FORK_GIVE_UP {
                let why = Lost::Failed(Error::NoWorker {
                    tried: FORK_GIVE_UP,
                    reason: e.to_string(),
                });
                for chunk in self.queue.drain(..) {
                    chunk.finish(Err(why.clone()));
                }
                // Tasks that come later get the same grace.
                self.fork_failing_since = None;
            }
            return;
        }
    }

    pub(super) fn in_service(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| !w.stopping && !w.hung_up && !w.unreachable && !w.dead)
            .count()
    }

    pub(super) fn fork_worker(&mut self) -> Result<()> {
        let (here, there) = channel::pair()?;
        self.forked += 1;
        // The closure owns the worker's end of the socket; `spawn` drops
        // this process's copy of it before returning, so the worker holds
        // the only one.
        let number = self.forked;
        let builder = process::Builder::new()
            .start_method(self.start_method)
            .name(format!("{}-{number}", worker_name(self.start_method)))
            .daemon(true);
        let process = match &self.spawner {
            // A fresh run of the program: its socket end travels with it,
            // and this process's copy is dropped once it is sent.
            Some(spawner) => spawner(builder, there, number, self.start_method)?,
            None => {
                name_worker_panics();
                // A fork copies every descriptor: the pool's end of this
                // worker's socket, and of every other worker's. The
                // worker closes those copies, so that each worker sees
                // its socket's end when the pool closes it (even one the
                // pool may no longer signal).
                let pool_ends: Vec<RawFd> = std::iter::once(here.as_raw_fd())
                    .chain(self.workers.iter().map(|w| w.conn.as_raw_fd()))
                    .collect();
                builder.spawn({
                    let initializer = self.initializer.clone();
                    move || {
                        close_copies(&pool_ends);
                        worker_main(there, number, initializer)
                    }
                })?
            }
        };
        self.workers.push(Worker {
            process,
            conn: here,
            jobs: VecDeque::new(),
            last_result: Instant::now(),
            tasks_done: 0,
            stopping: false,
            hung_up: false,
            unreachable: false,
            dead: false,
            read_error: None,
            parts: Parts::default(),
        });
        self.publish_pids();
        Ok(())
    }

    pub(super) fn publish_pids(&self) {
        let pids = self.workers.iter().filter(|w| !w.dead).map(Worker::pid);
        let mut shared = self.pids.lock().unwrap_or_else(PoisonError::into_inner);
        shared.clear();
        shared.extend(pids);
    }

    /// If worker `i` has exited: collects what it sent before, fails the
    /// chunk it was running, puts the chunks it never started back at the
    /// front of the queue, and reaps it.
    pub(super) fn reap_if_exited(&mut self, i: usize) {
        if self.workers[i].dead || self.workers[i].process.is_alive() {
            return;
        }
        self.read_results(i);
        let worker = &mut self.workers[i];
        worker.dead = true;
        // A worker starts its next chunk only after it has sent the
        // results of the one before, and those are all read by now: so the
        // first chunk left is the one it was running (or about to), and
        // the others never started. Only the first is lost.
        let running = worker.jobs.pop_front();
        while let Some(not_started) = worker.jobs.pop_back() {
            self.queue.push_front(not_started);
        }
        let worker = &mut self.workers[i];
        if let Some(chunk) = running {
            let (pid, status) = (worker.pid(), worker.process.exit_status());
            let why = match worker.read_error.take() {
                Some(e) => Lost::Failed(e),
                None => Lost::WorkerDied { pid, status },
            };
            log::warn!("mpcore pool: {}; starting a replacement", why.to_error());
            chunk.finish(Err(why));
        }
    }

    /// Kills every worker, fails every task not finished, reaps them all,
    /// waiting for them no longer than [`KILLED_WORKERS_WAIT`].
    pub(super) fn kill_all(&mut self) {
        // Signal all first, so they die together, then reap one by one.
        for worker in &self.workers {
            let _ = worker.process.kill();
        }
        let deadline = Instant::now() + KILLED_WORKERS_WAIT;
        for worker in self.workers.drain(..) {
            let Worker {
                conn,
                mut process,
                mut jobs,
                ..
            } = worker;
            for chunk in jobs.drain(..) {
                chunk.finish(Err(Lost::Terminated));
            }
            // Its socket first: a worker the kill did not reach leaves its
            // loop when it sees the end of it.
            drop(conn);
            if !process.reap_by(deadline) {
                leave_to_a_thread(process);
            }
        }
        for chunk in self.queue.drain(..) {
            chunk.finish(Err(Lost::Terminated));
        }
        self.publish_pids();
    }
}

/// Closes, in a forked worker, its copies of the pool's ends of the
/// workers' sockets.
fn close_copies(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: in the forked worker these numbers are copies of the
        // pool's `OwnedFd`s, which this process never uses or drops: a
        // forked child leaves by `_exit`, never returning to the code
        // that owns them (`start/child.rs`). No double close, and no later
        // use of the number.
        unsafe { libc::close(fd) };
    }
}

/// Hands a killed worker that has not exited to a thread of its own,
/// which reaps it whenever it ends (a daemon `Process` kills again, and
/// reaps, on drop): no zombie, and no wait here. Should no thread be had,
/// the handle is forgotten rather than waited for.
fn leave_to_a_thread(process: Process<()>) {
    let pid = process.pid();
    let slot = Arc::new(Mutex::new(Some(process)));
    let theirs = Arc::clone(&slot);
    let spawned = std::thread::Builder::new()
        .name(format!("mpcore-reap-{pid}"))
        .spawn(move || drop(theirs.lock().unwrap_or_else(PoisonError::into_inner).take()));
    if let Err(e) = spawned {
        log::warn!(
            "mpcore pool: worker {pid} outlived its kill, and no thread can wait for it: {e}"
        );
        std::mem::forget(slot.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}
