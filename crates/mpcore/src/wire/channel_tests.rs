//! `channel.rs`'s unit tests.

use std::os::fd::AsFd;

use super::*;

#[test]
fn a_packet_larger_than_the_socket_s_buffer_goes_as_a_memfd() {
    let (tx, rx) = pair().unwrap();
    // The kernel doubles what it is asked for: about 16 KiB here, which
    // no packet of 40,000 bytes fits.
    nix::sys::socket::setsockopt(&tx, nix::sys::socket::sockopt::SndBuf, &8192).unwrap();
    let message: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    send_bytes(tx.as_fd(), &message).unwrap();
    assert_eq!(recv_bytes(rx.as_fd()).unwrap(), message);
}

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

#[test]
fn a_memfd_message_larger_than_this_process_can_hold_is_an_error_not_an_abort() {
    let (tx, rx) = pair().unwrap();
    let memfd = memfd_create("huge", MFdFlags::MFD_CLOEXEC).unwrap();
    for tag in [TAG_MEMFD, TAG_POOLED] {
        let len = (1u64 << 62).to_le_bytes();
        let tag = [tag];
        let iov = [IoSlice::new(&tag), IoSlice::new(&len)];
        let fds = [memfd.as_raw_fd()];
        let cmsgs = [ControlMessage::ScmRights(&fds)];
        send_packet(tx.as_fd(), &iov, &cmsgs, MsgFlags::empty()).unwrap();
        let e = try_recv_bytes(rx.as_fd()).unwrap_err().to_string();
        let expected = if tag == [TAG_MEMFD] {
            "could not decode a message: a message of 4611686018427387904 bytes does not fit \
             in this process's memory"
        } else {
            // A kept memfd's size is checked first.
            "could not decode a message: a message of 4611686018427387904 bytes came in \
             memory of 0 bytes, too short to hold it"
        };
        assert_eq!(e, expected);
    }
}
