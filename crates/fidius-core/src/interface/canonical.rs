//! Canonical printing of a type, equal to what the original fidius macro hashed.
//!
//! The original ran `syn::Type::to_token_stream().to_string()` inside a proc macro, i.e. rustc's
//! token-stream printer over the tokens syn re-emits. We reproduce that printer's spacing from the
//! token tree ourselves (rules in `crates/fidius-core/interop/HASH.md`), so the string depends on neither the
//! compiler version nor the source layout.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::ToTokens;

/// The canonical string of `ty`, e.g. `Result < Vec < u8 > , PluginError >`.
pub fn canonical_type(ty: &syn::Type) -> String {
    canonical_tokens(ty.to_token_stream())
}

/// Any token stream printed by the same rules, so its string depends on the tokens alone, never
/// on whitespace or comments.
pub(crate) fn canonical_tokens(stream: TokenStream) -> String {
    let tokens = flatten(stream);
    let mut out = String::new();
    print_sequence(&tokens, &mut out);
    out
}

/// One printable token. `::`, `->` and lifetimes are single tokens, other punctuation is one
/// character each, and invisible groups are spliced into their parent.
enum Token {
    Word(String),
    Lifetime(String),
    Literal(String),
    Punct(&'static str),
    OtherPunct(char),
    Group(Delimiter, Vec<Token>),
}

impl Token {
    fn is_punct(&self) -> bool {
        matches!(self, Token::Punct(_) | Token::OtherPunct(_))
    }

    fn is_separator(&self) -> bool {
        matches!(self, Token::OtherPunct(',' | ';'))
    }
}

fn flatten(stream: TokenStream) -> Vec<Token> {
    let mut out = Vec::new();
    let mut trees = stream.into_iter().peekable();
    while let Some(tree) = trees.next() {
        match tree {
            TokenTree::Ident(ident) => out.push(Token::Word(ident.to_string())),
            TokenTree::Literal(lit) => out.push(Token::Literal(lit.to_string())),
            TokenTree::Group(group) if group.delimiter() == Delimiter::None => {
                out.extend(flatten(group.stream()));
            }
            TokenTree::Group(group) => {
                out.push(Token::Group(group.delimiter(), flatten(group.stream())));
            }
            TokenTree::Punct(punct) => {
                let joint = punct.spacing() == Spacing::Joint;
                let next = match trees.peek() {
                    Some(TokenTree::Punct(next)) if joint => Some(next.as_char()),
                    _ => None,
                };
                match (punct.as_char(), next, trees.peek()) {
                    (':', Some(':'), _) => {
                        trees.next();
                        out.push(Token::Punct("::"));
                    }
                    ('-', Some('>'), _) => {
                        trees.next();
                        out.push(Token::Punct("->"));
                    }
                    ('\'', _, Some(TokenTree::Ident(name))) if joint => {
                        let lifetime = format!("'{name}");
                        trees.next();
                        out.push(Token::Lifetime(lifetime));
                    }
                    (other, _, _) => out.push(Token::OtherPunct(other)),
                }
            }
        }
    }
    out
}

fn print_sequence(tokens: &[Token], out: &mut String) {
    for (index, token) in tokens.iter().enumerate() {
        if index > 0 && needs_space(&tokens[index - 1], token) {
            out.push(' ');
        }
        print_token(token, out);
    }
}

fn print_token(token: &Token, out: &mut String) {
    match token {
        Token::Word(text) | Token::Lifetime(text) | Token::Literal(text) => out.push_str(text),
        Token::Punct(text) => out.push_str(text),
        Token::OtherPunct(ch) => out.push(*ch),
        Token::Group(delimiter, inner) => {
            let (open, close) = match delimiter {
                Delimiter::Parenthesis => ("(", ")"),
                Delimiter::Bracket => ("[", "]"),
                // rustc pads braces with spaces; no vector has one (const generic blocks).
                Delimiter::Brace => ("{ ", " }"),
                Delimiter::None => ("", ""),
            };
            out.push_str(open);
            print_sequence(inner, out);
            out.push_str(close);
        }
    }
}

fn needs_space(previous: &Token, next: &Token) -> bool {
    if next.is_separator() {
        return previous.is_punct();
    }
    if let Token::Group(Delimiter::Parenthesis, _) = next {
        if let Token::Word(word) = previous {
            return is_spaced_keyword(word);
        }
    }
    true
}

/// Reserved words after which rustc keeps a space before `(`; `fn`, `Self` and `pub` are printed
/// like ordinary identifiers (`fn(u8) -> u8`).
fn is_spaced_keyword(word: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
        "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe",
        "use", "where", "while", "abstract", "become", "box", "do", "final", "macro", "override",
        "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
    ];
    KEYWORDS.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::canonical_type;

    fn canon(source: &str) -> String {
        let ty: syn::Type = syn::parse_str(source).expect("test type parses");
        canonical_type(&ty)
    }

    #[test]
    fn spacing_rules_from_the_spec() {
        let cases = [
            (
                "Result<Vec<u8>, PluginError>",
                "Result < Vec < u8 > , PluginError >",
            ),
            (
                "Result<String, PluginError>",
                "Result < String, PluginError >",
            ),
            ("(i64,)", "(i64,)"),
            ("[[u8; 2]; 3]", "[[u8; 2]; 3]"),
            ("[Vec<u8>; 2]", "[Vec < u8 > ; 2]"),
            ("Cow<'static, str>", "Cow < 'static, str >"),
            ("&'static str", "& 'static str"),
            ("*const u8", "* const u8"),
            ("&&str", "& & str"),
            (
                "Box<dyn Fn(u8) -> u8 + Send>",
                "Box < dyn Fn(u8) -> u8 + Send >",
            ),
            ("fn(u8) -> u8", "fn(u8) -> u8"),
            ("::std::vec::Vec<u8>", ":: std :: vec :: Vec < u8 >"),
            ("Vec::<u8>", "Vec :: < u8 >"),
            ("HashMap<String, i64,>", "HashMap < String, i64, >"),
            ("[& 'static str; 2]", "[& 'static str; 2]"),
            ("Vec<Vec<u8>>", "Vec < Vec < u8 > >"),
            ("[u8; 0x10]", "[u8; 0x10]"),
        ];
        for (source, expected) in cases {
            assert_eq!(canon(source), expected, "source: {source}");
        }
    }
}
