//! The handshake between a [`Listener`](super::Listener) and a
//! [`Client`](super::Client), packets on the new connection:
//!
//! 1. listener: `mpcore-connection/1`, a byte (1: it has a key), and with
//!    a key a random challenge of 32 bytes;
//! 2. client, when there is a key: HMAC-SHA256 of the challenge under
//!    the key, and a challenge of its own;
//! 3. listener: `#FAILURE#` (and it hangs up), or `#WELCOME#` and its
//!    HMAC of the client's challenge.
//!
//! So each side proves that it knows the key without sending it, as
//! Python's `authkey` does (`deliver_challenge` and `answer_challenge`,
//! both ways). The two HMACs are over different labels, so that an
//! answer of one side can never serve as the other's.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::SPIN;
use crate::base::{Error, Result};
use crate::os::{poll, spin};
use crate::wire::channel;

const HELLO: &[u8] = b"mpcore-connection/1";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NONCE: usize = 32;
const MAC: usize = 32;

/// HMAC-SHA256 (RFC 2104) of `label` then `message` under `key`.
pub(super) fn hmac(key: &[u8], label: &[u8], message: &[u8]) -> [u8; MAC] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..MAC].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(label)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Whether `a` and `b` are equal, in a time that does not depend on
/// where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes from the kernel.
fn nonce() -> Result<[u8; NONCE]> {
    let mut buf = [0u8; NONCE];
    let mut filled = 0;
    while filled < NONCE {
        // SAFETY: the kernel writes at most `NONCE - filled` bytes into
        // `buf` from `filled` on, which is ours and that long.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), NONCE - filled, 0) };
        match nix::errno::Errno::result(n) {
            Ok(n) => filled += n as usize,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::os("getrandom", e)),
        }
    }
    Ok(buf)
}

fn failed(reason: impl Into<String>) -> Error {
    Error::AuthenticationFailed {
        reason: reason.into(),
    }
}

/// The next packet, waiting until `until` (`None`: for ever).
///
/// The other side answers a handshake within microseconds when it runs:
/// look again for up to [`SPIN`] before sleeping.
fn recv_until(fd: BorrowedFd<'_>, until: Option<Instant>) -> Result<Vec<u8>> {
    let soon = spin::until(Instant::now() + SPIN, || {
        channel::try_recv_bytes(fd).transpose()
    });
    if let Some(packet) = soon {
        return packet;
    }
    loop {
        if let Some(packet) = channel::try_recv_bytes(fd)? {
            return Ok(packet);
        }
        let [ready] = poll::readable([fd], until)?;
        if !ready {
            return Err(failed("the other side did not answer in time"));
        }
    }
}

/// The listener's side, on a connection just accepted: `Ok` when the
/// client may in.
pub(super) fn serve(fd: BorrowedFd<'_>, key: Option<&[u8]>, until: Instant) -> Result<()> {
    let Some(key) = key else {
        let mut hello = HELLO.to_vec();
        hello.push(0);
        return channel::send_bytes(fd, &hello);
    };
    let challenge = nonce()?;
    let mut hello = HELLO.to_vec();
    hello.push(1);
    hello.extend_from_slice(&challenge);
    channel::send_bytes(fd, &hello)?;
    let reply = recv_until(fd, Some(until))?;
    let good = reply.len() == MAC + NONCE && same(&reply[..MAC], &hmac(key, b"client", &challenge));
    if !good {
        // The client may be gone already: what matters is that it is out.
        let _ = channel::try_send_bytes(fd, FAILURE);
        return Err(failed("the client's answer to the challenge was wrong"));
    }
    let mut welcome = WELCOME.to_vec();
    welcome.extend_from_slice(&hmac(key, b"listener", &reply[MAC..]));
    channel::send_bytes(fd, &welcome)
}

/// The client's side, on a connection just made: waits for the
/// listener's greeting for as long as the listener takes to accept,
/// then for its verdict until `until`.
pub(super) fn greet(fd: BorrowedFd<'_>, key: Option<&[u8]>, until: Instant) -> Result<()> {
    // A listener that is waiting in `accept` greets within microseconds:
    // look again for up to `SPIN` before sleeping for as long as it takes.
    let soon = spin::until(Instant::now() + SPIN, || {
        channel::try_recv_bytes(fd).transpose()
    });
    let hello = match soon.unwrap_or_else(|| channel::recv_bytes(fd)) {
        Err(Error::Disconnected) => {
            return Err(failed(
                "the listener hung up before it greeted us (a listener refuses a client of \
                 another user)",
            ));
        }
        hello => hello?,
    };
    let Some(rest) = hello.strip_prefix(HELLO) else {
        return Err(failed("the other side is not an mpcore listener"));
    };
    let (wants_key, challenge) = match rest {
        [0] => (false, &[][..]),
        [1, challenge @ ..] if challenge.len() == NONCE => (true, challenge),
        _ => {
            return Err(failed(
                "the listener's greeting is not one that this mpcore reads",
            ));
        }
    };
    let key = match (key, wants_key) {
        (None, false) => return Ok(()),
        (Some(key), true) => key,
        (None, true) => {
            return Err(failed(
                "the listener asks for an authentication key, and this client was given none",
            ));
        }
        (Some(_), false) => {
            return Err(failed(
                "the listener has no authentication key, so it cannot prove that it knows ours",
            ));
        }
    };
    let ours = nonce()?;
    let mut reply = hmac(key, b"client", challenge).to_vec();
    reply.extend_from_slice(&ours);
    channel::send_bytes(fd, &reply).map_err(|_| failed("the listener hung up"))?;
    let verdict = match recv_until(fd, Some(until)) {
        Err(Error::Disconnected) => return Err(failed("the listener hung up")),
        verdict => verdict?,
    };
    if verdict == FAILURE {
        return Err(failed(
            "the listener refused our authentication key (the two keys differ)",
        ));
    }
    match verdict.strip_prefix(WELCOME) {
        Some(mac) if same(mac, &hmac(key, b"listener", &ours)) => Ok(()),
        _ => Err(failed(
            "the listener's answer to our challenge was wrong: it does not know our key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 2: key "Jefe".
        let mac = hmac(b"Jefe", b"", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac(
            &[0xaa; 131],
            b"",
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn same_compares_whole_slices() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
