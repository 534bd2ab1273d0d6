//! Values that serde can write but postcard, mpcore's format, cannot read
//! back: the sender gets the error, nothing half-sent reaches a reader,
//! and a `Serialize` impl's own error keeps its text.

use std::time::Duration;

use mpcore::{Error, Queue};
use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Number(u32),
    Text(String),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Inner {
    b: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Flattened {
    a: u32,
    #[serde(flatten)]
    inner: Inner,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Skipping {
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    n: u32,
}

/// A type whose `Serialize` fails with a text of its own.
#[derive(Debug, PartialEq, Deserialize)]
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("Refuses will not be written"))
    }
}

const NO_WAIT: Duration = Duration::from_millis(50);

/// `put` refuses `bad` with an encoding error, whose text it returns,
/// and nothing reaches the queue.
fn refused<T>(bad: T) -> String
where
    T: Serialize + for<'de> Deserialize<'de> + std::fmt::Debug,
{
    let q = Queue::new().unwrap();
    let reason = match q.put(bad) {
        Err(Error::Codec { action, reason }) => {
            assert_eq!(action, "encode");
            reason
        }
        other => panic!("expected a codec error, got {other:?}"),
    };
    assert!(matches!(q.get_timeout(NO_WAIT), Err(Error::Timeout(_))));
    reason
}

/// The text of the error for a value that encodes but cannot be read back:
/// it says why and what to do.
fn says_cannot_be_read_back(reason: &str) {
    assert!(
        reason.contains("cannot be read back") && reason.contains("serde_json::to_vec"),
        "{reason}"
    );
}

#[test]
fn an_untagged_enum_is_refused_by_put() {
    // Every value of such a type encodes, and none reads back.
    says_cannot_be_read_back(&refused(Untagged::Number(7)));
    says_cannot_be_read_back(&refused(Untagged::Text("seven".into())));
}

#[test]
fn a_flattened_struct_is_refused_by_put() {
    // Flattening writes a map of unknown length, which postcard cannot
    // even encode: the sender hears it from postcard itself.
    let reason = refused(Flattened {
        a: 1,
        inner: Inner { b: 2 },
    });
    assert_eq!(reason, "The length of a sequence must be known");
}

#[test]
fn serde_json_value_is_refused_by_put() {
    says_cannot_be_read_back(&refused(serde_json::json!({"a": [1, 2]})));
    // What the error suggests works: the bytes travel.
    let bytes = serde_json::to_vec(&serde_json::json!({"a": [1, 2]})).unwrap();
    let q = Queue::<Vec<u8>>::new().unwrap();
    q.put_bytes(&bytes).unwrap();
    let back: serde_json::Value = serde_json::from_slice(&q.get_bytes().unwrap()).unwrap();
    assert_eq!(back, serde_json::json!({"a": [1, 2]}));
}

#[test]
fn a_skipped_field_is_refused_only_when_it_is_skipped() {
    let q = Queue::new().unwrap();
    let with = Skipping {
        note: Some("kept".into()),
        n: 3,
    };
    q.put(with).unwrap();
    assert_eq!(
        q.get_timeout(NO_WAIT).unwrap(),
        Skipping {
            note: Some("kept".into()),
            n: 3
        }
    );
    says_cannot_be_read_back(&refused(Skipping { note: None, n: 4 }));
}

#[test]
fn a_serialize_error_keeps_its_own_text() {
    let q = Queue::new().unwrap();
    let err = q.put(Refuses).unwrap_err();
    match &err {
        Error::Codec { action, reason } => {
            assert_eq!(*action, "encode");
            assert_eq!(reason, "Refuses will not be written");
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    assert!(
        err.to_string().contains("Refuses will not be written"),
        "{err}"
    );
}

#[test]
fn a_process_result_that_would_not_read_back_is_reported_as_such() {
    testkit::within(Duration::from_secs(60), || {
        let mut p = mpcore::Process::spawn(|| Untagged::Number(7)).unwrap();
        let err = p.join().unwrap_err();
        let message = err
            .panic_message()
            .expect("reported as the child's failure");
        assert!(
            message.starts_with("could not send the result: "),
            "{message}"
        );
        says_cannot_be_read_back(message);
    });
}

fn number_of(x: u32) -> Untagged {
    Untagged::Number(x)
}

fn echo(u: Untagged) -> u32 {
    match u {
        Untagged::Number(n) => n,
        Untagged::Text(t) => t.len() as u32,
    }
}

#[test]
fn a_pool_refuses_arguments_and_results_that_would_not_read_back() {
    testkit::within(Duration::from_secs(60), || {
        let pool = mpcore::Pool::new(2).unwrap();
        match pool.map(echo, [Untagged::Number(1)]) {
            Err(Error::Codec { action, reason }) => {
                assert_eq!(action, "encode");
                says_cannot_be_read_back(&reason);
            }
            other => panic!("expected a codec error, got {other:?}"),
        }
        // A result that would not read back fails its own task, in the
        // worker, and the pool goes on.
        let results: Vec<_> = pool.imap(number_of, 0..3).unwrap().collect();
        assert_eq!(results.len(), 3);
        for result in results {
            match result {
                Err(Error::Codec { action, reason }) => {
                    assert_eq!(action, "encode");
                    says_cannot_be_read_back(&reason);
                }
                other => panic!("expected a codec error, got {other:?}"),
            }
        }
        assert_eq!(pool.map(|x: u32| x + 1, 0..3).unwrap(), [1, 2, 3]);
    });
}
