//! `channel.rs`'s unit tests.

use std::os::fd::AsFd;

use super::*;

#[test]
fn a_memfd_shorter_than_its_packet_says_is_reported_in_the_read_error_s_own_words() {
    let (tx, rx) = pair().unwrap();
    let memfd = memfd_create("short", MFdFlags::MFD_CLOEXEC).unwrap();
    File::from(memfd.try_clone().unwrap())
        .write_all(&[1; 10])
        .unwrap();
    let len = 100u64.to_le_bytes();
    let iov = [IoSlice::new(&[TAG_MEMFD]), IoSlice::new(&len)];
    let fds = [memfd.as_raw_fd()];
    send_packet(
        tx.as_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
    )
    .unwrap();
    let e = try_recv::<Vec<u8>>(rx.as_fd()).unwrap_err();
    assert_eq!(e.to_string(), "read failed: failed to fill whole buffer");
}
