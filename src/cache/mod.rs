//! Layer 0, the semantic cache: answers a question at once when one similar
//! enough, in the same scope, was answered before.
//!
//! - [`embedder`]: all-MiniLM-L6-v2 (int8) through ONNX Runtime, 384-d unit vectors.
//! - [`batcher`]: the bounded queue and one worker per model session; a question
//!   many ask at once is embedded once for all of them.
//! - [`index`]: HNSW over those vectors (`hnsw_rs`).
//! - [`guard`]: what may be cached, and which near-identical questions must not
//!   share an answer (numbers, negation, contrasting key terms, personal data).
//! - [`semantic`]: the cache itself: exact repeats first, then similarity,
//!   persistence in SQLite, TTL and least-recently-hit eviction.

pub mod batcher;
pub mod embedder;
pub mod guard;
pub mod index;
pub mod semantic;

pub use batcher::{BatchError, BatchSettings, Batcher};
pub use embedder::{Embedder, EmbedderError};
pub use semantic::{CacheSettings, Hit, Removed, SemanticCache};
