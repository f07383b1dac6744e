//! The domain: what a PCI device is, how GRUB, Xen and the kernel read the
//! boot configuration, how it is edited, and how dom0 access is judged.
//! Parsing and judging are pure functions over data ([`kernel`], [`grub`],
//! [`hide`]); the backends and the engine ([`bootcfg`]) and the surface the
//! API uses ([`service`]) hold state and block; every file access goes
//! through [`crate::host`].

pub mod about;
pub mod apply_now;
pub mod bootcfg;
pub mod bootdev;
pub mod bootflow;
pub mod cmdline;
pub mod console;
pub mod devices;
pub mod display;
pub mod dom0_access;
pub mod drift;
pub mod grub;
pub mod grub_dropin;
pub mod hide;
pub mod kernel;
pub mod mock_boot;
pub mod netdev;
pub mod pciback;
pub mod pciids;
pub mod platform;
pub mod readiness;
pub mod regenerated;
pub mod service;
pub mod xen_efi;

pub use crate::vocab::PciAddress;
pub use crate::vocab::pci_address;
pub use dom0_access::Dom0Access;
