//! The guest side of the host–guest ABI, version [`VERSION`].
//!
//! A guest module imports nothing and exports its `memory` and these
//! functions (all `i32` unless noted). Bytes cross through two buffers the
//! guest owns: the host asks for an input buffer of `len` bytes with
//! `colony_input(len) -> ptr` and writes the call's input there, calls an
//! operation, and reads the answer at `colony_output_ptr()`, of
//! `colony_output_len()` bytes. An operation returns [`OK`] (the output is
//! its answer) or [`ERROR`] (the output is an error message in UTF-8). A
//! trap (a panic, an exhausted limit) leaves the panic's message, if any,
//! for `colony_last_panic()`.
//!
//! | export | input | output on [`OK`] |
//! |---|---|---|
//! | `colony_abi_version()` | — | returns [`VERSION`] |
//! | `colony_name()` | — | the name, UTF-8 |
//! | `colony_parse_args()` | `Vec<String>` | parameters |
//! | `colony_init()` | parameters | — (the instance now holds the unit) |
//! | `colony_restore()` | a state | — (the instance now holds the unit) |
//! | `colony_step(budget: i64)` | `Vec<SharedVar>` | [`StepReport`] |
//! | `colony_divide()` | — | `Option<Vec<u8>>`: the part's state |
//! | `colony_checkpoint()` | — | the unit's state |
//! | `colony_merge()` | `(Vec<u8>, Vec<u8>)`: two results | the merged result |
//! | `colony_initial_shared()` | parameters | `Vec<SharedVar>` |
//! | `colony_verify()` | `(Vec<u8>, Vec<u8>)`: parameters, result | `Option<bool>` |
//! | `colony_describe()` | `(Vec<u8>, Vec<u8>)`: parameters, result | text, UTF-8 |
//! | `colony_output_json()` | a result | JSON text, UTF-8 |
//! | `colony_last_panic()` | — | the last panic's message, UTF-8 |
//!
//! Types are in the [`crate::codec`] encoding. [`crate::export_divisible!`]
//! writes every export for a [`Divisible`] type.

use std::cell::RefCell;
use std::sync::Once;
use std::thread::LocalKey;

use crate::codec::{decode, encode, Decode};
use crate::{codec_struct, Divisible, SharedVar, Step, StepContext};

/// The ABI version a guest built with this crate speaks.
pub const VERSION: i32 = 1;
/// An operation succeeded; the output is its answer.
pub const OK: i32 = 0;
/// An operation failed; the output is the error message.
pub const ERROR: i32 = 1;

/// What `colony_step` answers.
pub struct StepReport {
    /// Operations done.
    pub work: u64,
    /// Whether the step improved a shared variable.
    pub improved: bool,
    /// The shared variables after the step's offers.
    pub shared: Vec<SharedVar>,
    /// The unit's result if it finished.
    pub done: Option<Vec<u8>>,
}

codec_struct!(StepReport {
    work,
    improved,
    shared,
    done
});

/// Where an instance keeps its one unit.
pub type UnitSlot<A> = LocalKey<RefCell<Option<A>>>;

thread_local! {
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

static PANIC_HOOK: Once = Once::new();

/// Keeps a panic's message where `colony_last_panic` finds it after the
/// trap that follows.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.to_string();
            LAST_PANIC.with(|last| *last.borrow_mut() = message);
        }));
    });
}

/// `colony_input`: a zeroed input buffer of `len` bytes.
pub fn input(len: i32) -> i32 {
    install_panic_hook();
    INPUT.with(|input| {
        let mut input = input.borrow_mut();
        input.clear();
        input.resize(len.max(0) as usize, 0);
        input.as_mut_ptr() as usize as i32
    })
}

/// `colony_output_ptr`.
pub fn output_ptr() -> i32 {
    OUTPUT.with(|output| output.borrow().as_ptr() as usize as i32)
}

/// `colony_output_len`.
pub fn output_len() -> i32 {
    OUTPUT.with(|output| output.borrow().len() as i32)
}

