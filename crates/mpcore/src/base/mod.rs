//! The ground floor: what every other room speaks in. The one error type,
//! the plain values an error can name (how a child ended, by which start
//! method it was to start), and a panic turned into a message. Nothing
//! here imports another room of mpcore.

mod errno;
mod error;
mod method;
mod panic;
mod status;

pub use errno::Errno;
pub use error::{Error, Result};
pub use method::{StartMethod, get_all_start_methods, get_start_method, set_start_method};
pub(crate) use panic::{catch, panic_message};
pub use status::{ExitStatus, Signal};
