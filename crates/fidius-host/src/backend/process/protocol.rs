//! What host and worker say to each other over the mailbox. Both sides come from one build, so the
//! format is private and versioned only by the mailbox's magic number.

use std::path::PathBuf;

use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_core::CallError;
use serde::{Deserialize, Serialize};

use crate::plugin::source::PluginSource;

/// Host → worker: load this plugin (JSON [`StartSpec`]).
pub(crate) const START: u8 = 1;
/// Host → worker: call a method (u32 method index, little-endian, then the payload).
pub(crate) const CALL: u8 = 2;
/// Host → worker: exit now.
pub(crate) const SHUTDOWN: u8 = 3;
/// Host → worker: the result of the worker's [`CALLBACK`] (JSON).
pub(crate) const CALLBACK_OK: u8 = 4;
/// Host → worker: the error of the worker's [`CALLBACK`] (UTF-8 message for `fidius.HostError`).
pub(crate) const CALLBACK_ERR: u8 = 5;
/// Host → worker: call a method that streams its result (u32 method index, u32 window, both
/// little-endian, then the payload). The worker sends up to `window` [`STREAM_ITEM`]s, then waits
/// for [`STREAM_PULL`] (more) or [`STREAM_CANCEL`]; the stream ends with [`STREAM_END`] or
/// [`STREAM_ERR`].
pub(crate) const STREAM_OPEN: u8 = 6;
/// Host → worker: the host took the items sent so far; send up to this many more (u32).
pub(crate) const STREAM_PULL: u8 = 7;
/// Host → worker: the consumer dropped the stream; close the plugin's iterator, then [`STREAM_END`].
pub(crate) const STREAM_CANCEL: u8 = 8;
/// Worker → host: the load's outcome (JSON [`Started`]).
pub(crate) const STARTED: u8 = 11;
/// Worker → host: output the plugin wrote (JSON, as the bootstrap hands it over).
pub(crate) const OUTPUT: u8 = 12;
/// Worker → host: a call's result bytes.
pub(crate) const REPLY_OK: u8 = 13;
/// Worker → host: a call's error ([`CallError`]'s serde JSON form; see [`encode_error`]).
pub(crate) const REPLY_ERR: u8 = 14;
/// Worker → host, while a call is in flight: run a host function (see [`encode_callback`]); the
/// host answers [`CALLBACK_OK`] or [`CALLBACK_ERR`] before the call's reply.
pub(crate) const CALLBACK: u8 = 15;
/// Worker → host: one item of a streamed result (its JSON).
pub(crate) const STREAM_ITEM: u8 = 16;
/// Worker → host: the streamed result ended (exhausted, or closed after [`STREAM_CANCEL`]).
pub(crate) const STREAM_END: u8 = 17;
/// Worker → host: the streamed result failed (as [`REPLY_ERR`]); nothing follows.
pub(crate) const STREAM_ERR: u8 = 18;

/// Everything a worker needs to load its plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StartSpec {
    pub(crate) plugin: String,
    pub(crate) version: String,
    pub(crate) dir: PathBuf,
    pub(crate) entry_module: String,
    pub(crate) interface: OwnedInterfaceDescriptor,
    /// Python `logging` level the host wants records from.
    pub(crate) log_level: u32,
    /// Address-space limit for the worker (`RLIMIT_AS`), in bytes.
    pub(crate) memory_limit: Option<u64>,
    /// Refuse what the original fidius accepted with a warning (checked by the host).
    pub(crate) strict: bool,
    /// The configuration for the plugin's `__fidius_configure__` (`LoadOptions::config`).
    #[serde(default)]
    pub(crate) config: Option<Configuration>,
    /// The host functions the plugin's `fidius.host` offers (served over the mailbox).
    #[serde(default)]
    pub(crate) host_functions: Vec<String>,
    /// The host's private bytecode folder, for a tree the host verified.
    #[serde(default)]
    pub(crate) bytecode_cache: Option<PathBuf>,
}

/// A configuration on the wire: wrapped, so that a `null` configuration (`&()`) stays distinct
/// from none (an `Option` of a bare `null` would read back as `None`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Configuration {
    pub(crate) value: serde_json::Value,
}

impl StartSpec {
    pub(crate) fn source(&self) -> PluginSource {
        let mut source =
            PluginSource::new(&self.plugin, &self.version, &self.dir, &self.entry_module);
        source.bytecode_cache = self.bytecode_cache.clone();
        source
    }
}

/// The worker's answer to [`START`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Started {
    /// The bootstrap ran; its JSON report says whether the plugin was accepted (the host checks it
    /// with the same code as for a sub-interpreter). `implemented` is filled when it was.
    Report {
        report: String,
        implemented: Vec<bool>,
    },
    /// The bootstrap itself failed (no report).
    Failed {
        type_name: String,
        message: String,
        traceback: Option<String>,
    },
}

/// The longest error reply the host reads. An error is a few strings and, for a `PluginError`,
/// its JSON `details`: far below this. The bound keeps a hostile worker from making the host build
/// a huge JSON tree (many times the size of the body) out of one reply.
pub(crate) const MAX_ERROR_REPLY: usize = 16 << 20;

