//! Which PDUs each state of a customer session serves: the whole state machine's table, pure.

use rusmpp::{CommandId, CommandStatus};

/// The state as far as which PDUs are valid goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Open,
    Tx,
    Rx,
    Trx,
    /// We sent unbind and wait for unbind_resp.
    Unbinding,
}

/// What to do with a PDU in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Handle,
    /// Answer with the request's own response and this status.
    Refuse(CommandStatus),
    /// Answer generic_nack with this status.
    Nack(CommandStatus),
    /// A response nobody waits for: nothing to answer.
    Ignore,
}

/// Which PDUs a state serves. Pure: the whole state machine's table.
pub fn admit(state: StateKind, id: CommandId) -> Admit {
    use CommandId as C;
    use StateKind as S;
    let bound = matches!(state, S::Tx | S::Rx | S::Trx);
    let transmits = matches!(state, S::Tx | S::Trx);
    let receives = matches!(state, S::Rx | S::Trx | S::Unbinding);
    match id {
        C::EnquireLink => Admit::Handle,
        C::BindTransmitter | C::BindReceiver | C::BindTransceiver => match state {
            S::Open => Admit::Handle,
            S::Unbinding => Admit::Refuse(CommandStatus::EsmeRinvbndsts),
            _ => Admit::Refuse(CommandStatus::EsmeRalybnd),
        },
        C::Unbind if bound || state == S::Unbinding => Admit::Handle,
        C::Unbind => Admit::Refuse(CommandStatus::EsmeRinvbndsts),
        C::SubmitSm | C::SubmitMulti | C::QuerySm | C::CancelSm if transmits => Admit::Handle,
        C::SubmitSm | C::SubmitMulti | C::QuerySm | C::CancelSm => {
            Admit::Refuse(CommandStatus::EsmeRinvbndsts)
        }
        C::DeliverSmResp | C::GenericNack if receives => Admit::Handle,
        C::UnbindResp if state == S::Unbinding => Admit::Handle,
        // Requests an SMSC serves that we do not (replace_sm, data_sm, broadcasts), and
        // those only an SMSC sends (deliver_sm, outbind, alert_notification) or unknown ids.
        id if u32::from(id) & 0x8000_0000 == 0 => Admit::Nack(CommandStatus::EsmeRinvcmdid),
        _ => Admit::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommandId as C;
    use StateKind as S;

    #[test]
    fn each_state_serves_only_its_pdus() {
        let refuse = Admit::Refuse(CommandStatus::EsmeRinvbndsts);
        // Open: bind and enquire_link only.
        assert_eq!(admit(S::Open, C::BindTransceiver), Admit::Handle);
        assert_eq!(admit(S::Open, C::EnquireLink), Admit::Handle);
        for id in [
            C::SubmitSm,
            C::SubmitMulti,
            C::QuerySm,
            C::CancelSm,
            C::Unbind,
        ] {
            assert_eq!(admit(S::Open, id), refuse, "{id:?} before a bind");
        }
        // A second bind.
        for s in [S::Tx, S::Rx, S::Trx] {
            assert_eq!(
                admit(s, C::BindTransmitter),
                Admit::Refuse(CommandStatus::EsmeRalybnd)
            );
            assert_eq!(admit(s, C::Unbind), Admit::Handle);
            assert_eq!(admit(s, C::EnquireLink), Admit::Handle);
        }
        // A receiver submits nothing; a transmitter gets no deliver_sm to answer.
        assert_eq!(admit(S::Rx, C::SubmitSm), refuse);
        assert_eq!(admit(S::Rx, C::DeliverSmResp), Admit::Handle);
        assert_eq!(admit(S::Tx, C::SubmitSm), Admit::Handle);
        assert_eq!(admit(S::Tx, C::DeliverSmResp), Admit::Ignore);
        assert_eq!(admit(S::Trx, C::QuerySm), Admit::Handle);
        // Unbinding: only the unbind exchange and late answers.
        assert_eq!(admit(S::Unbinding, C::UnbindResp), Admit::Handle);
        assert_eq!(admit(S::Unbinding, C::SubmitSm), refuse);
        assert_eq!(admit(S::Trx, C::UnbindResp), Admit::Ignore);
        // What an SMSC does not take from an ESME, and ids nobody knows.
        let nack = Admit::Nack(CommandStatus::EsmeRinvcmdid);
        assert_eq!(admit(S::Trx, C::DeliverSm), nack);
        assert_eq!(admit(S::Trx, C::DataSm), nack);
        assert_eq!(admit(S::Open, C::Other(0x0000_0099)), nack);
        assert_eq!(admit(S::Trx, C::Other(0x8000_0099)), Admit::Ignore);
        assert_eq!(admit(S::Trx, C::SubmitSmResp), Admit::Ignore);
    }
}
