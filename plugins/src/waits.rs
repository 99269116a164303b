//! The host calls a guest can wait in, bounded by the call's deadline.
//!
//! The epoch deadline ([`crate::host`]) interrupts wasm code only: inside a host call no wasm
//! runs, so the epoch is never looked at. WASI's waiting imports would hold the call, its
//! thread and its pool slot for as long as the guest asks: a monotonic-clock subscription an
//! hour ahead, or `u64::MAX` ns, which the host turns into "never". Each of them is linked
//! again here over wasmtime-wasi's definition (the same operation, under
//! `tokio::time::timeout_at` of the store's [`State::deadline`]); when the deadline passes
//! first, the host call fails with [`DeadlinePassed`], the guest traps, `classify` reports
//! the usual timeout limit and the instance is discarded (its slot freed). In a training run
//! ([`crate::training`]) a wait also ends when the grace after a stop is over
//! ([`crate::training::Interrupted`]).
//!
//! Every import of the linked WASI 0.2 (wasmtime-wasi 48, sync) and whether it can wait:
//!
//! ```text
//! wasi:io/poll     poll, [method]pollable.block            any pollable: clocks,   bounded here
//!                                                          streams, sockets
//! wasi:io/streams  [method]input-stream.blocking-read,     the stream's readiness  bounded here
//!                  blocking-skip, [method]output-stream.
//!                  blocking-write-and-flush, blocking-
//!                  write-zeroes-and-flush, blocking-flush,
//!                  blocking-splice
//!                  [drop]input-stream / output-stream      an in-flight read of a  the disk
//!                                                          file (below)
//!                  everything else (read, write, ready,…)  nothing
//! wasi:filesystem  descriptor methods                      blocking I/O on         the disk
//!                                                          regular files
//! wasi:sockets     all                                     nothing: every socket operation is
//!                                                          refused, an idle socket is ready
//! wasi:clocks, wasi:random, wasi:cli                       nothing (stdin is closed; stdout
//!                                                          and stderr are in-memory captures)
//! atelier:plugin   storage, checkpoints                    files under the grant   the disk
//!                  the rest                                nothing (bounded by their input)
//! ```
//!
//! Files: only inference processors have any, their model directory at `/model`, read-only,
//! holding the regular files the gateway wrote at registration (no FIFO or device a read could
//! wait on forever).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentNamedList, Lift, Linker, Lower, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError};

use crate::state::State;
use crate::training::TrainWatch;

/// The `wasi:io` interfaces as wasmtime-wasi names them; [`link`] fails (at host start) if it
/// linked another version, so that no waiting import is left unbounded by an upgrade.
const POLL: &str = "wasi:io/poll@0.2.12";
const STREAMS: &str = "wasi:io/streams@0.2.12";

/// A host call the guest waited in outlived the call's deadline.
#[derive(Debug, thiserror::Error)]
#[error("the call's deadline passed while the plugin waited in {import}")]
pub struct DeadlinePassed {
    pub import: &'static str,
}

