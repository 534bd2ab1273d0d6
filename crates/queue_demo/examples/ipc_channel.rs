//! Chapter 4's job on a published crate: ipc-channel's `channel()` in
//! place of `mpcore::Queue`. Two forked children each compute the
//! tutorial's sum and send it with their pid; the parent receives both.
//! Then a third child dies without sending, to show what servo/ipc-channel
//! issue 281 means after a fork: the parent still holds its own copy of
//! the sender, so its `recv` cannot learn that the child is gone.
//!
//!     cargo run -p queue_demo --example ipc_channel

use std::time::Duration;

use ipc_channel::ipc::{self, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use mpcore::Process;

fn job(tx: IpcSender<(u64, u32)>) -> Result<(), String> {
    let mut res = 0u64;
    for i in 0..1000u64 {
        res += i + i.pow(2) + i.pow(3);
    }
    tx.send((res, std::process::id()))
        .map_err(|e| e.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One sending end and one receiving end; a fork copies both into
    // the child, as `args=(q,)` hands Python's child the queue.
    let (tx, rx) = ipc::channel::<(u64, u32)>()?;
    let mut p1 = Process::spawn({
        let tx = tx.clone();
        move || job(tx)
    })?;
    let mut p2 = Process::spawn({
        let tx = tx.clone();
        move || job(tx)
    })?;
    p1.join()??;
    p2.join()??;
    let (res1, pid1) = rx.recv()?;
    let (res2, pid2) = rx.recv()?;
    println!("{}", res1 + res2);
    println!("res1 = {res1} from pid {pid1}");
    println!("res2 = {res2} from pid {pid2}");

    // A child that dies before it sends. Its copy of the sender closes
    // with it, but the parent's own copy (`tx`) keeps the channel open,
    // so a plain `rx.recv()` here would wait for ever.
    let mut dead = Process::<()>::spawn({
        let tx = tx.clone();
        move || {
            let _unused = tx;
            std::process::exit(3)
        }
    })?;
    println!("child exited: {}", dead.join().unwrap_err());
    match rx.try_recv_timeout(Duration::from_millis(500)) {
        Err(TryRecvError::Empty) => {
            println!("recv with the parent's sender open: nothing after 500 ms, and no error")
        }
        other => println!("recv with the parent's sender open: {other:?}"),
    }
    // Only once the parent drops its own copy does the receiver learn
    // that nobody can send any more.
    drop(tx);
    match rx.recv() {
        Err(IpcError::Disconnected) => {
            println!("recv after the parent dropped its sender: disconnected")
        }
        other => println!("recv after the parent dropped its sender: {other:?}"),
    }
    Ok(())
}
