//! Our CPU kernels on candle's worker threads. Profiling a training step showed the second
//! core idle while the main thread ran the fused GroupNorm, softmax and im2col kernels one
//! element after another (a step used 1.1 of 2 cores); these run them on candle's persistent
//! barrier pool (the main thread takes part), split into independent output chunks.

use std::sync::Mutex;

/// Calls `f(index, chunk)` for each `len`-element chunk of `out` (the last may be shorter),
/// spread over candle's CPU threads. Chunks are disjoint, so no two calls share an output.
pub(crate) fn for_each_chunk_mut<T: Send>(
    out: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunks: Vec<Mutex<&mut [T]>> = out.chunks_mut(len.max(1)).map(Mutex::new).collect();
    candle_core::utils::barrier_pool().execute_chunked(chunks.len(), |range| {
        for i in range {
            // Each chunk is taken by exactly one range, so the lock is never contended.
            let mut chunk = chunks[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(i, &mut chunk);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_is_visited_once_with_its_index() {
        let mut out = vec![0usize; 1003];
        for_each_chunk_mut(&mut out, 10, |i, chunk| {
            for v in chunk.iter_mut() {
                *v += i + 1;
            }
        });
        for (k, v) in out.iter().enumerate() {
            assert_eq!(*v, k / 10 + 1, "element {k}");
        }
        let mut empty: Vec<f32> = Vec::new();
        for_each_chunk_mut(&mut empty, 4, |_, _| panic!("no chunks"));
    }
}
