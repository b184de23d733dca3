//! Checking a typed call's JSON arguments against the trait's argument types before the call.
//!
//! A Rust host that calls through the typed client always sends what serde made from the right
//! types; a JSON caller (`call_typed_json`, `fidius call`) can send anything, and Python would
//! accept `42` where the trait says `String`. The descriptor carries each argument's canonical
//! type string (the one the hash is made of), so the shapes are parsed from those strings once,
//! at load, and every typed call is checked against them: a wrong count or type is refused naming
//! the argument, the expected type and what was found.
//!
//! What is checked is what JSON can tell: strings, booleans, integers (with the Rust type's
//! range, so an integer that does not fit is refused, never rounded into a float), numbers,
//! arrays, objects and `null` for `Option`. Types the checker cannot see into (serde structs and
//! enums, `serde_json::Value`, anything unknown) accept any JSON value but one holding an integer
//! beyond 64 bits, which would reach Python as a rounded float (a result holding one is refused
//! too); Python's own errors, and the plugin's, cover the rest.

use std::fmt;

use serde::de::DeserializeSeed as _;
use serde_json::value::RawValue;
use serde_json::Value;

use super::PythonMethodDescriptor;

/// The shape of JSON a Rust argument type accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonShape {
    /// Anything: a struct, an enum, `Value`, or a type the checker does not know.
    Any,
    /// `()`: JSON `null`.
    Unit,
    Bool,
    /// A string; `char` is a string of exactly one character.
    String {
        single_char: bool,
    },
    /// An integer in `min..=max` (64-bit at most: JSON integers beyond that do not cross exactly).
    Integer {
        name: &'static str,
        min: i128,
        max: i128,
    },
    /// `f32`/`f64`: any JSON number.
    Number,
    /// `Vec<T>`, sets, slices and arrays.
    List(Box<JsonShape>),
    /// `HashMap<K, V>`/`BTreeMap<K, V>`: an object whose values are `V` (keys are JSON strings).
    Map(Box<JsonShape>),
    /// `Option<T>`: `null` or `T`.
    Optional(Box<JsonShape>),
    /// `(A, B, …)`: an array of exactly these.
    Tuple(Vec<JsonShape>),
}

/// Why a typed call's arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgumentMismatch {
    /// The payload is not a JSON array.
    NotAnArray,
    /// The payload does not parse as JSON.
    Syntax(String),
    /// Too many or too few arguments.
    Count { expected: usize, found: usize },
    /// One argument (or a part of it, `at` being a JSON-pointer-like path) has the wrong type.
    Type {
        argument: String,
        position: usize,
        at: String,
        expected: String,
        found: String,
    },
}

impl fmt::Display for ArgumentMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnArray => f.write_str("expected a JSON array of positional arguments"),
            Self::Syntax(error) => write!(f, "the arguments are not valid JSON: {error}"),
            Self::Count { expected, found } => {
                write!(f, "expected {expected} argument(s), got {found}")
            }
            Self::Type {
                argument,
                position,
                at,
                expected,
                found,
            } => {
                write!(f, "argument `{argument}` (position {position})")?;
                if !at.is_empty() {
                    write!(f, " at {at}")?;
                }
                write!(f, ": expected {expected}, found {found}")
            }
        }
    }
}

/// The argument shapes of one typed method, parsed once from its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentShapes {
    arguments: Vec<(String, JsonShape)>,
}

impl ArgumentShapes {
    /// Shapes for `method`'s arguments. An argument whose type string is empty or unknown is
    /// [`JsonShape::Any`], so a descriptor without types checks only the count.
    pub fn for_method(method: &PythonMethodDescriptor) -> Self {
        Self::for_arguments(method.args.iter().map(|arg| (arg.name, arg.ty)))
    }

