//! What pcipass writes on a boot line: parameter names and values that
//! GRUB's lexer, `grub_create_loader_cmdline` and the kernel's `next_arg`
//! all read the same way (no blanks, quotes, escapes, GRUB shell
//! characters or non-ASCII bytes).

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// The key is empty or has characters a parameter name cannot have.
    #[error("invalid parameter name {0:?}")]
    BadKey(String),
    /// The value has a character the kernel or GRUB would misread.
    #[error("value {value:?} contains {found:?}, which the kernel or GRUB would misread")]
    BadValue {
        /// The value given.
        value: String,
        /// The character that would be misread.
        found: char,
    },
}

/// Refuse a parameter name a boot line cannot carry.
pub fn check_key(key: &str) -> Result<(), CmdlineError> {
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-,".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CmdlineError::BadKey(key.to_owned()))
    }
}

/// Refuse values that would change meaning in grub.cfg or on the kernel
/// command line: whitespace, quotes, GRUB's shell characters, control and
/// non-ASCII characters.
pub fn check_value(value: &str) -> Result<(), CmdlineError> {
    match value
        .chars()
        .find(|c| !c.is_ascii_graphic() || "\"'\\$;&|<>{}#`".contains(*c))
    {
        Some(found) => Err(CmdlineError::BadValue {
            value: value.to_owned(),
            found,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_grub_or_the_kernel_would_misread_are_refused() {
        for bad in ["a b", "a\"b", "a;b", "a\nb", "$x", "é", "a\\b", "a'b", "#x"] {
            assert!(check_value(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_value("(0000:01:*.*)").is_ok());
        assert!(check_key("bad key").is_err());
        assert!(check_key("").is_err());
        assert!(check_key("xen-pciback.hide").is_ok());
    }
}
