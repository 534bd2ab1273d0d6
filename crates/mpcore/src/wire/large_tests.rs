//! `large.rs`'s unit tests: slots used again only once read, bounds, and
//! memory that is not what its packet says.

use std::os::fd::AsFd;

use super::*;

/// The inode of the memfd a written slot sends.
fn inode(written: &Written) -> u64 {
    nix::sys::stat::fstat(written.memfd()).unwrap().st_ino
}

fn read_it(inbox: &Inbox, written: &Written, len: usize) -> Vec<u8> {
    let memfd = written.memfd().try_clone_to_owned().unwrap();
    inbox.read(memfd, len).unwrap()
}

#[test]
fn a_slot_is_written_again_only_after_its_receiver_read_it() {
    let (outbox, inbox) = (Outbox::default(), Inbox::default());
    let first = outbox.write(&[1; 100_000]).unwrap();
    let first_inode = inode(&first);
    first.sent();
    // Not read yet: the next message goes elsewhere.
    let second = outbox.write(&[2; 100_000]).unwrap();
    let second_inode = inode(&second);
    assert_ne!(second_inode, first_inode);
    assert_eq!(read_it(&inbox, &second, 100_000), vec![2; 100_000]);
    second.sent();
    // The second is read: it is used again, and the first still holds 1s.
    let third = outbox.write(&[3; 70_000]).unwrap();
    assert_eq!(inode(&third), second_inode);
    assert_eq!(read_it(&inbox, &third, 70_000), vec![3; 70_000]);
    third.sent();
    let slots = outbox.slots.lock().unwrap();
    assert_eq!(slots.len(), 2);
    // SAFETY: the first slot is BUSY: nobody writes it.
    let kept = unsafe { std::slice::from_raw_parts(slots[0].map.data(), 100_000) };
    assert!(kept.iter().all(|&b| b == 1));
}

#[test]
fn an_unsent_slot_is_free_again() {
    let outbox = Outbox::default();
    let first = outbox.write(&[1; 100_000]).unwrap();
    let first_inode = inode(&first);
    drop(first);
    let again = outbox.write(&[2; 100_000]).unwrap();
    assert_eq!(inode(&again), first_inode);
}

#[test]
fn a_sender_keeps_at_most_its_bound_and_then_gives_up_free_ones() {
    let outbox = Outbox::default();
    for _ in 0..MAX_SLOTS {
        outbox.write(&[0; 100_000]).unwrap().sent();
    }
    // Every kept slot is busy, and no more may be kept: a fresh memfd.
    assert!(outbox.write(&[0; 100_000]).is_none());
    assert!(outbox.write(&[0; MAX_POOLED + 1]).is_none());
    // One made free: a larger message retires it to make room.
    let slots = outbox.slots.lock().unwrap().clone();
    slots[3].map.state().store(FREE, Ordering::Release);
    let large = outbox.write(&[0; 1 << 20]).unwrap();
    assert_eq!(slots[3].map.state().load(Ordering::Relaxed), RETIRED);
    assert_eq!(outbox.slots.lock().unwrap().len(), MAX_SLOTS);
    assert_eq!(large.slot.map.room(), 1 << 20);
}

#[test]
fn a_receiver_drops_its_mapping_of_a_memfd_its_sender_gave_up() {
    let (outbox, inbox) = (Outbox::default(), Inbox::default());
    let small = outbox.write(&[1; 100_000]).unwrap();
    assert_eq!(read_it(&inbox, &small, 100_000), vec![1; 100_000]);
    small.sent();
    for _ in 1..MAX_SLOTS {
        outbox.write(&[2; 1 << 20]).unwrap().sent();
    }
    // The pool is full, and only the small one is free: a larger message
    // retires it, and the receiver's next new mapping drops it.
    let large = outbox.write(&[3; 2 << 20]).unwrap();
    assert_eq!(read_it(&inbox, &large, 2 << 20), vec![3; 2 << 20]);
    let maps = inbox.maps.lock().unwrap();
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0].1.room(), 2 << 20);
}

#[test]
fn a_receiver_maps_a_memfd_once_and_keeps_its_bound() {
    let (outbox, inbox) = (Outbox::default(), Inbox::default());
    for i in 0..3u8 {
        let written = outbox.write(&[i; 100_000]).unwrap();
        assert_eq!(read_it(&inbox, &written, 100_000), vec![i; 100_000]);
        written.sent();
    }
    assert_eq!(inbox.maps.lock().unwrap().len(), 1);
    for i in 0..MAX_MAPS + 3 {
        let other = Outbox::default();
        let written = other.write(&[i as u8; 100]).unwrap();
        assert_eq!(read_it(&inbox, &written, 100), vec![i as u8; 100]);
    }
    assert_eq!(inbox.maps.lock().unwrap().len(), MAX_MAPS);
}

#[test]
fn memory_too_short_or_not_sealed_is_refused_not_read() {
    let inbox = Inbox::default();
    let written = Outbox::default().write(&[1; 100]).unwrap();
    let memfd = written.memfd().try_clone_to_owned().unwrap();
    let e = inbox.read(memfd, MIN_SLOT + 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "could not decode a message: a message of {} bytes came in memory of {} bytes, \
             too short to hold it",
            MIN_SLOT + 1,
            MIN_SLOT + HEADER
        )
    );
    let plain = memfd_create("plain", MFdFlags::MFD_CLOEXEC).unwrap();
    nix::unistd::ftruncate(&plain, 2 * HEADER as i64).unwrap();
    let e = inbox
        .read(plain.as_fd().try_clone_to_owned().unwrap(), 10)
        .unwrap_err();
    assert!(e.to_string().contains("not sealed"), "{e}");
    let e = read_once(plain, 10).unwrap_err();
    assert!(e.to_string().contains("not sealed"), "{e}");
}

#[test]
fn memory_that_is_not_shared_memory_is_refused_not_read() {
    // A file of the disk's file system cannot be sealed at all (one of a
    // tmpfs could, but is not).
    let file = temporary_file();
    file.set_len(2 * HEADER as u64).unwrap();
    let e = read_once(OwnedFd::from(file), 10).unwrap_err().to_string();
    assert!(
        e.starts_with("fcntl failed: EINVAL") || e.ends_with("it is not read"),
        "{e}"
    );
    // A huge-page memfd, sealed, where the kernel has huge pages at all.
    let Ok(huge) = memfd_create(
        "huge",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_HUGETLB,
    ) else {
        return;
    };
    if nix::unistd::ftruncate(&huge, 4 << 20).is_err() {
        return;
    }
    fcntl(&huge, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).unwrap();
    let e = read_once(huge, 10).unwrap_err();
    assert!(e.to_string().contains("not ordinary shared memory"), "{e}");
}

/// A new file in the temporary directory, already unlinked.
fn temporary_file() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("mpcore-large-{}", std::process::id()));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}
