//! pcipass: a XenAPI daemon that manages PCI passthrough on a Xen host.
//!
//! The crate is layered; each layer only calls the layers below it:
//!
//! * [`wire`]: HTTP (TCP, TLS, Unix sockets), the XML-RPC and JSON-RPC codecs
//!   and the dispatcher that turns a method call into an API call.
//! * [`api`]: one module per XenAPI class, the protocol-neutral [`api::Value`]
//!   and the single mapping of errors to XenAPI error codes.
//! * [`idl`]: the datamodel read from `idl/xenapi.idl`, from which dispatch,
//!   `system.listMethods`, records and the API reference derive.
//! * [`domain`]: PCI addresses, the kernel command line and its hide list,
//!   dom0-access status, grub.cfg editing, device discovery and sync.
//! * [`host`]: every file-system access, rooted at `--root` (a real dom0 `/`
//!   or a mock host), and the mock-host generator.
//! * [`store`]: the SQLite object store.
//! * [`cli`]: the `pcipass` command line.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod host;
pub mod idl;
pub mod store;
pub mod value;
pub mod vocab;
pub mod wire;
