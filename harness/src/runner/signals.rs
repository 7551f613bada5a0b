//! SIGINT/SIGTERM set a flag; the runner checks it between samples, stops, cleans up and writes
//! what it has. A second signal has the default effect (the handler resets itself), so a user
//! can always get out; `cowbench clean` then removes what was left.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Install the handlers (idempotent).
pub fn install() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESETHAND | SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &act) } {
            log::warn!("cannot install {sig} handler: {e}");
        }
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// For tests and for a runner that wants to stop itself.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
