//! JSON bytes to Python objects and back, without going through Python's `json` module.
//!
//! Measured on CPython 3.13 (see `ci/bench`): building the objects from Rust through serde costs a
//! fraction of `json.loads`/`json.dumps`, whose Python-level wrappers dominate small payloads, and it
//! rejects what the host could not read anyway (NaN, infinities, integers beyond 64 bits) with a
//! precise error instead of emitting invalid JSON.

use std::fmt;
use std::ptr::NonNull;

use pyo3_ffi as ffi;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::interpreter::Interp;
use crate::object::{unicode_as_str, PyObj};

/// Deepest nesting accepted when turning Python values into JSON (cycles end here too).
const MAX_DEPTH: usize = 256;

/// Why a Python value could not become JSON, or JSON could not become Python values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The input bytes are not valid JSON (or nest deeper than serde_json's limit of 128).
    #[error("invalid JSON: {message}")]
    InvalidJson { message: String },
    /// A value of this Python type has no JSON form.
    #[error("object of type {type_name} is not JSON serializable")]
    NotSerializable { type_name: String },
    /// Dictionary keys must be `str` (or `int`, `float`, `bool`, `None`, written as strings).
    #[error("dictionary keys must be str, int, float, bool or None, not {type_name}")]
    InvalidKey { type_name: String },
    /// NaN and infinities have no JSON form.
    #[error("float value {value} is not JSON compliant")]
    NonFiniteFloat { value: String },
    /// Integers must fit in 64 bits (signed or unsigned).
    #[error("integer {value} does not fit in 64 bits")]
    IntegerOutOfRange { value: String },
    /// Nested deeper than the limit, or self-referencing.
    #[error("value nests deeper than {MAX_DEPTH} levels (or contains itself)")]
    TooDeep,
    /// Python failed while building or reading a value (for example out of memory).
    #[error("Python failed during conversion: {0}")]
    Python(#[source] crate::PythonException),
}

impl<'i> Interp<'i> {
    /// Parses JSON text into Python objects (`dict`, `list`, `str`, `int`, `float`, `bool`, `None`).
    pub fn json_to_python(self, json: &[u8]) -> Result<PyObj<'i>, JsonError> {
        self.parse(json, PythonSeed { interp: self })
    }

    /// Parses a JSON array into its elements as Python objects: the positional arguments of a
    /// [`PyObj::call`], without building a list or tuple of them first.
    pub fn json_to_arguments(self, json: &[u8]) -> Result<Vec<PyObj<'i>>, JsonError> {
        self.parse(json, ArgumentsSeed { interp: self })
    }

    fn parse<T>(
        self,
        json: &[u8],
        seed: impl for<'de> DeserializeSeed<'de, Value = T>,
    ) -> Result<T, JsonError> {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let value = seed
            .deserialize(&mut deserializer)
            .and_then(|value| deserializer.end().map(|()| value));
        value.map_err(|error| match take_python_error(self) {
            Some(python) => JsonError::Python(python),
            None => JsonError::InvalidJson {
                message: error.to_string(),
            },
        })
    }
}

impl PyObj<'_> {
    /// Writes this value as compact JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, JsonError> {
        let mut out = Vec::with_capacity(64);
        let mut serializer = serde_json::Serializer::new(&mut out);
        LAST_FAILURE.with(|slot| slot.borrow_mut().take());
        let result = JsonValue {
            object: self,
            depth: 0,
        }
        .serialize(&mut serializer);
        match result {
            Ok(()) => Ok(out),
            Err(error) => Err(take_failure(error.to_string())),
        }
    }
}

/// Takes a Python error left by a failed C call during conversion, if any.
fn take_python_error(interp: Interp<'_>) -> Option<crate::PythonException> {
    // SAFETY: attached; only reads the error indicator.
    if unsafe { ffi::PyErr_Occurred() }.is_null() {
        return None;
    }
    Some(crate::exception::fetch_exception(interp).describe())
}

