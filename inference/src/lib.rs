//! Inference without the gateway: what a model package must hold and what its
//! `config.json` may say (`config`, `package`), and the engines that run a model in the
//! gateway's own process (`tensor`, and the ONNX engine).
//!
//! Nothing here touches the database, the network or a user's files: the gateway reads a
//! package into memory or a staging directory of its own and hands it to these checks.

pub mod onnx;
pub mod tensor;
