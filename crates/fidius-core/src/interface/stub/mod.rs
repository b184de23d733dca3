//! Python stubs for an interface (`fidius python-stub`): rendering a plugin module skeleton from
//! the trait, and checking an existing plugin module against it. Pure text in and out; no Python
//! interpreter is involved.
//!
//! # Rust → Python type table
//!
//! | Rust | Python |
//! |---|---|
//! | `String`, `&str`, `str`, `char`, `Cow<str>` | `str` |
//! | `bool` | `bool` |
//! | `i8` … `i128`, `isize`, `u8` … `u128`, `usize` | `int` |
//! | `f32`, `f64` | `float` |
//! | `Vec<u8>` / `&[u8]` on a `#[wire(raw)]` method | `bytes` |
//! | `Vec<T>`, `VecDeque<T>`, `HashSet<T>`, `BTreeSet<T>`, `[T; N]`, `&[T]` | `list[T]` |
//! | `Option<T>` | `T \| None` |
//! | `HashMap`/`BTreeMap<K, V>` with `K` a string or integer | `dict[str, V]` (JSON keys are strings) |
//! | `(A, B)` | `tuple[A, B]` |
//! | `()`, no return type | `None` |
//! | `Stream<T>` (a streamed argument or result) | `Iterator[T]` |
//! | `Result<T, E>` | `T` (errors are raised as `PluginError`) |
//! | `&T`, `Box<T>`, `Rc<T>`, `Arc<T>`, `(T)` | as `T` |
//! | `serde_json::Value` | `Any` |
//! | a named-field struct in the same file deriving `Serialize`/`Deserialize` | a `TypedDict` |
//! | anything else | `Any`, with a comment naming the Rust type |
//!
//! Struct fields are written under their Rust names: serde field attributes such as `rename`,
//! `rename_all`, `skip` or `flatten` are not applied, and tuple structs and enums map to `Any`.

mod check;
mod python_names;
mod render;
mod types;

pub use check::{check_module, Drift};
pub use render::{render_stub, StubError};