/// The body of a [`REPLY_ERR`] for `error`, raised by a call of `method`: [`CallError`]'s own serde
/// form. The variants only the host produces have no wire form; should the worker's dispatch ever
/// end in one, it is sent as [`CallError::InvalidResult`] describing it.
pub(crate) fn encode_error(error: &CallError, method: &str) -> Vec<u8> {
    serde_json::to_vec(error).unwrap_or_else(|_| {
        let described = CallError::InvalidResult {
            method: method.to_owned(),
            reason: error.to_string(),
        };
        // Two strings always serialise.
        serde_json::to_vec(&described).unwrap_or_default()
    })
}

/// Reads the [`REPLY_ERR`] body a worker sent for a call of method `index` of `descriptor`. The
/// worker is not trusted: a body over [`MAX_ERROR_REPLY`], anything but one of the variants a
/// worker may send (the host-only ones do not deserialise), or an error about another method is a
/// protocol error, described.
pub(crate) fn decode_error(
    body: &[u8],
    descriptor: &OwnedInterfaceDescriptor,
    index: usize,
) -> Result<CallError, String> {
    if body.len() > MAX_ERROR_REPLY {
        return Err(format!(
            "error reply of {} bytes exceeds the limit of {MAX_ERROR_REPLY}",
            body.len()
        ));
    }
    // serde_json bounds nesting (128 levels), so no body can exhaust the stack.
    let mut error: CallError =
        serde_json::from_slice(body).map_err(|error| format!("unreadable error reply: {error}"))?;
    let called = descriptor
        .methods
        .get(index)
        .map(|method| method.name.as_str());
    let named = match &mut error {
        CallError::UnknownMethod {
            interface,
            index: reported,
        } => {
            // Not on the wire: the interface is the host's.
            interface.clone_from(&descriptor.trait_name);
            if *reported != index {
                return Err(format!(
                    "error reply names method index {reported}, the call was to {index}"
                ));
            }
            None
        }
        CallError::NotImplemented { method }
        | CallError::Python { method, .. }
        | CallError::Panic { method, .. }
        | CallError::InvalidResult { method, .. }
        | CallError::InvalidArguments { method, .. } => Some(method.as_str()),
        _ => None,
    };
    match named {
        Some(named) if Some(named) != called => Err(format!(
            "error reply names method `{}`, the call was to `{}`",
            named.chars().take(100).collect::<String>(),
            called.unwrap_or_default()
        )),
        _ => Ok(error),
    }
}

/// The header and name of a [`CALLBACK`] body; the arguments (a JSON array) follow.
pub(crate) fn encode_callback(name: &str) -> Result<Vec<u8>, String> {
    let length = u16::try_from(name.len())
        .ok()
        .filter(|&length| usize::from(length) <= crate::callback::MAX_NAME)
        .ok_or_else(|| format!("host function name of {} bytes is too long", name.len()))?;
    let mut header = length.to_le_bytes().to_vec();
    header.extend_from_slice(name.as_bytes());
    Ok(header)
}

/// Splits a [`CALLBACK`] body into the host function's name and its arguments. The worker is not
/// trusted: a body too short for its header, a name over `callback::MAX_NAME` bytes or not UTF-8
/// is a protocol error, described.
pub(crate) fn decode_callback(body: &[u8]) -> Result<(&str, &[u8]), String> {
    let (length, rest) = body
        .split_first_chunk::<2>()
        .ok_or_else(|| "callback message without a name length".to_owned())?;
    let length = usize::from(u16::from_le_bytes(*length));
    if length > crate::callback::MAX_NAME || length > rest.len() {
        return Err(format!(
            "callback names a host function of {length} bytes (at most {} allowed, {} sent)",
            crate::callback::MAX_NAME,
            rest.len()
        ));
    }
    let (name, args) = rest.split_at(length);
    let name = std::str::from_utf8(name)
        .map_err(|_| "callback names a host function that is not UTF-8".to_owned())?;
    Ok((name, args))
}

#[cfg(test)]
pub(crate) mod tests {
    use fidius_core::interface::{PythonInterfaceDescriptor, PythonMethodDescriptor, WireMode};
    use fidius_core::PluginError;

    use super::*;

    const METHODS: &[PythonMethodDescriptor] = &[PythonMethodDescriptor {
        name: "shout",
        wire: WireMode::TypedJson,
        args: &[],
        returns: "String",
        optional_since: None,
        signature: "shout:->String",
        streams_result: false,
        streams_argument: false,
        streamed_argument: None,
    }];
    /// A one-method interface (`shout`) for tests of the protocol.
    pub(crate) const DESCRIPTOR: PythonInterfaceDescriptor = PythonInterfaceDescriptor {
        trait_name: "Shouter",
        version: 1,
        interface_hash: 1,
        schema_fingerprint: None,
        methods: METHODS,
    };

    fn round_trip(error: CallError) -> CallError {
        decode_error(&encode_error(&error, "shout"), &(&DESCRIPTOR).into(), 0).expect("decodes")
    }

