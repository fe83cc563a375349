//! Mutations of a valid input: byte-level (flip, set, truncate, splice a hostile token,
//! duplicate a span) and JSON-level (a value replaced by a wrong type, a huge, negative or
//! overflowing number, `NaN`, deep nesting, a long string or a path out of the folder; a key
//! removed). Operations are plain data so proptest shrinks a failing case to a few of them.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// Tokens spliced into bytes or text: numbers that overflow, hostile paths, stray syntax.
const TOKENS: [&[u8]; 12] = [
    b"null",
    b"-1",
    b"1e400",
    b"NaN",
    b"\"\"",
    b"[]",
    b"{}",
    b"\"../../x\"",
    b"18446744073709551616",
    b"4294967296",
    b"\xff\xfe",
    b"\0",
];

#[derive(Clone, Debug)]
pub enum ByteOp {
    Flip { at: Index, bit: u8 },
    Set { at: Index, byte: u8 },
    Truncate { at: Index },
    Splice { at: Index, cut: u8, token: Index },
    Duplicate { at: Index, len: u8 },
}

pub fn byte_ops() -> impl Strategy<Value = Vec<ByteOp>> {
    let op = prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(at, bit)| ByteOp::Flip { at, bit }),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| ByteOp::Set { at, byte }),
        1 => any::<Index>().prop_map(|at| ByteOp::Truncate { at }),
        2 => (any::<Index>(), 0..8u8, any::<Index>())
            .prop_map(|(at, cut, token)| ByteOp::Splice { at, cut, token }),
        1 => (any::<Index>(), 1..64u8).prop_map(|(at, len)| ByteOp::Duplicate { at, len }),
    ];
    proptest::collection::vec(op, 1..5)
}

/// `base` with `ops` applied in order.
pub fn apply_bytes(base: &[u8], ops: &[ByteOp]) -> Vec<u8> {
    let mut m = base.to_vec();
    for op in ops {
        if m.is_empty() {
            break;
        }
        let len = m.len();
        match op {
            ByteOp::Flip { at, bit } => m[at.index(len)] ^= 1 << bit,
            ByteOp::Set { at, byte } => m[at.index(len)] = *byte,
            ByteOp::Truncate { at } => m.truncate(at.index(m.len())),
            ByteOp::Splice { at, cut, token } => {
                let start = at.index(m.len());
                let end = (start + usize::from(*cut)).min(m.len());
                m.splice(
                    start..end,
                    TOKENS[token.index(TOKENS.len())].iter().copied(),
                );
            }
            ByteOp::Duplicate { at, len } => {
                let start = at.index(m.len());
                let end = (start + usize::from(*len)).min(m.len());
                let span = m[start..end].to_vec();
                m.splice(end..end, span);
            }
        }
    }
    m
}

/// A value that does not belong where it is put.
#[derive(Clone, Debug)]
pub enum Weird {
    Null,
    Bool,
    Zero,
    Negative,
    Huge,
    Float,
    /// Raw text that is no valid value of any Rust number type (or no JSON at all).
    Raw(&'static str),
    Deep(usize),
    LongString,
    Path,
    EmptyArray,
    EmptyObject,
}

const RAW: [&str; 6] = [
    "1e400",
    "-1e400",
    "NaN",
    "18446744073709551616",
    "1.7976931348623157e308",
    "-9223372036854775809",
];

#[derive(Clone, Debug)]
pub enum JsonOp {
    Replace { at: Index, with: Weird },
    Remove { at: Index },
}

pub fn json_ops() -> impl Strategy<Value = Vec<JsonOp>> {
    let weird = prop_oneof![
        Just(Weird::Null),
        Just(Weird::Bool),
        Just(Weird::Zero),
        Just(Weird::Negative),
        Just(Weird::Huge),
        Just(Weird::Float),
        any::<Index>().prop_map(|i| Weird::Raw(RAW[i.index(RAW.len())])),
        (1..300usize).prop_map(Weird::Deep),
        Just(Weird::LongString),
        Just(Weird::Path),
        Just(Weird::EmptyArray),
        Just(Weird::EmptyObject),
    ];
    let op = prop_oneof![
        4 => (any::<Index>(), weird).prop_map(|(at, with)| JsonOp::Replace { at, with }),
        1 => any::<Index>().prop_map(|at| JsonOp::Remove { at }),
    ];
    proptest::collection::vec(op, 1..4)
}

/// JSON pointers of every value below the root.
fn pointers(v: &Value, here: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{here}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{here}/{i}");
                out.push(p.clone());
                pointers(child, &p, out);
            }
        }
        _ => {}
    }
}

/// `base` (a JSON document) with `ops` applied, serialised; raw replacements are spliced in as
/// text, so the result may be invalid JSON on purpose.
pub fn apply_json(base: &[u8], ops: &[JsonOp]) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<Value>(base) else {
        return base.to_vec();
    };
    let mut raws = Vec::new();
    for op in ops {
        let mut all = Vec::new();
        pointers(&doc, "", &mut all);
        if all.is_empty() {
            break;
        }
        let (at, with) = match op {
            JsonOp::Replace { at, with } => (at, Some(with)),
            JsonOp::Remove { at } => (at, None),
        };
        let pointer = &all[at.index(all.len())];
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        let Some(new) = with.map(|w| weird_value(w, &mut raws)) else {
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        items.remove(i);
                    }
                }
                _ => {}
            }
            continue;
        };
        if let Some(slot) = doc.pointer_mut(pointer) {
            *slot = new;
        }
    }
    let mut text = serde_json::to_string(&doc).unwrap_or_default();
    for (i, raw) in raws.iter().enumerate() {
        text = text.replace(&format!("\"@raw{i}@\""), raw);
    }
    text.into_bytes()
}

fn weird_value(w: &Weird, raws: &mut Vec<String>) -> Value {
    let mut raw = |text: String| {
        raws.push(text);
        Value::String(format!("@raw{}@", raws.len() - 1))
    };
    match w {
        Weird::Null => Value::Null,
        Weird::Bool => Value::Bool(true),
        Weird::Zero => Value::from(0),
        Weird::Negative => Value::from(-7),
        Weird::Huge => Value::from(u64::MAX),
        Weird::Float => Value::from(1e300),
        Weird::Raw(text) => raw((*text).to_owned()),
        Weird::Deep(depth) => raw(format!("{}{}", "[".repeat(*depth), "]".repeat(*depth))),
        Weird::LongString => Value::String("x".repeat(100_000)),
        Weird::Path => Value::String("../../../../etc/passwd".into()),
        Weird::EmptyArray => Value::Array(Vec::new()),
        Weird::EmptyObject => Value::Object(serde_json::Map::new()),
    }
}
