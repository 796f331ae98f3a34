//! The smallest useful distributed object: a counter. It shows the object
//! model in a screenful and is what `colony object` examples and the
//! exactly-once tests call (`colony object create counter 0`, then
//! `colony object call URI '{"add": 5}'`).

use colony_core::object::{ActiveObject, ObjectContext};
use serde::{Deserialize, Serialize};

/// A counter: a value and how many additions made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    value: i64,
    additions: u64,
}

/// What a counter is asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterRequest {
    /// Adds to the value; answers the new value.
    Add(i64),
    /// Answers the value.
    Get,
    /// Answers how many additions were applied: under `pml`, exactly the
    /// number of additions acknowledged to callers, whatever crashed.
    Additions,
}

impl ActiveObject for Counter {
    type Params = i64;
    type Request = CounterRequest;
    type Reply = i64;
    const TYPE: &'static str = "counter";

    fn create(_ctx: &mut ObjectContext<'_>, start: i64) -> Result<Counter, String> {
        Ok(Counter {
            value: start,
            additions: 0,
        })
    }

    fn handle(
        &mut self,
        _ctx: &mut ObjectContext<'_>,
        request: CounterRequest,
    ) -> Result<i64, String> {
        match request {
            CounterRequest::Add(n) => {
                self.value = self
                    .value
                    .checked_add(n)
                    .ok_or_else(|| format!("{} + {n} overflows", self.value))?;
                self.additions += 1;
                Ok(self.value)
            }
            CounterRequest::Get => Ok(self.value),
            CounterRequest::Additions => {
                i64::try_from(self.additions).map_err(|_| "too many additions".to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_adds_refuses_overflow_and_counts_additions() {
        let me = colony_core::object::ObjectUri::new("t", colony_core::object::Guid(1)).unwrap();
        let mut seq = 0;
        let mut ctx = ObjectContext::new(&me, &mut seq);
        let mut counter = Counter::create(&mut ctx, 40).unwrap();
        assert_eq!(counter.handle(&mut ctx, CounterRequest::Add(2)), Ok(42));
        assert!(counter
            .handle(&mut ctx, CounterRequest::Add(i64::MAX))
            .unwrap_err()
            .contains("overflows"));
        assert_eq!(counter.handle(&mut ctx, CounterRequest::Get), Ok(42));
        assert_eq!(counter.handle(&mut ctx, CounterRequest::Additions), Ok(1));
    }

    #[test]
    fn its_requests_read_as_json() {
        let request: CounterRequest = serde_json::from_str(r#"{"add": 5}"#).unwrap();
        assert_eq!(request, CounterRequest::Add(5));
        let request: CounterRequest = serde_json::from_str(r#""get""#).unwrap();
        assert_eq!(request, CounterRequest::Get);
    }
}
