//! `pcipassd`: the XenAPI daemon. See `pcipassd --help`.

use clap::Parser;
use pcipass::config::Settings;

/// glibc's allocator settings pcipassd runs with: every allocation over
/// 128 KiB is its own mapping, given back to the system when freed (the
/// default threshold grows with the largest block freed, so a flood of
/// large request bodies would stay resident), the heap is trimmed above
/// 128 KiB free, and at most four arenas.
const MALLOC_TUNABLES: &str = "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072:glibc.malloc.arena_max=4";

/// glibc reads its tunables only when a program starts: unless they are
/// set (by the unit, or by this), run this program again with them, same
/// pid, same arguments and descriptors. Returns only when that cannot be
/// done (then pcipassd runs with glibc's defaults).
fn with_malloc_tunables() {
    use std::os::unix::process::CommandExt;
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains("glibc.malloc.mmap_threshold") {
        return;
    }
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    let tunables = if current.is_empty() {
        MALLOC_TUNABLES.to_owned()
    } else {
        format!("{current}:{MALLOC_TUNABLES}")
    };
    let error = std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", tunables)
        .exec();
    eprintln!("pcipassd: running with glibc's allocator defaults: cannot re-execute: {error}");
}

fn main() -> std::process::ExitCode {
    with_malloc_tunables();
    init_logging();
    let settings = match Settings::load(Settings::parse()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pcipassd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if settings.check_config {
        return match pcipass::daemon::check_config(&settings) {
            Ok(line) => {
                println!("{line}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pcipassd: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pcipassd: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pcipass::daemon::run(settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The log is stderr: one line says it.
            tracing::error!("pcipassd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to the journal, with each event's fields as journal fields and
/// in MESSAGE as `key=value` (plain `journalctl` shows only MESSAGE),
/// when stderr is the journal (systemd's `$JOURNAL_STREAM` names it);
/// else to stderr, one escaped line per event (a client's user name cannot
/// forge a line or colour the terminal, so no colours either).
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if pcipass::logging::stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter())
            .with(pcipass::logging::JournalLayer(
                journald.with_syslog_identifier("pcipassd".into()),
            ))
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(|| pcipass::logging::SafeLines(std::io::stderr()))
        .with_ansi(false)
        .with_env_filter(filter())
        .init();
}
