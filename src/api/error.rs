//! [`ApiError`]: a XenAPI failure, `[CODE, param, ...]` on the wire.
//!
//! Every module below the API has its own error enum; this file holds the
//! single mapping from those enums to XenAPI codes, so a client sees one
//! code per cause and never a path, a secret or a request body.

use std::fmt;

/// A XenAPI error: code plus string parameters, in the order the idl
/// declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Bad user name or password: `[user, message]`.
    SessionAuthenticationFailed {
        /// The user name.
        user: String,
        /// What went wrong, for people.
        message: String,
    },
    /// Unknown or expired session: `[handle]`.
    SessionInvalid(String),
    /// A ref that is not an object of that class: `[class, handle]`.
    HandleInvalid {
        /// The class.
        class: String,
        /// The reference given.
        handle: String,
    },
    /// `get_by_uuid` found nothing: `[class, uuid]`.
    UuidInvalid {
        /// The class.
        class: String,
        /// The uuid given.
        uuid: String,
    },
    /// No such method: `[method]`.
    MessageMethodUnknown(String),
    /// Wrong number of parameters: `[method, expected, received]`.
    MessageParameterCountMismatch {
        /// The method called.
        method: String,
        /// How many parameters it takes.
        expected: usize,
        /// How many were given.
        received: i64,
    },
    /// A parameter of the wrong type: `[field]`, with the reason.
    FieldTypeError {
        /// The field or parameter.
        field: String,
        /// Why.
        reason: String,
    },
    /// The session's role is too low: `[permission, message]`.
    RbacPermissionDenied {
        /// The permission the call needs.
        permission: String,
        /// What went wrong, for people.
        message: String,
    },
    /// A value that is well-typed but not acceptable: `[field, value]`.
    InvalidValue {
        /// The field or parameter.
        field: String,
        /// The value given.
        value: String,
    },
    /// `add_to_<map>` with an existing key: `[class, field, ref, key]`.
    MapDuplicateKey {
        /// The class.
        class: String,
        /// The field or parameter.
        field: String,
        /// The reference given.
        handle: String,
        /// The key.
        key: String,
    },
    /// Hiding a device on the path of a boot disk: `[device]`.
    BootDevicePassthroughDisallowed(String),
    /// The boot configuration's hide value does not parse: `[value, reason]`.
    BootConfigHideListMalformed {
        /// The value given.
        value: String,
        /// Why.
        reason: String,
    },
    /// The boot configuration cannot be read or edited: `[reason]`.
    BootConfigUnavailable(String),
    /// The edit would make the dom0 command line (or the hide value)
    /// longer than Xen or the kernel takes: `[length, limit]`.
    BootConfigCmdlineTooLong {
        /// The length the edit would give.
        length: usize,
        /// The most that passes.
        limit: usize,
    },
    /// Hiding a function that carries dom0's network: `[device, interface]`.
    PciCarriesDom0Network {
        /// The function's address.
        device: String,
        /// The interface it carries.
        interface: String,
    },
    /// A login refused unchecked: its source failed too often lately, or
    /// too many logins wait: `[retry_after_seconds]`.
    SessionAuthenticationThrottled(u64),
    /// A previewed edit whose files changed since the preview (or whose
    /// token is another edit's): `[]`.
    Dom0AccessPreviewStale,
    /// Hiding a function the host's platform uses: `[device, class]`.
    PciIsHostPlatformDevice {
        /// The function's address.
        device: String,
        /// What it is (`SMBus controller`).
        class: String,
    },
    /// Hiding the system display device while the host display is on:
    /// `[device]`.
    PciIsHostDisplay(String),
    /// Taking now the function dom0's console is on: `[device, console]`.
    PciCarriesDom0Console {
        /// The function's address.
        device: String,
        /// The console.
        console: String,
    },
    /// Giving back a function a running domain has: `[device, domid, name]`.
    PciAssignedToDomain {
        /// The function's address.
        device: String,
        /// The domain's id.
        domid: String,
        /// The domain's name (empty when xenstore has none).
        name: String,
    },
    /// A step of an apply-now move failed, every earlier step undone:
    /// `[device, step, reason]`.
    PciApplyNowFailed {
        /// The function's address.
        device: String,
        /// The step that failed.
        step: String,
        /// Why.
        reason: String,
    },
    /// `host.reboot` on an enabled host: `[]`.
    HostNotDisabled,
    /// An operation that cannot be done now: `[reason]`.
    OperationNotAllowed(String),
    /// `event.from` token that does not parse: `[token]`.
    EventFromTokenParseFailure(String),
    /// `event.next` without `event.register`: `[handle]`.
    SessionNotRegistered(String),
    /// The events a client asked for were dropped: `[]`.
    EventsLost,
    /// The task was cancelled: `[task]`.
    TaskCancelled(String),
    /// The caller holds as many unfinished tasks as it may: `[]`.
    TooManyPendingTasks,
    /// Not implemented on this host: `[function]`.
    NotImplemented(String),
    /// Async call of a message that has no async form: xapi's `Fault`.
    NoAsyncMode(String),
    /// Anything else. The message is ours and names no path or secret.
    Internal(String),
}

