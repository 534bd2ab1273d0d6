//! The supervisor thread: it forks the workers, hands out chunks, collects
//! results, notices a worker's death, fails only the chunk that worker was
//! running, and forks a replacement. Its workers' state, and how they are
//! started, replaced and reaped, are `workers.rs`; this file is the loop.
//!
//! # Who forks, and why it is a thread of the pool
//!
//! Each pool owns one supervisor thread, and that thread forks every
//! worker, the first ones and every replacement. A worker asks the kernel
//! for `PR_SET_PDEATHSIG`, which fires when the *thread* that forked it
//! exits, not only the process: workers forked by a thread that ends early
//! (a short request handler that made the pool, say) would be killed with
//! it. The supervisor lives exactly as long as the pool, so the signal
//! fires only when the pool is gone or the whole program dies, and then it
//! is what we want: no worker outlives its pool's program. The supervisor
//! also does the rest of the bookkeeping that Python's `Pool` spreads over
//! three threads: it hands out tasks, collects results, and replaces
//! workers.
//!
//! # How a dead worker is noticed
//!
//! Every worker has a socket of its own, and the pool always knows which
//! chunks of tasks a worker holds. A worker holds one chunk at a time,
//! except when the chunks of a call have proved fast (under 100 µs each):
//! then it holds up to 64, the one it runs and the next ones waiting for
//! it, so that it never sits idle while the supervisor wakes up to send
//! more. What a worker is given in one go travels in one packet, and the
//! supervisor collects results in batches (up to 32 packets with one
//! `recvmmsg`) rather than waking for each: a `map` of 20,000 tiny tasks
//! at chunk size 1 costs about one system call per task instead of seven or eight.
//! A worker starts a chunk only after it has sent the results of the one
//! before, so the first chunk without results is the one it was running,
//! and the chunks after it never started.
//!
//! After a fork, a read from a socket never reports that the process at
//! the other end died while some other process still holds a copy of its
//! end (servo/ipc-channel#281), so the supervisor waits with one `poll` on
//! every worker's socket *and* every worker's pidfd, a descriptor that
//! becomes readable when the process exits. When a worker exits, the
//! supervisor first reads whatever results it sent before dying, then
//! fails the chunk it was running with [`Error::WorkerDied`], gives the
//! chunks it had not read yet to other workers, reaps it (no zombie) and
//! forks a replacement. The other tasks go on. CPython's
//! `Pool` hangs for ever in this case (python/cpython#96062), and
//! `concurrent.futures.ProcessPoolExecutor` fails every pending task.
//!
//! A task that panics is caught inside the worker: that task's result is
//! [`Error::Panicked`] with the message, and the worker goes on with the
//! next task, as Python's worker catches an exception. The same holds for
//! a panic in the argument's `Deserialize` or the result's `Serialize` or
//! `Drop`, which run in the worker too. A panic message on stderr names
//! the worker as Python names its worker processes, `ForkPoolWorker-N`:
//! the pool wraps the panic hook once, before its first fork, and the
//! wrapper leaves every panic outside a worker to the hook it wrapped.
//!

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::Initializer;
use super::chunk::{Chunk, Lost, batch_packet, fail_all};
use super::worker::SpawnWorker;
use crate::base::StartMethod;
use crate::base::{Error, Result};
use crate::os::{poll, spin};
use crate::wire::{channel, many};

mod workers;

pub(super) use workers::{Slot, Worker};

/// What the pool's handle tells its supervisor.
pub(super) enum Command {
    Submit(Vec<Chunk>),
    Close,
    Terminate,
}

/// Wakes the supervisor from its `poll` when a command is sent: one packet
/// on a socket pair, sent only when none is pending, so a burst of
/// `apply_async` calls never fills the socket.
pub(super) struct Wake {
    pub(super) tx: OwnedFd,
    pub(super) rx: OwnedFd,
    pub(super) pending: AtomicBool,
}

impl Wake {
    pub(super) fn notify(&self) {
        if !self.pending.swap(true, Ordering::SeqCst)
            && channel::send_bytes(self.tx.as_fd(), &[]).is_err()
        {
            self.pending.store(false, Ordering::SeqCst);
        }
    }

