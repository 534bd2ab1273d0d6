//! What travels: values encoded with serde, in postcard, checked to read
//! back before they leave, with a `Serialize` impl's own error words kept.

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::{Error, Result};

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    encode_into(&mut buf, value)?;
    Ok(buf)
}

/// Appends `value`'s encoding to `buf`; on failure `buf` is left as it was.
///
/// Inline, with postcard's serializer made here rather than through
/// `serialize_with_flavor`: for a tiny value (a pool task's `u64`) the
/// call and its `Result` cost more than the encoding.
#[inline]
pub(crate) fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<()> {
    let start = buf.len();
    let mut serializer = postcard::Serializer {
        output: Append(buf),
    };
    match value.serialize(&mut serializer) {
        Ok(()) => Ok(()),
        Err(e) => {
            serializer.output.0.truncate(start);
            Err(encode_error(value, e))
        }
    }
}

/// [`encode_into`], then [`check_decodes`] on what it appended: for a
/// value that travels to another process, which must be able to read it.
/// On failure `buf` is left as it was.
pub(crate) fn encode_checked_into<T: Serialize + DeserializeOwned>(
    buf: &mut Vec<u8>,
    value: &T,
) -> Result<()> {
    let start = buf.len();
    encode_into(buf, value)?;
    check_decodes::<T>(&buf[start..]).inspect_err(|_| buf.truncate(start))
}

/// Appends the encodings of `values`, one after another, to `buf`, with
/// one serializer for them all (a call of [`encode_into`] per value costs
/// more than a tiny value's encoding); returns how many. On failure `buf`
/// is left as it was, and the error is the first failing value's.
pub(crate) fn encode_each_into<T: Serialize>(
    buf: &mut Vec<u8>,
    values: impl Iterator<Item = T>,
) -> Result<u32> {
    let start = buf.len();
    let mut serializer = postcard::Serializer {
        output: Append(buf),
    };
    let mut count = 0u32;
    for value in values {
        if let Err(e) = value.serialize(&mut serializer) {
            serializer.output.0.truncate(start);
            return Err(encode_error(&value, e));
        }
        count += 1;
    }
    Ok(count)
}

/// The error for a value that postcard could not encode. A `Serialize`
/// impl's own error (`S::Error::custom("...")`) reaches postcard only as
/// "Serde Serialization Error": postcard keeps no text. The value is then
/// serialized once more, into nothing, by serde_json, which keeps the
/// text; this happens only on the way to an error.
#[cold]
fn encode_error<T: Serialize + ?Sized>(value: &T, e: postcard::Error) -> Error {
    let reason = match e {
        postcard::Error::SerdeSerCustom => match serde_json::to_writer(std::io::sink(), value) {
            Err(json) if json.is_data() => json.to_string(),
            _ => e.to_string(),
        },
        e => e.to_string(),
    };
    Error::Codec {
        action: "encode",
        reason,
    }
}

/// Checks that `encoded`, the encoding of a `T`, reads back as a `T`.
///
/// Postcard is not self-describing: a type whose `Deserialize` must look
/// at the data to know what comes (`#[serde(untagged)]`, `#[serde(flatten)]`,
/// `serde_json::Value`) or whose `Serialize` leaves a field out
/// (`skip_serializing_if`) encodes without complaint and then cannot be
/// decoded. Found out by the receiver, that would lose a message that was
/// already accepted; found out here, the sender gets the error and nothing
/// is sent. Decoding costs about what encoding did.
///
/// The value's own `Deserialize` (and `Drop`) run here, in the sender: a
/// panic in them is caught and reported as the error, as it would be if
/// the receiver had met it.
pub(crate) fn check_decodes<T: DeserializeOwned>(encoded: &[u8]) -> Result<()> {
    let read = crate::base::catch(|| match postcard::take_from_bytes::<T>(encoded) {
        Ok((_, [])) => Ok(()),
        Ok((_, rest)) => Err(unreadable(format_args!(
            "{} bytes were left over after reading it back",
            rest.len()
        ))),
        Err(e) => Err(unreadable(e)),
    });
    read.unwrap_or_else(|message| Err(panicked_reading_back(message)))
}

/// [`check_decodes`] for `count` values of `T` encoded one after another,
/// in one pass: a chunk of a pool's tasks. When one of them does not read
/// back, the error is the first such one's. Skipped for a type that
/// [`always_travels`].
pub(crate) fn check_decodes_all<T: DeserializeOwned>(encoded: &[u8], count: u32) -> Result<()> {
    if always_travels::<T>() {
        return Ok(());
    }
    let read = crate::base::catch(|| {
        // One deserializer for them all: one per value cost more than a
        // tiny value's decoding.
        let mut deserializer = postcard::Deserializer::from_bytes(encoded);
        for _ in 0..count {
            T::deserialize(&mut deserializer).map_err(unreadable)?;
        }
        match deserializer.finalize().map_err(unreadable)? {
            [] => Ok(()),
            rest => Err(unreadable(format_args!(
                "{} bytes were left over after reading it back",
                rest.len()
            ))),
        }
    });
    read.unwrap_or_else(|message| Err(panicked_reading_back(message)))
}

