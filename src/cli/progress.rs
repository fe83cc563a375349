//! Progress of long commands: an indicatif bar on a terminal; where stderr is not a terminal
//! (a background run writing to a log file) the bar draws nothing, so log lines say how far
//! the work is instead.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often a hidden bar is looked at.
const POLL: Duration = Duration::from_millis(500);

/// A progress bar that, when hidden, logs each tenth of the work done (and where it ended,
/// when dropped). Derefs to the bar.
pub(crate) struct Progress {
    bar: ProgressBar,
    logger: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Deref for Progress {
    type Target = ProgressBar;

    fn deref(&self) -> &ProgressBar {
        &self.bar
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.logger.take() {
            stop.store(true, Ordering::SeqCst);
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Progress {
    /// A line above the bar; where the bar is hidden, on stderr by itself (indicatif drops
    /// the lines of a hidden bar).
    pub(crate) fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }
}

/// A bar over `len` items, labelled `what`.
pub(crate) fn progress(len: u64, what: &str) -> Progress {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    let logger = bar.is_hidden().then(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let (bar, stop_flag) = (bar.clone(), stop.clone());
        (
            stop,
            std::thread::spawn(move || log_tenths(&bar, &stop_flag)),
        )
    });
    Progress { bar, logger }
}

/// Logs `bar` each time it passes a new tenth of its length, until `stop`; then logs where
/// it ended if that was not logged yet.
fn log_tenths(bar: &ProgressBar, stop: &AtomicBool) {
    let mut logged = 0;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let pos = bar.position();
        let len = bar.length().unwrap_or(0);
        let tenth = |p: u64| p * 10 / len.max(1);
        if pos > logged && (tenth(pos) > tenth(logged) || stopping) {
            tracing::info!(
                "{}: {pos}/{len} (eta {} s)",
                bar.message(),
                bar.eta().as_secs()
            );
            logged = pos;
        }
        if stopping {
            return;
        }
        // Woken early by the drop.
        std::thread::park_timeout(POLL);
    }
}

/// For bars made without [`progress`] that log at chosen points: a log line at every
/// `every`-th position when `bar` is hidden.
pub(crate) fn log_if_hidden(bar: &ProgressBar, what: &str, every: u64) {
    let pos = bar.position();
    if bar.is_hidden() && every > 0 && pos > 0 && pos.is_multiple_of(every) {
        tracing::info!(
            "{what}: {pos}/{} {} (eta {} s)",
            bar.length().unwrap_or(0),
            bar.message(),
            bar.eta().as_secs()
        );
    }
}
