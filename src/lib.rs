//! pcipass: a XenAPI daemon that manages PCI passthrough on a Xen host.
//!
//! The crate is layered; each layer only names the layers below it
//! (`tests/layers.rs` checks it, `ARCHITECTURE.md` walks a call through):
//!
//! * [`wire`]: HTTP (TCP, TLS, Unix sockets), the XML-RPC and JSON-RPC codecs
//!   and the dispatcher that turns a method call into an API call.
//! * [`api`]: one module per XenAPI class, translating calls to the domain
//!   surface, and the single mapping of errors to XenAPI error codes.
//! * [`idl`]: the datamodel read from `idl/xenapi.idl`, from which dispatch,
//!   `system.listMethods`, records and the API reference derive.
//! * [`store`]: the SQLite object store, the users file, TLS material.
//! * [`domain`]: the domain surface ([`domain::service::Dom0Host`]), the
//!   kernel's and GRUB's reading of the boot configuration, the hide list,
//!   dom0-access status, edits and their safety rules, device discovery.
//! * [`host`]: every file-system access, rooted at `--root` (a real dom0 `/`
//!   or a mock host), and the mock-host generator.
//! * [`vocab`] and [`value`]: PCI addresses, roles and the protocol-neutral
//!   [`value::Value`], used by every layer.
//! * [`cli`], [`config`], [`daemon`], [`logging`]: the `pcipass` command
//!   line, the settings, the daemon that wires the layers together, and
//!   its log output (every record escaped).

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod host;
pub mod idl;
pub mod logging;
pub mod store;
pub mod value;
pub mod vocab;
pub mod wire;
