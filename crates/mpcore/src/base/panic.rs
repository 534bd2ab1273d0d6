//! Panics as messages: what a child sends back instead of unwinding.

use std::any::Any;
use std::mem;
use std::panic::{self, AssertUnwindSafe};

/// Runs `f`, catching a panic as its message. The payload is forgotten,
/// not dropped: its destructor could panic in turn, and nothing would
/// catch that. For the child's side of things, where nothing may unwind.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = panic_message(&*payload);
        mem::forget(payload);
        message
    })
}

/// The text of a panic's payload (`panic!` makes a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a payload that is not a string".to_owned()
    }
}
