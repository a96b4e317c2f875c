//! Prometheus metrics of one gateway process.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub sessions_bound: IntGaugeVec,
    pub bind_attempts: IntCounterVec,
    pub bind_failures: IntCounterVec,
    pub reconnects: IntCounterVec,
    pub pdus: IntCounterVec,
    pub enquire_link_rtt: HistogramVec,
    pub vendor_config_invalid: IntGaugeVec,
    pub db_up: IntGauge,
    pub db_errors: IntCounterVec,
    pub config_resyncs: IntCounter,
    pub config_notifications: IntCounter,
    pub callbacks: IntCounterVec,
    pub submits: IntCounterVec,
    pub submit_latency: HistogramVec,
    pub throttled: IntCounterVec,
    pub failovers: IntCounterVec,
    pub receipts: IntCounterVec,
    pub receipts_parked: IntCounter,
    pub receipts_uncertain: IntCounterVec,
    pub mo: IntCounterVec,
    pub forwards: IntCounterVec,
    pub redis_errors: IntCounterVec,
    pub customer_binds: IntGaugeVec,
    pub customer_bind_failures: IntCounterVec,
    pub customer_submits: IntCounterVec,
    pub customer_throttled: IntCounterVec,
    pub customer_connections: IntGauge,
    pub customer_sessions_closed: IntCounterVec,
    pub customer_deliveries: IntCounterVec,
    /// This pod's share of a limited account's maxMessagesPerSecond, while it has sessions here.
    pub customer_rate_share: GaugeVec,
    /// Customer receipts through the outbox, by account id and event (`outbox::Event`).
    pub outbox: IntCounterVec,
    /// Receipts waiting in an account's outbox, as its consumers last saw it.
    pub outbox_depth: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let ig = |name: &str, help: &str, labels: &[&str]| {
            let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric");
            r.register(Box::new(m.clone())).expect("register");
            m
        };
        let ic = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            r.register(Box::new(m.clone())).expect("register");
            m
        };
        let sessions_bound = ig(
            "smpp_sessions_bound",
            "Binds of this pod that are bound, per vendor",
            &["vendor"],
        );
        let bind_attempts = ic(
            "smpp_bind_attempts_total",
            "Bind attempts per vendor",
            &["vendor"],
        );
        let bind_failures = ic(
            "smpp_bind_failures_total",
            "Failed bind attempts and ended sessions, by vendor and reason code",
            &["vendor", "reason"],
        );
        let reconnects = ic(
            "smpp_reconnects_total",
            "Sessions re-established after a bound session ended",
            &["vendor"],
        );
        let pdus = ic(
            "smpp_pdus_total",
            "PDUs sent (out) and received (in)",
            &["vendor", "direction", "command"],
        );
        let vendor_config_invalid = ig(
            "smpp_vendor_config_invalid",
            "1 when the vendor row cannot be used",
            &["vendor"],
        );
        let db_errors = ic(
            "smpp_config_db_errors_total",
            "Failed PostgreSQL operations, by operation",
            &["op"],
        );
        let submits = ic(
            "smpp_messages_submitted_total",
            "Messages by vendor and status after submit (submitted, rejected, failed)",
            &["vendor", "status"],
        );
        let throttled = ic(
            "smpp_submit_throttled_total",
            "submit_sm answered ESME_RTHROTTLED or ESME_RMSGQFUL, retried",
            &["vendor"],
        );
        let failovers = ic(
            "smpp_failovers_total",
            "Messages moved to this vendor after the previous one could not take them",
            &["vendor"],
        );
        let receipts = ic(
            "smpp_receipts_total",
            "Delivery receipts received, by vendor and stat (invalid: unreadable)",
            &["vendor", "stat"],
        );
        let mo = ic(
            "smpp_mo_messages_total",
            "Mobile-originated messages received",
            &["vendor"],
        );
        let forwards = ic(
            "smpp_forwards_total",
            "Submits forwarded to the pod holding the vendor's bind, by outcome",
            &["outcome"],
        );
        let redis_errors = ic(
            "smpp_redis_errors_total",
            "Failed Redis operations, by operation",
            &["op"],
        );
        let outbox = ic(
            "smpp_outbox_receipts_total",
            "Customer receipts by account and event (pushed, delivered, redelivered, failed, expired)",
            &["account", "event"],
        );
        let outbox_depth = ig(
            "smpp_outbox_depth",
            "Receipts waiting in a customer account's outbox (stream length)",
            &["account"],
        );
        let customer_binds = ig(
            "smpp_customer_binds",
            "Customer sessions bound to this pod's SMPP server, by account (system_id) and bind type",
            &["account", "bind_type"],
        );
        let customer_bind_failures = ic(
            "smpp_customer_bind_failures_total",
            "Customer binds refused, by reason",
            &["reason"],
        );
        let customer_submits = ic(
            "smpp_customer_submits_total",
            "Customer submits (one per destination of a submit_multi) by account and outcome",
            &["account", "outcome"],
        );
        let customer_throttled = ic(
            "smpp_customer_throttled_total",
            "Customer submits answered ESME_RTHROTTLED (the account's maxMessagesPerSecond)",
            &["account"],
        );
        let customer_sessions_closed = ic(
            "smpp_customer_sessions_closed_total",
            "Customer connections closed, by reason",
            &["reason"],
        );
        let customer_deliveries = ic(
            "smpp_customer_deliver_sm_total",
            "deliver_sm sent to customers, by outcome (ok, refused, timeout, closed)",
            &["outcome"],
        );
        let customer_rate_share = GaugeVec::new(
            Opts::new(
                "smpp_customer_rate_share",
                "This pod's share of an account's maxMessagesPerSecond (max x binds here / binds in the fleet), by account (system_id)",
            ),
            &["account"],
        )
        .expect("metric");
        r.register(Box::new(customer_rate_share.clone()))
            .expect("register");
        let customer_connections = IntGauge::new(
            "smpp_customer_connections",
            "Open connections to this pod's SMPP server",
        )
        .expect("metric");
        r.register(Box::new(customer_connections.clone()))
            .expect("register");
        let submit_latency = HistogramVec::new(
            HistogramOpts::new(
                "smpp_submit_duration_seconds",
                "HTTP in to the last submit_sm_resp and the message stored",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["vendor"],
        )
        .expect("metric");
        r.register(Box::new(submit_latency.clone()))
            .expect("register");
        let receipts_parked = IntCounter::new(
            "smpp_receipts_parked_total",
            "Receipts that arrived before their submit_sm_resp mapping and were parked",
        )
        .expect("metric");
        r.register(Box::new(receipts_parked.clone()))
            .expect("register");
        let receipts_uncertain = ic(
            "smpp_receipts_uncertain_total",
            "Receipts matched only through a numeric reading of an Auto id, by how the wait for an exact match ended (exact_won, reading_held)",
            &["outcome"],
        );
        for o in crate::messaging::receipts::Uncertain::ALL {
            receipts_uncertain.with_label_values(&[o.as_str()]);
        }
        let callbacks = ic(
            "smpp_callbacks_total",
            "HTTP callbacks by kind (status, mo) and outcome (delivered, retried, failed, dropped)",
            &["kind", "outcome"],
        );
        let enquire_link_rtt = HistogramVec::new(
            HistogramOpts::new(
                "smpp_enquire_link_rtt_seconds",
                "enquire_link round-trip time",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["vendor"],
        )
        .expect("metric");
        r.register(Box::new(enquire_link_rtt.clone()))
            .expect("register");
        let db_up = IntGauge::new(
            "smpp_config_db_up",
            "1 while the PostgreSQL config listener is connected",
        )
        .expect("metric");
        r.register(Box::new(db_up.clone())).expect("register");
        let config_resyncs =
            IntCounter::new("smpp_config_resyncs_total", "Full reads of the vendor rows")
                .expect("metric");
        r.register(Box::new(config_resyncs.clone()))
            .expect("register");
        let config_notifications = IntCounter::new(
            "smpp_config_notifications_total",
            "Change notifications received",
        )
        .expect("metric");
        r.register(Box::new(config_notifications.clone()))
            .expect("register");
        if let Ok(pc) =
            std::panic::catch_unwind(prometheus::process_collector::ProcessCollector::for_self)
        {
            let _ = r.register(Box::new(pc));
        }
        Self {
            registry: r,
            sessions_bound,
            bind_attempts,
            bind_failures,
            reconnects,
            pdus,
            enquire_link_rtt,
            vendor_config_invalid,
            db_up,
            db_errors,
            config_resyncs,
            config_notifications,
            callbacks,
            submits,
            submit_latency,
            throttled,
            failovers,
            receipts,
            receipts_parked,
            receipts_uncertain,
            mo,
            forwards,
            redis_errors,
            customer_binds,
            customer_bind_failures,
            customer_submits,
            customer_throttled,
            customer_connections,
            customer_sessions_closed,
            customer_deliveries,
            customer_rate_share,
            outbox,
            outbox_depth,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode metrics");
        String::from_utf8(buf).expect("utf-8 metrics")
    }

    /// Drops the series of a vendor that is no longer managed.
    pub fn forget_vendor(&self, vendor: &str) {
        let _ = self.sessions_bound.remove_label_values(&[vendor]);
        let _ = self.vendor_config_invalid.remove_label_values(&[vendor]);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
