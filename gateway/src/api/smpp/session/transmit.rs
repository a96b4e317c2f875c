//! The transmit side of a customer session: submit_sm, submit_multi and query_sm, each run
//! as a task of its own within the session's window, answered through the writer queue; and
//! the messaging core's entry (`prepare`, `submit`) they share.

use chrono::Utc;
use rusmpp::pdus::{SubmitMulti, SubmitSm};
use rusmpp::values::DestAddress;
use rusmpp::{CommandId, CommandStatus};
use tokio::sync::OwnedSemaphorePermit;

use super::{Session, send};
use crate::api::smpp::Ctx;
use crate::api::smpp::requests::{self, Content, Prepared};
use crate::api::smpp::status;
use crate::fleet::accounts::CustomerAccount;
use crate::smpp::pdu;

impl Session {
    fn count_submit(&self, account: &CustomerAccount, s: CommandStatus) {
        count_submit(&self.ctx, account, s);
    }

    pub(super) fn submit_sm(&self, seq: u32, sm: &SubmitSm) {
        let request = u32::from(CommandId::SubmitSm);
        let Some(account) = self.account() else {
            return;
        };
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            self.count_submit(&account, CommandStatus::EsmeRmsgqful);
            return self.refuse(request, seq, CommandStatus::EsmeRmsgqful);
        };
        let content = Content::of_submit_sm(sm);
        let dest = sm.destination_addr.to_string();
        let p = match self.ctx.prepare(&account, &content, &dest) {
            Ok(p) => p,
            Err(s) => {
                self.count_submit(&account, s);
                return self.refuse(request, seq, s);
            }
        };
        let (ctx, out, nr) = (self.ctx.clone(), self.out.clone(), self.not_reading.clone());
        tokio::spawn(async move {
            let permit: OwnedSemaphorePermit = permit;
            let cmd = match ctx.submit(&account, &p).await {
                Ok(id) => {
                    count_submit(&ctx, &account, CommandStatus::EsmeRok);
                    pdu::submit_sm_resp(seq, &id).unwrap_or_else(|_| {
                        pdu::error_resp(request, seq, CommandStatus::EsmeRsyserr)
                    })
                }
                Err(s) => {
                    count_submit(&ctx, &account, s);
                    pdu::error_resp(request, seq, s)
                }
            };
            // Free the window slot before the answer can reach the customer, which may then
            // send its next request at once.
            drop(permit);
            send(&out, &nr, cmd);
        });
    }

    pub(super) fn submit_multi(&self, seq: u32, sm: &SubmitMulti) {
        let request = u32::from(CommandId::SubmitMulti);
        let Some(account) = self.account() else {
            return;
        };
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            self.count_submit(&account, CommandStatus::EsmeRmsgqful);
            return self.refuse(request, seq, CommandStatus::EsmeRmsgqful);
        };
        let content = Content::of_submit_multi(sm);
        // Each destination is a message of its own; those refused before sending are
        // unsuccess_smes at once.
        let mut unsuccess: Vec<(usize, String, CommandStatus)> = Vec::new();
        let mut ready: Vec<(usize, String, Prepared)> = Vec::new();
        for (i, d) in sm.dest_address().iter().enumerate() {
            let dest = match d {
                DestAddress::SmeAddress(a) => a.destination_addr.to_string(),
                DestAddress::DistributionListName(l) => {
                    // No distribution lists here.
                    unsuccess.push((i, l.dl_name.to_string(), CommandStatus::EsmeRinvdstadr));
                    continue;
                }
            };
            match self.ctx.prepare(&account, &content, &dest) {
                Ok(p) => ready.push((i, dest, p)),
                Err(s) => {
                    self.count_submit(&account, s);
                    unsuccess.push((i, dest, s));
                }
            }
        }
        let (ctx, out, nr) = (self.ctx.clone(), self.out.clone(), self.not_reading.clone());
        tokio::spawn(async move {
            let permit: OwnedSemaphorePermit = permit;
            let sends = ready.iter().map(|(i, dest, p)| {
                let (ctx, account) = (&ctx, &account);
                async move { (*i, dest.clone(), ctx.submit(account, p).await) }
            });
            let mut first: Option<(usize, String)> = None;
            for (i, dest, r) in futures::future::join_all(sends).await {
                match r {
                    Ok(id) => {
                        count_submit(&ctx, &account, CommandStatus::EsmeRok);
                        if first.as_ref().is_none_or(|(j, _)| i < *j) {
                            first = Some((i, id));
                        }
                    }
                    Err(s) => {
                        count_submit(&ctx, &account, s);
                        unsuccess.push((i, dest, s));
                    }
                }
            }
            unsuccess.sort_by_key(|(i, _, _)| *i);
            let list: Vec<(String, CommandStatus)> =
                unsuccess.into_iter().map(|(_, d, s)| (d, s)).collect();
            // The message id is the first accepted destination's; none accepted: the first
            // refusal's status for the whole request.
            let (status, id) = match &first {
                Some((_, id)) => (CommandStatus::EsmeRok, id.as_str()),
                None => (
                    list.first()
                        .map_or(CommandStatus::EsmeRinvnumdests, |(_, s)| *s),
                    "",
                ),
            };
            let cmd = pdu::submit_multi_resp(seq, status, id, &list)
                .unwrap_or_else(|_| pdu::error_resp(request, seq, CommandStatus::EsmeRsyserr));
            // Free the window slot before the answer can reach the customer, which may then
            // send its next request at once.
            drop(permit);
            send(&out, &nr, cmd);
        });
    }

    pub(super) fn query_sm(&self, seq: u32, message_id: String) {
        let request = u32::from(CommandId::QuerySm);
        let Some(account) = self.bound().map(|b| b.account.id) else {
            return;
        };
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            return self.refuse(request, seq, CommandStatus::EsmeRmsgqful);
        };
        let Some(api) = self.ctx.messages.clone() else {
            return self.refuse(request, seq, CommandStatus::EsmeRsyserr);
        };
        let (out, nr) = (self.out.clone(), self.not_reading.clone());
        tokio::spawn(async move {
            let permit: OwnedSemaphorePermit = permit;
            let cmd = match api.messenger.store.get(&message_id).await {
                // Another account's message (or an HTTP one) is answered as an unknown id.
                Ok(Some(m)) if requests::visible_to(&m, account) => {
                    let (state, date, err) = requests::query_answer(&m);
                    pdu::query_sm_resp(seq, &message_id, &date, state, err).unwrap_or_else(|_| {
                        pdu::error_resp(request, seq, CommandStatus::EsmeRqueryfail)
                    })
                }
                Ok(_) => pdu::error_resp(request, seq, CommandStatus::EsmeRqueryfail),
                Err(_) => pdu::error_resp(request, seq, CommandStatus::EsmeRsyserr),
            };
            // Free the window slot before the answer can reach the customer, which may then
            // send its next request at once.
            drop(permit);
            send(&out, &nr, cmd);
        });
    }
}

