//! A panic fence that stays quiet: [`catch_quietly`] catches a panic (from a dependency that
//! panics instead of returning an error, such as cudarc on a broken driver library) without the
//! default hook printing a "thread panicked" message and backtrace to the user's terminal. Panics
//! outside a fence still print as usual.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static FENCED: Cell<u32> = const { Cell::new(0) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if FENCED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Run `f`, catching a panic. Returns the panic's message on `Err`.
pub fn catch_quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_hook();
    FENCED.with(|c| c.set(c.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    FENCED.with(|c| c.set(c.get() - 1));
    r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}