/// Whether every `T` encodes without fail and reads back as a `T`, so
/// that checking it would only cost time: true for the primitive types
/// and `String`, whose serde code is serde's own and postcard's (a number,
/// a `bool`, a `char` or valid UTF-8 is always written, into a `Vec`, and
/// always decodes from what encoded it), false for every other type, whose
/// `Serialize` may fail or panic, and disagree with its `Deserialize`.
///
/// Told by the type's name: a generic function without `T: 'static`
/// cannot ask for its `TypeId`. A primitive's name is the bare keyword
/// (`u64`), which no other type's is (theirs hold their path); should a
/// compiler ever name them otherwise, the check is made, which is safe.
pub(crate) fn always_travels<T: ?Sized>() -> bool {
    matches!(
        std::any::type_name::<T>(),
        "u8" | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "usize"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "isize"
            | "f32"
            | "f64"
            | "bool"
            | "char"
            | "()"
            | "alloc::string::String"
    )
}

fn panicked_reading_back(message: String) -> Error {
    Error::Codec {
        action: "encode",
        reason: format!("the value panicked while it was read back to check it: {message}"),
    }
}

fn unreadable(why: impl std::fmt::Display) -> Error {
    Error::Codec {
        action: "encode",
        reason: format!(
            "the value serializes but cannot be read back ({why}): mpcore's format, \
             postcard, is not self-describing, so #[serde(untagged)], #[serde(flatten)], \
             skip_serializing_if and serde_json::Value cannot travel in it; \
             encode such a value yourself (serde_json::to_vec, say) and send the bytes"
        ),
    }
}

/// Postcard's output, appended to a `Vec`. Postcard writes a number as a
/// few bytes at a time; copying them one by one, inline, is faster than a
/// call to `memcpy` for each (which is what `extend_from_slice` becomes).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() <= 16 {
            for &byte in bytes {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Codec {
        action: "decode",
        reason: e.to_string(),
    })
}

/// Encodes `value` into `buf` if it fits there, or else into a new `Vec`:
/// a small message costs no allocation.
pub(crate) fn encode_in<'buf, T: Serialize + ?Sized>(
    value: &T,
    buf: &'buf mut [u8],
) -> Result<Cow<'buf, [u8]>> {
    match postcard::to_slice(value, buf) {
        Ok(encoded) => Ok(Cow::Borrowed(encoded)),
        Err(_) => encode(value).map(Cow::Owned),
    }
}

/// `n` as postcard writes a length before a byte string: LEB128, 7 bits
/// a byte, low bits first. The one framing mpcore writes by hand, so that
/// what it frames reads back as a serde byte string.
pub(crate) fn length(mut n: u64, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf[i] = byte;
            return &buf[..=i];
        }
        buf[i] = byte | 0x80;
        i += 1;
    }
}

/// Appends `bytes` to `out` as a byte string: its [`length`], then it.
pub(crate) fn push_byte_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut prefix = [0u8; 10];
    out.extend_from_slice(length(bytes.len() as u64, &mut prefix));
    out.extend_from_slice(bytes);
}

/// The [`length`] at the start of `bytes`, and how many bytes it took;
/// `None` if there is none.
pub(crate) fn read_length(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

/// The byte string at the start of `bytes` ([`push_byte_string`]), and
/// what follows it; `None` if there is none.
pub(crate) fn take_byte_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, skip) = read_length(bytes)?;
    let rest = bytes.get(skip..)?;
    let len = usize::try_from(len).ok().filter(|&len| len <= rest.len())?;
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refuses to be read back. (No test in this binary forks, so a panic
    /// here cannot leave std's panic-output lock held in a child.)
    #[derive(Debug)]
    struct PanicsWhenRead;

    impl<'de> serde::Deserialize<'de> for PanicsWhenRead {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            panic!("not today")
        }
    }

    #[test]
    fn a_framed_byte_string_reads_back_as_postcard_s_own() {
        for len in [0usize, 1, 127, 128, 300, 16_384, 70_000] {
            let bytes = vec![7u8; len];
            let mut framed = Vec::new();
            push_byte_string(&mut framed, &bytes);
            framed.push(9);
            assert_eq!(
                framed[..framed.len() - 1],
                postcard::to_allocvec(&bytes[..]).unwrap()
            );
            assert_eq!(take_byte_string(&framed), Some((&bytes[..], &[9u8][..])));
        }
        assert_eq!(take_byte_string(&[5, 1, 2]), None);
    }

    #[test]
    fn only_the_primitives_and_string_skip_the_read_back() {
        assert!(always_travels::<u64>());
        assert!(always_travels::<String>());
        assert!(always_travels::<char>());
        assert!(!always_travels::<Option<u64>>());
        assert!(!always_travels::<(u64, u64)>());
        assert!(!always_travels::<std::num::NonZeroU64>());
        assert!(!always_travels::<PanicsWhenRead>());
        // Not skipped: a chunk of it is still checked, and fails.
        let e = check_decodes_all::<PanicsWhenRead>(&[], 1).unwrap_err();
        assert!(e.to_string().contains("not today"), "{e}");
        // A chunk of u64 is not read: garbage would pass, and no u64's
        // encoding is garbage.
        assert!(check_decodes_all::<u64>(&[0xff], 1).is_ok());
    }

    #[test]
    fn a_panic_while_reading_back_is_the_senders_codec_error() {
        let e = check_decodes::<PanicsWhenRead>(&[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "could not encode a message: the value panicked while it was read back to check \
             it: not today"
        );
    }
}