fn count_submit(ctx: &Ctx, account: &CustomerAccount, s: CommandStatus) {
    ctx.metrics
        .customer_submits
        .with_label_values(&[&account.system_id, status::outcome_label(s)])
        .inc();
    if s == CommandStatus::EsmeRthrottled {
        ctx.metrics
            .customer_throttled
            .with_label_values(&[&account.system_id])
            .inc();
    }
}

/// The answer to a prepared submit's message: our message id, or the status that refuses it.
type SubmitResult = Result<String, CommandStatus>;

impl Ctx {
    /// A destination's message, with the account's rate taken.
    fn prepare(
        &self,
        account: &CustomerAccount,
        content: &Content,
        dest: &str,
    ) -> Result<Prepared, CommandStatus> {
        let max_parts = self
            .messages
            .as_ref()
            .map_or(10, |m| m.messenger.limits.max_parts);
        let p = requests::prepare(account, content, dest, max_parts, Utc::now())?;
        if !self
            .rates
            .take(account.id, account.max_messages_per_second, p.parts)
        {
            return Err(CommandStatus::EsmeRthrottled);
        }
        Ok(p)
    }

    /// Sends a prepared message through the messaging core (here, or forwarded to the pod
    /// holding the vendor).
    async fn submit(&self, account: &CustomerAccount, p: &Prepared) -> SubmitResult {
        let Some(api) = &self.messages else {
            return Err(CommandStatus::EsmeRsyserr);
        };
        let hop = api.keys.hop_header().unwrap_or_default();
        match api
            .dispatch(&p.req, &p.extra, &account.route, &hop, false)
            .await
        {
            Ok(a) => Ok(a.id),
            Err(e) => {
                tracing::debug!(account = %account.system_id, error = %e, "customer submit not accepted");
                Err(status::submit_status(&e))
            }
        }
    }
}
