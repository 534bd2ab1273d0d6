//! Section 6 of the 多进程 tutorial, "共享内存 shared memory": a `Value` and an `Array`
//! that a child process changes and the parent reads, then the tutorial's
//! table of type codes with the Rust type for each.
//!
//! The Python it mirrors:
//!
//! ```python
//! import multiprocessing as mp
//!
//! value1 = mp.Value('i', 0)
//! value2 = mp.Value('d', 3.14)
//! array = mp.Array('i', [1, 2, 3, 4])
//! ```
//!
//! Run it with
//!
//!     cargo run -p shared_memory_demo
//!
//! It prints the three objects before and after the child changes them
//! (`value1 = 1, value2 = 6.28, array = [1, 4, 9, 16]` after), then the
//! table: each type code, its C type and Python type as in the tutorial,
//! the Rust type that takes their place, the tutorial's minimum size and
//! the size measured here with `size_of`.

use std::any::type_name;
use std::ffi::{c_long, c_ulong};

use mpcore::{Array, Process, Value};

/// The child's work: add 1, double, square each item. Each step takes the
/// object's lock, so the parent never reads half a write.
fn change(value1: &Value<i32>, value2: &Value<f64>, array: &Array<i32>) -> mpcore::Result<()> {
    value1.set(value1.get()? + 1)?; // value1.value += 1
    *value2.lock()? *= 2.0; // with value2.get_lock(): value2.value *= 2
    array.lock()?.iter_mut().for_each(|x| *x *= *x);
    Ok(())
}

fn print_all(
    when: &str,
    value1: &Value<i32>,
    value2: &Value<f64>,
    array: &Array<i32>,
) -> mpcore::Result<()> {
    let (v1, v2, a) = (value1.get()?, value2.get()?, array.to_vec()?);
    println!("{when}: value1 = {v1}, value2 = {v2}, array = {a:?}");
    Ok(())
}

/// One row of the table; the sizes and the real type behind an alias
/// (`c_long` is `i64` here) come from the compiler, not from the page.
macro_rules! row {
    ($code:literal, $c_type:literal, $python:literal, $rust:ty, $tutorial_min:literal) => {{
        let named = stringify!($rust);
        let real = type_name::<$rust>();
        let rust = if named == real {
            named.to_owned()
        } else {
            format!("{named} = {real}")
        };
        println!(
            "{:<6} {:<20} {:<19} {:<14} {:>18} {:>10}",
            concat!("'", $code, "'"),
            $c_type,
            $python,
            rust,
            $tutorial_min,
            size_of::<$rust>()
        );
    }};
}

// The tutorial's 3.14 is a number to store, not an approximation of π.
#[allow(clippy::approx_constant)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // mp.Value('i', 0), mp.Value('d', 3.14), mp.Array('i', [1, 2, 3, 4]):
    // the type code becomes the Rust type.
    let value1 = Value::new(0i32)?;
    let value2 = Value::new(3.14f64)?;
    let array = Array::new(&[1i32, 2, 3, 4])?;
    print_all("before the child", &value1, &value2, &array)?;

    // The child gets handles of its own: clones, which share the very same
    // memory, as Python's args=(value1, value2, array) would.
    let mut child = Process::spawn({
        let (value1, value2, array) = (value1.clone(), value2.clone(), array.clone());
        move || change(&value1, &value2, &array).map_err(|e| e.to_string())
    })?;
    child.join()??;
    print_all("after the child ", &value1, &value2, &array)?;

    println!();
    println!(
        "{:<6} {:<20} {:<19} {:<14} {:>18} {:>10}",
        "code", "C type", "Python type", "Rust type", "tutorial's minimum", "size here"
    );
    row!("b", "signed char", "int", i8, 1);
    row!("B", "unsigned char", "int", u8, 1);
    // Py_UNICODE is a wchar_t: 4 bytes on Linux. `char` is not plain data
    // (not every u32 is a char), so a u32 holds the character's number.
    row!("u", "Py_UNICODE", "Unicode character", u32, 2);
    row!("h", "signed short", "int", i16, 2);
    row!("H", "unsigned short", "int", u16, 2);
    row!("i", "signed int", "int", i32, 2);
    row!("I", "unsigned int", "int", u32, 2);
    row!("l", "signed long", "int", c_long, 4);
    row!("L", "unsigned long", "int", c_ulong, 4);
    row!("q", "signed long long", "int", i64, 8);
    row!("Q", "unsigned long long", "int", u64, 8);
    row!("f", "float", "float", f32, 4);
    row!("d", "double", "float", f64, 8);
    Ok(())
}
