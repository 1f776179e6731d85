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
use tokenizers::{Encoding, Tokenizer, TruncationParams};

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
    // ONNX Runtime's CPU arena, which keeps what the largest run needed (a run
    // holds at most about one longest question of text, `super::batcher`):
    // measured in `bench/CACHE.md`, the gateway peaked at 146 MiB with it while
    // questions of 250 tokens were embedded and at 247 MiB without it, when
    // every tensor came from malloc and the freed space stayed scattered
    // (209 MiB after); it also made a run at 16 clients about 12% cheaper.
    // No memory pattern: questions vary in length, so a plan is rarely reused.
    let mut builder = Session::builder(env)?
        .with_intra_threads(1)
        .map_err(ort::Error::<()>::from)?
        .with_intra_op_spinning(false)
        .map_err(ort::Error::<()>::from)?
        .with_memory_pattern(false)
        .map_err(ort::Error::<()>::from)?
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(true).build()])
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

    /// Embeds texts into unit vectors (cosine similarity = dot product) in one
    /// model run on the first session. The cache's workers (`super::batcher`)
    /// spread their runs over every session instead.
    ///
    /// Several texts share a run padded to the longest of them. The model
    /// quantises its activations one token at a time (`scripts/quantise-model.py`)
    /// and padding is masked, so a text's vector is the same alone or in any
    /// company, at any load. A model that quantised a whole run with one scale
    /// made each vector depend on the largest value anywhere in the batch
    /// (cosine 0.985–0.996 to its vector alone, enough to move a score across
    /// the threshold). A run holds all of `texts`: the cache's workers pass a
    /// few short questions at a time.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        self.embed_with(0, texts)
    }

    /// Copies of the model that can run at once.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// `texts`' vectors from one run on session `session` (taken modulo
    /// [`Self::sessions`]), for a caller that runs one thread per session.
    pub fn embed_with(
        &self,
        session: usize,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, EmbedderError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = texts
            .iter()
            .map(|text| self.tokenizer.encode(*text, true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        self.run(&mut *self.lock(session)?, &encodings)
    }

    fn lock(&self, session: usize) -> Result<std::sync::MutexGuard<'_, Session>, EmbedderError> {
        self.sessions[session % self.sessions.len()]
            .lock()
            .map_err(|_| EmbedderError::Runtime("embedder session poisoned".into()))
    }

    /// One run for `encodings`, padded to the longest; each vector is the mean
    /// of its own tokens' hidden states, L2-normalised.
    fn run(
        &self,
        session: &mut Session,
        encodings: &[Encoding],
    ) -> Result<Vec<Vec<f32>>, EmbedderError> {
        let rows = encodings.len();
        let seq = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0);
        if seq == 0 {
            return Err(EmbedderError::Tokenizer("no tokens".into()));
        }
        // Padding is token 0 with mask 0: the model attends to no padded token.
        let padded = |values: fn(&Encoding) -> &[u32]| {
            let mut data = vec![0i64; rows * seq];
            for (row, encoding) in data.chunks_exact_mut(seq).zip(encodings) {
                row.iter_mut()
                    .zip(values(encoding))
                    .for_each(|(slot, &v)| *slot = i64::from(v));
            }
            Tensor::from_array(([rows, seq], data))
                .map_err(|e| EmbedderError::Runtime(e.to_string()))
        };
        let inputs = ort::inputs![
            "input_ids" => padded(Encoding::get_ids)?,
            "attention_mask" => padded(Encoding::get_attention_mask)?,
            "token_type_ids" => padded(Encoding::get_type_ids)?,
        ];
        let outputs = session
            .run(inputs)
            .map_err(|e| EmbedderError::Runtime(e.to_string()))?;
        let (out_shape, hidden) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| EmbedderError::Runtime(e.to_string()))?;
        let width = out_shape.last().copied().unwrap_or(0) as usize;
        if width != DIMENSIONS || hidden.len() != rows * seq * DIMENSIONS {
            return Err(EmbedderError::Runtime(format!(
                "unexpected output shape {out_shape:?}"
            )));
        }
        let vectors = hidden
            .chunks_exact(seq * DIMENSIONS)
            .zip(encodings)
            .map(|(states, encoding)| {
                // The mean over the text's own tokens only, in order, so a
                // padded row sums exactly what the text alone would.
                let mut sum = vec![0f32; DIMENSIONS];
                for token in states
                    .chunks_exact(DIMENSIONS)
                    .take(encoding.get_ids().len())
                {
                    sum.iter_mut().zip(token).for_each(|(s, v)| *s += v);
                }
                let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                sum.iter_mut().for_each(|v| *v /= norm);
                sum
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

    /// One run for several questions, padded to the longest: each still gets
    /// the vector it gets alone. Fails with a model that quantises a whole run
    /// with one scale (ONNX Runtime's own dynamic quantiser), or with pooling
    /// that counts padded tokens.
    #[test]
    fn a_question_has_the_same_vector_whatever_it_is_embedded_with() {
        let embedder = Embedder::load(&EmbedderConfig::default()).expect("run `make models` first");
        let question = "How do I reset my password?";
        let alone = embedder.embed(&[question]).unwrap().remove(0);
        for company in [
            "I was charged twice for the same purchase last week, can you refund one of them?",
            "WHY IS MY ACCOUNT LOCKED?!!! 1234567890",
            "Hi",
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
