//! The wire: how values travel between processes. Above `os/` and
//! `base/`, below everything that sends.
//!
//! - `channel.rs`: packets on a `SOCK_SEQPACKET` socket pair, large ones
//!   as a memfd;
//! - `many.rs`: many packets with one system call, for a pool's results,
//!   and a larger message in parts;
//! - `codec.rs`: serde in postcard, checked to read back, and the one
//!   length framing;
//! - `large.rs`: a [`Connection`](crate::Connection)'s large messages,
//!   in memfds its sender keeps and writes again once they are read;
//! - `kept.rs`: such a memfd as both its ends map it, and how a receiver
//!   copies a message out of it;
//! - `handles.rs`: shared objects that travel to a spawned child as
//!   descriptors.

pub(crate) mod channel;
pub(crate) mod codec;
pub(crate) mod handles;
pub(crate) mod kept;
pub(crate) mod large;
pub(crate) mod many;
