//! Properties of the interface hash over generated traits: layout, comments, argument names and
//! method order never change it; changing a type, adding or removing a required method, or
//! toggling `#[wire(raw)]` always does, and optional methods never count.

use fidius_core::interface::find_interface;
use proptest::prelude::*;

/// A type the generator can write, as source tokens.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Prim(&'static str),
    StrRef,
    Vec(Box<Ty>),
    Option(Box<Ty>),
    Map(Box<Ty>),
    Tuple(Vec<Ty>),
    Array(Box<Ty>, u8),
    Qualified,
}

impl Ty {
    fn tokens(&self, out: &mut Vec<String>) {
        let mut push = |parts: &[&str]| out.extend(parts.iter().map(|part| (*part).to_owned()));
        match self {
            Ty::Prim(name) => push(&[name]),
            Ty::StrRef => push(&["&", "'static", "str"]),
            Ty::Qualified => push(&["std", "::", "collections", "::", "BTreeSet", "<", "u8", ">"]),
            Ty::Vec(inner) | Ty::Option(inner) | Ty::Map(inner) => {
                match self {
                    Ty::Vec(_) => push(&["Vec", "<"]),
                    Ty::Option(_) => push(&["Option", "<"]),
                    _ => push(&["HashMap", "<", "String", ","]),
                }
                inner.tokens(out);
                out.push(">".to_owned());
            }
            Ty::Tuple(elems) => {
                out.push("(".to_owned());
                for elem in elems {
                    elem.tokens(out);
                    out.push(",".to_owned());
                }
                out.push(")".to_owned());
            }
            Ty::Array(inner, len) => {
                out.push("[".to_owned());
                inner.tokens(out);
                out.extend([";".to_owned(), len.to_string(), "]".to_owned()]);
            }
        }
    }
}

fn ty() -> impl Strategy<Value = Ty> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "u8", "i64", "f64", "bool", "String", "char", "Summary"
        ])
        .prop_map(Ty::Prim),
        Just(Ty::StrRef),
        Just(Ty::Qualified),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| Ty::Vec(Box::new(t))),
            inner.clone().prop_map(|t| Ty::Option(Box::new(t))),
            inner.clone().prop_map(|t| Ty::Map(Box::new(t))),
            prop::collection::vec(inner.clone(), 1..3).prop_map(Ty::Tuple),
            (inner, 1..9u8).prop_map(|(t, n)| Ty::Array(Box::new(t), n)),
        ]
    })
}

#[derive(Debug, Clone)]
struct Method {
    args: Vec<Ty>,
    output: Option<Ty>,
    raw: bool,
    optional: bool,
}

impl Method {
    fn bytes_shaped(&self) -> bool {
        let bytes = Ty::Vec(Box::new(Ty::Prim("u8")));
        self.args == [bytes.clone()] && self.output.as_ref() == Some(&bytes)
    }
}

fn method() -> impl Strategy<Value = Method> {
    let bytes = Ty::Vec(Box::new(Ty::Prim("u8")));
    prop_oneof![
        4 => (prop::collection::vec(ty(), 0..4), prop::option::of(ty()), prop::bool::weighted(0.2))
            .prop_map(|(args, output, optional)| Method { args, output, raw: false, optional }),
        1 => any::<bool>().prop_map(move |raw| Method {
            args: vec![bytes.clone()],
            output: Some(bytes.clone()),
            raw,
            optional: false,
        }),
    ]
}

fn interface() -> impl Strategy<Value = Vec<Method>> {
    prop::collection::vec(method(), 1..6)
}

/// How to lay a trait out: separators between tokens, argument names and method order.
#[derive(Debug, Clone)]
struct Layout {
    separators: Vec<&'static str>,
    name_seed: usize,
    order_seed: u64,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop::collection::vec(
            prop::sample::select(vec![
                " ",
                "\n",
                "\t\t",
                "  \n    ",
                " /* c */ ",
                "\n// note\n",
            ]),
            1..64,
        ),
        any::<usize>(),
        any::<u64>(),
    )
        .prop_map(|(separators, name_seed, order_seed)| Layout {
            separators,
            name_seed,
            order_seed,
        })
}

