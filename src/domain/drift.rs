//! Identity and drift: what a hidden function is (vendor, device,
//! subsystem, class), remembered with its address when pcipass hides it,
//! and what has changed under a remembered hide since: another device at
//! the address (a card swapped), none at all, or a boot configuration that
//! no longer hides it (an XCP-ng upgrade rewrote grub.cfg; a hand edit).
//! Pure functions; the API keeps the memory and says what it finds.

use std::fmt;
use std::str::FromStr;

use crate::domain::PciAddress;

/// What a function is, as its configuration space says (Qubes and
/// Proxmox tell devices apart the same way: the ids, not the slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Subsystem vendor id.
    pub sub_vendor: u16,
    /// Subsystem device id.
    pub sub_device: u16,
    /// 24-bit class code.
    pub class: u32,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:04x} (subsystem {:04x}:{:04x}, class {:06x})",
            self.vendor, self.device, self.sub_vendor, self.sub_device, self.class
        )
    }
}

impl FromStr for Identity {
    type Err = String;

    /// The [`fmt::Display`] form back.
    fn from_str(s: &str) -> Result<Identity, String> {
        let bad = || format!("not an identity: {s:?}");
        let (ids, rest) = s.split_once(" (subsystem ").ok_or_else(bad)?;
        let (sub, class) = rest
            .strip_suffix(')')
            .and_then(|r| r.split_once(", class "))
            .ok_or_else(bad)?;
        let pair = |t: &str| -> Result<(u16, u16), String> {
            let (a, b) = t.split_once(':').ok_or_else(bad)?;
            Ok((
                u16::from_str_radix(a, 16).map_err(|_| bad())?,
                u16::from_str_radix(b, 16).map_err(|_| bad())?,
            ))
        };
        let (vendor, device) = pair(ids)?;
        let (sub_vendor, sub_device) = pair(sub)?;
        Ok(Identity {
            vendor,
            device,
            sub_vendor,
            sub_device,
            class: u32::from_str_radix(class, 16).map_err(|_| bad())?,
        })
    }
}

/// What changed under a remembered hide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Another device is at the address now.
    Replaced(Identity),
    /// No device is at the address.
    Gone,
    /// The device is there, but the next boot no longer hides it.
    HideDropped,
}

/// One drift: the address, what was hidden there, what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The remembered address.
    pub address: PciAddress,
    /// What pcipass hid there.
    pub was: Identity,
    /// What changed.
    pub change: Change,
}

impl Drift {
    /// The XenAPI message name.
    pub fn name(&self) -> &'static str {
        match self.change {
            Change::Replaced(_) => "PCI_IDENTITY_CHANGED",
            Change::Gone => "PCI_GONE",
            Change::HideDropped => "PCI_HIDE_DROPPED",
        }
    }

    /// xapi's priorities: 2 (service loss imminent) for another device at
    /// a hidden address, 3 (service degraded) otherwise.
    pub fn priority(&self) -> i64 {
        match self.change {
            Change::Replaced(_) => 2,
            Change::Gone | Change::HideDropped => 3,
        }
    }

    /// What a person reads: the address, the device and what to do.
    pub fn body(&self) -> String {
        let (addr, was) = (self.address, self.was);
        match &self.change {
            Change::Replaced(now) => format!(
                "{addr} was hidden from dom0 as {was}, but now holds {now}: another device at a \
                 hidden address (check it is the one to pass through, then hide it again or give \
                 the address back)"
            ),
            Change::Gone => format!(
                "{addr} was hidden from dom0 as {was}, but no device is at that address now \
                 (removed, or moved to another slot)"
            ),
            Change::HideDropped => format!(
                "{addr} ({was}) was hidden, but the boot configuration no longer hides it (an \
                 upgrade or a hand edit rewrote it): the next boot gives it to dom0"
            ),
        }
    }
}

/// The drifts of `remembered` hides, given what is at each address now
/// and whether the next boot hides it (`now[i]` for `remembered[i]`;
/// `None`: nothing there).
pub fn judge(
    remembered: &[(PciAddress, Identity)],
    now: &[Option<(Identity, bool)>],
) -> Vec<Drift> {
    remembered
        .iter()
        .zip(now)
        .filter_map(|(&(address, was), now)| {
            let change = match now {
                None => Change::Gone,
                Some((is, _)) if *is != was => Change::Replaced(*is),
                Some((_, false)) => Change::HideDropped,
                Some((_, true)) => return None,
            };
            Some(Drift {
                address,
                was,
                change,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(vendor: u16, device: u16) -> Identity {
        Identity {
            vendor,
            device,
            sub_vendor: 0x1043,
            sub_device: 0x8670,
            class: 0x030000,
        }
    }

    #[test]
    fn an_identity_reads_back() {
        let gpu = id(0x10de, 0x1e87);
        let text = gpu.to_string();
        assert_eq!(text, "10de:1e87 (subsystem 1043:8670, class 030000)");
        assert_eq!(text.parse::<Identity>(), Ok(gpu));
        for bad in [
            "",
            "10de:1e87",
            "10de:1e87 (subsystem 1043:8670, class zz)",
            "x:y (subsystem 1:2, class 3)",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad:?}");
        }
    }

    /// Each drift from the one fact that makes it; none while all holds.
    #[test]
    fn each_drift_and_none() {
        let a: PciAddress = "0000:01:00.0".parse().unwrap();
        let gpu = id(0x10de, 0x1e87);
        let other = id(0x1002, 0x73bf);
        for (now, want) in [
            (Some((gpu, true)), None),
            (
                Some((gpu, false)),
                Some(("PCI_HIDE_DROPPED", Change::HideDropped)),
            ),
            (
                Some((other, true)),
                Some(("PCI_IDENTITY_CHANGED", Change::Replaced(other))),
            ),
            (
                Some((other, false)),
                Some(("PCI_IDENTITY_CHANGED", Change::Replaced(other))),
            ),
            (None, Some(("PCI_GONE", Change::Gone))),
        ] {
            let found = judge(&[(a, gpu)], &[now]);
            match want {
                None => assert!(found.is_empty(), "{now:?}: {found:?}"),
                Some((name, change)) => {
                    assert_eq!(found.len(), 1, "{now:?}");
                    assert_eq!((found[0].name(), &found[0].change), (name, &change));
                    assert!(
                        found[0].body().starts_with("0000:01:00.0"),
                        "{}",
                        found[0].body()
                    );
                }
            }
        }
    }
}
