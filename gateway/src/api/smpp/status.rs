//! Every command_status the server answers with, decided in one place: why a bind was
//! refused, and what a submit that was not accepted tells the customer. Pure; docs/customers.md
//! lists the same table.

use rusmpp::CommandStatus;

use crate::messaging::submit::SubmitError;

/// Why a bind was refused. Also the `reason` label of smpp_customer_bind_failures_total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindRefusal {
    /// No account has this system_id (or its row cannot be used).
    UnknownSystemId,
    /// The account is suspended.
    Suspended,
    /// The source address is outside the account's allowed CIDRs.
    SourceNotAllowed,
    BadPassword,
    /// Too many failed binds from this source address lately.
    TooManyFailures,
    /// Every bind slot of the account is held somewhere in the fleet.
    BindLimit,
    /// The bind could not be recorded (PostgreSQL unreachable).
    SystemError,
    /// A bind on a session that is bound already.
    AlreadyBound,
    /// The bind PDU could not be decoded (e.g. a password longer than 8 characters).
    Malformed,
    /// The server is shutting down.
    ShuttingDown,
}

impl BindRefusal {
    pub const ALL: &'static [BindRefusal] = &[
        Self::UnknownSystemId,
        Self::Suspended,
        Self::SourceNotAllowed,
        Self::BadPassword,
        Self::TooManyFailures,
        Self::BindLimit,
        Self::SystemError,
        Self::AlreadyBound,
        Self::Malformed,
        Self::ShuttingDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownSystemId => "unknown_system_id",
            Self::Suspended => "suspended",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::BadPassword => "bad_password",
            Self::TooManyFailures => "too_many_failures",
            Self::BindLimit => "bind_limit",
            Self::SystemError => "system_error",
            Self::AlreadyBound => "already_bound",
            Self::Malformed => "malformed",
            Self::ShuttingDown => "shutting_down",
        }
    }

    /// The bind_resp status. A source outside the allowed CIDRs and a suspended account get
    /// ESME_RINVSYSID, like an unknown system_id: from outside, such an account does not
    /// exist, and nothing about its password can be learnt there.
    pub fn status(self) -> CommandStatus {
        match self {
            Self::UnknownSystemId | Self::Suspended | Self::SourceNotAllowed => {
                CommandStatus::EsmeRinvsysid
            }
            Self::BadPassword => CommandStatus::EsmeRinvpaswd,
            Self::TooManyFailures | Self::BindLimit | Self::ShuttingDown => {
                CommandStatus::EsmeRbindfail
            }
            Self::SystemError => CommandStatus::EsmeRsyserr,
            Self::AlreadyBound => CommandStatus::EsmeRalybnd,
            Self::Malformed => CommandStatus::EsmeRinvcmdlen,
        }
    }

    /// Whether it counts towards the per-source limit of failed binds (a guess at
    /// credentials; not a full account or our own trouble).
    pub fn is_credential_failure(self) -> bool {
        matches!(
            self,
            Self::UnknownSystemId | Self::SourceNotAllowed | Self::BadPassword | Self::Malformed
        )
    }
}

/// The submit_sm_resp (or unsuccess_sme) status for a message the messaging core did not
/// accept.
///
/// - A vendor's own refusal passes through as the vendor said it (the customer's SMPP
///   library knows what ESME_RINVDSTADR from an SMSC means); so does one reported by the pod
///   a submit was forwarded to.
/// - Retry-later conditions get statuses ESMEs retry: ESME_RMSGQFUL (this pod's queue),
///   ESME_RSYSERR (no vendor bound, Redis down, forwarding failed, no answer from the vendor).
pub fn submit_status(e: &SubmitError) -> CommandStatus {
    match e {
        SubmitError::Invalid { field, .. } => match *field {
            "to" => CommandStatus::EsmeRinvdstadr,
            "from" => CommandStatus::EsmeRinvsrcadr,
            "text" => CommandStatus::EsmeRinvmsglen,
            "validity_seconds" => CommandStatus::EsmeRinvexpiry,
            _ => CommandStatus::EsmeRsubmitfail,
        },
        SubmitError::Rejected { code, .. } => CommandStatus::from(*code),
        SubmitError::QueueFull(_) => CommandStatus::EsmeRmsgqful,
        SubmitError::UnknownVendor(_)
        | SubmitError::NoRoute(_)
        | SubmitError::Timeout { .. }
        | SubmitError::StoreUnavailable(_)
        | SubmitError::Forward(_) => CommandStatus::EsmeRsyserr,
        SubmitError::Remote {
            status,
            command_status,
            ..
        } => match command_status {
            Some(c) => CommandStatus::from(*c),
            None if *status == 429 => CommandStatus::EsmeRmsgqful,
            None => CommandStatus::EsmeRsyserr,
        },
    }
}

