//! Progress on stderr: an indicatif bar (visit, driver, ETA) on a terminal, one line per visit
//! otherwise (CI logs). stdout is never touched. The bar's length is the most repetitions the
//! run can still come to (cells stopping early shrink it), so the ETA is an upper bound.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    tty: bool,
}

impl Progress {
    /// `total` is in repetitions (warm-up included), so the ETA weighs cells by their work; an
    /// upper bound, lowered with [`Progress::set`].
    pub fn new(total: u64) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
        );
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} ETA {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress { bar, tty }
    }

    /// The visit now running (1-based count of visits).
    pub fn cell(&self, visit: usize, driver: &str, cell: &str) {
        self.bar.set_message(format!("visit {visit} [{driver}] {cell}"));
    }

    /// `done` repetitions run of at most `bound`.
    pub fn set(&self, done: u64, bound: u64) {
        self.bar.set_length(bound.max(done));
        self.bar.set_position(done);
    }

    pub fn tick(&self, n: u64) {
        self.bar.inc(n);
    }

    /// A line above the bar (or plain on stderr without a terminal).
    pub fn line(&self, text: &str) {
        if self.tty {
            self.bar.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