    /// Empties the socket and re-arms `notify`; the commands sent before
    /// this are then in the channel.
    pub(super) fn drain(&self) {
        while let Ok(true) = channel::try_discard(self.rx.as_fd()) {}
        self.pending.store(false, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Running,
    Closed,
    Terminating,
}

/// How many chunks a worker may hold once the chunks of the call are known
/// to be fast (under [`FAST_CHUNK`] each); until then, and for slower
/// ones, it holds one at a time: enough that it never waits for the
/// supervisor, few enough that uneven chunks cannot pile up behind it for
/// more than a couple of milliseconds.
const FAST_IN_FLIGHT: usize = 64;
/// The chunks of a call that take less than this each are fed to the
/// workers [`FAST_IN_FLIGHT`] at a time, and their results collected in
/// batches.
const FAST_CHUNK: Duration = Duration::from_micros(100);
/// How long the supervisor lets a well-fed worker's results pile up, at
/// most and at least.
const BATCH_MAX: Duration = Duration::from_micros(400);
const BATCH_MIN: Duration = Duration::from_micros(20);
/// The most bytes of chunks a worker is sent in one packet: well under
/// the size that would go through a memfd.
const BATCH_BYTES: usize = 16 * 1024;
/// How long the supervisor looks for the answer to a chunk it has just
/// handed to an idle worker before it sleeps
/// ([`Supervisor::look_for_answers`]).
const ANSWER_LOOK: Duration = Duration::from_micros(50);
/// How long the supervisor looks for the rest of a result that has come
/// in part before it goes back to sleep: the parts are sent together,
/// so the rest is there within microseconds unless the worker died.
const PARTS_LOOK: Duration = Duration::from_micros(50);
/// How often to look at workers that have no pidfd (kernels before 5.3).
const NO_PIDFD_TICK: Duration = Duration::from_millis(20);

pub(super) struct Supervisor {
    pub(super) size: usize,
    pub(super) max_tasks: Option<usize>,
    pub(super) initializer: Option<Initializer>,
    pub(super) start_method: StartMethod,
    /// How to start a worker that is not forked; `None` under `Fork`.
    pub(super) spawner: Option<SpawnWorker>,
    /// The only strong handle: it is dropped when the supervisor ends,
    /// however it ends, which is what the pool's weak ones tell.
    pub(super) alive: Arc<()>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) wake: Arc<Wake>,
    pub(super) pids: Arc<Mutex<Vec<i32>>>,
    pub(super) workers: Vec<Worker>,
    pub(super) queue: VecDeque<Chunk>,
    pub(super) state: State,
    pub(super) forked: usize,
    pub(super) retry_fork_at: Option<Instant>,
    /// Since when forks have failed with no worker in service.
    pub(super) fork_failing_since: Option<Instant>,
}

impl Supervisor {
    pub(super) fn run(mut self, started: mpsc::Sender<Result<()>>) {
        // Batched waits are tens of microseconds: ask the kernel not to
        // stretch them by its default 50 µs of timer slack.
        let _ = nix::sys::prctl::set_timerslack(1_000);
        for _ in 0..self.size {
            if let Err(e) = self.fork_worker() {
                let _ = started.send(Err(e));
                self.kill_all();
                return;
            }
        }
        let _ = started.send(Ok(()));
        drop(started);

        loop {
            self.take_commands();
            if self.state == State::Terminating {
                self.kill_all();
                self.fail_late_commands(Lost::Terminated);
                return;
            }
            self.keep_workers();
            self.dispatch();
            if self.state == State::Closed && self.queue.is_empty() {
                // Every task is done or running: let the idle workers go.
                for worker in self.workers.iter_mut().filter(|w| w.jobs.is_empty()) {
                    worker.stop();
                }
                if self.workers.is_empty() {
                    self.fail_late_commands(Lost::Closed);
                    return;
                }
            }
            if let Err(e) = self.wait_and_handle() {
                // poll itself failed: nothing can be watched any more, so
                // end the pool rather than spin or hang.
                log::error!("mpcore pool: {e}; terminating the pool");
                self.kill_all();
                self.fail_late_commands(Lost::Terminated);
                return;
            }
        }
    }

