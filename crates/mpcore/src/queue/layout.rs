//! Where each message goes in the ring: its size, the pages it keeps
//! warm, the marks that send a reader elsewhere, and [`place`], the rules
//! a `put` follows (under the producers' lock) to find room.
//!
//! A reader follows the messages from the head: each record is a length
//! and that many bytes, or a *mark* ([`SKIP`]) that says where the next
//! record is. Going back to the start of the ring is a mark to 0 (the end
//! of a *lap*); a tail that has no room left in front of the head, having
//! gone back early, goes on beyond the end of the lap the head is still
//! reading, with a mark there: so `put` waits only when the ring is full
//! (see [`place`]).

/// The ring's size. Positions fit in 32 bits.
pub(super) const CAP: usize = 1 << 31;
/// The bytes at the start of the ring that stay in memory once written,
/// for the next messages: everything beyond is given back as it is read.
pub(super) const KEEP: usize = 8 << 20;
/// A `put` into an empty queue whose tail is past this starts again at the
/// beginning of the ring.
pub(super) const EARLY_WRAP: usize = 1 << 20;
/// A `put` whose tail is past this, into a ring whose start has room
/// again and with a small backlog ([`SMALL_BACKLOG`]), starts again at the
/// beginning: past [`EARLY_WRAP`] for a ring that is not empty, half of
/// [`KEEP`], so that a busy queue goes round within the pages it keeps.
pub(super) const BUSY_WRAP: usize = KEEP / 2;
/// The most bytes between head and tail for a `put` past [`BUSY_WRAP`] to
/// start again at the beginning. Going back early leaves the tail only the
/// room in front of the head until the head comes round too; with a
/// backlog this small, that room is at least as large as the backlog, and
/// a tail that uses it up goes on beyond the lap ([`place`]), losing to
/// the detour at most this, and one message.
pub(super) const SMALL_BACKLOG: usize = BUSY_WRAP / 2;
/// A record's length word with this bit set is a mark: the next record is
/// at the position in the low bits (0: the lap ended here).
pub(super) const SKIP: u64 = 1 << 63;

/// What a producer knows of the ring, under the producers' lock.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ends {
    /// The head's position, as last seen: never ahead of the real one.
    pub(super) head: usize,
    pub(super) tail: usize,
    /// No message between them.
    pub(super) empty: bool,
    /// Where the last lap ended: the mark that sends readers back to the
    /// start, or [`CAP`] when the last lap filled the ring to its end.
    /// While the tail is behind the head, the head is in that lap, and
    /// the ring beyond it is free.
    pub(super) lap_end: usize,
    /// The tail went on beyond the end of the head's lap ([`Fence`]), and
    /// the head has yet to read the messages it left at the start.
    pub(super) start_held: bool,
}

/// Where a record of `rec` bytes can go; `None` when there is no room.
/// A put must never make the tail catch the head: that would read as
/// empty.
///
/// The record goes right behind the tail, or, with a mark at the tail,
/// - at 0 (a new lap): when the ring is empty and the tail is past
///   [`EARLY_WRAP`]; when the tail is past [`BUSY_WRAP`] with a small
///   backlog; or when the rest of the ring is too short for it;
/// - beyond the end of the head's lap, when the tail went back to the
///   start early and has no room left in front of the head. Then the
///   messages at the start are read only once the head has come round,
///   and the tail may not go back to the start before that
///   ([`Ends::start_held`]).
pub(super) fn place(ends: Ends, rec: usize) -> Option<usize> {
    let Ends { head, tail, .. } = ends;
    if ends.empty {
        // Back to the start, if the record ends before the old tail: the
        // mark that sends readers there stays whole, and the new tail
        // stays short of the head.
        let back = rec < tail && (tail > EARLY_WRAP || rec > CAP - tail);
        return Some(if back { 0 } else { tail });
    }
    if tail > head {
        if ends.start_held {
            // Towards the end only, and short of it: the start is taken.
            return (rec < CAP - tail).then_some(tail);
        }
        // Start again at 0 once the tail is well into the ring, the start
        // has room and the backlog is small: the ring then keeps going
        // round the same warm pages, instead of moving on into fresh ones
        // that the kernel must zero, while what it left behind is given
        // back.
        if tail >= BUSY_WRAP && rec < head && tail - head <= SMALL_BACKLOG {
            return Some(0);
        }
        if rec < CAP - tail || (rec == CAP - tail && head != 0) {
            return Some(tail);
        }
        // Skip the end of the ring; start again at 0.
        return (rec < head).then_some(0);
    }
    if rec < head - tail {
        return Some(tail);
    }
    // No room in front of the head: go on beyond the end of its lap, if
    // the ring has room there.
    let beyond = ends.lap_end + 8;
    (beyond + rec < CAP).then_some(beyond)
}

