//! Where each message goes in the ring: its size, the pages it keeps
//! warm, and [`place`], the rules a `put` follows (under the producers'
//! lock) to find room.

/// The ring's size. Positions fit in 32 bits.
pub(super) const CAP: usize = 1 << 31;
/// The bytes at the start of the ring that stay in memory once written,
/// for the next messages: everything beyond is given back as it is read.
pub(super) const KEEP: usize = 8 << 20;
/// A `put` into an empty queue whose tail is past this starts again at the
/// beginning of the ring.
pub(super) const EARLY_WRAP: usize = 1 << 20;
/// A `put` whose tail is past this, into a ring whose start has room
/// again, starts again at the beginning: past [`EARLY_WRAP`] for a ring
/// that is not empty, half of [`KEEP`], so that a busy queue goes round
/// within the pages it keeps.
pub(super) const BUSY_WRAP: usize = KEEP / 2;

/// Where a record of `rec` bytes can go, with the head and tail at these
/// positions; `None` when there is no room. `empty` when nothing lies
/// between them: then the record may start again at 0. A put must never
/// make the tail catch the head: that would read as empty.
pub(super) fn place(head: usize, tail: usize, rec: usize, empty: bool) -> Option<usize> {
    if empty {
        // Back to the start, if the record ends before the old tail: the
        // mark that sends readers there stays whole, and the new tail
        // stays short of the head.
        let back = rec < tail && (tail > EARLY_WRAP || rec > CAP - tail);
        return Some(if back { 0 } else { tail });
    }
    if tail > head {
        // Start again at 0 once the tail is well into the ring and the
        // start has room: the ring then keeps going round the same warm
        // pages, instead of moving on into fresh ones that the kernel must
        // zero, while what it left behind is given back.
        if tail >= BUSY_WRAP && rec < head {
            return Some(0);
        }
        if rec < CAP - tail || (rec == CAP - tail && head != 0) {
            return Some(tail);
        }
        // Skip the end of the ring; start again at 0.
        return (rec < head).then_some(0);
    }
    (rec < head - tail).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_never_lets_the_tail_catch_the_head() {
        assert_eq!(place(0, 0, 16, true), Some(0));
        assert_eq!(place(64, 64, 16, true), Some(64));
        assert_eq!(place(EARLY_WRAP + 8, EARLY_WRAP + 8, 16, true), Some(0));
        // A record that would reach the old tail, where the mark is, goes
        // on from there instead.
        let tail = EARLY_WRAP + 8;
        assert_eq!(place(tail, tail, tail, true), Some(tail));
        assert_eq!(place(tail, tail, tail - 8, true), Some(0));
        assert_eq!(place(0, CAP - 16, 16, false), None);
        assert_eq!(place(8, CAP - 16, 16, false), Some(CAP - 16));
        assert_eq!(place(16, CAP - 8, 16, false), None);
        assert_eq!(place(24, CAP - 8, 16, false), Some(0));
        assert_eq!(place(64, 32, 24, false), Some(32));
        assert_eq!(place(64, 32, 32, false), None);
        // Well into the ring, with room at the start: round again.
        assert_eq!(place(64, BUSY_WRAP, 56, false), Some(0));
        assert_eq!(place(64, BUSY_WRAP, 64, false), Some(BUSY_WRAP));
        assert_eq!(place(64, BUSY_WRAP - 8, 56, false), Some(BUSY_WRAP - 8));
    }
}