/// The `outcome` label of smpp_customer_submits_total for a status we answered.
pub fn outcome_label(status: CommandStatus) -> &'static str {
    match status {
        CommandStatus::EsmeRok => "accepted",
        CommandStatus::EsmeRthrottled => "throttled",
        CommandStatus::EsmeRmsgqful => "queue_full",
        CommandStatus::EsmeRinvsrcadr => "invalid_source",
        CommandStatus::EsmeRinvdstadr => "invalid_destination",
        CommandStatus::EsmeRinvmsglen | CommandStatus::EsmeRsubmitfail => "invalid_message",
        CommandStatus::EsmeRsyserr => "system_error",
        _ => "rejected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(field: &'static str) -> SubmitError {
        SubmitError::Invalid {
            field,
            message: "x".into(),
        }
    }

    #[test]
    fn submit_errors_map_to_command_statuses() {
        use CommandStatus::*;
        let cases = [
            (invalid("to"), EsmeRinvdstadr),
            (invalid("from"), EsmeRinvsrcadr),
            (invalid("text"), EsmeRinvmsglen),
            (invalid("validity_seconds"), EsmeRinvexpiry),
            (invalid("callback_url"), EsmeRsubmitfail),
            (SubmitError::QueueFull(10), EsmeRmsgqful),
            (SubmitError::NoRoute("1".into()), EsmeRsyserr),
            (SubmitError::UnknownVendor("v".into()), EsmeRsyserr),
            (SubmitError::StoreUnavailable("x".into()), EsmeRsyserr),
            (SubmitError::Forward("x".into()), EsmeRsyserr),
            (
                SubmitError::Timeout {
                    vendor: "v".into(),
                    part: 0,
                    secs: 1,
                    id: "m".into(),
                },
                EsmeRsyserr,
            ),
            (
                SubmitError::Rejected {
                    vendor: "v".into(),
                    part: 0,
                    status: "ESME_RINVDSTADR (0x0000000B)".into(),
                    code: 0x0B,
                    id: None,
                },
                EsmeRinvdstadr,
            ),
            (
                SubmitError::Remote {
                    status: 502,
                    code: "vendor_rejected".into(),
                    message: "x".into(),
                    id: None,
                    command_status: Some(0x58),
                },
                EsmeRthrottled,
            ),
            (
                SubmitError::Remote {
                    status: 429,
                    code: "queue_full".into(),
                    message: "x".into(),
                    id: None,
                    command_status: None,
                },
                EsmeRmsgqful,
            ),
            (
                SubmitError::Remote {
                    status: 401,
                    code: "unauthorized".into(),
                    message: "x".into(),
                    id: None,
                    command_status: None,
                },
                EsmeRsyserr,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(submit_status(&e), want, "{e:?}");
        }
    }

    #[test]
    fn bind_refusals_have_distinct_labels_and_spec_statuses() {
        let labels: std::collections::HashSet<_> =
            BindRefusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), BindRefusal::ALL.len());
        assert_eq!(
            BindRefusal::SourceNotAllowed.status(),
            BindRefusal::UnknownSystemId.status()
        );
        assert_eq!(
            BindRefusal::BadPassword.status(),
            CommandStatus::EsmeRinvpaswd
        );
        assert_eq!(
            BindRefusal::BindLimit.status(),
            CommandStatus::EsmeRbindfail
        );
        assert!(BindRefusal::BadPassword.is_credential_failure());
        assert!(!BindRefusal::BindLimit.is_credential_failure());
        assert!(!BindRefusal::Suspended.is_credential_failure());
    }
}
