//! A guest that misbehaves on request, to test the sandbox:
//!
//! - `hostile spin`: its first step never returns;
//! - `hostile hog MIB`: each step allocates and touches `MIB` more MiB;
//! - `hostile panic`: its first step panics;
//! - `hostile sum N`: behaves, summing 1..=N (one per unit of budget).
//!
//! Built to WebAssembly by `guests/modules`.

use colony_guest::{codec_struct, Divisible, Step, StepContext};

/// The misbehaviour chosen, as a code: 0 sum, 1 spin, 2 hog, 3 panic.
pub struct Hostile {
    mode: u8,
    arg: u64,
    done: u64,
    acc: u64,
    hoard: Vec<Vec<u8>>,
}

/// Encoded without the hoard: a checkpoint is just where the unit is.
struct Wire {
    mode: u8,
    arg: u64,
    done: u64,
    acc: u64,
}

codec_struct!(Wire {
    mode,
    arg,
    done,
    acc
});

impl colony_guest::codec::Encode for Hostile {
    fn encode(&self, w: &mut colony_guest::codec::Writer) {
        Wire {
            mode: self.mode,
            arg: self.arg,
            done: self.done,
            acc: self.acc,
        }
        .encode(w)
    }
}

impl colony_guest::codec::Decode for Hostile {
    fn decode(
        r: &mut colony_guest::codec::Reader<'_>,
    ) -> Result<Self, colony_guest::codec::DecodeError> {
        let wire = Wire::decode(r)?;
        Ok(Hostile {
            mode: wire.mode,
            arg: wire.arg,
            done: wire.done,
            acc: wire.acc,
            hoard: Vec::new(),
        })
    }
}

impl Divisible for Hostile {
    /// (mode, argument).
    type Params = (u8, u64);
    type Output = u64;
    const NAME: &'static str = "hostile";

    fn parse_args(args: &[String]) -> Result<(u8, u64), String> {
        let usage = "usage: hostile spin | hog MIB | panic | sum N";
        let arg = |i: usize| -> Result<u64, String> {
            args.get(i)
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| usage.to_string())
        };
        match args.first().map(String::as_str) {
            Some("sum") => Ok((0, arg(1)?)),
            Some("spin") => Ok((1, 0)),
            Some("hog") => Ok((2, arg(1)?)),
            Some("panic") => Ok((3, 0)),
            _ => Err(usage.to_string()),
        }
    }

    fn init(params: &(u8, u64)) -> Result<Self, String> {
        Ok(Hostile {
            mode: params.0,
            arg: params.1,
            done: 0,
            acc: 0,
            hoard: Vec::new(),
        })
    }

    fn step(&mut self, ctx: &mut StepContext) -> Step<u64> {
        match self.mode {
            1 => {
                // Never returns; the volatile read keeps the loop alive.
                let mut x = 0u64;
                loop {
                    x = unsafe { std::ptr::read_volatile(&x) }.wrapping_add(1);
                }
            }
            2 => {
                let chunk = vec![1u8; (self.arg as usize) << 20];
                self.hoard.push(chunk);
                ctx.count(1);
                Step::Continue
            }
            3 => panic!("the hostile guest panics on purpose"),
            _ => {
                let stop = self.arg.min(self.done + ctx.budget().max(1));
                while self.done < stop {
                    self.done += 1;
                    self.acc += self.done;
                    ctx.count(1);
                }
                if self.done == self.arg {
                    Step::Done(self.acc)
                } else {
                    Step::Continue
                }
            }
        }
    }

    fn divide(&mut self) -> Option<Self> {
        None
    }

    fn merge(a: u64, b: u64) -> u64 {
        a + b
    }

    fn describe(_params: &(u8, u64), sum: &u64) -> String {
        format!("sum {sum}")
    }

    fn output_json(sum: &u64) -> String {
        sum.to_string()
    }
}

colony_guest::export_divisible!(Hostile);
