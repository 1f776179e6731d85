//! all-MiniLM-L6-v2 through ONNX Runtime: questions in, L2-normalised 384-d vectors out.
//!
//! ONNX Runtime is loaded dynamically from the file `make models` installs, so a
//! missing library is an error to report, never a crash. Inference is blocking
//! CPU work: callers run it on the blocking pool.

use crate::config::EmbedderConfig;
use ort::session::Session;
use ort::value::Tensor;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Width of the model's sentence vectors.
pub const DIMENSIONS: usize = 384;

/// Longest input in tokens, as sentence-transformers truncates this model.
const MAX_TOKENS: usize = 256;

/// Why the embedder is unavailable or an embedding failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedderError {
    /// A file the embedder needs is not there.
    #[error("{what} not found at {path}; run `make models` to install it")]
    Missing {
        /// Which file ("ONNX Runtime library", "model", "tokenizer").
        what: &'static str,
        /// Where it was expected.
        path: String,
    },
    /// ONNX Runtime failed to load or run.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The tokenizer failed to load or encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// One ONNX Runtime environment per process; ort allows no second one.
static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// A loaded sentence embedder.
pub struct Embedder {
    /// `Session::run` takes `&mut self`; one session behind a mutex serves the
    /// modest embedding rate of a support chat (a pool can come with the cache).
    session: Mutex<Session>,
    /// Word-piece tokenizer of the model, padding to the batch's longest input.
    tokenizer: Tokenizer,
}

fn require(what: &'static str, path: &str) -> Result<(), EmbedderError> {
    if Path::new(path).is_file() {
        Ok(())
    } else {
        Err(EmbedderError::Missing {
            what,
            path: path.to_string(),
        })
    }
}

fn build_session(env: &ort::environment::Environment, model: &str) -> ort::Result<Session> {
    // One intra-op thread without spinning: on two cores, parallelism across
    // requests beats parallelism inside one small model.
    // No CPU arena and no memory pattern: questions vary in length, so neither
    // is reused, and both keep peak memory well above what one inference needs.
    let mut builder = Session::builder(env)?
        .with_intra_threads(1)
        .map_err(ort::Error::<()>::from)?
        .with_intra_op_spinning(false)
        .map_err(ort::Error::<()>::from)?
        .with_memory_pattern(false)
        .map_err(ort::Error::<()>::from)?
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
        .map_err(ort::Error::<()>::from)?;
    builder.commit_from_file(model)
}

impl Embedder {
    /// Loads the runtime library, model and tokenizer named in `config`.
    pub fn load(config: &EmbedderConfig) -> Result<Self, EmbedderError> {
        require("ONNX Runtime library", &config.runtime_library)?;
        require("model", &config.model)?;
        require("tokenizer", &config.tokenizer)?;
        let env = ENVIRONMENT
            .get_or_init(|| {
                ort::init_from(&config.runtime_library)
                    .map_err(|e| e.to_string())?
                    .with_name("chaosai")
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| EmbedderError::Runtime(e.clone()))?;
        let session =
            build_session(env, &config.model).map_err(|e| EmbedderError::Runtime(e.to_string()))?;
        let mut tokenizer = Tokenizer::from_file(&config.tokenizer)
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        // The shipped tokenizer.json pads every input to 128 tokens; short questions
        // should pay only for their own length.
        let padding = tokenizer.get_padding().cloned().unwrap_or_default();
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..padding
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        Ok(Self {
            session: Mutex::new(session),
            tokenizer,
        })
    }

    /// Embeds a batch of texts into unit vectors (cosine similarity = dot product).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        let batch = encodings.len();
        let seq = encodings[0].get_ids().len();
        let mut ids = Vec::with_capacity(batch * seq);
        let mut mask = Vec::with_capacity(batch * seq);
        let mut types = Vec::with_capacity(batch * seq);
        for e in &encodings {
            ids.extend(e.get_ids().iter().map(|&v| i64::from(v)));
            mask.extend(e.get_attention_mask().iter().map(|&v| i64::from(v)));
            types.extend(e.get_type_ids().iter().map(|&v| i64::from(v)));
        }
        let shape = [batch, seq];
        let tensor = |data: Vec<i64>| {
            Tensor::from_array((shape, data)).map_err(|e| EmbedderError::Runtime(e.to_string()))
        };
        let inputs = ort::inputs![
            "input_ids" => tensor(ids)?,
            "attention_mask" => tensor(mask.clone())?,
            "token_type_ids" => tensor(types)?,
        ];
        let mut session = self
            .session
            .lock()
            .map_err(|_| EmbedderError::Runtime("embedder session poisoned".into()))?;
        let outputs = session
            .run(inputs)
            .map_err(|e| EmbedderError::Runtime(e.to_string()))?;
        let (out_shape, hidden) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| EmbedderError::Runtime(e.to_string()))?;
        let width = out_shape.last().copied().unwrap_or(0) as usize;
        if width != DIMENSIONS || hidden.len() != batch * seq * DIMENSIONS {
            return Err(EmbedderError::Runtime(format!(
                "unexpected output shape {out_shape:?}"
            )));
        }
        // Mean over the real (unpadded) tokens, then L2-normalise.
        let vectors = (0..batch)
            .map(|b| {
                let mut sum = vec![0f32; DIMENSIONS];
                let mut count = 0f32;
                for t in 0..seq {
                    if mask[b * seq + t] == 0 {
                        continue;
                    }
                    count += 1.0;
                    let row = &hidden[(b * seq + t) * DIMENSIONS..][..DIMENSIONS];
                    sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                let norm = sum
                    .iter()
                    .map(|v| (v / count.max(1.0)).powi(2))
                    .sum::<f32>()
                    .sqrt();
                sum.iter()
                    .map(|v| v / count.max(1.0) / norm.max(1e-12))
                    .collect()
            })
            .collect();
        Ok(vectors)
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_file_and_the_fix() {
        let config = EmbedderConfig {
            runtime_library: "/nonexistent/libonnxruntime.so".into(),
            ..Default::default()
        };
        let err = Embedder::load(&config).err().expect("must fail");
        let message = err.to_string();
        assert!(
            message.contains("/nonexistent/libonnxruntime.so"),
            "{message}"
        );
        assert!(message.contains("make models"), "{message}");
    }

    /// Runs against the real model that `make models` installs (part of `make test`).
    #[test]
    fn paraphrases_are_close_and_unrelated_questions_are_not() {
        let embedder = Embedder::load(&EmbedderConfig::default()).expect("run `make models` first");
        let v = embedder
            .embed(&[
                "How do I reset my password?",
                "I forgot my password, how can I change it?",
                "Where is my order?",
            ])
            .unwrap();
        assert_eq!(v[0].len(), DIMENSIONS);
        let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        let paraphrase = cosine(&v[0], &v[1]);
        let unrelated = cosine(&v[0], &v[2]);
        assert!(paraphrase > 0.85, "paraphrase cosine {paraphrase}");
        assert!(unrelated < 0.5, "unrelated cosine {unrelated}");
    }
}