    fn take_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Submit(chunks) => self.queue.extend(chunks),
                Command::Close => {
                    if self.state == State::Running {
                        self.state = State::Closed;
                    }
                }
                Command::Terminate => self.state = State::Terminating,
            }
        }
    }

    /// Fails the tasks of commands that arrive after the end.
    fn fail_late_commands(&mut self, why: Lost) {
        self.take_commands();
        for chunk in self.queue.drain(..) {
            chunk.finish(Err(why.clone()));
        }
    }

    /// Hands out queued chunks: first one to every idle worker, then,
    /// when the chunks are known to be fast, more to the busy ones, round
    /// by round, up to [`FAST_IN_FLIGHT`], so that a worker that finishes
    /// a chunk finds the next one already in its socket instead of waiting
    /// for the supervisor to wake up and send it. Chunks of unknown or
    /// slow speed go one at a time to idle workers only, so that a slow
    /// chunk never holds up another that an idle worker could run. What a
    /// worker gets in one go travels in one packet (`ToWorker::Batch`).
    fn dispatch(&mut self) {
        let max_tasks = self.max_tasks;
        let mut batches: Vec<Vec<Chunk>> = self.workers.iter().map(|_| Vec::new()).collect();
        let mut batch_bytes = vec![0; self.workers.len()];
        'rounds: for round in 1..=FAST_IN_FLIGHT {
            let mut gave = false;
            for (i, worker) in self.workers.iter().enumerate() {
                let Some(next) = self.queue.front() else {
                    break 'rounds;
                };
                let held = worker.jobs.len() + batches[i].len();
                let full =
                    !batches[i].is_empty() && batch_bytes[i] + next.packet.len() > BATCH_BYTES;
                if held >= round.min(worker.depth(next, max_tasks))
                    || full
                    || worker.stopping
                    || worker.hung_up
                    || worker.unreachable
                    || worker.dead
                {
                    continue;
                }
                let chunk = self.queue.pop_front().expect("the queue is not empty");
                batch_bytes[i] += chunk.packet.len();
                batches[i].push(chunk);
                gave = true;
            }
            if !gave {
                break;
            }
        }
        for (i, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                self.send_batch(i, batch);
            }
        }
    }

    /// Sends `batch` to worker `i` in one packet, or puts it back in the
    /// queue when the worker cannot take it now.
    fn send_batch(&mut self, i: usize, batch: Vec<Chunk>) {
        let worker = &mut self.workers[i];
        let joined;
        let packet = match &batch[..] {
            [chunk] => &chunk.packet,
            chunks => match batch_packet(chunks) {
                Ok(packet) => {
                    joined = packet;
                    &joined
                }
                Err(e) => return fail_all(batch, Lost::Failed(e)),
            },
        };
        // An idle worker is reading: a send to it may wait. A busy one may
        // itself be waiting to send us results, so a send to it must not
        // wait: with its socket full, it simply gets no more chunks now.
        let sent = if worker.jobs.is_empty() {
            channel::send_bytes(worker.conn.as_fd(), packet).map(|()| true)
        } else {
            channel::try_send_bytes(worker.conn.as_fd(), packet)
        };
        match sent {
            Ok(true) => {
                // Keep the packets: if the worker dies before it starts
                // them, another worker gets them.
                let now = Instant::now();
                for mut chunk in batch {
                    chunk.sent = Some(now);
                    worker.jobs.push_back(chunk);
                }
            }
            Ok(false) => self.requeue(batch),
            Err(Error::Disconnected) => {
                // Not delivered: the worker is gone or going. Its exit is
                // handled when its pidfd fires; the chunks never reached
                // it, so another worker may run them.
                worker.unreachable = true;
                self.requeue(batch);
            }
            // A failure on our side (no memfd for a large packet, say):
            // these chunks fail, the worker stays in service.
            Err(e) => fail_all(batch, Lost::Failed(e)),
        }
    }

    /// Puts chunks back at the front of the queue, in their order.
    fn requeue(&mut self, chunks: Vec<Chunk>) {
        for chunk in chunks.into_iter().rev() {
            self.queue.push_front(chunk);
        }
    }

    /// One `poll` over the wake socket, every worker's socket and every
    /// worker's exit; then handles what it reported.
    fn wait_and_handle(&mut self) -> Result<()> {
        let answered = self.look_for_answers();
        let mut slots = vec![Slot::Wake];
        let mut fds = vec![self.wake.rx.as_fd()];
        let mut deadline = self.retry_fork_at;
        let mut batched = Vec::new();
        for (i, worker) in self.workers.iter().enumerate() {
            // A worker with fast chunks and more to run would wake us for
            // every result: leave its socket alone for a while and take
            // its results in one batch. Its exit still wakes us at once,
            // and every result is read before a dead worker's chunks fail.
            if let Some(wait) = worker.batch_wait() {
                batched.push(i);
                let at = Instant::now() + wait;
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
            } else if !worker.hung_up {
                slots.push(Slot::Conn(i));
                fds.push(worker.conn.as_fd());
            }
            match worker.process.pidfd() {
                Some(pidfd) => {
                    slots.push(Slot::Exit(i));
                    fds.push(pidfd);
                }
                None => {
                    let tick = Instant::now() + NO_PIDFD_TICK;
                    deadline = Some(deadline.map_or(tick, |d| d.min(tick)));
                }
            }
        }
        // After an answer, only look at the rest (an exit, a command)
        // without sleeping.
        let readable = if answered {
            poll::readable_now(&fds)?
        } else {
            poll::readable_any(&fds, deadline)?
        };
        drop(fds);

        for i in batched {
            self.read_results(i);
        }
        let mut exits = Vec::new();
        for (slot, ready) in slots.into_iter().zip(readable) {
            match (slot, ready) {
                (Slot::Wake, true) => self.wake.drain(),
                (Slot::Conn(i), true) => {
                    self.read_results(i);
                }
                (Slot::Exit(i), true) => exits.push(i),
                _ => {}
            }
        }
        // Without pidfds, look at every worker each tick.
        for (i, worker) in self.workers.iter().enumerate() {
            if worker.process.pidfd().is_none() {
                exits.push(i);
            }
        }
        for i in exits {
            self.reap_if_exited(i);
        }
        if self.workers.iter().any(|w| w.dead) {
            self.workers.retain(|w| !w.dead);
            self.publish_pids();
        }
        Ok(())
    }

    /// A chunk just handed to an idle worker, of a call whose chunks are
    /// quick or not timed yet (an `apply_async`, the first chunks of a
    /// `map`), is often answered within tens of microseconds, and sleeping
    /// in `poll` and being woken costs about as much again: look for the
    /// answer for up to [`ANSWER_LOOK`] first. Returns whether an answer
    /// (or a command) came meanwhile.
    fn look_for_answers(&mut self) -> bool {
        let waiting: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].may_answer_soon())
            .collect();
        if waiting.is_empty() {
            return false;
        }
        spin::until(Instant::now() + ANSWER_LOOK, || {
            let answered = waiting.iter().any(|&i| self.read_results(i) > 0);
            (answered || self.wake.pending.load(Ordering::SeqCst)).then_some(())
        })
        .is_some()
    }

    /// Reads every result worker `i` has sent.
    fn read_results(&mut self, i: usize) -> u32 {
        let max_tasks = self.max_tasks;
        let worker = &mut self.workers[i];
        let since = match worker.jobs.front().and_then(|c| c.sent) {
            Some(sent) => sent.max(worker.last_result),
            None => worker.last_result,
        };
        let mut count = 0u32;
        let mut speed = None;
        let mut packets = Vec::new();
        while !worker.hung_up {
            let taken =
                many::try_recv_many_bytes(worker.conn.as_fd(), &mut packets, &mut worker.parts);
            for results in packets.drain(..) {
                count += 1;
                // A worker answers its chunks in the order it got them.
                // Results that came but could not be read (no descriptor
                // free for their memory, say) fail their chunk alone: the
                // worker did its part and stays.
                if let Some(chunk) = worker.jobs.pop_front() {
                    speed = Some(Arc::clone(&chunk.speed));
                    chunk.finish(results.map(|r| (worker.pid(), r)).map_err(Lost::Failed));
                }
                worker.tasks_done += 1;
                if max_tasks.is_some_and(|max| worker.tasks_done >= max) {
                    worker.stop();
                }
            }
            match taken {
                // Fewer than a full batch: the socket is empty (or nearly:
                // a packet arriving now makes the next poll return). But
                // a result that has come in part has the rest on its way,
                // sent by the same system call: look for it rather than
                // sleep and be woken for each part.
                Ok(taken) if taken < many::MANY_SLOTS => {
                    let conn = [worker.conn.as_fd()];
                    let rest_came = worker.parts.is_open()
                        && spin::until(Instant::now() + PARTS_LOOK, || {
                            let now = Some(Instant::now());
                            matches!(poll::readable(conn, now), Ok([true])).then_some(())
                        })
                        .is_some();
                    if !rest_came {
                        break;
                    }
                }
                Ok(_) => {}
                // End of file: the worker is exiting; its pidfd will say so.
                Err(Error::Disconnected) => worker.hung_up = true,
                Err(e) => {
                    // Its socket itself is unusable (a packet that could
                    // not be read fails alone, above), so is the worker:
                    // kill it, so that a replacement takes its place; the
                    // chunk it holds fails with this error, not as a death.
                    log::warn!("mpcore pool: worker {}: {e}", worker.pid());
                    worker.hung_up = true;
                    worker.read_error = Some(e);
                    let _ = worker.process.kill();
                }
            }
        }
        if count > 0 {
            // How long a chunk takes, averaged over this batch, smoothed.
            let now = Instant::now();
            if let Some(speed) = speed {
                speed.record(now.saturating_duration_since(since) / count);
            }
            worker.last_result = now;
        }
        count
    }
}
