//! Where engine work runs: on the threads of one rayon pool.
//!
//! candle's CPU kernels (rms_norm, softmax, gemm) and our few-row matmul split their work with
//! rayon. Called from a thread outside a pool, every such op is handed to the pool while the
//! caller sleeps until it is done: a futex wake-up per op, which on small models cost more than
//! the arithmetic (perf on the vendored model: ~30% of decode in the scheduler). Called from a
//! pool thread, an op runs inline and idle pool threads steal parts of it. So whole commands and
//! the server's engine worker run inside [`in_pool`].

use std::sync::OnceLock;

/// The engine's pool: as many threads as rayon's default (`RAYON_NUM_THREADS`, else the cores).
fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("adainfer-engine-{i}"))
            .build()
            .or_else(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .expect("a rayon pool of one thread can always be built")
    })
}

/// Run `op` on a thread of the engine's pool and wait for it (inline when already there).
/// Library users get the same speed-up by running their generation loops through this.
pub fn in_pool<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    pool().install(op)
}

#[cfg(test)]
mod tests {
    #[test]
    fn work_runs_on_a_pool_thread_and_nests() {
        let outer = super::in_pool(|| {
            let name = std::thread::current().name().map(str::to_string);
            let inner = super::in_pool(|| std::thread::current().name().map(str::to_string));
            (name, inner)
        });
        let name = outer.0.expect("pool threads are named");
        assert!(name.starts_with("adainfer-engine-"), "{name}");
        assert_eq!(
            outer.1.as_deref(),
            Some(name.as_str()),
            "nested calls run inline"
        );
    }
}
