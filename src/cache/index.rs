//! The vector index: HNSW (`hnsw_rs`) over unit vectors, searched from many tasks
//! while new entries are inserted.
//!
//! HNSW has no delete: removed or expired entries stay in the graph and are
//! filtered out by the caller; the cache rebuilds the index at start-up.

use hnsw_rs::prelude::{Distance, Hnsw};

/// `1 - dot` for unit vectors, clamped at 0. The crate's dot distance asserts
/// on the tiny negative values rounding produces, which would panic a server.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitDistance;

impl Distance<f32> for UnitDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        (1.0 - dot).max(0.0)
    }
}

/// Neighbours per node; 16 is the usual balance of recall and memory.
const CONNECTIONS: usize = 16;
/// Candidate list while building; higher builds slower with better recall.
const EF_CONSTRUCTION: usize = 100;
/// Candidate list while searching.
const EF_SEARCH: usize = 64;

/// An HNSW index of unit vectors keyed by entry id.
pub struct VectorIndex {
    /// The graph; `insert` and `search` take `&self`, so no lock is needed.
    hnsw: Hnsw<'static, f32, UnitDistance>,
}

impl VectorIndex {
    /// An empty index sized for about `capacity` entries (it grows past that).
    pub fn new(capacity: usize) -> Self {
        let layers = 16;
        Self {
            hnsw: Hnsw::new(
                CONNECTIONS,
                capacity.max(1_000),
                layers,
                EF_CONSTRUCTION,
                UnitDistance,
            ),
        }
    }

    /// Adds `vector` under `id`.
    pub fn insert(&self, id: usize, vector: &[f32]) {
        self.hnsw.insert_slice((vector, id));
    }

    /// Adds many vectors at once, using every core.
    pub fn insert_many(&self, items: &[(Vec<f32>, usize)]) {
        let refs: Vec<(&Vec<f32>, usize)> = items.iter().map(|(v, id)| (v, *id)).collect();
        self.hnsw.parallel_insert(&refs);
    }

    /// The `k` nearest entries to `vector` as `(id, cosine similarity)`, best first.
    pub fn search(&self, vector: &[f32], k: usize) -> Vec<(usize, f32)> {
        if self.hnsw.get_nb_point() == 0 {
            return Vec::new();
        }
        self.hnsw
            .search(vector, k, EF_SEARCH.max(k))
            .into_iter()
            .map(|n| (n.d_id, 1.0 - n.distance))
            .collect()
    }

    /// Points in the graph, live or not.
    pub fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64) -> Vec<f32> {
        // A deterministic pseudo-random unit vector.
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..384)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / u32::MAX as f32) - 0.25
            })
            .collect();
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= norm);
        v
    }

    #[test]
    fn finds_the_vector_it_was_given_while_others_are_inserted() {
        // Small enough for an unoptimised test build (the graph's generic code is
        // compiled at this crate's opt-level); `make bench` measures 100k entries.
        let index = std::sync::Arc::new(VectorIndex::new(400));
        let items: Vec<(Vec<f32>, usize)> = (0..400).map(|i| (unit(i), i as usize)).collect();
        index.insert_many(&items[..200]);
        // Search from several threads while the rest is inserted.
        std::thread::scope(|s| {
            s.spawn(|| {
                for (v, id) in &items[200..] {
                    index.insert(*id, v);
                }
            });
            for t in 0..3 {
                let index = index.clone();
                let items = &items;
                s.spawn(move || {
                    for i in (t..200).step_by(3) {
                        let hits = index.search(&items[i].0, 1);
                        assert_eq!(hits[0].0, i);
                        assert!(hits[0].1 > 0.999);
                    }
                });
            }
        });
        assert_eq!(index.len(), 400);
        assert_eq!(index.search(&items[350].0, 1)[0].0, 350);
    }
}
