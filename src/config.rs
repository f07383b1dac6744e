//! [`Settings`]: the daemon's flags, also readable from a TOML file whose
//! keys are the long flag names (`state-dir = "/var/lib/pcipass"`). A flag
//! given on the command line wins over the file; the file wins over the
//! built-in default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Which boot-configuration backend edits the hide list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootBackend {
    /// Edit grub.cfg under --root in-process.
    Native,
    /// Run a xen-cmdline program, as xapi does on XenServer.
    Exec,
}

/// pcipassd: a XenAPI daemon for PCI passthrough (hide PCI devices from
/// dom0 through `xen-pciback.hide`).
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[command(name = "pcipassd", version, about, long_about = None)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Root of the host: sysfs, /proc, /boot are read under it. `/` on a
    /// real dom0; a mock host directory in tests. It must exist (pcipassd
    /// refuses to start otherwise). [default: /]
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// State directory: SQLite database, users file, TLS key and
    /// certificate, the default Unix socket. [default: /var/lib/pcipass]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Serve XenAPI over TCP on ADDR:PORT (repeatable), e.g. 0.0.0.0:80.
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(default)]
    pub listen: Vec<String>,

    /// Serve XenAPI on a Unix socket (repeatable). Root peers are logged
    /// in as the local superuser whatever the password. [default:
    /// <state-dir>/xapi.sock]
    // This comment is clap's --help text, so it is not written as Markdown.
    #[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub unix: Vec<PathBuf>,

    /// Group allowed to connect to the Unix sockets (mode 0660); without
    /// it the sockets are 0600, root only.
    #[arg(long, value_name = "GROUP")]
    pub unix_group: Option<String>,

    /// TLS certificate (PEM) for the TCP listeners; needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for the TCP listeners.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Serve TCP over TLS with a self-signed certificate generated in the
    /// state directory on first start.
    #[arg(long)]
    #[serde(default)]
    pub tls_self_signed: bool,

    /// Boot-configuration backend. [default: native]
    #[arg(long, value_enum)]
    pub boot_backend: Option<BootBackend>,

    /// The xen-cmdline program the `exec` backend runs. [default:
    /// /opt/xensource/libexec/xen-cmdline]
    #[arg(long, value_name = "PATH")]
    pub xen_cmdline: Option<PathBuf>,

    /// Serve a demo mock host: create <state-dir>/demo-root (profile
    /// `demo`) if missing, use it as --root, create user `root` with a
    /// random password (kept in <state-dir>/demo-password) if there are no
    /// users, and, once the listeners accept connections, print the URL
    /// (http or https), user and password and the pcipass command lines
    /// that reach this daemon. Listens on 127.0.0.1:8080 unless --listen is
    /// given (port 0 picks a free port).
    // This comment is clap's --help text, so it is not written as Markdown.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long)]
    #[serde(default)]
    pub demo: bool,

    /// TOML file with the same keys as the long flags.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Largest request body accepted; larger ones get HTTP 413. [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Seconds a client has to send the request headers. [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub header_timeout: Option<u64>,

    /// Seconds a client has to send the request body. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub body_timeout: Option<u64>,

    /// Most TCP connections served at once; further clients wait in the
    /// kernel's accept queue. Lowered, with a warning, when the open-file
    /// limit cannot hold them. [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most TCP connections one client address may hold; further ones are
    /// closed at once. [default: 128]
    #[arg(long, value_name = "N")]
    pub max_connections_per_address: Option<usize>,

    /// Most Unix-socket connections served at once (a budget apart from
    /// the TCP one); local root always gets in. [default: 64]
    #[arg(long, value_name = "N")]
    pub max_unix_connections: Option<usize>,

    /// Seconds an answer may wait unread (the client not reading) before
    /// the connection is closed. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub write_timeout: Option<u64>,

    /// Seconds of inactivity after which a session is invalid. [default: 86400]
    #[arg(long, value_name = "SECONDS")]
    pub session_idle_timeout: Option<u64>,

    /// Most sessions one user may hold; the least recently used one is
    /// dropped beyond it. [default: 500]
    #[arg(long, value_name = "N")]
    pub max_sessions_per_user: Option<usize>,

    /// Seconds finished tasks are kept before they are destroyed. [default: 3900]
    #[arg(long, value_name = "SECONDS")]
    pub task_retention: Option<u64>,

    /// Command run by host.reboot on a real host (split on spaces).
    /// [default: systemctl reboot]
    #[arg(long, value_name = "COMMAND")]
    pub reboot_command: Option<String>,

    /// Milliseconds between checks of grub.cfg and /proc/cmdline for hand
    /// edits (they update PGPU.dom0_access and emit events). [default: 500]
    #[arg(long, value_name = "MS")]
    pub watch_interval_ms: Option<u64>,
}

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What went wrong, for people.
        message: String,
    },
    /// A combination of settings that cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Settings for a new demo mock host made under `dir` (`dir/root`),
    /// with its state in `dir/state`: what tests and benchmarks start a
    /// daemon context on.
    pub fn demo_under(dir: &Path) -> Result<Settings, crate::host::mock::MockError> {
        let root = dir.join("root");
        crate::host::mock::create(&root, crate::host::mock::Profile::Demo)?;
        Ok(Settings {
            root: Some(root),
            state_dir: Some(dir.join("state")),
            ..Settings::default()
        })
    }

    /// Command-line settings merged over the `--config` file, if any.
    pub fn load(cli: Settings) -> Result<Settings, ConfigError> {
        let Some(path) = cli.config.clone() else {
            return Ok(cli);
        };
        let file = Settings::from_file(&path)?;
        Ok(cli.over(file))
    }

    /// Settings from a TOML file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.message().to_owned(),
        })
    }

    /// `self` where set, else `base`.
    pub fn over(self, base: Settings) -> Settings {
        fn pick<T>(a: Option<T>, b: Option<T>) -> Option<T> {
            a.or(b)
        }
        fn list<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
            if a.is_empty() { b } else { a }
        }
        Settings {
            root: pick(self.root, base.root),
            state_dir: pick(self.state_dir, base.state_dir),
            listen: list(self.listen, base.listen),
            unix: list(self.unix, base.unix),
            unix_group: pick(self.unix_group, base.unix_group),
            tls_cert: pick(self.tls_cert, base.tls_cert),
            tls_key: pick(self.tls_key, base.tls_key),
            tls_self_signed: self.tls_self_signed || base.tls_self_signed,
            boot_backend: pick(self.boot_backend, base.boot_backend),
            xen_cmdline: pick(self.xen_cmdline, base.xen_cmdline),
            demo: self.demo || base.demo,
            config: self.config,
            max_body_bytes: pick(self.max_body_bytes, base.max_body_bytes),
            header_timeout: pick(self.header_timeout, base.header_timeout),
            body_timeout: pick(self.body_timeout, base.body_timeout),
            max_connections: pick(self.max_connections, base.max_connections),
            max_connections_per_address: pick(
                self.max_connections_per_address,
                base.max_connections_per_address,
            ),
            max_unix_connections: pick(self.max_unix_connections, base.max_unix_connections),
            write_timeout: pick(self.write_timeout, base.write_timeout),
            session_idle_timeout: pick(self.session_idle_timeout, base.session_idle_timeout),
            max_sessions_per_user: pick(self.max_sessions_per_user, base.max_sessions_per_user),
            task_retention: pick(self.task_retention, base.task_retention),
            reboot_command: pick(self.reboot_command, base.reboot_command),
            watch_interval_ms: pick(self.watch_interval_ms, base.watch_interval_ms),
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/pcipass"))
    }

    /// The host root.
    pub fn root(&self) -> PathBuf {
        if self.demo && self.root.is_none() {
            return self.state_dir().join("demo-root");
        }
        self.root.clone().unwrap_or_else(|| PathBuf::from("/"))
    }

    /// The Unix sockets to serve.
    pub fn unix_sockets(&self) -> Vec<PathBuf> {
        if self.unix.is_empty() {
            vec![self.state_dir().join("xapi.sock")]
        } else {
            self.unix.clone()
        }
    }

    /// The TCP listeners to serve.
    pub fn listen_addrs(&self) -> Result<Vec<std::net::SocketAddr>, ConfigError> {
        let mut specs = self.listen.clone();
        if specs.is_empty() && self.demo {
            specs.push("127.0.0.1:8080".into());
        }
        specs
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| ConfigError::Invalid(format!("--listen {s:?} is not ADDR:PORT")))
            })
            .collect()
    }

    /// A duration setting in seconds.
    pub fn seconds(value: Option<u64>, default: u64) -> Duration {
        Duration::from_secs(value.unwrap_or(default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file() {
        let file: Settings = toml::from_str(
            "state-dir = \"/srv/p\"\nlisten = [\"0.0.0.0:80\"]\nmax-body-bytes = 10",
        )
        .unwrap();
        let cli = Settings::try_parse_from(["pcipassd", "--max-body-bytes", "20"]).unwrap();
        let merged = cli.over(file);
        assert_eq!(merged.state_dir(), PathBuf::from("/srv/p"));
        assert_eq!(merged.max_body_bytes, Some(20));
        assert_eq!(merged.listen, vec!["0.0.0.0:80".to_owned()]);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<Settings>("no-such-key = 1").is_err());
    }

    #[test]
    fn demo_defaults() {
        let s = Settings::try_parse_from(["pcipassd", "--demo", "--state-dir", "/tmp/x"]).unwrap();
        assert_eq!(s.root(), PathBuf::from("/tmp/x/demo-root"));
        assert_eq!(s.listen_addrs().unwrap()[0].port(), 8080);
        assert_eq!(s.unix_sockets(), vec![PathBuf::from("/tmp/x/xapi.sock")]);
    }
}
