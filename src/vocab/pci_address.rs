//! [`PciAddress`]: a PCI function's domain, bus, slot and function.

use std::fmt;
use std::str::FromStr;

/// A PCI function address, `DDDD:BB:SS.F` in canonical form.
///
/// ```
/// use pcipass::domain::PciAddress;
/// let a: PciAddress = "0000:03:00.1".parse().unwrap();
/// assert_eq!(a.to_string(), "0000:03:00.1");
/// assert_eq!(a.hide_entry(), "(0000:03:00.1)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI segment (domain), 16 bits.
    pub domain: u16,
    /// Bus number, 8 bits.
    pub bus: u8,
    /// Slot (device) number, 5 bits (0x00..=0x1f).
    pub slot: u8,
    /// Function number, 3 bits (0..=7).
    pub function: u8,
}

/// Why a text is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PciAddressError {
    /// Not of the form `DDDD:BB:SS.F` (or `BB:SS.F`).
    #[error("not a PCI address (want DDDD:BB:SS.F): {0:?}")]
    Malformed(String),
    /// A component is out of range (slot above 1f, function above 7).
    #[error("PCI address component out of range: {0:?}")]
    OutOfRange(String),
}

impl PciAddress {
    /// Build an address; `None` when slot or function is out of range.
    pub fn new(domain: u16, bus: u8, slot: u8, function: u8) -> Option<PciAddress> {
        (slot <= 0x1f && function <= 7).then_some(PciAddress {
            domain,
            bus,
            slot,
            function,
        })
    }

    /// The pciback hide entry for exactly this function, `(DDDD:BB:SS.F)`.
    pub fn hide_entry(&self) -> String {
        format!("({self})")
    }

    /// True when `other` is another function of the same slot.
    pub fn same_slot(&self, other: &PciAddress) -> bool {
        self.domain == other.domain && self.bus == other.bus && self.slot == other.slot
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

fn hex<T: TryFrom<u32>>(text: &str, max_digits: usize, whole: &str) -> Result<T, PciAddressError> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PciAddressError::Malformed(whole.to_owned()));
    }
    let n =
        u32::from_str_radix(text, 16).map_err(|_| PciAddressError::Malformed(whole.to_owned()))?;
    T::try_from(n).map_err(|_| PciAddressError::OutOfRange(whole.to_owned()))
}

impl FromStr for PciAddress {
    type Err = PciAddressError;

    /// Parses `DDDD:BB:SS.F` or `BB:SS.F` (domain 0), hex in any case.
    fn from_str(s: &str) -> Result<PciAddress, PciAddressError> {
        let malformed = || PciAddressError::Malformed(s.to_owned());
        let (head, function) = s.rsplit_once('.').ok_or_else(malformed)?;
        let mut parts = head.split(':').collect::<Vec<_>>();
        let domain = match parts.len() {
            3 => hex::<u16>(parts.remove(0), 4, s)?,
            2 => 0,
            _ => return Err(malformed()),
        };
        let bus = hex::<u8>(parts[0], 2, s)?;
        let slot = hex::<u8>(parts[1], 2, s)?;
        let function = hex::<u8>(function, 1, s)?;
        PciAddress::new(domain, bus, slot, function)
            .ok_or_else(|| PciAddressError::OutOfRange(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_and_short_forms() {
        let a: PciAddress = "0000:0A:1f.7".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 0x0a, 0x1f, 7).unwrap());
        assert_eq!(a.to_string(), "0000:0a:1f.7");
        let b: PciAddress = "03:00.1".parse().unwrap();
        assert_eq!(b.to_string(), "0000:03:00.1");
    }

    #[test]
    fn rejects_bad_components() {
        for bad in [
            "",
            "0000:03:00",
            "0000:03:20.0",
            "0000:03:00.8",
            "0000.03:00.0",
            "0b::00.1",
            "00000:03:00.0",
            "0000:03:00.g",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn orders_by_domain_bus_slot_function() {
        let mut v: Vec<PciAddress> = ["0001:00:00.0", "0000:03:00.1", "0000:03:00.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        assert_eq!(v[0].to_string(), "0000:03:00.0");
        assert_eq!(v[2].to_string(), "0001:00:00.0");
    }
}
