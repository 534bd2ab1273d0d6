//! Chapter 13, "Pipes and connections": Python's `Pipe`,
//! `multiprocessing.connection.wait`, and `Listener`/`Client` with an
//! `authkey`, in mpcore.
//!
//! The Python it mirrors (the chapter has all three programs):
//!
//! ```python
//! parent_conn, child_conn = mp.Pipe()
//! p = mp.Process(target=child, args=(child_conn,)); p.start()
//! child_conn.close()
//! print('parent got', parent_conn.recv())
//! parent_conn.send('thanks')
//! ```
//!
//! Run it with
//!
//!     cargo run -p pipe_demo
//!
//! It prints what a child sent through a pipe, then `Disconnected` once
//! the child has gone; the readiness order of three children that answer
//! after 300, 100 and 200 ms (`ready: 1`, `ready: 2`, `ready: 0`); and a
//! listener with a key that refuses a client with the wrong one and
//! serves one with the right one. In two terminals instead:
//!
//!     cargo run -p pipe_demo -- --listen /tmp/pipe-demo.sock
//!     cargo run -p pipe_demo -- --connect /tmp/pipe-demo.sock [--key KEY]

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use mpcore::connection::{Client, Listener, wait};
use mpcore::{Connection, Error, Pipe, Process};

type Message = (u32, Option<u32>, String);

/// The child of the first part: sends a tuple, prints the answer.
fn child(conn: Connection<Message, String>) -> mpcore::Result<()> {
    conn.send(&(42, None, "hello".to_string()))?;
    println!("child got {:?}", conn.recv()?);
    Ok(())
}

/// A `Pipe` between a parent and a child, and what `recv` says once the
/// child has gone.
fn pipe() -> Result<(), Box<dyn std::error::Error>> {
    let (parent_conn, child_conn) = Pipe::new()?;
    // child_conn moves into the child: the parent's copy is closed when
    // `spawn` returns, so no `child_conn.close()` is needed.
    let mut p = Process::spawn(move || child(child_conn).map_err(|e| e.to_string()))?;
    println!("parent got {:?}", parent_conn.recv()?);
    parent_conn.send(&"thanks".to_string())?;
    p.join()??;
    match parent_conn.recv() {
        Err(Error::Disconnected) => println!("recv after the child's exit: Disconnected"),
        other => return Err(format!("expected Disconnected, got {other:?}").into()),
    }
    Ok(())
}

/// The Python docs' example of `wait`: three children answer after 300,
/// 100 and 200 ms; the parent serves whichever is ready.
fn wait_for_three() -> Result<(), Box<dyn std::error::Error>> {
    let mut readers: Vec<Connection<Infallible, usize>> = Vec::new();
    let mut children = Vec::new();
    for (i, delay) in [300, 100, 200].into_iter().enumerate() {
        let (r, w) = Pipe::one_way()?;
        children.push(Process::spawn(move || {
            thread::sleep(Duration::from_millis(delay));
            w.send(&i).map_err(|e| e.to_string())
        })?);
        readers.push(r);
    }
    while !readers.is_empty() {
        // From the last ready one back, so that a removal moves none of
        // the indices still to be served.
        for i in wait(&readers, None)?.into_iter().rev() {
            match readers[i].recv() {
                Ok(msg) => println!("ready: {msg}"),
                Err(Error::Disconnected) => drop(readers.remove(i)),
                Err(e) => return Err(e.into()),
            }
        }
    }
    for mut c in children {
        c.join()??;
    }
    Ok(())
}

/// The listener's side: one client that gets in, one exchange.
fn listen(listener: &Listener) -> mpcore::Result<()> {
    let conn = listener.accept::<String, String>()?;
    println!("listener got {:?}", conn.recv()?);
    conn.send(&"hello back".to_string())
}

/// The client's side: connect with `key`, one exchange.
fn connect(path: &Path, key: &[u8]) -> mpcore::Result<()> {
    let conn = Client::connect_with_authkey::<String, String>(path, key)?;
    conn.send(&"hello from the client".to_string())?;
    println!("client got {:?}", conn.recv()?);
    Ok(())
}

/// A listener with a key in a thread of this program, and two clients
/// in children: the first with the wrong key.
fn listener_and_clients() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("pipe_demo-{}.sock", std::process::id()));
    let listener = Listener::bind_with_authkey(&path, b"secret")?;
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    println!("socket file mode: {mode:o} (owner only)");
    let server = thread::spawn(move || listen(&listener));
    for key in ["wrong", "secret"] {
        let p = path.clone();
        let mut client = Process::spawn(move || {
            if let Err(e) = connect(&p, key.as_bytes()) {
                println!("client with key {key:?}: {e}");
            }
        })?;
        client.join()?;
    }
    server
        .join()
        .map_err(|_| "the listener's thread panicked")??;
    println!("socket file left after the listener: {}", path.exists());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let key = match args.iter().position(|a| a == "--key") {
        Some(i) => args.get(i + 1).ok_or("--key needs a value")?.clone(),
        None => "secret".to_string(),
    };
    match args.first().map(String::as_str) {
        Some("--listen") => {
            let path = args.get(1).ok_or("--listen needs a path")?;
            let listener = Listener::bind_with_authkey(path, key.as_bytes())?;
            println!("listening on {path}");
            listen(&listener)?;
        }
        Some("--connect") => {
            let path = args.get(1).ok_or("--connect needs a path")?;
            connect(Path::new(path), key.as_bytes())?;
        }
        Some(other) => return Err(format!("unknown argument {other:?}").into()),
        None => {
            println!("a Pipe between a parent and a child:");
            pipe()?;
            println!("wait over three children:");
            wait_for_three()?;
            println!("a Listener with an authkey, and two Clients:");
            listener_and_clients()?;
        }
    }
    Ok(())
}
