//! What `#[plugin_interface]` generates for the tutorial's Greeter: the descriptor constants and
//! a typed client, driven through a `PluginCall` implementation that runs the plugin logic in
//! Rust (the real Python host implements the same trait).

use std::cell::RefCell;

use fidius_core::interface::{PythonArgDescriptor, WireMode};
use fidius_core::{CallError, PluginCall, PluginError};

mod greeter {
    include!("fixtures/greeter.rs");
}

use greeter::__fidius_Greeter::{Greeter_INTERFACE_HASH, Greeter_PYTHON_DESCRIPTOR};
use greeter::{GreeterClient, Summary};

/// Plays the plugin: decodes the positional JSON array like the host's Python side does.
#[derive(Default)]
struct RustGreeter {
    has_farewell: bool,
    last_args: RefCell<Vec<u8>>,
}

impl PluginCall for RustGreeter {
    fn call_typed_json(&self, method_index: usize, args_json: &[u8]) -> Result<Vec<u8>, CallError> {
        *self.last_args.borrow_mut() = args_json.to_vec();
        let args: Vec<serde_json::Value> =
            serde_json::from_slice(args_json).expect("the client sends a JSON array");
        let result = match Greeter_PYTHON_DESCRIPTOR.methods[method_index].name {
            "greet" => {
                serde_json::json!(format!("Hello, {}!", args[0].as_str().unwrap_or_default()))
            }
            "stats" => {
                let values: Vec<f64> = serde_json::from_value(args[0].clone()).expect("floats");
                if values.is_empty() {
                    return Err(PluginError::new("EMPTY_INPUT", "no values")
                        .with_details(serde_json::json!({ "count": 0 }))
                        .into());
                }
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                serde_json::json!({ "count": values.len(), "mean": mean, "labels": args[1] })
            }
            "farewell" => serde_json::json!("Goodbye"),
            other => panic!("typed call to {other}"),
        };
        Ok(serde_json::to_vec(&result).expect("encodes"))
    }

    fn call_raw(&self, method_index: usize, input: &[u8]) -> Result<Vec<u8>, CallError> {
        assert_eq!(Greeter_PYTHON_DESCRIPTOR.methods[method_index].name, "echo");
        Ok(input.iter().rev().copied().collect())
    }

    fn implements(&self, method_index: usize) -> bool {
        Greeter_PYTHON_DESCRIPTOR.methods[method_index].name != "farewell" || self.has_farewell
    }
}

#[test]
fn descriptor_lists_methods_in_declaration_order() {
    let descriptor = Greeter_PYTHON_DESCRIPTOR;
    assert_eq!(descriptor.trait_name, "Greeter");
    assert_eq!(descriptor.version, 1);
    let names: Vec<&str> = descriptor.methods.iter().map(|m| m.name).collect();
    assert_eq!(names, ["greet", "stats", "echo", "farewell"]);

    let stats = descriptor.methods[1];
    assert_eq!(stats.wire, WireMode::TypedJson);
    assert_eq!(
        stats.args,
        [
            PythonArgDescriptor {
                name: "values",
                ty: "Vec < f64 >"
            },
            PythonArgDescriptor {
                name: "labels",
                ty: "Option < HashMap < String, String > >"
            },
        ]
    );
    assert_eq!(stats.returns, "Result < Summary, PluginError >");
    assert_eq!(descriptor.methods[2].wire, WireMode::Raw);
    assert_eq!(
        descriptor.methods[2].signature,
        "echo:Vec < u8 >->Vec < u8 >!raw"
    );
    assert_eq!(descriptor.methods[3].optional_since, Some(2));
    assert!(!descriptor.methods[0].is_optional());
}

#[test]
fn hash_leaves_out_optional_methods_and_matches_the_descriptor() {
    // FNV-1a over the three required signatures, computed by the spec's rules.
    assert_eq!(Greeter_INTERFACE_HASH, 0xb02e_b410_4846_ffe7);
    assert_eq!(
        Greeter_PYTHON_DESCRIPTOR.interface_hash,
        Greeter_INTERFACE_HASH
    );
    assert_eq!(
        Greeter_PYTHON_DESCRIPTOR.recomputed_hash(),
        Greeter_INTERFACE_HASH
    );
}