/// Where the tail went on beyond the end of the head's lap: from a mark at
/// `from`, near the start, to `to`. Until the head comes round to the
/// start, the ring below `from` holds messages it has yet to read. Kept
/// in one word, written before the message that makes the jump counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fence {
    pub(super) from: usize,
    pub(super) to: usize,
}

impl Fence {
    /// The fence kept in `word`, if any (0: none).
    pub(super) fn load(word: u64) -> Option<Fence> {
        let fence = Fence {
            from: (word & 0xffff_ffff) as usize,
            to: (word >> 32) as usize,
        };
        (word != 0).then_some(fence)
    }

    /// The word that keeps it (never 0: `to` is past a mark).
    pub(super) fn word(self) -> u64 {
        self.from as u64 | (self.to as u64) << 32
    }

    /// Whether it holds the start, with the head and tail here: the head
    /// is still in the lap it jumped over, between the mark at `from` and
    /// `to`, and the tail is beyond `to` (if not, the producer that wrote
    /// the fence was killed before its message counted).
    pub(super) fn holds(self, head: usize, tail: usize) -> bool {
        tail >= self.to && self.from < head && head < self.to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `place` in a ring whose last lap ended at `lap_end`.
    fn place_at(
        head: usize,
        tail: usize,
        rec: usize,
        empty: bool,
        lap_end: usize,
    ) -> Option<usize> {
        let ends = Ends {
            head,
            tail,
            empty,
            lap_end,
            start_held: false,
        };
        place(ends, rec)
    }

    /// `place` where the last lap ended at the head.
    fn place_plain(head: usize, tail: usize, rec: usize, empty: bool) -> Option<usize> {
        place_at(head, tail, rec, empty, head)
    }

    #[test]
    fn place_never_lets_the_tail_catch_the_head() {
        let place = place_plain;
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
        // No room in front of the head: beyond the end of its lap, which
        // here is the head itself (a mark at 64), if the ring has room.
        assert_eq!(place(64, 32, 32, false), Some(72));
        assert_eq!(place_at(64, 32, 32, false, CAP - 40), None);
        // Well into the ring, with room at the start: round again, but
        // only with a small backlog. Here the head moved 64 bytes, the
        // backlog is 4 MiB: going round would leave 56 bytes of room.
        assert_eq!(place(64, BUSY_WRAP, 56, false), Some(BUSY_WRAP));
        let head = BUSY_WRAP - SMALL_BACKLOG;
        assert_eq!(place(head, BUSY_WRAP, 56, false), Some(0));
        assert_eq!(place(64, BUSY_WRAP, 64, false), Some(BUSY_WRAP));
        assert_eq!(place(64, BUSY_WRAP - 8, 56, false), Some(BUSY_WRAP - 8));
    }

    #[test]
    fn a_busy_queue_goes_round_early_only_with_a_small_backlog() {
        let tail = 6 << 20;
        assert_eq!(
            place_plain(tail - SMALL_BACKLOG - 8, tail, 56, false),
            Some(tail)
        );
        assert_eq!(place_plain(tail - SMALL_BACKLOG, tail, 56, false), Some(0));
    }

    #[test]
    fn a_tail_with_no_room_in_front_of_the_head_goes_on_beyond_its_lap() {
        // The tail went back at 4 MiB with the head 1 MiB behind it; the
        // head stopped there. The tail goes on at 4 MiB + 8, beyond the
        // mark that sends the head back.
        let (head, lap_end) = (3 << 20, 4 << 20);
        let tail = head - 16;
        assert_eq!(place_at(head, tail, 8, false, lap_end), Some(tail));
        assert_eq!(place_at(head, tail, 16, false, lap_end), Some(lap_end + 8));
        // A lap that filled the ring leaves nothing beyond it.
        assert_eq!(place_at(head, tail, 16, false, CAP), None);
        // Beyond it, the start is held until the head comes round: the
        // tail goes on to the end, never onto it, and never round.
        let fence = Fence {
            from: tail,
            to: lap_end + 8,
        };
        let far = lap_end + 8 + 16;
        assert!(fence.holds(head, far));
        let held = Ends {
            head,
            tail: far,
            empty: false,
            lap_end,
            start_held: true,
        };
        assert_eq!(place(held, 16), Some(far));
        let at_end = Ends {
            tail: CAP - 16,
            ..held
        };
        assert_eq!(place(at_end, 8), Some(CAP - 16));
        assert_eq!(place(at_end, 16), None);
        // Once the head is round at the start, or beyond the fence, the
        // start is free again in front of it.
        assert!(!fence.holds(tail - 8, far));
        assert!(!fence.holds(lap_end + 8, far));
        assert_eq!(
            place(
                Ends {
                    head: 64,
                    start_held: false,
                    ..at_end
                },
                24
            ),
            Some(0)
        );
        // A fence whose jump never counted (its producer was killed
        // before) holds nothing: the tail never got beyond it.
        assert!(!fence.holds(head, tail));
        assert_eq!(Fence::load(fence.word()), Some(fence));
        assert_eq!(Fence::load(0), None);
    }
}