fn new_object<'i, E: de::Error>(
    interp: Interp<'i>,
    ptr: *mut ffi::PyObject,
) -> Result<PyObj<'i>, E> {
    match NonNull::new(ptr) {
        Some(ptr) => Ok(PyObj::from_non_null(interp, ptr)),
        // The Python error stays set; `json_to_python` reports it.
        None => Err(E::custom("Python object creation failed")),
    }
}

struct PythonSeed<'i> {
    interp: Interp<'i>,
}

impl<'de, 'i> DeserializeSeed<'de> for PythonSeed<'i> {
    type Value = PyObj<'i>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<PyObj<'i>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'i> Visitor<'de> for PythonSeed<'i> {
    type Value = PyObj<'i>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<PyObj<'i>, E> {
        Ok(self.interp.none())
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<PyObj<'i>, E> {
        // SAFETY: attached; PyBool_FromLong returns a new reference to an immortal singleton.
        new_object(self.interp, unsafe { ffi::PyBool_FromLong(value.into()) })
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<PyObj<'i>, E> {
        // SAFETY: attached; returns a new reference or NULL with an exception set.
        new_object(self.interp, unsafe { ffi::PyLong_FromLongLong(value) })
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<PyObj<'i>, E> {
        // SAFETY: attached; returns a new reference or NULL with an exception set.
        new_object(self.interp, unsafe {
            ffi::PyLong_FromUnsignedLongLong(value)
        })
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<PyObj<'i>, E> {
        // SAFETY: attached; returns a new reference or NULL with an exception set.
        new_object(self.interp, unsafe { ffi::PyFloat_FromDouble(value) })
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<PyObj<'i>, E> {
        self.interp
            .str(value)
            .map_err(|_| E::custom("Python str creation failed"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<PyObj<'i>, A::Error> {
        // SAFETY: attached; returns a new empty list or NULL with an exception set.
        let list = new_object::<A::Error>(self.interp, unsafe { ffi::PyList_New(0) })?;
        while let Some(item) = items.next_element_seed(PythonSeed {
            interp: self.interp,
        })? {
            // SAFETY: attached; both objects are live; PyList_Append takes its own reference.
            if unsafe { ffi::PyList_Append(list.as_ptr(), item.as_ptr()) } != 0 {
                return Err(de::Error::custom("list append failed"));
            }
        }
        Ok(list)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<PyObj<'i>, A::Error> {
        // SAFETY: attached; returns a new empty dict or NULL with an exception set.
        let dict = new_object::<A::Error>(self.interp, unsafe { ffi::PyDict_New() })?;
        while let Some(key) = entries.next_key::<std::borrow::Cow<'de, str>>()? {
            let key = self
                .interp
                .str(&key)
                .map_err(|_| de::Error::custom("Python str creation failed"))?;
            let value = entries.next_value_seed(PythonSeed {
                interp: self.interp,
            })?;
            // SAFETY: attached; all three objects are live; PyDict_SetItem takes its own references.
            if unsafe { ffi::PyDict_SetItem(dict.as_ptr(), key.as_ptr(), value.as_ptr()) } != 0 {
                return Err(de::Error::custom("dict insert failed"));
            }
        }
        Ok(dict)
    }
}

/// The elements of a top-level JSON array, each as a Python object.
struct ArgumentsSeed<'i> {
    interp: Interp<'i>,
}

impl<'de, 'i> DeserializeSeed<'de> for ArgumentsSeed<'i> {
    type Value = Vec<PyObj<'i>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<PyObj<'i>>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, 'i> Visitor<'de> for ArgumentsSeed<'i> {
    type Value = Vec<PyObj<'i>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Vec<PyObj<'i>>, A::Error> {
        let mut arguments = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(item) = items.next_element_seed(PythonSeed {
            interp: self.interp,
        })? {
            arguments.push(item);
        }
        Ok(arguments)
    }
}

/// Serializes a Python value; `depth` guards against deep nesting and cycles.
struct JsonValue<'a, 'i> {
    object: &'a PyObj<'i>,
    depth: usize,
}

