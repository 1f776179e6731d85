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
use tokenizers::{Tokenizer, TruncationParams};

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
    /// `Session::run` takes `&mut self`: each session behind its own mutex, used
    /// by one worker thread of the cache (never empty).
    sessions: Vec<Mutex<Session>>,
    /// Word-piece tokenizer of the model, without padding.
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
        let sessions = (0..config.sessions.max(1))
            .map(|_| build_session(env, &config.model).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EmbedderError::Runtime(e.to_string()))?;
        let mut tokenizer = Tokenizer::from_file(&config.tokenizer)
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        // The shipped tokenizer.json pads every input to 128 tokens; a question is
        // run alone and pays only for its own length.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        Ok(Self {
            sessions,
            tokenizer,
        })
    }

    /// Embeds texts into unit vectors (cosine similarity = dot product), each in
    /// its own model run, on the first session. The cache's workers
    /// (`super::batcher`) spread questions over every session instead.
    ///
    /// One run per text, not one padded run for all: the int8 model quantises
    /// its activations with one scale per run, so a question's vector would
    /// depend on whatever else happened to be waiting with it (cosine 0.993–0.996
    /// to its vector alone, enough to move a score across the threshold), and a
    /// padded run of mixed lengths costs more per question than runs of their
    /// own lengths. A text's vector is the same at any load.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        let mut session = self.lock(0)?;
        texts
            .iter()
            .map(|text| self.embed_one(&mut session, text))
            .collect()
    }

    /// Copies of the model that can run at once.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// `text`'s vector from session `session` (taken modulo [`Self::sessions`]),
    /// for a caller that runs one thread per session.
    pub fn embed_with(&self, session: usize, text: &str) -> Result<Vec<f32>, EmbedderError> {
        self.embed_one(&mut *self.lock(session)?, text)
    }

    fn lock(&self, session: usize) -> Result<std::sync::MutexGuard<'_, Session>, EmbedderError> {
        self.sessions[session % self.sessions.len()]
            .lock()
            .map_err(|_| EmbedderError::Runtime("embedder session poisoned".into()))
    }

    /// One text's vector: the mean of its tokens' hidden states, L2-normalised.
    fn embed_one(&self, session: &mut Session, text: &str) -> Result<Vec<f32>, EmbedderError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        let seq = encoding.get_ids().len();
        let widen = |values: &[u32]| values.iter().map(|&v| i64::from(v)).collect::<Vec<_>>();
        let tensor = |data: Vec<i64>| {
            Tensor::from_array(([1, seq], data)).map_err(|e| EmbedderError::Runtime(e.to_string()))
        };
        let inputs = ort::inputs![
            "input_ids" => tensor(widen(encoding.get_ids()))?,
            "attention_mask" => tensor(widen(encoding.get_attention_mask()))?,
            "token_type_ids" => tensor(widen(encoding.get_type_ids()))?,
        ];
        let outputs = session
            .run(inputs)
            .map_err(|e| EmbedderError::Runtime(e.to_string()))?;
        let (out_shape, hidden) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| EmbedderError::Runtime(e.to_string()))?;
        let width = out_shape.last().copied().unwrap_or(0) as usize;
        if width != DIMENSIONS || hidden.len() != seq * DIMENSIONS || seq == 0 {
            return Err(EmbedderError::Runtime(format!(
                "unexpected output shape {out_shape:?}"
            )));
        }
        // Every token is real (nothing is padded), so the mean is over all of them.
        let mut sum = vec![0f32; DIMENSIONS];
        for row in hidden.chunks_exact(DIMENSIONS) {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        sum.iter_mut().for_each(|v| *v /= norm);
        Ok(sum)
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

    /// With the int8 model, one run for several questions would give each a
    /// vector that depends on the others (one activation scale per run).
    #[test]
    fn a_question_has_the_same_vector_whatever_it_is_embedded_with() {
        let embedder = Embedder::load(&EmbedderConfig::default()).expect("run `make models` first");
        let question = "How do I reset my password?";
        let alone = embedder.embed(&[question]).unwrap().remove(0);
        for company in [
            "I was charged twice for the same purchase last week, can you refund one of them?",
            "WHY IS MY ACCOUNT LOCKED?!!! 1234567890",
        ] {
            for batch in [[question, company], [company, question]] {
                let vectors = embedder.embed(&batch).unwrap();
                let together = vectors
                    .iter()
                    .zip(batch)
                    .find(|(_, t)| *t == question)
                    .unwrap()
                    .0;
                assert!(
                    together == &alone,
                    "{question:?} beside {company:?}: cosine {} to its vector alone",
                    cosine(together, &alone)
                );
            }
        }
    }
}
