//! The `videoagent` binary: the studio, or a headless job per subcommand.

mod cli;

/// glibc's allocator hands large tensors fresh pages that the kernel must zero on every
/// allocation; mimalloc reuses them, which roughly halves model time on the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's index of `purge_delay` in `mi_option_e` (libmimalloc-sys names no constant
/// for it); the test below checks it against the option's documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Process-wide settings, first thing in `main` after parsing the arguments (which starts no
/// thread).
///
/// A closed stdout (`videoagent tasks | head -1`) ends the process quietly, as it does for
/// other Unix tools, instead of panicking in `println!`: Rust ignores SIGPIPE by default.
///
/// Two settings make CPU training ~1.5x faster (`bench model`):
/// - mimalloc returns freed memory to the OS after 1 s by default, so every training step
///   faults and zeroes its tensors' pages again (18% of a step in the kernel); keep them.
/// - candle asks for its thread count on every parallel op and, without `RAYON_NUM_THREADS`,
///   reads /proc/cpuinfo each time (4% of a step); fix the count once.
///
/// A third makes sampling ~15% faster: after each parallel op candle's worker thread spins
/// 25,000 pauses (about a millisecond) before it sleeps, taking a core from the matrix product
/// that usually follows; 500, 2,000 and 5,000 measured alike.
#[allow(unsafe_code)] // FFI and env calls, each with its SAFETY note
fn init_process() {
    // SAFETY: restores the default disposition of one signal before any thread exists.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // SAFETY: plain option setter; mimalloc allows changing options at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        // SAFETY: called before this process starts any thread (see above).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    if std::env::var_os(BARRIER_SPIN_LIMIT_VAR).is_none() {
        // SAFETY: as above; candle reads it when its worker pool starts, on the first op.
        unsafe { std::env::set_var(BARRIER_SPIN_LIMIT_VAR, BARRIER_SPIN_LIMIT.to_string()) };
    }
}

/// candle's knob for how long its idle worker spins before parking (`bench model` on 2 cores:
/// forward ~109 -> ~90 ms, DDIM-20 plan ~2.2 -> ~1.86 s; training unchanged).
const BARRIER_SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
const BARRIER_SPIN_LIMIT: u32 = 2_000;

fn main() -> std::process::ExitCode {
    // Parsing starts no thread, so `init_process` still runs before any.
    let args = cli::Cli::parse();
    init_process();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)] // reads mimalloc options
    fn purge_delay_index_names_mimallocs_option() {
        // `purge_delay` defaults to 1000 ms in mimalloc v3; its neighbours in the enum do not.
        let get = |option| unsafe { libmimalloc_sys::mi_option_get(option) };
        let index = super::MI_OPTION_PURGE_DELAY;
        assert_eq!(get(index), 1000);
        assert_ne!(get(index - 1), 1000);
        assert_ne!(get(index + 1), 1000);
    }
}
