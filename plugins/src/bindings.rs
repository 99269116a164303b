//! Host bindings generated from `wit/`, one module per world. The training world imports
//! every shared interface, so the other worlds reuse its generated types with `with`.

pub mod training {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "atelier:plugin/training-algorithm",
    });
}

pub mod inference {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "atelier:plugin/inference-processor",
        with: {
            "atelier:plugin/types": crate::bindings::training::atelier::plugin::types,
            "atelier:plugin/log": crate::bindings::training::atelier::plugin::log,
            "atelier:plugin/metrics": crate::bindings::training::atelier::plugin::metrics,
            "atelier:plugin/tensors": crate::bindings::training::atelier::plugin::tensors,
        },
    });
}

pub mod workflow {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "atelier:plugin/workflow-step",
        with: {
            "atelier:plugin/types": crate::bindings::training::atelier::plugin::types,
            "atelier:plugin/log": crate::bindings::training::atelier::plugin::log,
            "atelier:plugin/metrics": crate::bindings::training::atelier::plugin::metrics,
            "atelier:plugin/tensors": crate::bindings::training::atelier::plugin::tensors,
            "atelier:plugin/parameters": crate::bindings::training::atelier::plugin::parameters,
            "atelier:plugin/storage": crate::bindings::training::atelier::plugin::storage,
        },
    });
}

pub use training::atelier::plugin::{log, metrics, parameters, storage, tensors, types};
