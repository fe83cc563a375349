//! Our CPU kernels on candle's worker threads. Profiling a training step showed the second
//! core idle while the main thread ran the fused GroupNorm, softmax and im2col kernels one
//! element after another (a step used 1.1 of 2 cores); these run them on candle's persistent
//! barrier pool (the main thread takes part), split into independent output chunks.

use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::Range;
use std::sync::Mutex;

use candle_core::{Device, WithDType};

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

/// A new `len`-element vector filled by `f(index, chunk)` chunk by chunk as in
/// [`for_each_chunk_mut`]; each chunk is zeroed first by the thread that fills it. A
/// `vec![0; len]` instead zeroed every output on the main thread alone (the allocator's memset)
/// while the other core waited; zeroing here made the forward pass about 13% faster.
#[allow(unsafe_code)] // chunks of an uninitialised allocation, zeroed before use
pub(crate) fn collect_chunks<T: WithDType>(
    len: usize,
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    written_by(len, |out| {
        for_each_chunk_mut(out, chunk_len, |i, chunk| {
            chunk.fill(MaybeUninit::new(T::zero()));
            // SAFETY: every element of `chunk` was written just above; `MaybeUninit<T>` has the
            // layout of `T`.
            let chunk = unsafe { &mut *(std::ptr::from_mut(chunk) as *mut [T]) };
            f(i, chunk);
        });
    })
}

/// A new `len`-element vector, not zeroed first: `fill` must write every element.
#[allow(unsafe_code)] // uninitialised allocation
pub(crate) fn written_by<T: Copy>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut out: Vec<MaybeUninit<T>> = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` elements need no initialisation and the capacity is `len`.
    unsafe { out.set_len(len) };
    fill(&mut out);
    let mut out = ManuallyDrop::new(out);
    // SAFETY: `fill` wrote every element (its contract); the pointer, length and capacity come
    // from a `Vec` of a type with `T`'s layout, which is not dropped.
    unsafe { Vec::from_raw_parts(out.as_mut_ptr().cast::<T>(), len, out.capacity()) }
}

/// `f(range)` for consecutive ranges covering `0..n` on candle's CPU threads (several ranges
/// a thread, so uneven items balance out), the results in the ranges' order: the ranges do not
/// depend on which thread takes which, so sums of the results are the same on every run. Each
/// range keeps its own state, e.g. a scratch buffer or a partial sum.
pub(crate) fn map_ranges<R: Send>(n: usize, f: impl Fn(Range<usize>) -> R + Sync) -> Vec<R> {
    let results = Mutex::new(Vec::new());
    candle_core::utils::barrier_pool().execute_chunked(n, |range| {
        let start = range.start;
        let result = f(range);
        results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((start, result));
    });
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_unstable_by_key(|&(start, _)| start);
    results.into_iter().map(|(_, result)| result).collect()
}

/// While several threads plan at once (`eval`, `improve`'s collection), candle's CPU worker pool
/// and our kernels on it run every op on the calling thread: the pool serves one caller at a
/// time, so the other planners would wait for it while their own threads keep the cores busy
/// (24 baseline episodes on 2 threads and 2 cores: 12.1 s instead of 23.2 s). A single caller (a
/// plan, a training run) keeps the pool: 12 steps of improve's fine-tune on 2 cores, whole
/// process, took 28-31 s with it and 34-37 s without. `None` for one thread.
pub(crate) fn ops_on_callers(threads: usize) -> Option<candle_core::utils::OpsOnCaller> {
    (threads > 1).then(candle_core::utils::ops_on_caller)
}

/// Runs `f` on one of rayon's worker threads, or in place on one. candle runs its matrix
/// products on rayon's pool: called from any other thread, each product wakes two workers while
/// the caller sleeps, a hand-over in each direction for every one of the ~100 products of a
/// forward pass. From a worker, the product runs on that worker and one more (`bench model` on
/// 2 cores: forward 46 -> 42 ms). Work on other devices runs in place.
pub(crate) fn on_gemm_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if device.is_cpu() {
        rayon::scope(|_| f())
    } else {
        f()
    }
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

    #[test]
    fn mapped_ranges_cover_every_item_once_in_order() {
        let seen: Vec<usize> = map_ranges(1003, |range| range.collect::<Vec<_>>())
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(seen, (0..1003).collect::<Vec<_>>(), "in order, each once");
        assert!(map_ranges::<()>(0, |_| panic!("no ranges")).is_empty());
    }

    #[test]
    fn collected_chunks_start_at_zero_and_keep_what_was_written() {
        let out: Vec<f32> = collect_chunks(1003, 10, |i, chunk| {
            assert!(chunk.iter().all(|&v| v == 0.0), "chunk {i} not zeroed");
            chunk[0] = i as f32 + 1.0;
        });
        assert_eq!(out.len(), 1003);
        for (k, &v) in out.iter().enumerate() {
            let want = if k % 10 == 0 {
                (k / 10 + 1) as f32
            } else {
                0.0
            };
            assert_eq!(v, want, "element {k}");
        }
        assert!(collect_chunks::<f64>(0, 4, |_, _| panic!("no chunks")).is_empty());
    }

    #[test]
    fn with_several_callers_every_share_of_an_op_runs_on_its_caller() {
        assert!(ops_on_callers(1).is_none());
        let pool = candle_core::utils::barrier_pool();
        let caller = std::thread::current().id();
        let shares = Mutex::new(Vec::new());
        let mut out = vec![0usize; 1003];
        {
            let _guard = ops_on_callers(2).expect("a guard for two threads");
            pool.execute(|share| {
                let thread = std::thread::current().id();
                shares.lock().expect("shares").push((share, thread));
            });
            for_each_chunk_mut(&mut out, 10, |i, chunk| {
                assert_eq!(std::thread::current().id(), caller, "chunk {i}");
                chunk.fill(i + 1);
            });
        }
        let mut shares = shares.into_inner().expect("shares");
        shares.sort_by_key(|&(share, _)| share);
        let want: Vec<_> = (0..=pool.n_workers())
            .map(|share| (share, caller))
            .collect();
        assert_eq!(shares, want);
        for (k, v) in out.iter().enumerate() {
            assert_eq!(*v, k / 10 + 1, "element {k}");
        }
    }
}
