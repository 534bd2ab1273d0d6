//! One scenario, one `#[test]` per start method: a scenario is written
//! once and run under every method it applies to.
//!
//! ```ignore
//! under_spawn_and_forkserver! {
//!     /// What it shows.
//!     fn a_child_returns_its_result(method) {
//!         let mut p = Builder::new().start_method(method).spawn_fn(square, 12)?;
//!     }
//! }
//! ```
//!
//! makes `spawn::a_child_returns_its_result` and
//! `forkserver::a_child_returns_its_result`, each with `method` bound to
//! its `StartMethod`. `under_methods!([fork: Fork, spawn: Spawn] { ... })`
//! chooses the methods. The generated modules `use super::*`, so a
//! scenario sees what its file declares.
#![allow(unused_macros)]

/// `under_methods!([module: Method, ...] { fn name(method) { body } ... })`:
/// a module per method, holding one `#[test]` per scenario.
macro_rules! under_methods {
    ([$($module:ident: $method:ident),+ $(,)?] $tests:tt) => {
        $( under_methods!(@one $module $method $tests); )+
    };
    (@one $module:ident $method:ident {
        $( $(#[$meta:meta])* fn $name:ident($m:ident) $body:block )*
    }) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    let $m = mpcore::StartMethod::$method;
                    $body
                }
            )*
        }
    };
}

/// The scenarios that hold for both methods that start a fresh program,
/// `Spawn` and `ForkServer`.
macro_rules! under_spawn_and_forkserver {
    ($($tests:tt)*) => {
        under_methods!([spawn: Spawn, forkserver: ForkServer] { $($tests)* });
    };
}
