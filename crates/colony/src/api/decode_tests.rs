//! The local API's JSON bodies, fuzzed: arbitrary bytes and arbitrary
//! JSON for `POST /v1/jobs`, and every kind of number for the fault
//! tolerance (NaN, infinities, 1e-9, 1e400, huge integers). Decoding and
//! resolving end in a value or an error, never a panic; a resolved fault
//! tolerance is always valid.

use proptest::prelude::*;

use super::{FtRequest, SubmitRequest};

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Number literals as they may appear in a body, valid JSON or not.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1e-9".to_string()),
        Just("1e400".to_string()),
        Just("-1e400".to_string()),
        Just("1e19".to_string()),
        Just("1.8446744073709552e19".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-0".to_string()),
        Just("0".to_string()),
        Just("5e-324".to_string()),
        Just("NaN".to_string()),
        Just("Infinity".to_string()),
        Just("1".to_string()),
        Just("255".to_string()),
        Just("256".to_string()),
        Just("-1".to_string()),
        any::<f64>().prop_map(|x| format!("{x:e}")),
        any::<i64>().prop_map(|x| x.to_string()),
        any::<u64>().prop_map(|x| x.to_string()),
    ]
}

/// JSON values of any kind, as text.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        number_text(),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        "\\PC{0,12}".prop_map(|s| serde_json::Value::String(s).to_string()),
        Just("\"copies:2\"".to_string()),
        Just("\"shards:255+255\"".to_string()),
        Just("\"shards:1+\"".to_string()),
        Just("\"local\"".to_string()),
        Just("\"checkpoint\"".to_string()),
        Just("\"none\"".to_string()),
    ]
}

const FT_FIELDS: [&str; 6] = [
    "protocol",
    "ttc_s",
    "storage",
    "home_size",
    "durable",
    "unknown",
];

fn body() -> impl Strategy<Value = String> {
    let ft = proptest::collection::vec(
        (proptest::sample::select(&FT_FIELDS[..]), value_text()),
        0..6,
    )
    .prop_map(|fields| {
        let inner: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!("{{{}}}", inner.join(", "))
    });
    (
        value_text(),
        proptest::collection::vec(value_text(), 0..3),
        proptest::option::of(prop_oneof![ft, value_text()]),
    )
        .prop_map(|(app, args, ft)| {
            let mut fields = vec![
                format!("\"app\": {app}"),
                format!("\"args\": [{}]", args.join(", ")),
            ];
            if let Some(ft) = ft {
                fields.push(format!("\"fault_tolerance\": {ft}"));
            }
            format!("{{{}}}", fields.join(", "))
        })
}

fn check(request: SubmitRequest) -> Result<(), TestCaseError> {
    if let Some(ft) = request.fault_tolerance {
        if let Ok(ft) = ft.resolve() {
            prop_assert!(ft.validate().is_ok(), "resolved {ft:?} is not valid");
            prop_assert!(!ft.ttc.is_zero());
        }
    }
    Ok(())
}

fn ttc() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(1e-9),
        Just(-0.0),
        Just(0.0),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        Just(1e19),
        Just(u64::MAX as f64),
        Just(f64::MAX),
        any::<f64>(),
    ]
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn bodies_from_garbage_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(request) = serde_json::from_slice::<SubmitRequest>(&bytes) {
            check(request)?;
        }
    }

    #[test]
    fn json_bodies_resolve_or_fail(text in body()) {
        if let Ok(request) = serde_json::from_str::<SubmitRequest>(&text) {
            check(request)?;
        }
    }

    #[test]
    fn fault_tolerance_of_any_numbers_resolves_or_fails(
        ttc_s in proptest::option::of(ttc()),
        home_size in proptest::option::of(prop_oneof![any::<i64>(), -2i64..300]),
        storage in proptest::option::of("local|copies:[0-9]{1,4}|shards:[0-9]{1,3}\\+[0-9]{1,3}|\\PC{0,8}"),
        protocol in proptest::option::of("none|checkpoint|\\PC{0,8}"),
        durable in proptest::option::of(any::<bool>()),
    ) {
        let request = FtRequest { protocol, ttc_s, storage, home_size, durable };
        if let Ok(ft) = request.resolve() {
            prop_assert!(ft.validate().is_ok());
            let ttc_s = ttc_s.unwrap_or(1.0);
            prop_assert!(ttc_s.is_finite() && ttc_s > 0.0, "ttc_s {ttc_s} accepted");
        }
    }
}