thread_local! {
    /// The typed reason of the last conversion failure on this thread (serde_json's error type can
    /// only carry a message, so the typed error waits here until `to_json` picks it up).
    static LAST_FAILURE: std::cell::RefCell<Option<JsonError>> = const { std::cell::RefCell::new(None) };
}

fn fail<E: ser::Error>(error: JsonError) -> E {
    let message = error.to_string();
    LAST_FAILURE.with(|slot| *slot.borrow_mut() = Some(error));
    E::custom(message)
}

impl<'a, 'i> JsonValue<'a, 'i> {
    fn child(&self, object: &'a PyObj<'i>) -> JsonValue<'a, 'i> {
        JsonValue {
            object,
            depth: self.depth + 1,
        }
    }
}

/// The JSON-relevant kind of a Python value (subclasses count as their base type, as in `json`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Bool,
    Int,
    Float,
    Str,
    List,
    Tuple,
    Dict,
    Other,
}

fn kind(object: &PyObj<'_>) -> Kind {
    let ptr = object.as_ptr();
    // SAFETY: attached; the type checks only read the object's type. Bool comes before Int because
    // bool subclasses int.
    unsafe {
        if object.is_none() {
            Kind::None
        } else if ffi::PyBool_Check(ptr) != 0 {
            Kind::Bool
        } else if ffi::PyLong_Check(ptr) != 0 {
            Kind::Int
        } else if ffi::PyFloat_Check(ptr) != 0 {
            Kind::Float
        } else if ffi::PyUnicode_Check(ptr) != 0 {
            Kind::Str
        } else if ffi::PyList_Check(ptr) != 0 {
            Kind::List
        } else if ffi::PyTuple_Check(ptr) != 0 {
            Kind::Tuple
        } else if ffi::PyDict_Check(ptr) != 0 {
            Kind::Dict
        } else {
            Kind::Other
        }
    }
}

fn is_true(object: &PyObj<'_>) -> bool {
    // SAFETY: Py_True is the immortal True singleton; comparing pointers needs nothing more.
    object.as_ptr() == unsafe { ffi::Py_True() }
}

fn float_value(object: &PyObj<'_>) -> Result<f64, JsonError> {
    // SAFETY: attached; the caller checked `object` is a float, so this cannot fail.
    let value = unsafe { ffi::PyFloat_AsDouble(object.as_ptr()) };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(JsonError::NonFiniteFloat {
            value: object.to_str_lossy().unwrap_or_default(),
        })
    }
}

impl Serialize for JsonValue<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.depth > MAX_DEPTH {
            return Err(fail(JsonError::TooDeep));
        }
        let object = self.object;
        match kind(object) {
            Kind::None => serializer.serialize_unit(),
            Kind::Bool => serializer.serialize_bool(is_true(object)),
            Kind::Int => match int_value(object).map_err(fail)? {
                IntValue::Signed(value) => serializer.serialize_i64(value),
                IntValue::Unsigned(value) => serializer.serialize_u64(value),
            },
            Kind::Float => serializer.serialize_f64(float_value(object).map_err(fail)?),
            Kind::Str => match unicode_as_str(object) {
                Some(text) => serializer.serialize_str(text),
                None => Err(fail(python_failure(object.interp()))),
            },
            kind @ (Kind::List | Kind::Tuple) => {
                let items = sequence_items(object, kind == Kind::List);
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in &items {
                    seq.serialize_element(&self.child(item))?;
                }
                seq.end()
            }
            Kind::Dict => {
                let entries = dict_entries(object);
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in &entries {
                    let key = dict_key(key).map_err(fail)?;
                    map.serialize_entry(&key, &self.child(value))?;
                }
                map.end()
            }
            Kind::Other => Err(fail(JsonError::NotSerializable {
                type_name: object.type_name(),
            })),
        }
    }
}

enum IntValue {
    Signed(i64),
    Unsigned(u64),
}

