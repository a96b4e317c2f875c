//! One-hop forwarding of a submit to a pod that holds a bound session of the chosen vendor.
//!
//! The entry pod keeps the Idempotency-Key and pins the vendor; the target pod sends and
//! answers, and never forwards again (the `X-Smpp-Forwarded-By` header marks the hop). The
//! client's own bearer key authenticates the hop: every pod loads the same keys Secret.
//! Alternatives (a shared queue in Redis Streams) are compared in docs/forwarding.md.

use std::sync::Arc;
use std::time::Duration;

use crate::messaging::submit::{Accepted, Extra, MessageRequest, SubmitError};
use crate::metrics::Metrics;

pub const FORWARDED_HEADER: &str = "x-smpp-forwarded-by";
/// Where a customer's SMPP submit is forwarded: pod to pod only, not part of the public API.
pub const CUSTOMER_PATH: &str = "/api/v1/internal/customer-messages";

/// The body of a forwarded SMPP submit: the request (vendor pinned) and what SMPP adds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerForward {
    pub request: MessageRequest,
    #[serde(default)]
    pub extra: Extra,
}

#[derive(Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    pod: String,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub fn new(pod: String, metrics: Arc<Metrics>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client");
        Self {
            client,
            pod,
            metrics,
        }
    }

    /// Sends `req` to the first of `peers` (pod, address) that answers; their answer is ours.
    pub async fn submit(
        &self,
        peers: &[(String, String)],
        req: &MessageRequest,
        auth: &str,
    ) -> Result<Accepted, SubmitError> {
        self.post(peers, "/api/v1/messages", req, req, auth).await
    }

    /// A customer's SMPP submit (its raw part and origin with it) to [`CUSTOMER_PATH`] of the
    /// first of `peers` that answers.
    pub async fn submit_customer(
        &self,
        peers: &[(String, String)],
        req: &MessageRequest,
        extra: &Extra,
        auth: &str,
    ) -> Result<Accepted, SubmitError> {
        let body = CustomerForward {
            request: req.clone(),
            extra: extra.clone(),
        };
        self.post(peers, CUSTOMER_PATH, &body, req, auth).await
    }

    async fn post(
        &self,
        peers: &[(String, String)],
        path: &str,
        body: &impl serde::Serialize,
        req: &MessageRequest,
        auth: &str,
    ) -> Result<Accepted, SubmitError> {
        if peers.is_empty() {
            return Err(SubmitError::NoRoute(format!(
                "{} (vendor {} is bound on another pod that advertises no address: set --advertise-addr)",
                req.to,
                req.vendor.as_deref().unwrap_or("?")
            )));
        }
        let mut last = String::new();
        for (pod, addr) in peers {
            let url = format!("http://{addr}{path}");
            let sent = self
                .client
                .post(&url)
                .header("authorization", auth)
                .header(FORWARDED_HEADER, &self.pod)
                .json(body)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.metrics
                        .forwards
                        .with_label_values(&["unreachable"])
                        .inc();
                    last = format!("pod {pod} at {addr} unreachable: {e}");
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            if status == 201 {
                self.metrics.forwards.with_label_values(&["ok"]).inc();
                return serde_json::from_value(body).map_err(|e| {
                    SubmitError::Forward(format!("pod {pod} answered an unreadable body: {e}"))
                });
            }
            self.metrics.forwards.with_label_values(&["error"]).inc();
            // The target's own error is the answer (it may have sent the message).
            return Err(remote_error(pod, status, &body));
        }
        Err(SubmitError::Forward(format!(
            "no pod holding the vendor's bind could be reached: {last}"
        )))
    }
}

/// The target pod's error as ours, verbatim: its status, code, message and message id.
fn remote_error(pod: &str, status: u16, body: &serde_json::Value) -> SubmitError {
    let e = &body["error"];
    SubmitError::Remote {
        status,
        code: e["code"].as_str().unwrap_or("forward_failed").to_string(),
        message: e["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("pod {pod} answered {status}")),
        id: e["id"].as_str().map(str::to_string),
        command_status: e["command_status"]
            .as_u64()
            .and_then(|c| u32::try_from(c).ok()),
    }
}