/// Links the waiting imports of `wasi:io` over the ones `add_to_linker_sync` defined.
pub(crate) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    shadow(
        linker,
        POLL,
        "poll",
        |mut store, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let (deadline, run, table) = parts(&mut store);
            let ready = until(
                deadline,
                run,
                "wasi:io/poll.poll",
                poll::Host::poll(table, pollables),
            )??;
            Ok((ready,))
        },
    )?;
    shadow(
        linker,
        POLL,
        "[method]pollable.block",
        |mut store, (pollable,): (Resource<DynPollable>,)| {
            let (deadline, run, table) = parts(&mut store);
            until(
                deadline,
                run,
                "wasi:io/poll.[method]pollable.block",
                poll::HostPollable::block(table, pollable),
            )??;
            Ok(())
        },
    )?;
    shadow(
        linker,
        STREAMS,
        "[method]input-stream.blocking-read",
        |mut store, (stream, len): (Resource<DynInputStream>, u64)| {
            let (deadline, run, table) = parts(&mut store);
            let r = until(
                deadline,
                run,
                "wasi:io/streams.[method]input-stream.blocking-read",
                streams::HostInputStream::blocking_read(table, stream, len),
            )?;
            stream_result(table, r)
        },
    )?;
    shadow(
        linker,
        STREAMS,
        "[method]input-stream.blocking-skip",
        |mut store, (stream, len): (Resource<DynInputStream>, u64)| {
            let (deadline, run, table) = parts(&mut store);
            let r = until(
                deadline,
                run,
                "wasi:io/streams.[method]input-stream.blocking-skip",
                streams::HostInputStream::blocking_skip(table, stream, len),
            )?;
            stream_result(table, r)
        },
    )?;
    shadow(
        linker,
        STREAMS,
        "[method]output-stream.blocking-write-and-flush",
        |mut store, (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let (deadline, run, table) = parts(&mut store);
            let r = until(
                deadline,
                run,
                "wasi:io/streams.[method]output-stream.blocking-write-and-flush",
                streams::HostOutputStream::blocking_write_and_flush(table, stream, bytes),
            )?;
            stream_result(table, r)
        },
    )?;
    shadow(
        linker,
        STREAMS,
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store, (stream, len): (Resource<DynOutputStream>, u64)| {
            let (deadline, run, table) = parts(&mut store);
            let r = until(
                deadline,
                run,
                "wasi:io/streams.[method]output-stream.blocking-write-zeroes-and-flush",
                streams::HostOutputStream::blocking_write_zeroes_and_flush(table, stream, len),
            )?;
            stream_result(table, r)
        },
    )?;
    shadow(
        linker,
        STREAMS,
        "[method]output-stream.blocking-flush",
        |mut store, (stream,): (Resource<DynOutputStream>,)| {
            let (deadline, run, table) = parts(&mut store);
            let r = until(
                deadline,
                run,
                "wasi:io/streams.[method]output-stream.blocking-flush",
                streams::HostOutputStream::blocking_flush(table, stream),
            )?;
            stream_result(table, r)
        },
    )?;
    shadow(
        linker,
        STREAMS,
        "[method]output-stream.blocking-splice",
        |mut store,
         (dest, src, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let (deadline, run, table) = parts(&mut store);
            let r = until(
                deadline,
                run,
                "wasi:io/streams.[method]output-stream.blocking-splice",
                streams::HostOutputStream::blocking_splice(table, dest, src, len),
            )?;
            stream_result(table, r)
        },
    )?;
    Ok(())
}

/// Defines `instance.name` again over wasmtime-wasi's definition, which must exist.
fn shadow<P, R, F>(
    linker: &mut Linker<State>,
    instance: &str,
    name: &str,
    f: F,
) -> wasmtime::Result<()>
where
    F: Fn(StoreContextMut<'_, State>, P) -> wasmtime::Result<R> + Clone + Send + Sync + 'static,
    P: ComponentNamedList + Lift + 'static,
    R: ComponentNamedList + Lower + 'static,
{
    // Without shadowing, defining a name that exists fails: that is the check that
    // wasmtime-wasi linked this very import.
    linker.allow_shadowing(false);
    if linker
        .instance(instance)?
        .func_wrap(name, f.clone())
        .is_ok()
    {
        return Err(wasmtime::format_err!(
            "wasmtime-wasi does not link {instance}.{name}; the plugin host bounds that waiting import by the call's deadline and must follow the WASI version wasmtime-wasi links"
        ));
    }
    linker.allow_shadowing(true);
    let defined = linker.instance(instance)?.func_wrap(name, f);
    linker.allow_shadowing(false);
    defined
}

fn parts<'a>(
    store: &'a mut StoreContextMut<'_, State>,
) -> (Instant, Option<Arc<TrainWatch>>, &'a mut ResourceTable) {
    let state = store.data_mut();
    (state.deadline, state.call.train.clone(), &mut state.table)
}

/// Runs `wait` on the Tokio runtime (as wasmtime-wasi's sync bindings do) until it finishes
/// or `deadline` passes, or, in a training run, its grace after a stop is over.
fn until<F: Future>(
    deadline: Instant,
    run: Option<Arc<TrainWatch>>,
    import: &'static str,
    wait: F,
) -> wasmtime::Result<F::Output> {
    wasmtime_wasi::runtime::in_tokio(async move {
        let interrupted = async {
            match &run {
                Some(w) => w.interrupted().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = tokio::time::timeout_at(deadline.into(), wait) => {
                r.map_err(|_| wasmtime::Error::new(DeadlinePassed { import }))
            }
            _ = interrupted => Err(wasmtime::Error::new(crate::training::Interrupted)),
        }
    })
}

/// A stream operation's result as the guest gets it (wasmtime-wasi's conversion).
fn stream_result<T>(
    table: &mut ResourceTable,
    r: Result<T, StreamError>,
) -> wasmtime::Result<(Result<T, streams::StreamError>,)> {
    match r {
        Ok(v) => Ok((Ok(v),)),
        Err(e) => Ok((Err(streams::Host::convert_stream_error(table, e)?),)),
    }
}
