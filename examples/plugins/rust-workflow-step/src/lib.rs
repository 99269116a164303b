//! A workflow step in Rust: counts the words of the text objects under its `text` input,
//! writes `word<TAB>count` lines to its `counts` output, and reports the total as a metric.
//! Parameter: `min_length` (integer, default 1).
//!
//! Build: `rustup target add wasm32-wasip2`, then `atelier plugin build .` (which runs
//! `cargo build --release --target wasm32-wasip2`).

wit_bindgen::generate!({ world: "workflow-step", path: "wit" });

use std::collections::BTreeMap;

use atelier::plugin::step_types::{Input, OutputSlot, StepContext, StepResult};
use atelier::plugin::types::{Error, ErrorKind, Value};
use atelier::plugin::{log, metrics, parameters, storage};
use exports::atelier::plugin::step::Guest;

struct WordCount;

fn error(kind: ErrorKind, message: String) -> Error {
    Error { kind, message }
}

impl Guest for WordCount {
    fn run(context: StepContext, inputs: Vec<Input>, outputs: Vec<OutputSlot>) -> Result<StepResult, Error> {
        let text = inputs
            .iter()
            .find(|i| i.name == "text")
            .ok_or_else(|| error(ErrorKind::InvalidInput, "no input named text".into()))?;
        let counts_out = outputs
            .iter()
            .find(|o| o.name == "counts")
            .ok_or_else(|| error(ErrorKind::InvalidInput, "no output named counts".into()))?;
        let min_length = match parameters::get("min_length") {
            Some(Value::Integer(n)) if n > 0 => n as usize,
            Some(other) => return Err(error(ErrorKind::InvalidInput, format!("min_length must be a positive integer, not {other:?}"))),
            None => 1,
        };

        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let objects = storage::list_objects(&text.path)
            .map_err(|e| error(ErrorKind::Failed, format!("listing {}: {e:?}", text.path)))?;
        for object in objects {
            let bytes = storage::read(&object.path).map_err(|e| error(ErrorKind::Failed, format!("reading {}: {e:?}", object.path)))?;
            for word in String::from_utf8_lossy(&bytes).split(|c: char| !c.is_alphanumeric()) {
                if word.chars().count() >= min_length {
                    *counts.entry(word.to_lowercase()).or_default() += 1;
                }
            }
        }
        let total: u64 = counts.values().sum();
        metrics::scalar("words", total as f64, None);
        log::log(log::Level::Info, &format!("{} distinct words", counts.len()));

        let body: String = counts.iter().map(|(w, n)| format!("{w}\t{n}\n")).collect();
        let path = format!("{}counts-{}.tsv", counts_out.path, context.execution_id);
        storage::write(&path, body.as_bytes()).map_err(|e| error(ErrorKind::Failed, format!("writing {path}: {e:?}")))?;
        Ok(StepResult {
            outputs: vec![("words".into(), Value::Integer(total as i64))],
            variables: vec![("counts_path".into(), path)],
        })
    }
}

export!(WordCount);
