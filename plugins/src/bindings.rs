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

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use crate::state::State;
use crate::world::World;

/// A world as a type, tying its generated bindings together, so that a call is written for
/// one world and is handed that world's instance only. The host keeps the components and
/// instances of every world side by side ([`Prepared`], [`Bound`]); only a world's
/// [`Bindings::prepared`] and [`Bindings::exports`] open them, and they answer `None` for
/// another world's.
pub(crate) trait Bindings: Send + Sync + 'static {
    const WORLD: World;
    /// The component linked against the world's imports and its exports type-checked
    /// (`<World>Pre`): instantiating it checks nothing more.
    type Pre: Send + Sync + 'static;
    /// An instance's exports (`<World>`).
    type Exports: Send + Sync + 'static;

    fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()>;
    fn pre(instance: InstancePre<State>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<State>) -> wasmtime::Result<Self::Exports>;
    fn prepared(prepared: &Prepared) -> Option<&Self::Pre>;
    fn exports(bound: &Bound) -> Option<&Self::Exports>;
    fn bind(exports: Self::Exports) -> Bound;
}

/// The inference-processor world.
pub(crate) enum Inference {}
/// The workflow-step world.
pub(crate) enum Workflow {}
/// The training-algorithm world.
pub(crate) enum Training {}

/// A component prepared for its world (see [`Bindings::Pre`]), as the compile cache keeps it.
pub(crate) struct Prepared(PreparedAs);

enum PreparedAs {
    Inference(inference::InferenceProcessorPre<State>),
    Workflow(workflow::WorkflowStepPre<State>),
    Training(training::TrainingAlgorithmPre<State>),
}

/// A live instance's exports, whichever its world (see [`Bindings::Exports`]).
pub(crate) struct Bound(BoundAs);

enum BoundAs {
    Inference(inference::InferenceProcessor),
    Workflow(workflow::WorkflowStep),
    Training(training::TrainingAlgorithm),
}

macro_rules! bindings {
    ($marker:ident, $world:ident, $module:ident :: $exports:ident, $pre:ident) => {
        impl Bindings for $marker {
            const WORLD: World = World::$world;
            type Pre = $module::$pre<State>;
            type Exports = $module::$exports;

            fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
                $module::$exports::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
            }
            fn pre(instance: InstancePre<State>) -> wasmtime::Result<Self::Pre> {
                $module::$pre::new(instance)
            }
            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<State>,
            ) -> wasmtime::Result<Self::Exports> {
                pre.instantiate(store)
            }
            fn prepared(prepared: &Prepared) -> Option<&Self::Pre> {
                match &prepared.0 {
                    PreparedAs::$marker(p) => Some(p),
                    _ => None,
                }
            }
            fn exports(bound: &Bound) -> Option<&Self::Exports> {
                match &bound.0 {
                    BoundAs::$marker(b) => Some(b),
                    _ => None,
                }
            }
            fn bind(exports: Self::Exports) -> Bound {
                Bound(BoundAs::$marker(exports))
            }
        }
    };
}

bindings!(
    Inference,
    InferenceProcessor,
    inference::InferenceProcessor,
    InferenceProcessorPre
);
bindings!(
    Workflow,
    WorkflowStep,
    workflow::WorkflowStep,
    WorkflowStepPre
);
bindings!(
    Training,
    TrainingAlgorithm,
    training::TrainingAlgorithm,
    TrainingAlgorithmPre
);

/// Links the imports of `world` (its own interfaces; WASI is linked beside).
pub(crate) fn add_to_linker(world: World, linker: &mut Linker<State>) -> wasmtime::Result<()> {
    match world {
        World::InferenceProcessor => Inference::add_to_linker(linker),
        World::WorkflowStep => Workflow::add_to_linker(linker),
        World::TrainingAlgorithm => Training::add_to_linker(linker),
    }
}

impl Prepared {
    /// `instance` prepared for `world`: fails when the component's exports are not the
    /// world's.
    pub(crate) fn new(world: World, instance: InstancePre<State>) -> wasmtime::Result<Prepared> {
        Ok(Prepared(match world {
            World::InferenceProcessor => PreparedAs::Inference(Inference::pre(instance)?),
            World::WorkflowStep => PreparedAs::Workflow(Workflow::pre(instance)?),
            World::TrainingAlgorithm => PreparedAs::Training(Training::pre(instance)?),
        }))
    }

    pub(crate) fn world(&self) -> World {
        match self.0 {
            PreparedAs::Inference(_) => World::InferenceProcessor,
            PreparedAs::Workflow(_) => World::WorkflowStep,
            PreparedAs::Training(_) => World::TrainingAlgorithm,
        }
    }
}
