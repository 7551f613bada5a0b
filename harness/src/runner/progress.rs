//! Progress on stderr: an indicatif bar (cell, driver, ETA) on a terminal, one line per cell
//! otherwise (CI logs). stdout is never touched.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    tty: bool,
}

impl Progress {
    /// `total` is in repetitions (warm-up included), so the ETA weighs cells by their work.
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

    pub fn cell(&self, index: usize, total: usize, driver: &str, cell: &str) {
        self.bar.set_message(format!("cell {}/{total} [{driver}] {cell}", index + 1));
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
