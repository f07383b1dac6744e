//! `pcipassd`: the XenAPI daemon. See `pcipassd --help`.

use clap::Parser;
use pcipass::config::Settings;

fn main() -> std::process::ExitCode {
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