    #[test]
    fn every_variant_a_worker_sends_round_trips_with_its_data() {
        let plugin = PluginError::new("EMPTY", "nothing to shout")
            .with_details(serde_json::json!({"field": "text", "sizes": [1, 2]}));
        match round_trip(CallError::Plugin(plugin.clone())) {
            CallError::Plugin(back) => assert_eq!(back, plugin),
            other => panic!("{other:?}"),
        }
        match round_trip(CallError::Python {
            method: "shout".into(),
            exception_type: "ValueError".into(),
            message: "bad".into(),
            traceback: Some("Traceback ...".into()),
        }) {
            CallError::Python {
                method,
                exception_type,
                message,
                traceback,
            } => assert_eq!(
                (method, exception_type, message, traceback),
                (
                    "shout".to_owned(),
                    "ValueError".to_owned(),
                    "bad".to_owned(),
                    Some("Traceback ...".to_owned())
                )
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            round_trip(CallError::NotImplemented { method: "shout".into() }),
            CallError::NotImplemented { method } if method == "shout"
        ));
        assert!(matches!(
            round_trip(CallError::InvalidResult { method: "shout".into(), reason: "a set".into() }),
            CallError::InvalidResult { method, reason } if method == "shout" && reason == "a set"
        ));
        assert!(matches!(
            round_trip(CallError::InvalidArguments { method: "shout".into(), reason: "no".into() }),
            CallError::InvalidArguments { method, reason } if method == "shout" && reason == "no"
        ));
        // The interface is the host's own, whatever the worker's build called it.
        assert!(matches!(
            round_trip(CallError::UnknownMethod {
                interface: "Other".into(),
                index: 0
            }),
            CallError::UnknownMethod {
                interface,
                index: 0
            } if interface == "Shouter"
        ));
    }

    #[test]
    fn a_host_only_error_is_sent_as_an_invalid_result_of_the_method() {
        let timeout = CallError::Timeout {
            plugin: "p".into(),
            method: "shout".into(),
            after: std::time::Duration::from_secs(1),
        };
        match round_trip(timeout) {
            CallError::InvalidResult { method, reason } => {
                assert_eq!(method, "shout");
                assert!(reason.contains("timed out"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn callback_bodies_round_trip_and_hostile_ones_are_refused() {
        let mut body = encode_callback("kv_get").expect("a short name");
        body.extend_from_slice(br#"["key"]"#);
        assert_eq!(
            decode_callback(&body).expect("decodes"),
            ("kv_get", &br#"["key"]"#[..])
        );
        assert!(encode_callback(&"x".repeat(65)).is_err());
        assert!(decode_callback(b"\x01")
            .unwrap_err()
            .contains("without a name length"));
        // A name longer than the body, or than any host function may be called.
        assert!(decode_callback(b"\x09\x00abc")
            .unwrap_err()
            .contains("3 sent"));
        let long = [&[200u8, 0][..], &[b'a'; 200][..]].concat();
        assert!(decode_callback(&long).unwrap_err().contains("at most 64"));
        assert!(decode_callback(b"\x02\x00\xff\xfe[]")
            .unwrap_err()
            .contains("UTF-8"));
    }

    #[test]
    fn hostile_error_replies_are_protocol_errors() {
        let refused = |body: &[u8]| decode_error(body, &(&DESCRIPTOR).into(), 0).unwrap_err();
        // A worker must not claim what only the host can tell: timeouts, crashes, unavailability.
        let claimed =
            refused(br#"{"Timeout":{"plugin":"p","method":"shout","after":{"secs":1,"nanos":0}}}"#);
        assert!(claimed.contains("unknown variant `Timeout`"), "{claimed}");
        assert!(refused(br#"{"WorkerCrashed":{"plugin":"p"}}"#).contains("unknown variant"));
        assert!(refused(br#"{"Other":{"message":"x"}}"#).contains("unknown variant `Other`"));
        assert!(refused(b"not json").starts_with("unreadable error reply"));
        assert!(refused(br#"{"Python":{"method":"shout"}}"#).contains("missing field"));
        let extra = refused(br#"{"NotImplemented":{"method":"shout","extra":1}}"#);
        assert!(extra.contains("unknown field `extra`"), "{extra}");
        // Errors about a method other than the one called.
        let other = refused(br#"{"NotImplemented":{"method":"whisper"}}"#);
        assert!(
            other.contains("`whisper`") && other.contains("`shout`"),
            "{other}"
        );
        assert!(refused(br#"{"UnknownMethod":{"index":7}}"#).contains("index 7"));
        // Deeper than serde_json's recursion limit: an error, not a stack overflow.
        let deep = format!(
            r#"{{"Plugin":{{"code":"c","message":"m","details":{}1{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(refused(deep.as_bytes()).contains("recursion limit"));
        // Over the size bound: refused before it is parsed.
        let huge = vec![b' '; MAX_ERROR_REPLY + 1];
        assert!(refused(&huge).contains("exceeds the limit"));
    }
}
