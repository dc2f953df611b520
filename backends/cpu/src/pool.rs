//! Thread pools of the CPU backend.
//!
//! One process-wide pool serves every caller by default, so that several application threads calling
//! moehal at once share the same workers instead of multiplying them (no oversubscription): each call
//! runs inside [`Pool::install`]. Its size is, in order of precedence, [`set_default_threads`] (before
//! the first use), the `MOEHAL_CPU_THREADS` environment variable, or all cores. A caller that wants a
//! dedicated pool (e.g. pinning a smaller share of the machine) builds one with [`Pool::new`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

static GLOBAL: OnceLock<Pool> = OnceLock::new();
static REQUESTED: Mutex<Option<usize>> = Mutex::new(None);

/// A handle to a rayon pool (cheap to clone).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<rayon::ThreadPool>,
    /// Calls of [`Pool::install`] so far (see [`Pool::dispatches`]).
    dispatches: Arc<AtomicU64>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads()).finish()
    }
}

impl Pool {
    /// A dedicated pool of `threads` workers (0 means all cores).
    ///
    /// Errors: [`moehal_core::Error::Device`] if the OS refuses to start the threads.
    pub fn new(threads: usize) -> moehal_core::Result<Self> {
        let n = if threads == 0 { num_cores() } else { threads };
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("moehal-cpu-{i}"))
            .build()
            .map(|p| Pool {
                inner: Arc::new(p),
                dispatches: Arc::new(AtomicU64::new(0)),
            })
            .map_err(|e| moehal_core::Error::device("cpu", -1, format!("thread pool: {e}")))
    }

    /// The process-wide pool (created on first use).
    pub fn global() -> &'static Pool {
        GLOBAL.get_or_init(|| {
            let req = REQUESTED.lock().map(|g| *g).unwrap_or(None);
            // An invalid value is ignored here (this pool cannot fail); `CpuBackend::open` and
            // `crate::env::check` report it as an error.
            let env = std::env::var(crate::env::THREADS)
                .ok()
                .and_then(|s| crate::env::parse_threads(&s, num_cores()).ok())
                .and_then(|(n, _)| n);
            let n = req.or(env).unwrap_or(0);
            Pool::new(n).unwrap_or_else(|_| {
                // A pool of one thread needs no OS thread beyond the caller's; build() only fails when
                // spawning fails, so fall back to the smallest pool rayon can make.
                Pool::new(1).expect("rayon could not start a single worker thread")
            })
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.inner.current_num_threads()
    }

    /// Run `f` on this pool's workers (the caller blocks until it returns).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.dispatches.fetch_add(1, Ordering::Relaxed);
        self.inner.install(f)
    }

    /// How many times work was handed to this pool's workers ([`Pool::install`]) since it was
    /// built, by any caller. Small shapes run on the calling thread (issue 16 item 9: waking the
    /// workers costs more than the work), so a call below an op's serial threshold leaves this
    /// count unchanged; tests assert that with a dedicated pool.
    pub fn dispatches(&self) -> u64 {
        self.dispatches.load(Ordering::Relaxed)
    }

    /// Whether an op with `work` units (the op's own measure: elements, tokens, multiply-adds)
    /// runs on the workers: only with more than one worker and at least `serial_below` units.
    /// Each op's `serial_below` is a constant next to the op, measured with `moehal bench`: below
    /// it, dispatch (waking threads, splitting, joining) costs more than it saves.
    pub fn worth_parallel(&self, work: usize, serial_below: usize) -> bool {
        self.threads() > 1 && work >= serial_below
    }
}

/// Request the size of the process-wide pool. Effective only before its first use; returns whether
/// the request will take effect.
pub fn set_default_threads(threads: usize) -> bool {
    if GLOBAL.get().is_some() {
        return false;
    }
    if let Ok(mut g) = REQUESTED.lock() {
        *g = Some(threads);
    }
    GLOBAL.get().is_none()
}

/// Number of cores this process may run on.
pub fn num_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
