//! A shared library that holds mpcore, for a host program that loads it
//! with `dlopen` (`tests/dlopen/host.c`, built and run by
//! `tests/fresh_run.rs`): a plugin, or a Python extension. A fresh run of
//! such a host is the host, not this library, so mpcore must refuse to
//! start a child by `Spawn` or `ForkServer` from here, and say why; `Fork`
//! works.

use std::ffi::c_char;

use mpcore::{StartMethod, process};

fn square(x: u64) -> u64 {
    x * x
}

/// Starts `square(7)` by `method` (0 fork, 1 spawn, 2 forkserver), joins
/// it, and writes what came of it into `out` as a C string (cut to `len`
/// bytes): the value, or the error. Returns 0 for a value, 1 for an error.
///
/// # Safety
///
/// `out` must be valid for writes of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mpcore_tests_spawn(method: i32, out: *mut c_char, len: usize) -> i32 {
    let method = match method {
        0 => StartMethod::Fork,
        1 => StartMethod::Spawn,
        _ => StartMethod::ForkServer,
    };
    // No panic may unwind into C.
    let outcome = std::panic::catch_unwind(|| {
        process::Builder::new()
            .start_method(method)
            .spawn_fn(square, 7)
            .and_then(|mut child| child.join())
    });
    let (code, text) = match outcome {
        Ok(Ok(value)) => (0, value.to_string()),
        Ok(Err(e)) => (1, e.to_string()),
        Err(_) => (1, "panicked".to_owned()),
    };
    if len > 0 {
        let n = text.len().min(len - 1);
        // SAFETY: `out` holds `len` bytes (the caller's promise); `n + 1`
        // of them are written.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), out.cast::<u8>(), n);
            *out.add(n) = 0;
        }
    }
    code
}