impl ApiError {
    /// The XenAPI error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::SessionAuthenticationFailed { .. } => "SESSION_AUTHENTICATION_FAILED",
            ApiError::SessionInvalid(_) => "SESSION_INVALID",
            ApiError::HandleInvalid { .. } => "HANDLE_INVALID",
            ApiError::UuidInvalid { .. } => "UUID_INVALID",
            ApiError::MessageMethodUnknown(_) => "MESSAGE_METHOD_UNKNOWN",
            ApiError::MessageParameterCountMismatch { .. } => "MESSAGE_PARAMETER_COUNT_MISMATCH",
            ApiError::FieldTypeError { .. } => "FIELD_TYPE_ERROR",
            ApiError::RbacPermissionDenied { .. } => "RBAC_PERMISSION_DENIED",
            ApiError::InvalidValue { .. } => "INVALID_VALUE",
            ApiError::MapDuplicateKey { .. } => "MAP_DUPLICATE_KEY",
            ApiError::BootDevicePassthroughDisallowed(_) => "BOOT_DEVICE_PASSTHROUGH_DISALLOWED",
            ApiError::BootConfigHideListMalformed { .. } => "BOOT_CONFIG_HIDE_LIST_MALFORMED",
            ApiError::BootConfigUnavailable(_) => "BOOT_CONFIG_UNAVAILABLE",
            ApiError::BootConfigCmdlineTooLong { .. } => "BOOT_CONFIG_CMDLINE_TOO_LONG",
            ApiError::PciAssignedToDomain { .. } => "PCI_ASSIGNED_TO_DOMAIN",
            ApiError::PciCarriesDom0Network { .. } => "PCI_CARRIES_DOM0_NETWORK",
            ApiError::PciCarriesDom0Console { .. } => "PCI_CARRIES_DOM0_CONSOLE",
            ApiError::PciIsHostDisplay(_) => "PCI_IS_HOST_DISPLAY",
            ApiError::Dom0AccessPreviewStale => "DOM0_ACCESS_PREVIEW_STALE",
            ApiError::SessionAuthenticationThrottled(_) => "SESSION_AUTHENTICATION_THROTTLED",
            ApiError::PciIsHostPlatformDevice { .. } => "PCI_IS_HOST_PLATFORM_DEVICE",
            ApiError::PciApplyNowFailed { .. } => "PCI_APPLY_NOW_FAILED",
            ApiError::HostNotDisabled => "HOST_NOT_DISABLED",
            ApiError::OperationNotAllowed(_) => "OPERATION_NOT_ALLOWED",
            ApiError::EventFromTokenParseFailure(_) => "EVENT_FROM_TOKEN_PARSE_FAILURE",
            ApiError::SessionNotRegistered(_) => "SESSION_NOT_REGISTERED",
            ApiError::EventsLost => "EVENTS_LOST",
            ApiError::TaskCancelled(_) => "TASK_CANCELLED",
            ApiError::TooManyPendingTasks => "TOO_MANY_PENDING_TASKS",
            ApiError::NotImplemented(_) => "NOT_IMPLEMENTED",
            ApiError::NoAsyncMode(_) => "Fault",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// Every code this enum can produce (checked against the idl by a test).
    pub const CODES: &'static [&'static str] = &[
        "SESSION_AUTHENTICATION_FAILED",
        "SESSION_INVALID",
        "HANDLE_INVALID",
        "UUID_INVALID",
        "MESSAGE_METHOD_UNKNOWN",
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "FIELD_TYPE_ERROR",
        "RBAC_PERMISSION_DENIED",
        "INVALID_VALUE",
        "MAP_DUPLICATE_KEY",
        "BOOT_DEVICE_PASSTHROUGH_DISALLOWED",
        "BOOT_CONFIG_HIDE_LIST_MALFORMED",
        "BOOT_CONFIG_UNAVAILABLE",
        "BOOT_CONFIG_CMDLINE_TOO_LONG",
        "PCI_CARRIES_DOM0_NETWORK",
        "PCI_CARRIES_DOM0_CONSOLE",
        "PCI_IS_HOST_DISPLAY",
        "DOM0_ACCESS_PREVIEW_STALE",
        "SESSION_AUTHENTICATION_THROTTLED",
        "PCI_IS_HOST_PLATFORM_DEVICE",
        "PCI_ASSIGNED_TO_DOMAIN",
        "PCI_APPLY_NOW_FAILED",
        "HOST_NOT_DISABLED",
        "OPERATION_NOT_ALLOWED",
        "EVENT_FROM_TOKEN_PARSE_FAILURE",
        "SESSION_NOT_REGISTERED",
        "EVENTS_LOST",
        "TASK_CANCELLED",
        "TOO_MANY_PENDING_TASKS",
        "NOT_IMPLEMENTED",
        "INTERNAL_ERROR",
    ];

    /// The error parameters, in declared order.
    pub fn params(&self) -> Vec<String> {
        match self {
            ApiError::SessionAuthenticationFailed { user, message } => {
                vec![user.clone(), message.clone()]
            }
            ApiError::SessionInvalid(h)
            | ApiError::MessageMethodUnknown(h)
            | ApiError::BootDevicePassthroughDisallowed(h)
            | ApiError::BootConfigUnavailable(h)
            | ApiError::OperationNotAllowed(h)
            | ApiError::EventFromTokenParseFailure(h)
            | ApiError::SessionNotRegistered(h)
            | ApiError::TaskCancelled(h)
            | ApiError::NotImplemented(h)
            | ApiError::NoAsyncMode(h)
            | ApiError::Internal(h) => vec![h.clone()],
            ApiError::HandleInvalid { class, handle } => vec![class.clone(), handle.clone()],
            ApiError::UuidInvalid { class, uuid } => vec![class.clone(), uuid.clone()],
            ApiError::MessageParameterCountMismatch {
                method,
                expected,
                received,
            } => {
                vec![method.clone(), expected.to_string(), received.to_string()]
            }
            ApiError::FieldTypeError { field, reason } => vec![field.clone(), reason.clone()],
            ApiError::RbacPermissionDenied {
                permission,
                message,
            } => vec![permission.clone(), message.clone()],
            ApiError::InvalidValue { field, value } => vec![field.clone(), value.clone()],
            ApiError::MapDuplicateKey {
                class,
                field,
                handle,
                key,
            } => {
                vec![class.clone(), field.clone(), handle.clone(), key.clone()]
            }
            ApiError::BootConfigHideListMalformed { value, reason } => {
                vec![value.clone(), reason.clone()]
            }
            ApiError::BootConfigCmdlineTooLong { length, limit } => {
                vec![length.to_string(), limit.to_string()]
            }
            ApiError::PciAssignedToDomain {
                device,
                domid,
                name,
            } => vec![device.clone(), domid.clone(), name.clone()],
            ApiError::PciCarriesDom0Network { device, interface } => {
                vec![device.clone(), interface.clone()]
            }
            ApiError::PciCarriesDom0Console { device, console } => {
                vec![device.clone(), console.clone()]
            }
            ApiError::PciIsHostDisplay(device) => vec![device.clone()],
            ApiError::SessionAuthenticationThrottled(secs) => vec![secs.to_string()],
            ApiError::PciIsHostPlatformDevice { device, class } => {
                vec![device.clone(), class.clone()]
            }
            ApiError::PciApplyNowFailed {
                device,
                step,
                reason,
            } => vec![device.clone(), step.clone(), reason.clone()],
            ApiError::HostNotDisabled
            | ApiError::EventsLost
            | ApiError::TooManyPendingTasks
            | ApiError::Dom0AccessPreviewStale => vec![],
        }
    }

    /// `[CODE, params...]`, the wire form.
    pub fn description(&self) -> Vec<String> {
        let mut d = vec![self.code().to_owned()];
        d.extend(self.params().into_iter().map(capped));
        d
    }

    /// A handle-invalid error for `class`.
    pub fn handle_invalid(class: &str, handle: &str) -> ApiError {
        ApiError::HandleInvalid {
            class: class.to_owned(),
            handle: handle.to_owned(),
        }
    }
}

