//! A streamed result in a worker: the plugin's iterator pulled while the host has granted room
//! (its window), each item sent as it is made; between windows the worker waits for the host's
//! `STREAM_PULL` or `STREAM_CANCEL`. Timeouts are the host's: it kills a worker past a deadline.

use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_ffi::Interp;

use std::cell::{Cell, RefCell};

use super::serve::{call_host, send_output, split_call, Collected};
use crate::backend::process::mailbox::{Mailbox, Wait};
use crate::backend::process::protocol;
use crate::plugin::loader::LoadedInstance;
use crate::plugin::output::OutputSink;
use crate::plugin::shared;
use crate::plugin::stream::{self, Pulled};
use crate::stream_input;

/// How many items go by between two sends of the plugin's output during a long stream.
const OUTPUT_EVERY: u64 = 256;

/// Serves one `STREAM_OPEN` (`body`) until the stream ends; `Err` only when the host went away or
/// broke the protocol.
pub(super) fn serve(
    py: Interp<'_>,
    instance: &LoadedInstance<'_>,
    descriptor: &OwnedInterfaceDescriptor,
    body: &[u8],
    collected: &Collected,
    mailbox: &mut Mailbox,
    wait: &mut Wait<'_>,
) -> Result<(), String> {
    let (index, rest) = split_call(body)?;
    let (window, payload) = split_call(rest)?;
    let method_name = descriptor
        .method(index)
        .map_or("", |method| method.name.as_str());
    // Shared by the items sent and, for a bidirectional method, the pulls of its streamed argument
    // (made while the plugin runs, between sends).
    let link = RefCell::new((mailbox, wait));
    // The host's `STREAM_CANCEL`, when it crossed a pull (see `call_host`).
    let cancelled = Cell::new(false);
    let pull_input = |name: &str, args: &[u8]| {
        if name != stream_input::PULL {
            // Never sent: the host serves no host functions to a stream.
            return stream_input::no_host_functions(name, args);
        }
        let (mailbox, wait) = &mut *link.borrow_mut();
        call_host(mailbox, wait, name, args, Some(&cancelled))
    };
    let streams_argument = descriptor
        .method(index)
        .is_some_and(|method| method.streamed_argument.is_some());
    // Runs a step of the plugin, serving its pulls when it has a streamed argument.
    let plugin_step = |step: &mut dyn FnMut()| {
        if streams_argument {
            fidius_ffi::serve_host_calls(&pull_input, step);
        } else {
            step();
        }
    };
    let send = |kind: u8, body: &[u8], with_output: bool| {
        let (mailbox, wait) = &mut *link.borrow_mut();
        if with_output {
            collected.drain(
                &instance.output_buffer.bind(py),
                &instance.take_output.bind(py),
            );
            send_output(collected, mailbox, wait)?;
        }
        mailbox
            .send(kind, &[body], wait)
            .map_err(|_| "the host went away".to_owned())
    };
    let mut opened = None;
    plugin_step(&mut || {
        opened =
            Some(shared::method(descriptor, index).and_then(|method| {
                Ok((method, stream::open(py, instance, method, index, payload)?))
            }));
    });
    let (method, opened) = match opened {
        Some(Ok(opened)) => opened,
        Some(Err(error)) => {
            let body = protocol::encode_error(&error, method_name);
            return send(protocol::STREAM_ERR, &body, true);
        }
        None => return Err("the stream did not open".to_owned()),
    };
    let mut room = window as u64;
    let mut sent = 0u64;
    loop {
        if cancelled.get() {
            opened.close();
            return send(protocol::STREAM_END, &[], true);
        }
        if room == 0 {
            // Only small messages are expected here.
            let received = {
                let (mailbox, wait) = &mut *link.borrow_mut();
                mailbox.receive(64, wait)
            };
            let (kind, body) =
                received.map_err(|_| "the host went away during a stream".to_owned())?;
            match kind {
                protocol::STREAM_PULL => {
                    let more = body
                        .first_chunk::<4>()
                        .map(|more| u32::from_le_bytes(*more))
                        .ok_or_else(|| "a pull without a count".to_owned())?;
                    room += u64::from(more);
                }
                protocol::STREAM_CANCEL => cancelled.set(true),
                other => return Err(format!("unexpected message kind {other} during a stream")),
            }
            continue;
        }
        let mut pulled = None;
        plugin_step(&mut || pulled = Some(opened.pull(instance, method)));
        match pulled {
            Some(Pulled::Item(json)) => {
                sent += 1;
                send(protocol::STREAM_ITEM, &json, sent % OUTPUT_EVERY == 0)?;
                room -= 1;
            }
            Some(Pulled::End) | None => return send(protocol::STREAM_END, &[], true),
            Some(Pulled::Failed(error)) => {
                let body = protocol::encode_error(&error, method_name);
                return send(protocol::STREAM_ERR, &body, true);
            }
        }
    }
}
