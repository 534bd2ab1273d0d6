//! One scenario, one `#[test]` per start method: a scenario is written
//! once and run under every method it applies to.
//!
//! ```ignore
//! under_spawn_and_forkserver! {
//!     /// What it shows.
//!     fn a_child_returns_its_result(method) {
//!         let mut p = Builder::new().start_method(method).spawn_fn(square, 12).unwrap();
//!     }
//! }
//! ```
//!
//! makes a module `a_child_returns_its_result` with the tests `spawn` and
//! `forkserver`, each with `method` bound to its `StartMethod`
//! (`cargo test a_child_returns_its_result` runs both, `cargo test
//! ::spawn` every scenario under spawn). `under_methods!([fork: Fork,
//! spawn: Spawn] { ... })` chooses the methods. The generated modules
//! `use super::*`, so a scenario sees what its file declares.
#![allow(unused_macros)]

/// `under_methods!([test: Method, ...] { fn scenario(method) { body } ... })`:
/// a module per scenario, holding one `#[test]` per method.
macro_rules! under_methods {
    ($methods:tt { $( $(#[$meta:meta])* fn $name:ident($m:ident) $body:block )* }) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                under_methods!(@each $methods $m $body);
            }
        )*
    };
    (@each [$($test:ident: $method:ident),+ $(,)?] $m:ident $body:block) => {
        $(
            #[test]
            fn $test() {
                let $m = mpcore::StartMethod::$method;
                $body
            }
        )+
    };
}

/// The scenarios that hold for both methods that start a fresh program,
/// `Spawn` and `ForkServer`.
macro_rules! under_spawn_and_forkserver {
    ($($tests:tt)*) => {
        under_methods!([spawn: Spawn, forkserver: ForkServer] { $($tests)* });
    };
}

/// The scenarios that hold for every start method.
macro_rules! under_every_method {
    ($($tests:tt)*) => {
        under_methods!([fork: Fork, spawn: Spawn, forkserver: ForkServer] { $($tests)* });
    };
}
