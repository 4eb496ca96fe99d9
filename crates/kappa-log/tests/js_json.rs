//! `js_json_from_str` against its model: parse to a `serde_json::Value`, then
//! `to_js_json`. The two must agree byte for byte on every text, valid or not.

use kappa_log::encoding::{js_json_from_str, to_js_json, ValueEncoding};
use proptest::prelude::*;
use serde_json::Value;

/// The model.
fn via_tree(text: &str) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_str(text).ok()?;
    to_js_json(&v).ok()
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-c\\\\\"\\u{0}-\\u{1f}é😀]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            // Few key letters, so that objects built from pairs repeat keys.
            prop::collection::vec(("[a-d]{1,2}", inner), 0..80)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Writes `v` as JSON text with whitespace from `ws` between tokens and, in
/// objects, every key of `dups` written once more before the real member (so
/// the text repeats keys as hostile input would).
fn text(v: &Value, ws: &str, dup: bool, out: &mut String) {
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                text(x, ws, dup, out);
            }
            out.push_str(ws);
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            let mut first = true;
            for (k, x) in m {
                let reps = if dup { 2 } else { 1 };
                for r in 0..reps {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    out.push_str(ws);
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push_str(ws);
                    out.push(':');
                    out.push_str(ws);
                    if r + 1 < reps {
                        out.push('0');
                    } else {
                        text(x, ws, dup, out);
                    }
                }
            }
            out.push_str(ws);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_the_value_tree(v in value(), ws in "[ \t\n\r]{0,2}", dup in any::<bool>()) {
        let mut s = String::new();
        text(&v, &ws, dup, &mut s);
        prop_assert_eq!(js_json_from_str(&s).ok(), via_tree(&s), "text {}", s);
        let mut line = via_tree(&s).unwrap();
        line.push(b'\n');
        prop_assert_eq!(ValueEncoding::Json.encode_json_text(&s).unwrap(), line);
    }

    #[test]
    fn agrees_on_any_text(s in "[\\[\\]{}\",:0-9.eE+\\-a-z \\\\]{0,40}") {
        prop_assert_eq!(js_json_from_str(&s).ok(), via_tree(&s));
    }

    #[test]
    fn agrees_on_cut_texts(v in value(), cut in any::<prop::sample::Index>()) {
        let s = serde_json::to_string(&v).unwrap();
        let mut at = cut.index(s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        let s = &s[..at];
        prop_assert_eq!(js_json_from_str(s).ok(), via_tree(s));
    }
}

#[test]
fn fixed_cases() {
    for s in [
        "0",
        "-0",
        "-0.0",
        "1e400",
        "1.5e300",
        "12345678901234567890",
        "-9223372036854775809",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "[]",
        "{}",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\":1} x",
        " null ",
        "\"\\u0000\\u001f\\u007f\"",
        "{\"\\u0061\":1,\"a\":2}",
        "[[[[[[[[[[]]]]]]]]]]",
    ] {
        assert_eq!(js_json_from_str(s).ok(), via_tree(s), "text {s}");
    }
    let deep = "[".repeat(200) + &"]".repeat(200);
    assert_eq!(js_json_from_str(&deep).ok(), via_tree(&deep));
    let wide =
        format!("{{{}}}", (0..500).map(|i| format!("\"k{}\":{i}", i % 300)).collect::<Vec<_>>().join(","));
    assert_eq!(js_json_from_str(&wide).ok(), via_tree(&wide));
}
