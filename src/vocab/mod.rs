//! The shared vocabulary every layer may use, and which uses no other
//! layer: PCI addresses and XenAPI roles.

pub mod pci_address;
pub mod role;

pub use pci_address::PciAddress;
pub use role::Role;
