//! The Rust → Python type table (documented in the module above).

use std::collections::BTreeSet;

use syn::Type;

use crate::interface::canonical_type;
use crate::interface::shape::path_parts;

const INTEGERS: &[&str] = &[
    "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize",
];

/// Maps types, remembering which serde structs were used and which types had no mapping.
pub struct TypeMapper<'a> {
    known_structs: &'a BTreeSet<String>,
    pub used_structs: BTreeSet<String>,
    pub unmapped: Vec<String>,
    /// Whether any annotation produced so far is `Any`.
    pub uses_any: bool,
    /// Whether any annotation produced so far is `Iterator[...]` (a `Stream<T>`).
    pub uses_iterator: bool,
}

impl<'a> TypeMapper<'a> {
    pub fn new(known_structs: &'a BTreeSet<String>) -> Self {
        Self {
            known_structs,
            used_structs: BTreeSet::new(),
            unmapped: Vec::new(),
            uses_any: false,
            uses_iterator: false,
        }
    }

    /// The Python annotation for `ty`.
    pub fn python(&mut self, ty: &Type) -> String {
        match ty {
            Type::Reference(reference) => self.python(&reference.elem),
            Type::Paren(inner) => self.python(&inner.elem),
            Type::Group(inner) => self.python(&inner.elem),
            Type::Tuple(tuple) if tuple.elems.is_empty() => "None".to_owned(),
            Type::Tuple(tuple) => {
                let elems: Vec<String> = tuple.elems.iter().map(|elem| self.python(elem)).collect();
                format!("tuple[{}]", elems.join(", "))
            }
            Type::Array(array) => format!("list[{}]", self.python(&array.elem)),
            Type::Slice(slice) => format!("list[{}]", self.python(&slice.elem)),
            Type::Path(_) => self.path(ty),
            _ => self.unmapped(ty),
        }
    }

    fn path(&mut self, ty: &Type) -> String {
        let Some((name, args)) = path_parts(ty) else {
            return self.unmapped(ty);
        };
        match (name.as_str(), args.as_slice()) {
            ("String" | "str" | "char", []) => "str".to_owned(),
            ("Cow", [inner]) if matches!(path_parts(inner), Some((n, _)) if n == "str") => {
                "str".to_owned()
            }
            ("bool", []) => "bool".to_owned(),
            (int, []) if INTEGERS.contains(&int) => "int".to_owned(),
            ("f32" | "f64", []) => "float".to_owned(),
            ("Value", []) => {
                self.uses_any = true;
                "Any".to_owned()
            }
            ("Vec" | "VecDeque" | "HashSet" | "BTreeSet", [item]) => {
                format!("list[{}]", self.python(item))
            }
            ("Option", [inner]) => format!("{} | None", self.python(inner)),
            ("HashMap" | "BTreeMap", [key, value]) if self.is_json_key(key) => {
                format!("dict[str, {}]", self.python(value))
            }
            ("Result", [ok, _]) => self.python(ok),
            // A streamed argument arrives as an iterator; a streamed result is any iterable the
            // plugin returns, typically a generator.
            ("Stream", [item]) => {
                self.uses_iterator = true;
                format!("Iterator[{}]", self.python(item))
            }
            ("Box" | "Rc" | "Arc", [inner]) => self.python(inner),
            (name, []) if self.known_structs.contains(name) => {
                self.used_structs.insert(name.to_owned());
                name.to_owned()
            }
            _ => self.unmapped(ty),
        }
    }

    /// serde_json writes string and integer map keys as JSON strings.
    fn is_json_key(&self, key: &Type) -> bool {
        let key = match key {
            Type::Reference(reference) => &*reference.elem,
            other => other,
        };
        matches!(path_parts(key), Some((name, args))
            if args.is_empty() && (name == "String" || name == "str" || INTEGERS.contains(&name.as_str())))
    }

    fn unmapped(&mut self, ty: &Type) -> String {
        self.unmapped.push(canonical_type(ty));
        self.uses_any = true;
        "Any".to_owned()
    }
}