    /// Shapes for the `(name, canonical type)` arguments of a method, e.g. an
    /// [`OwnedMethodDescriptor`](super::OwnedMethodDescriptor)'s `args`.
    pub fn for_arguments<'a>(arguments: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            arguments: arguments
                .into_iter()
                .map(|(name, ty)| (name.to_owned(), JsonShape::parse(ty)))
                .collect(),
        }
    }

    /// Checks `payload` (a JSON array of positional arguments).
    ///
    /// This is on every typed call's path, so the payload is checked in one streaming pass that
    /// builds nothing; only a payload that fails is parsed again to say where and why.
    pub fn check(&self, payload: &[u8]) -> Result<(), ArgumentMismatch> {
        if payload.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'[') {
            return Err(ArgumentMismatch::NotAnArray);
        }
        let mut deserializer = serde_json::Deserializer::from_slice(payload);
        let streamed = Validate::Arguments(&self.arguments)
            .deserialize(&mut deserializer)
            .and_then(|()| deserializer.end());
        match streamed {
            Ok(()) => Ok(()),
            Err(error) => Err(self
                .explain(payload)
                .err()
                .unwrap_or_else(|| ArgumentMismatch::Syntax(error.to_string()))),
        }
    }

    /// The slow path of [`check`](Self::check): what is wrong, and where.
    fn explain(&self, payload: &[u8]) -> Result<(), ArgumentMismatch> {
        let syntax = |error: serde_json::Error| ArgumentMismatch::Syntax(error.to_string());
        let arguments: Vec<&RawValue> = serde_json::from_slice(payload).map_err(syntax)?;
        if arguments.len() != self.arguments.len() {
            return Err(ArgumentMismatch::Count {
                expected: self.arguments.len(),
                found: arguments.len(),
            });
        }
        for (position, ((name, shape), raw)) in self.arguments.iter().zip(&arguments).enumerate() {
            let mismatch = |at, (expected, found)| ArgumentMismatch::Type {
                argument: name.clone(),
                position,
                at,
                expected,
                found,
            };
            let value: Value = serde_json::from_str(raw.get()).map_err(syntax)?;
            let mut at = String::new();
            shape
                .check(&value, &mut at)
                .map_err(|problem| mismatch(at, problem))?;
            // What the value cannot show: a wide integer in an untyped part (see `deserialize`).
            let mut alone = serde_json::Deserializer::from_str(raw.get());
            if Validate::Value(shape).deserialize(&mut alone).is_err() {
                let literal = wide_integer(raw.get()).unwrap_or_default();
                let excerpt: String = literal.chars().take(40).collect();
                return Err(mismatch(
                    String::new(),
                    (
                        "integers within 64 bits (JSON carries no exact integer beyond them)"
                            .to_owned(),
                        format!("{excerpt}, an integer beyond 64 bits (it would be rounded)"),
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A streaming check of JSON against shapes: a serde visitor that keeps nothing it reads.
#[derive(Clone, Copy)]
enum Validate<'a> {
    Arguments(&'a [(String, JsonShape)]),
    Value(&'a JsonShape),
}

/// What the streaming check does with a value of one JSON kind.
fn accepts(shape: &JsonShape, kind: Kind<'_>) -> bool {
    let shape = match kind {
        Kind::Null => shape,
        _ => strip_optional(shape),
    };
    match (shape, kind) {
        (JsonShape::Any, _)
        | (JsonShape::Unit | JsonShape::Optional(_), Kind::Null)
        | (JsonShape::Bool, Kind::Bool)
        | (JsonShape::Number, Kind::Int(_) | Kind::Float) => true,
        (JsonShape::String { single_char }, Kind::Str(text)) => {
            !single_char || text.chars().count() == 1
        }
        (JsonShape::Integer { min, max, .. }, Kind::Int(n)) => (*min..=*max).contains(&n),
        _ => false,
    }
}

#[derive(Clone, Copy)]
enum Kind<'t> {
    Null,
    Bool,
    Int(i128),
    Float,
    Str(&'t str),
}

impl<'de> serde::de::DeserializeSeed<'de> for Validate<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if let Validate::Value(shape) = self {
            if *strip_optional(shape) == JsonShape::Any {
                // Untyped JSON is not checked, except for what would not cross exactly: serde_json
                // reads an integer literal beyond 64 bits as a rounded float, and a result holding
                // one is refused, so an argument holding one is too. Only the literal shows it.
                let raw = <&RawValue as serde::Deserialize>::deserialize(deserializer)?;
                return match wide_integer(raw.get()) {
                    None => Ok(()),
                    Some(_) => Err(serde::de::Error::custom("argument mismatch")),
                };
            }
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Validate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("arguments of the declared types")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar(Kind::Bool)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<(), E> {
        self.scalar(Kind::Int(n.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<(), E> {
        self.scalar(Kind::Int(n.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar(Kind::Float)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<(), E> {
        self.scalar(Kind::Str(text))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.scalar(Kind::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mismatch = || serde::de::Error::custom("argument mismatch");
        let items: &[(String, JsonShape)];
        let tuple: &[JsonShape];
        match self {
            Validate::Arguments(arguments) => {
                items = arguments;
                tuple = &[];
            }
            Validate::Value(shape) => match strip_optional(shape) {
                JsonShape::List(item) => {
                    while seq.next_element_seed(Validate::Value(item))?.is_some() {}
                    return Ok(());
                }
                JsonShape::Tuple(shapes) => {
                    items = &[];
                    tuple = shapes;
                }
                _ => return Err(mismatch()),
            },
        }
        let expected = items.len().max(tuple.len());
        let shape_at = |index: usize| {
            items
                .get(index)
                .map(|(_, shape)| shape)
                .or_else(|| tuple.get(index))
        };
        for index in 0..expected {
            let Some(shape) = shape_at(index) else {
                break;
            };
            if seq.next_element_seed(Validate::Value(shape))?.is_none() {
                return Err(mismatch());
            }
        }
        match seq.next_element::<serde::de::IgnoredAny>()? {
            Some(_) => Err(mismatch()),
            None => Ok(()),
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let value_shape = match self {
            Validate::Value(shape) => match strip_optional(shape) {
                JsonShape::Map(value) => value,
                _ => return Err(serde::de::Error::custom("argument mismatch")),
            },
            Validate::Arguments(_) => return Err(serde::de::Error::custom("not an array")),
        };
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value_seed(Validate::Value(value_shape))?;
        }
        Ok(())
    }
}

impl Validate<'_> {
    fn scalar<E: serde::de::Error>(self, kind: Kind<'_>) -> Result<(), E> {
        match self {
            Validate::Value(shape) if accepts(shape, kind) => Ok(()),
            _ => Err(E::custom("argument mismatch")),
        }
    }
}

/// The first integer literal in the JSON text `json` that serde_json cannot read exactly (below
/// `i64::MIN` or above `u64::MAX`); strings are skipped. `json` is valid JSON (serde_json read it).
fn wide_integer(json: &str) -> Option<&str> {
    let bytes = json.as_bytes();
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'"' => {
                index += 1;
                while let Some(&inside) = bytes.get(index) {
                    index += if inside == b'\\' { 2 } else { 1 };
                    if inside == b'"' {
                        break;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = index;
                while bytes
                    .get(index)
                    .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    index += 1;
                }
                let literal = &json[start..index];
                let integer = !literal.contains(['.', 'e', 'E']);
                if integer && literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                    return Some(literal);
                }
            }
            _ => index += 1,
        }
    }
    None
}

fn strip_optional(shape: &JsonShape) -> &JsonShape {
    match shape {
        JsonShape::Optional(inner) => strip_optional(inner),
        other => other,
    }
}

impl JsonShape {
    /// The shape of a canonical type string such as `Option < HashMap < String, Vec < u8 > > >`.
    /// Anything it cannot read is [`JsonShape::Any`]: the check never refuses what it does not
    /// understand.
    pub fn parse(canonical: &str) -> Self {
        let tokens = tokenize(canonical);
        let mut parser = Parser {
            tokens: &tokens,
            at: 0,
        };
        match parser.ty() {
            Some(shape) if parser.at == tokens.len() => shape,
            _ => Self::Any,
        }
    }

    /// Checks `value`; on a mismatch, `at` holds the path to it and the error says what was
    /// expected and found.
    fn check(&self, value: &Value, at: &mut String) -> Result<(), (String, String)> {
        let mismatch = || Err((self.to_string(), describe(value)));
        match (self, value) {
            (Self::Any, _) | (Self::Unit, Value::Null) | (Self::Bool, Value::Bool(_)) => Ok(()),
            (Self::String { single_char }, Value::String(text)) => {
                if *single_char && text.chars().count() != 1 {
                    return mismatch();
                }
                Ok(())
            }
            (Self::Integer { min, max, .. }, Value::Number(number)) => {
                let fits = number
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| number.as_u64().map(i128::from))
                    .is_some_and(|n| (*min..=*max).contains(&n));
                match number.as_f64() {
                    _ if fits => Ok(()),
                    // serde_json reads an integer literal beyond 64 bits as a rounded float.
                    Some(float) if float.fract() == 0.0 && float.abs() >= 9.2e18 => Err((
                        self.to_string(),
                        format!("{number}, an integer beyond 64 bits (it would be rounded)"),
                    )),
                    _ => mismatch(),
                }
            }
            (Self::Number, Value::Number(_)) => Ok(()),
            (Self::Optional(_), Value::Null) => Ok(()),
            (Self::Optional(inner), value) => inner.check(value, at),
            (Self::List(item), Value::Array(items)) => {
                for (index, item_value) in items.iter().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("[{index}]"));
                    item.check(item_value, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            (Self::Map(value_shape), Value::Object(entries)) => {
                for (key, entry) in entries {
                    let len = at.len();
                    at.push_str(&format!("[{key:?}]"));
                    value_shape.check(entry, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            (Self::Tuple(shapes), Value::Array(items)) if shapes.len() == items.len() => {
                for (index, (shape, item)) in shapes.iter().zip(items).enumerate() {
                    let len = at.len();
                    at.push_str(&format!("[{index}]"));
                    shape.check(item, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            _ => mismatch(),
        }
    }
}

impl fmt::Display for JsonShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any value"),
            Self::Unit => f.write_str("null"),
            Self::Bool => f.write_str("a boolean"),
            Self::String { single_char: false } => f.write_str("a string"),
            Self::String { single_char: true } => f.write_str("a one-character string"),
            Self::Integer { name, min, max } => {
                write!(f, "{name} (an integer from {min} to {max})")
            }
            Self::Number => f.write_str("a number"),
            Self::List(item) => write!(f, "an array of {item}"),
            Self::Map(value) => write!(f, "an object of {value}"),
            Self::Optional(inner) => write!(f, "{inner} or null"),
            Self::Tuple(shapes) => {
                write!(f, "an array of exactly {} item(s): ", shapes.len())?;
                for (index, shape) in shapes.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{shape}")?;
                }
                Ok(())
            }
        }
    }
}

/// What a JSON value is, briefly (numbers and short strings shown; nothing long is echoed).
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => format!("boolean {flag}"),
        Value::Number(number) if number.is_f64() => format!("number {number}"),
        Value::Number(number) => format!("integer {number}"),
        Value::String(text) if text.chars().count() <= 32 => format!("string {text:?}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(items) => format!("an array of {} item(s)", items.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Integer types and their ranges. 128-bit types get the 64-bit range: serde_json (and the wire
/// to Python) carries no exact integer beyond it.
fn integer(name: &str) -> Option<JsonShape> {
    let (name, min, max): (&'static str, i128, i128) = match name {
        "u8" => ("u8", 0, u8::MAX.into()),
        "u16" => ("u16", 0, u16::MAX.into()),
        "u32" => ("u32", 0, u32::MAX.into()),
        "u64" => ("u64", 0, u64::MAX.into()),
        "usize" => ("usize", 0, u64::MAX.into()),
        "u128" => ("u128", 0, u64::MAX.into()),
        "i8" => ("i8", i8::MIN.into(), i8::MAX.into()),
        "i16" => ("i16", i16::MIN.into(), i16::MAX.into()),
        "i32" => ("i32", i32::MIN.into(), i32::MAX.into()),
        "i64" => ("i64", i64::MIN.into(), i64::MAX.into()),
        "isize" => ("isize", i64::MIN.into(), i64::MAX.into()),
        "i128" => ("i128", i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    };
    Some(JsonShape::Integer { name, min, max })
}

/// Canonical strings are token-printed (`Vec < u8 >`, `Vec :: < u8 >`, `:: std :: vec :: Vec`,
/// `(String, u8)`, `[u8; 4]`, `& 'static str`): split into identifiers and punctuation.
fn tokenize(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else if let Some(after) = rest.strip_prefix("::") {
            tokens.push("::");
            rest = after;
        } else if c.is_alphanumeric() || c == '_' || c == '\'' {
            let end = rest
                .char_indices()
                .skip(1)
                .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
                .map_or(rest.len(), |(index, _)| index);
            tokens.push(&rest[..end]);
            rest = &rest[end..];
        } else {
            tokens.push(&rest[..c.len_utf8()]);
            rest = &rest[c.len_utf8()..];
        }
    }
    tokens
}

struct Parser<'t> {
    tokens: &'t [&'t str],
    at: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t str> {
        self.tokens.get(self.at).copied()
    }

    fn eat(&mut self, token: &str) -> bool {
        let matched = self.peek() == Some(token);
        if matched {
            self.at += 1;
        }
        matched
    }

    fn ty(&mut self) -> Option<JsonShape> {
        match self.peek()? {
            "&" => {
                self.at += 1;
                if self.peek().is_some_and(|token| token.starts_with('\'')) {
                    self.at += 1;
                }
                self.eat("mut");
                self.ty()
            }
            "(" => {
                self.at += 1;
                let items = self.list(")")?;
                Some(match items.len() {
                    0 => JsonShape::Unit,
                    _ => JsonShape::Tuple(items),
                })
            }
            "[" => {
                self.at += 1;
                let item = self.ty()?;
                if self.eat(";") {
                    // The length is an expression; JSON cannot be checked against it here.
                    while self.peek().is_some_and(|token| token != "]") {
                        self.at += 1;
                    }
                }
                self.eat("]").then(|| JsonShape::List(Box::new(item)))
            }
            _ => self.path(),
        }
    }

    /// Types separated by commas (a trailing one allowed) up to `close`.
    fn list(&mut self, close: &str) -> Option<Vec<JsonShape>> {
        let mut items = Vec::new();
        while !self.eat(close) {
            items.push(self.ty()?);
            if !self.eat(",") && self.peek() != Some(close) {
                return None;
            }
        }
        Some(items)
    }

    fn path(&mut self) -> Option<JsonShape> {
        self.eat("::");
        let mut name = self.identifier()?;
        let mut args = Vec::new();
        loop {
            if self.eat("::") {
                if self.peek() == Some("<") {
                    continue;
                }
                name = self.identifier()?;
            } else if self.eat("<") {
                args = self.list(">")?;
            } else {
                break;
            }
        }
        Some(shape_of(name, args))
    }

    fn identifier(&mut self) -> Option<&'t str> {
        let token = self.peek()?;
        let is_identifier = token
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_');
        is_identifier.then(|| {
            self.at += 1;
            token
        })
    }
}

fn shape_of(name: &str, mut args: Vec<JsonShape>) -> JsonShape {
    let single = |args: &mut Vec<JsonShape>| (args.len() == 1).then(|| args.remove(0));
    match name {
        "String" | "str" if args.is_empty() => JsonShape::String { single_char: false },
        "char" if args.is_empty() => JsonShape::String { single_char: true },
        "bool" if args.is_empty() => JsonShape::Bool,
        "f32" | "f64" if args.is_empty() => JsonShape::Number,
        "Vec" | "VecDeque" | "HashSet" | "BTreeSet" => {
            single(&mut args).map_or(JsonShape::Any, |item| JsonShape::List(Box::new(item)))
        }
        "Option" => {
            single(&mut args).map_or(JsonShape::Any, |inner| JsonShape::Optional(Box::new(inner)))
        }
        "HashMap" | "BTreeMap" if args.len() == 2 => args
            .pop()
            .map_or(JsonShape::Any, |value| JsonShape::Map(Box::new(value))),
        "Box" | "Rc" | "Arc" => single(&mut args).unwrap_or(JsonShape::Any),
        "Cow" => match single(&mut args) {
            Some(JsonShape::String { .. }) => JsonShape::String { single_char: false },
            _ => JsonShape::Any,
        },
        _ if args.is_empty() => integer(name).unwrap_or(JsonShape::Any),
        _ => JsonShape::Any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::{PythonArgDescriptor, WireMode};

    fn shapes(args: &'static [PythonArgDescriptor]) -> ArgumentShapes {
        ArgumentShapes::for_method(&PythonMethodDescriptor {
            name: "m",
            wire: WireMode::TypedJson,
            args,
            returns: "",
            optional_since: None,
            signature: "",
            streams_result: false,
            streams_argument: false,
            streamed_argument: None,
        })
    }

    #[test]
    fn canonical_strings_parse_into_shapes() {
        let string = || JsonShape::String { single_char: false };
        let u8_shape = integer("u8").expect("u8");
        for (canonical, expected) in [
            ("String", string()),
            ("& 'static str", string()),
            ("& & str", string()),
            ("Vec < u8 >", JsonShape::List(Box::new(u8_shape.clone()))),
            ("Vec :: < u8 >", JsonShape::List(Box::new(u8_shape.clone()))),
            (
                ":: std :: vec :: Vec < u8 >",
                JsonShape::List(Box::new(u8_shape.clone())),
            ),
            ("[u8; 0x10]", JsonShape::List(Box::new(u8_shape.clone()))),
            ("& [String]", JsonShape::List(Box::new(string()))),
            (
                "Option < HashMap < String, String > >",
                JsonShape::Optional(Box::new(JsonShape::Map(Box::new(string())))),
            ),
            (
                "HashMap < String, i64, >",
                JsonShape::Map(Box::new(integer("i64").expect("i64"))),
            ),
            (
                "(String, (u8, bool))",
                JsonShape::Tuple(vec![
                    string(),
                    JsonShape::Tuple(vec![u8_shape.clone(), JsonShape::Bool]),
                ]),
            ),
            (
                "(i64,)",
                JsonShape::Tuple(vec![integer("i64").expect("i64")]),
            ),
            (
                "(u32)",
                JsonShape::Tuple(vec![integer("u32").expect("u32")]),
            ),
            ("()", JsonShape::Unit),
            ("Summary", JsonShape::Any),
            ("serde_json :: Value", JsonShape::Any),
            ("Box < dyn std :: error :: Error + Send >", JsonShape::Any),
            ("", JsonShape::Any),
            ("char", JsonShape::String { single_char: true }),
        ] {
            assert_eq!(JsonShape::parse(canonical), expected, "{canonical}");
        }
    }

    #[test]
    fn wrong_types_name_the_argument_and_the_expected_type() {
        static ARGS: [PythonArgDescriptor; 2] = [
            PythonArgDescriptor {
                name: "name",
                ty: "String",
            },
            PythonArgDescriptor {
                name: "counts",
                ty: "Vec < u8 >",
            },
        ];
        let shapes = shapes(&ARGS);
        assert_eq!(shapes.check(br#"["World", [1, 2]]"#), Ok(()));
        assert_eq!(
            shapes.check(br#"[42, []]"#).map_err(|e| e.to_string()),
            Err("argument `name` (position 0): expected a string, found integer 42".to_owned())
        );
        assert_eq!(
            shapes
                .check(br#"["x", [1, 256]]"#)
                .map_err(|e| e.to_string()),
            Err(
                "argument `counts` (position 1) at [1]: expected u8 (an integer from 0 to 255), \
                 found integer 256"
                    .to_owned()
            )
        );
        assert_eq!(
            shapes.check(br#"["x"]"#),
            Err(ArgumentMismatch::Count {
                expected: 2,
                found: 1
            })
        );
        assert_eq!(
            shapes.check(br#"{"name": 1}"#),
            Err(ArgumentMismatch::NotAnArray)
        );
        assert!(matches!(
            shapes.check(b"[1,"),
            Err(ArgumentMismatch::Syntax(_))
        ));
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_not_rounded() {
        static ARGS: [PythonArgDescriptor; 1] = [PythonArgDescriptor {
            name: "n",
            ty: "u128",
        }];
        let shapes = shapes(&ARGS);
        assert_eq!(shapes.check(b"[18446744073709551615]"), Ok(()));
        let error = shapes
            .check(b"[123456789012345678901234567890]")
            .expect_err("too big");
        assert!(
            error.to_string().contains("an integer beyond 64 bits"),
            "{error}"
        );
        assert!(shapes.check(b"[1.5]").is_err());
    }

    #[test]
    fn integers_beyond_64_bits_in_untyped_arguments_are_refused_too() {
        static ARGS: [PythonArgDescriptor; 2] = [
            PythonArgDescriptor {
                name: "flag",
                ty: "bool",
            },
            PythonArgDescriptor {
                name: "data",
                ty: "HashMap < String, serde_json :: Value >",
            },
        ];
        let shapes = shapes(&ARGS);
        for payload in [
            r#"[true, {"n": 123456789012345678901234567890}]"#,
            r#"[true, {"n": [1, {"deep": -9223372036854775809}]}]"#,
            r#"[true, {"n": 18446744073709551616}]"#,
        ] {
            let error = shapes.check(payload.as_bytes()).expect_err(payload);
            let text = error.to_string();
            assert!(
                text.starts_with("argument `data` (position 1): expected integers within 64 bits")
                    && text.ends_with("an integer beyond 64 bits (it would be rounded)"),
                "{payload}: {text}"
            );
        }
        let error = shapes
            .check(br#"[true, {"n": 123456789012345678901234567890}]"#)
            .expect_err("wide");
        assert!(
            error
                .to_string()
                .contains("found 123456789012345678901234567890, an integer"),
            "{error}"
        );
        // What crosses exactly, or was a float to begin with, is not refused.
        for payload in [
            r#"[true, {"n": 18446744073709551615, "m": -9223372036854775808}]"#,
            r#"[true, {"n": 1e30, "m": 1.5, "o": -0.0, "p": 12345678901234567890123.0}]"#,
            r#"[true, {"n": "123456789012345678901234567890", "\"9999999999999999999999": 1}]"#,
        ] {
            assert_eq!(shapes.check(payload.as_bytes()), Ok(()), "{payload}");
        }
    }

    #[test]
    fn optional_and_untyped_arguments() {
        static ARGS: [PythonArgDescriptor; 2] = [
            PythonArgDescriptor {
                name: "labels",
                ty: "Option < HashMap < String, String > >",
            },
            PythonArgDescriptor {
                name: "anything",
                ty: "",
            },
        ];
        let shapes = shapes(&ARGS);
        assert_eq!(shapes.check(br#"[null, {"deep": [1]}]"#), Ok(()));
        assert_eq!(shapes.check(br#"[{"a": "b"}, 3]"#), Ok(()));
        let error = shapes.check(br#"[{"a": 1}, 3]"#).expect_err("value type");
        assert_eq!(
            error.to_string(),
            "argument `labels` (position 0) at [\"a\"]: expected a string, found integer 1"
        );
    }

    /// The streaming pass and the explaining one must agree on every payload.
    #[test]
    fn the_streaming_check_agrees_with_the_explanation() {
        static ARGS: [PythonArgDescriptor; 3] = [
            PythonArgDescriptor {
                name: "nested",
                ty: "Option < Option < Vec < (u8, String) > > >",
            },
            PythonArgDescriptor {
                name: "map",
                ty: "HashMap < String, Option < f64 > >",
            },
            PythonArgDescriptor {
                name: "any",
                ty: "Summary",
            },
        ];
        let shapes = shapes(&ARGS);
        let mut refused = 0;
        for payload in [
            r#"[null, {}, 1]"#,
            r#"[[[1, "a"], [255, "b"]], {"x": 1.5, "y": null, "z": 2}, {"deep": [1, {"a": null}]}]"#,
            r#"[[[256, "a"]], {}, null]"#,
            r#"[[[1, 2]], {}, null]"#,
            r#"[[[1, "a", 3]], {}, null]"#,
            r#"[[[1]], {}, null]"#,
            r#"[[], {"x": "1"}, null]"#,
            r#"[[], [], null]"#,
            r#"[[], {}]"#,
            r#"[[], {}, null, 4]"#,
            r#"[true, {}, null]"#,
            r#"[[[1, "\u00e9"]], {"\n": -0.0}, "x"]"#,
            r#"[[], {}, {"n": [123456789012345678901234567890]}]"#,
            r#"[[], {"x": 123456789012345678901234567890}, "123456789012345678901234567890"]"#,
        ] {
            let fast = shapes.check(payload.as_bytes());
            let slow = shapes.explain(payload.as_bytes());
            assert_eq!(fast, slow, "{payload}");
            refused += usize::from(fast.is_err());
        }
        assert_eq!(
            refused, 10,
            "the first two and the last two payloads fit, the others do not"
        );
    }
}
