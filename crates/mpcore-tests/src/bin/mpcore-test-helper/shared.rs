//! Shared objects that must not leave a segment behind, and a named
//! segment shared by two programs that are not parent and child.

use std::io::Write;
use std::thread;
use std::time::Duration;

use mpcore::{Array, Event, Lock, Process, Value};

pub(crate) fn shared_objects(ending: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let v = Value::new(0i32)?;
    let a = Array::new(&[1.0f64, 2.0])?;
    let lock = Lock::new()?;
    let e = Event::new()?;
    let mut child = Process::spawn({
        let (v, a, lock, e) = (v.clone(), a.clone(), lock.clone(), e.clone());
        move || {
            let _held = lock.acquire().is_ok();
            let wrote = v.set(1).is_ok() && a.set(1, 3.0).is_ok();
            e.set();
            wrote
        }
    })?;
    if !(child.join()? && e.is_set() && v.get()? == 1 && a.to_vec()? == [1.0, 3.0]) {
        return Err("the child's changes did not reach the parent".into());
    }
    // Named shared memory would show here as a mapping or an open file.
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    if let Some(line) = maps.lines().find(|l| l.contains("/dev/shm")) {
        return Err(format!("a mapping under /dev/shm: {line}").into());
    }
    match ending {
        Some("normal") => Ok(()),
        Some("panic") => panic!("panicked on purpose, holding every kind of shared object"),
        Some("killed") => {
            e.clear();
            let _held = lock.acquire()?;
            let _value_held = v.lock()?;
            // The child waits for an event nobody sets; it dies with us.
            let child = Process::spawn({
                let e = e.clone();
                move || e.wait().is_ok()
            })?;
            println!("ready {}", child.pid());
            std::io::stdout().flush()?;
            thread::sleep(Duration::from_secs(120));
            Err("the test should have killed this process".into())
        }
        other => Err(format!("unknown ending {other:?}").into()),
    }
}

pub(crate) fn named(role: Option<&str>, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let shm = match role {
        Some("create") => {
            let shm = mpcore::SharedMemory::create(name, 10 * 8)?;
            for (i, slot) in shm.lock()?.view_mut::<u64>()?.iter_mut().enumerate() {
                *slot = (i * i) as u64;
            }
            println!("created {}", shm.name());
            shm
        }
        Some("read") => {
            let shm = mpcore::SharedMemory::open(name)?;
            println!("opened {}", shm.name());
            shm
        }
        other => return Err(format!("unknown role {other:?}").into()),
    };
    std::io::stdout().flush()?;
    std::io::stdin().read_line(&mut String::new())?;
    if role == Some("read") {
        let values = shm.lock()?.view::<u64>()?.to_vec();
        println!("values {values:?}");
        println!("sum {}", values.iter().sum::<u64>());
    }
    Ok(())
}
