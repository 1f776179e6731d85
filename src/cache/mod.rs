//! Layer 0 groundwork: the local sentence embedder.
//!
//! The semantic cache proper (HNSW index, guards, persistence) builds on
//! [`Embedder`]; today the server loads it at start-up to prove the runtime and
//! model are in place, and degrades with one clear warning when they are not.

pub mod embedder;

pub use embedder::{Embedder, EmbedderError};