/// Writes the trait; method `i` is named `m{i}` whatever its position.
fn source(methods: &[Method], layout: &Layout) -> String {
    let mut order: Vec<usize> = (0..methods.len()).collect();
    let mut state = layout.order_seed;
    for i in (1..order.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    let mut tokens: Vec<String> =
        "# [ plugin_interface ( version = 1 ) ] pub trait T : Send + Sync {"
            .split(' ')
            .map(str::to_owned)
            .collect();
    for index in order {
        let method = &methods[index];
        if method.raw {
            tokens.extend(["#", "[", "wire", "(", "raw", ")", "]"].map(str::to_owned));
        }
        if method.optional {
            tokens.extend(
                ["#", "[", "optional", "(", "since", "=", "2", ")", "]"].map(str::to_owned),
            );
        }
        tokens.extend([
            "fn".to_owned(),
            format!("m{index}"),
            "(".to_owned(),
            "&".to_owned(),
            "self".to_owned(),
        ]);
        for (position, arg) in method.args.iter().enumerate() {
            let names = ["value", "_", "r#type", "x", "input_data"];
            let name = names[(layout.name_seed + position * 7 + index) % names.len()];
            tokens.extend([",".to_owned(), name.to_owned(), ":".to_owned()]);
            arg.tokens(&mut tokens);
        }
        tokens.push(")".to_owned());
        if let Some(output) = &method.output {
            tokens.push("->".to_owned());
            output.tokens(&mut tokens);
        }
        tokens.push(";".to_owned());
    }
    tokens.push("}".to_owned());
    let mut text = String::new();
    for (position, token) in tokens.iter().enumerate() {
        text.push_str(token);
        text.push_str(layout.separators[position % layout.separators.len()]);
    }
    text
}

fn hash(methods: &[Method], layout: &Layout) -> u64 {
    let text = source(methods, layout);
    match find_interface(&text, "T") {
        Ok(interface) => interface.spec.hash,
        Err(error) => panic!("generated interface is invalid: {error}\n{text}"),
    }
}

proptest! {
    #[test]
    fn layout_comments_names_and_order_leave_the_hash_unchanged(
        methods in interface(), first in layout(), second in layout(),
    ) {
        prop_assert_eq!(hash(&methods, &first), hash(&methods, &second));
    }

    #[test]
    fn changing_an_argument_type_changes_the_hash(
        methods in interface(), replacement in ty(), pick in any::<prop::sample::Index>(), layout in layout(),
    ) {
        let candidates: Vec<(usize, usize)> = methods.iter().enumerate()
            .filter(|(_, m)| !m.optional && !m.raw)
            .flat_map(|(i, m)| (0..m.args.len()).map(move |a| (i, a)))
            .collect();
        prop_assume!(!candidates.is_empty());
        let (method, arg) = candidates[pick.index(candidates.len())];
        prop_assume!(methods[method].args[arg] != replacement);
        let mut changed = methods.clone();
        changed[method].args[arg] = replacement;
        prop_assert_ne!(hash(&methods, &layout), hash(&changed, &layout));
    }

    #[test]
    fn changing_a_return_type_changes_the_hash(
        methods in interface(), replacement in prop::option::of(ty()), pick in any::<prop::sample::Index>(), layout in layout(),
    ) {
        let required: Vec<usize> = (0..methods.len()).filter(|&i| !methods[i].optional && !methods[i].raw).collect();
        prop_assume!(!required.is_empty());
        let method = required[pick.index(required.len())];
        prop_assume!(methods[method].output != replacement);
        let mut changed = methods.clone();
        changed[method].output = replacement;
        prop_assert_ne!(hash(&methods, &layout), hash(&changed, &layout));
    }

    #[test]
    fn adding_or_removing_a_required_method_changes_the_hash(
        methods in interface(), extra in method(), layout in layout(),
    ) {
        let mut added = methods.clone();
        added.push(Method { optional: false, ..extra });
        prop_assert_ne!(hash(&methods, &layout), hash(&added, &layout));
        // Drop the last required method: names are positional (`m{i}`), and only optional
        // methods, which do not count, can come after it and be renamed.
        if let Some(last) = methods.iter().rposition(|m| !m.optional) {
            let mut removed = methods.clone();
            removed.remove(last);
            prop_assert_ne!(hash(&methods, &layout), hash(&removed, &layout));
        }
    }

    #[test]
    fn optional_methods_never_count(methods in interface(), extra in method(), layout in layout()) {
        let mut added = methods.clone();
        added.push(Method { optional: true, ..extra });
        prop_assert_eq!(hash(&methods, &layout), hash(&added, &layout));
    }

    #[test]
    fn toggling_raw_changes_the_hash(methods in interface(), pick in any::<prop::sample::Index>(), layout in layout()) {
        let shaped: Vec<usize> = (0..methods.len()).filter(|&i| methods[i].bytes_shaped() && !methods[i].optional).collect();
        prop_assume!(!shaped.is_empty());
        let method = shaped[pick.index(shaped.len())];
        let mut toggled = methods.clone();
        toggled[method].raw = !toggled[method].raw;
        prop_assert_ne!(hash(&methods, &layout), hash(&toggled, &layout));
    }
}