#[test]
fn client_sends_positional_json_and_decodes_the_result() -> Result<(), CallError> {
    let plugin = RustGreeter::default();
    let client = GreeterClient(&plugin);
    assert_eq!(client.greet("World".into())?, "Hello, World!");
    assert_eq!(&*plugin.last_args.borrow(), br#"["World"]"#);

    let summary = client.stats(vec![1.0, 3.0], None)?;
    assert_eq!(
        summary,
        Summary {
            count: 2,
            mean: 2.0,
            labels: None
        }
    );
    assert_eq!(&*plugin.last_args.borrow(), b"[[1.0,3.0],null]");
    Ok(())
}

#[test]
fn client_surfaces_the_plugins_error() {
    let client = GreeterClient(RustGreeter::default());
    match client.stats(Vec::new(), None) {
        Err(CallError::Plugin(error)) => {
            assert_eq!(error.code, "EMPTY_INPUT");
            assert_eq!(error.message, "no values");
            assert_eq!(error.details, Some(serde_json::json!({ "count": 0 })));
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

#[test]
fn raw_methods_pass_bytes_through_unencoded() -> Result<(), CallError> {
    let client = GreeterClient(RustGreeter::default());
    assert_eq!(client.echo(vec![1, 2, 3])?, [3, 2, 1]);
    Ok(())
}

#[test]
fn missing_optional_method_is_not_implemented() -> Result<(), CallError> {
    let without = GreeterClient(RustGreeter::default());
    match without.farewell("Ann".into()) {
        Err(CallError::NotImplemented { method }) => assert_eq!(method, "farewell"),
        other => panic!("expected NotImplemented, got {other:?}"),
    }
    let with = GreeterClient(RustGreeter {
        has_farewell: true,
        ..RustGreeter::default()
    });
    assert_eq!(with.farewell("Ann".into())?, "Goodbye");
    Ok(())
}

#[test]
fn wrong_result_shape_is_a_decode_error() {
    struct Liar;
    impl PluginCall for Liar {
        fn call_typed_json(&self, _: usize, _: &[u8]) -> Result<Vec<u8>, CallError> {
            Ok(b"42".to_vec())
        }
        fn call_raw(&self, _: usize, input: &[u8]) -> Result<Vec<u8>, CallError> {
            Ok(input.to_vec())
        }
        fn implements(&self, _: usize) -> bool {
            true
        }
    }
    match GreeterClient(Liar).greet("x".into()) {
        Err(CallError::DecodeResult { method, .. }) => assert_eq!(method, "greet"),
        other => panic!("expected DecodeResult, got {other:?}"),
    }
}

mod accepted_forms {
    //! The original tool's spellings compile: `fidius::plugin_interface`, `buffer = ...`,
    //! supertraits, `#[method_meta]`/`#[trait_meta]`, no-argument and unit methods.
    use fidius_macro as fidius;

    #[fidius::plugin_interface(version = 3, buffer = PluginAllocated)]
    #[trait_meta("owner", "team-a")]
    pub trait Legacy: Send + Sync {
        #[method_meta("kind", "greeting")]
        fn greet(&self, name: String) -> String;
        fn reset(&self);
        fn count(&self) -> u64;
    }

    #[test]
    fn legacy_spelling_gives_the_original_hash() {
        // `greet:String->String` alone hashes to the StrToStr vector; here three methods.
        assert_eq!(__fidius_Legacy::Legacy_PYTHON_DESCRIPTOR.version, 3);
        assert_eq!(
            __fidius_Legacy::Legacy_INTERFACE_HASH,
            fidius_core::interface::hash_signatures([
                "greet:String->String",
                "reset:->",
                "count:->u64"
            ])
        );
    }
}

#[test]
fn the_descriptor_carries_the_same_schema_fingerprint_as_the_stub() {
    // The macro read the trait's own file (the included fixture) for the serde structs, as
    // `fidius python-stub` reads it.
    let interface =
        fidius_core::interface::find_interface(include_str!("fixtures/greeter.rs"), "Greeter")
            .expect("the fixture is an interface file");
    assert!(Greeter_PYTHON_DESCRIPTOR.schema_fingerprint.is_some());
    assert_eq!(
        Greeter_PYTHON_DESCRIPTOR.schema_fingerprint,
        interface.spec.schema_fingerprint
    );
}

/// The async side of `RustGreeter`: each call is answered at once (the host's futures complete
/// from another thread; the client code is the same).
impl fidius_core::AsyncPluginCall for RustGreeter {
    type Pending = std::future::Ready<Result<Vec<u8>, CallError>>;

    fn call_typed_json_async(&self, method_index: usize, args_json: Vec<u8>) -> Self::Pending {
        std::future::ready(self.call_typed_json(method_index, &args_json))
    }

    fn call_raw_async(&self, method_index: usize, input: Vec<u8>) -> Self::Pending {
        std::future::ready(self.call_raw(method_index, &input))
    }
}

/// Polls `future` to its end on this thread (a minimal executor: no runtime needed).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[test]
fn async_client_encodes_at_the_call_and_decodes_when_awaited() -> Result<(), CallError> {
    let plugin = RustGreeter::default();
    let client = greeter::GreeterAsyncClient(&plugin);
    let greeting = client.greet("World".into());
    // Encoded when the method was called, before the future is polled.
    assert_eq!(&*plugin.last_args.borrow(), br#"["World"]"#);
    assert_eq!(block_on(greeting)?, "Hello, World!");
    let summary = block_on(client.stats(vec![1.0, 3.0], None))?;
    assert_eq!(summary.count, 2);
    assert_eq!(block_on(client.echo(b"abc".to_vec()))?, b"cba");
    // An optional method the plugin lacks fails without a call.
    match block_on(client.farewell("x".into())) {
        Err(CallError::NotImplemented { method }) => assert_eq!(method, "farewell"),
        other => panic!("{other:?}"),
    }
    match block_on(client.stats(Vec::new(), None)) {
        Err(CallError::Plugin(error)) => assert_eq!(error.code, "EMPTY_INPUT"),
        other => panic!("{other:?}"),
    }
    Ok(())
}