/// Longest parameter an error description carries: an error echoes what
/// the client sent (a method name, a ref, a user name), and must not echo
/// megabytes of it back, or into a log.
pub const MAX_ECHOED: usize = 1024;

/// `param` cut to [`MAX_ECHOED`] bytes (at a character boundary), with how
/// much was cut.
fn capped(param: String) -> String {
    if param.len() <= MAX_ECHOED {
        return param;
    }
    let mut end = MAX_ECHOED;
    while !param.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... [{} more bytes]", &param[..end], param.len() - end)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.description().join(" "))
    }
}

impl std::error::Error for ApiError {}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        tracing::error!("store: {e}");
        match e {
            crate::store::StoreError::NoSuchObject(handle) => ApiError::HandleInvalid {
                class: String::new(),
                handle,
            },
            // The operator must act (restart): say so to the client too.
            e @ crate::store::StoreError::DatabaseGone { .. } => ApiError::Internal(e.to_string()),
            // Said without the path (clients get none); the log has it.
            crate::store::StoreError::Full { .. } => ApiError::Internal(
                "the file system of pcipassd's state directory is full: the change was not made \
                 (logins still work); make room there"
                    .into(),
            ),
            _ => ApiError::Internal("database error".into()),
        }
    }
}

impl From<crate::domain::service::BootErrorKind> for ApiError {
    fn from(kind: crate::domain::service::BootErrorKind) -> ApiError {
        use crate::domain::service::BootErrorKind;
        match kind {
            BootErrorKind::TooLong { length, limit } => {
                ApiError::BootConfigCmdlineTooLong { length, limit }
            }
            BootErrorKind::BootDevice { block_device } => {
                ApiError::BootDevicePassthroughDisallowed(block_device)
            }
            BootErrorKind::HostDisplay { function } => ApiError::PciIsHostDisplay(function),
            BootErrorKind::PreviewStale => ApiError::Dom0AccessPreviewStale,
            BootErrorKind::HostPlatform { function, what } => ApiError::PciIsHostPlatformDevice {
                device: function,
                class: what,
            },
            BootErrorKind::Dom0Console { function, console } => ApiError::PciCarriesDom0Console {
                device: function,
                console,
            },
            BootErrorKind::Dom0Network {
                function,
                interface,
            } => ApiError::PciCarriesDom0Network {
                device: function,
                interface,
            },
            BootErrorKind::HideListMalformed {
                value,
                offending,
                reason,
            } => ApiError::BootConfigHideListMalformed {
                value,
                reason: format!("{reason} at {offending}"),
            },
            // The reason says why (for an unknown xen-pciback: why the hide
            // could not be made to take effect, and what to do).
            BootErrorKind::Unavailable { reason } => ApiError::BootConfigUnavailable(reason),
            BootErrorKind::AssignedToDomain {
                function,
                domid,
                name,
            } => ApiError::PciAssignedToDomain {
                device: function,
                domid: domid.to_string(),
                name,
            },
            BootErrorKind::ApplyNowStep {
                function,
                step,
                reason,
            } => ApiError::PciApplyNowFailed {
                device: function,
                step,
                reason,
            },
        }
    }
}