fn int_value(object: &PyObj<'_>) -> Result<IntValue, JsonError> {
    let mut overflow = 0;
    // SAFETY: attached; `object` is an int. Overflow is reported through `overflow`, not an error.
    let signed = unsafe { ffi::PyLong_AsLongLongAndOverflow(object.as_ptr(), &mut overflow) };
    if overflow == 0 {
        return Ok(IntValue::Signed(signed));
    }
    if overflow > 0 {
        // SAFETY: attached; `object` is an int; on overflow this returns -1 with OverflowError set.
        let unsigned = unsafe { ffi::PyLong_AsUnsignedLongLong(object.as_ptr()) };
        // SAFETY: attached; only reads the error indicator.
        if unsafe { ffi::PyErr_Occurred() }.is_null() {
            return Ok(IntValue::Unsigned(unsigned));
        }
        // SAFETY: attached; drop the OverflowError, reported below as a typed error.
        unsafe { ffi::PyErr_Clear() };
    }
    Err(JsonError::IntegerOutOfRange {
        value: object.to_str_lossy().unwrap_or_default(),
    })
}

/// New references to the items of a list or tuple (a snapshot: plugin code cannot run meanwhile,
/// but holding our own references keeps the walk safe whatever the objects are).
fn sequence_items<'i>(object: &PyObj<'i>, is_list: bool) -> Vec<PyObj<'i>> {
    let ptr = object.as_ptr();
    // SAFETY: attached; `ptr` is a list or tuple as the caller checked; indexes stay in bounds and
    // each borrowed item gets its own reference before use.
    unsafe {
        let len = if is_list {
            ffi::PyList_GET_SIZE(ptr)
        } else {
            ffi::PyTuple_GET_SIZE(ptr)
        };
        (0..len)
            .map(|index| {
                let item = if is_list {
                    ffi::PyList_GET_ITEM(ptr, index)
                } else {
                    ffi::PyTuple_GET_ITEM(ptr, index)
                };
                ffi::Py_INCREF(item);
                PyObj::from_non_null(object.interp(), NonNull::new_unchecked(item))
            })
            .collect()
    }
}

/// New references to a dict's keys and values.
fn dict_entries<'i>(object: &PyObj<'i>) -> Vec<(PyObj<'i>, PyObj<'i>)> {
    let mut entries = Vec::new();
    let mut position: ffi::Py_ssize_t = 0;
    let mut key = std::ptr::null_mut();
    let mut value = std::ptr::null_mut();
    // SAFETY: attached; `object` is a dict; PyDict_Next yields borrowed references, which get their
    // own reference before the next step.
    unsafe {
        while ffi::PyDict_Next(object.as_ptr(), &mut position, &mut key, &mut value) != 0 {
            ffi::Py_INCREF(key);
            ffi::Py_INCREF(value);
            entries.push((
                PyObj::from_non_null(object.interp(), NonNull::new_unchecked(key)),
                PyObj::from_non_null(object.interp(), NonNull::new_unchecked(value)),
            ));
        }
    }
    entries
}

/// A dict key as JSON object key text, following `json.dumps`.
fn dict_key(key: &PyObj<'_>) -> Result<String, JsonError> {
    match kind(key) {
        Kind::Str => unicode_as_str(key)
            .map(str::to_owned)
            .ok_or_else(|| python_failure(key.interp())),
        Kind::None => Ok("null".to_owned()),
        Kind::Bool => Ok(if is_true(key) { "true" } else { "false" }.to_owned()),
        Kind::Int => Ok(match int_value(key)? {
            IntValue::Signed(value) => value.to_string(),
            IntValue::Unsigned(value) => value.to_string(),
        }),
        Kind::Float => {
            float_value(key)?;
            key.to_str_lossy().map_err(|_| python_failure(key.interp()))
        }
        _ => Err(JsonError::InvalidKey {
            type_name: key.type_name(),
        }),
    }
}

fn python_failure(interp: Interp<'_>) -> JsonError {
    JsonError::Python(crate::exception::fetch_exception(interp).describe())
}

/// Recovers the typed failure stashed by `fail`, falling back to serde_json's message.
fn take_failure(message: String) -> JsonError {
    LAST_FAILURE
        .with(|slot| slot.borrow_mut().take())
        .unwrap_or(JsonError::InvalidJson { message })
}