fn take_input() -> Vec<u8> {
    INPUT.with(|input| std::mem::take(&mut *input.borrow_mut()))
}

fn respond(result: Result<Vec<u8>, String>) -> i32 {
    let (code, bytes) = match result {
        Ok(bytes) => (OK, bytes),
        Err(message) => (ERROR, message.into_bytes()),
    };
    OUTPUT.with(|output| *output.borrow_mut() = bytes);
    code
}

fn decode_input<T: Decode>(what: &str) -> Result<T, String> {
    decode(&take_input()).map_err(|e| format!("corrupt {what}: {e}"))
}

fn with_unit<A: Divisible>(
    slot: &'static UnitSlot<A>,
    f: impl FnOnce(&mut A) -> Result<Vec<u8>, String>,
) -> i32 {
    respond(slot.with(|unit| match unit.borrow_mut().as_mut() {
        Some(unit) => f(unit),
        None => Err("no unit in this instance: call init or restore first".to_string()),
    }))
}

/// `colony_name`.
pub fn name<A: Divisible>() -> i32 {
    respond(Ok(A::NAME.as_bytes().to_vec()))
}

/// `colony_parse_args`: parses and validates (by building the first unit)
/// so a bad job fails at submission.
pub fn parse_args<A: Divisible>() -> i32 {
    respond(decode_input::<Vec<String>>("arguments").and_then(|args| {
        let params = A::parse_args(&args)?;
        A::init(&params)?;
        Ok(encode(&params))
    }))
}

/// `colony_init`.
pub fn init<A: Divisible>(slot: &'static UnitSlot<A>) -> i32 {
    let unit = decode_input::<A::Params>("parameters").and_then(|params| A::init(&params));
    respond(unit.map(|unit| {
        slot.with(|slot| *slot.borrow_mut() = Some(unit));
        Vec::new()
    }))
}

/// `colony_restore`.
pub fn restore<A: Divisible>(slot: &'static UnitSlot<A>) -> i32 {
    let unit = decode_input::<A>("work unit").and_then(|unit| {
        unit.validate()
            .map_err(|e| format!("corrupt work unit: {e}"))?;
        Ok(unit)
    });
    respond(unit.map(|unit| {
        slot.with(|slot| *slot.borrow_mut() = Some(unit));
        Vec::new()
    }))
}

/// `colony_step`.
pub fn step<A: Divisible>(slot: &'static UnitSlot<A>, budget: i64) -> i32 {
    let shared = match decode_input::<Vec<SharedVar>>("shared variables") {
        Ok(shared) => shared,
        Err(e) => return respond(Err(e)),
    };
    with_unit(slot, |unit| {
        let mut ctx = StepContext::new(budget.max(0) as u64, shared);
        let step = unit.step(&mut ctx);
        let done = match step {
            Step::Continue => None,
            Step::Done(output) => Some(encode(&output)),
        };
        Ok(encode(&StepReport {
            work: ctx.work(),
            improved: ctx.improved(),
            shared: ctx.into_shared(),
            done,
        }))
    })
}

/// `colony_divide`.
pub fn divide<A: Divisible>(slot: &'static UnitSlot<A>) -> i32 {
    with_unit(slot, |unit| {
        Ok(encode(&unit.divide().map(|part| encode(&part))))
    })
}

/// `colony_checkpoint`.
pub fn checkpoint<A: Divisible>(slot: &'static UnitSlot<A>) -> i32 {
    with_unit(slot, |unit| Ok(encode(unit)))
}

/// `colony_merge`.
pub fn merge<A: Divisible>() -> i32 {
    respond(
        decode_input::<(Vec<u8>, Vec<u8>)>("results").and_then(|(a, b)| {
            let a = decode::<A::Output>(&a).map_err(|e| format!("corrupt result: {e}"))?;
            let b = decode::<A::Output>(&b).map_err(|e| format!("corrupt result: {e}"))?;
            Ok(encode(&A::merge(a, b)))
        }),
    )
}

/// `colony_initial_shared`.
pub fn initial_shared<A: Divisible>() -> i32 {
    respond(
        decode_input::<A::Params>("parameters").map(|params| encode(&A::initial_shared(&params))),
    )
}