impl From<crate::domain::service::DomainError> for ApiError {
    fn from(e: crate::domain::service::DomainError) -> ApiError {
        use crate::domain::service::DomainError;
        if let Some(kind) = e.boot_kind() {
            tracing::warn!("boot configuration: {e}");
            return kind.into();
        }
        match e {
            DomainError::Reboot(reason) => ApiError::OperationNotAllowed(reason),
            DomainError::Gone(_) => ApiError::OperationNotAllowed(e.to_string()),
            other => {
                tracing::error!("{other}");
                ApiError::Internal(other.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_never_echoes_megabytes() {
        let huge = "é".repeat(1_000_000);
        let d = ApiError::MessageMethodUnknown(huge.clone()).description();
        assert_eq!(d[0], "MESSAGE_METHOD_UNKNOWN");
        assert!(d[1].len() < MAX_ECHOED + 40, "{}", d[1].len());
        assert!(d[1].ends_with(&format!("... [{} more bytes]", huge.len() - 1024)));
        let short = ApiError::handle_invalid("PCI", "OpaqueRef:x").description();
        assert_eq!(short, ["HANDLE_INVALID", "PCI", "OpaqueRef:x"]);
    }

    #[test]
    fn an_unknown_xen_pciback_refusal_says_why_and_what_to_do() {
        use crate::domain::bootcfg::BootConfigError;
        use crate::domain::service::DomainError;
        let e: ApiError = DomainError::Boot(BootConfigError::PcibackUnknown {
            kernel_release: "6.1.0-28-amd64".into(),
        })
        .into();
        let d = e.description();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0], "BOOT_CONFIG_UNAVAILABLE");
        for part in [
            "built in or as a module",
            "nothing was written",
            "/lib/modules/6.1.0-28-amd64",
            "modprobe xen-pciback",
        ] {
            assert!(d[1].contains(part), "{part}: {}", d[1]);
        }
    }
}