fn params_and_output<A: Divisible>() -> Result<(A::Params, A::Output), String> {
    let (params, output) = decode_input::<(Vec<u8>, Vec<u8>)>("parameters and result")?;
    let params = decode(&params).map_err(|e| format!("corrupt parameters: {e}"))?;
    let output = decode(&output).map_err(|e| format!("corrupt result: {e}"))?;
    Ok((params, output))
}

/// `colony_verify`.
pub fn verify<A: Divisible>() -> i32 {
    respond(params_and_output::<A>().map(|(params, output)| encode(&A::verify(&params, &output))))
}

/// `colony_describe`.
pub fn describe<A: Divisible>() -> i32 {
    respond(
        params_and_output::<A>().map(|(params, output)| A::describe(&params, &output).into_bytes()),
    )
}

/// `colony_output_json`.
pub fn output_json<A: Divisible>() -> i32 {
    respond(decode_input::<A::Output>("result").map(|output| A::output_json(&output).into_bytes()))
}

/// `colony_last_panic`.
pub fn last_panic() -> i32 {
    let message = LAST_PANIC.with(|last| last.borrow().clone());
    respond(Ok(message.into_bytes()))
}

/// Exports the ABI for a [`Divisible`] type; call it once, at the end of a
/// guest's `lib.rs`. The exports exist only when building for `wasm32`, so
/// the same crate also builds natively for tests.
#[macro_export]
macro_rules! export_divisible {
    ($app:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod colony_guest_exports {
            use std::cell::RefCell;

            use $crate::abi;

            #[allow(unused_imports)]
            use super::*;

            thread_local! {
                static UNIT: RefCell<Option<$app>> = const { RefCell::new(None) };
            }

            #[no_mangle]
            pub extern "C" fn colony_abi_version() -> i32 {
                abi::VERSION
            }
            #[no_mangle]
            pub extern "C" fn colony_input(len: i32) -> i32 {
                abi::input(len)
            }
            #[no_mangle]
            pub extern "C" fn colony_output_ptr() -> i32 {
                abi::output_ptr()
            }
            #[no_mangle]
            pub extern "C" fn colony_output_len() -> i32 {
                abi::output_len()
            }
            #[no_mangle]
            pub extern "C" fn colony_name() -> i32 {
                abi::name::<$app>()
            }
            #[no_mangle]
            pub extern "C" fn colony_parse_args() -> i32 {
                abi::parse_args::<$app>()
            }
            #[no_mangle]
            pub extern "C" fn colony_init() -> i32 {
                abi::init::<$app>(&UNIT)
            }
            #[no_mangle]
            pub extern "C" fn colony_restore() -> i32 {
                abi::restore::<$app>(&UNIT)
            }
            #[no_mangle]
            pub extern "C" fn colony_step(budget: i64) -> i32 {
                abi::step::<$app>(&UNIT, budget)
            }
            #[no_mangle]
            pub extern "C" fn colony_divide() -> i32 {
                abi::divide::<$app>(&UNIT)
            }
            #[no_mangle]
            pub extern "C" fn colony_checkpoint() -> i32 {
                abi::checkpoint::<$app>(&UNIT)
            }
            #[no_mangle]
            pub extern "C" fn colony_merge() -> i32 {
                abi::merge::<$app>()
            }
            #[no_mangle]
            pub extern "C" fn colony_initial_shared() -> i32 {
                abi::initial_shared::<$app>()
            }
            #[no_mangle]
            pub extern "C" fn colony_verify() -> i32 {
                abi::verify::<$app>()
            }
            #[no_mangle]
            pub extern "C" fn colony_describe() -> i32 {
                abi::describe::<$app>()
            }
            #[no_mangle]
            pub extern "C" fn colony_output_json() -> i32 {
                abi::output_json::<$app>()
            }
            #[no_mangle]
            pub extern "C" fn colony_last_panic() -> i32 {
                abi::last_panic()
            }
        }
    };
}
