//! Builders for tests (unit and end-to-end): a typical vendor and a typical customer account,
//! tweaked with chained calls.

use crate::*;
use kube::api::ObjectMeta;

/// A Sinch-like vendor over TLS with 2 binds, password in Secret `<name>-smpp`.
pub fn vendor(namespace: &str, name: &str) -> SmppVendor {
    let mut v = SmppVendor::new(name, spec(&format!("{name}-smpp")));
    v.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: Some(format!("uid-{namespace}-{name}")),
        generation: Some(1),
        ..Default::default()
    };
    v
}

/// The spec of [`vendor`].
pub fn spec(password_secret: &str) -> SmppVendorSpec {
    SmppVendorSpec {
        host: "smpp.example.net".into(),
        port: 3601,
        tls: TlsSpec {
            enabled: true,
            ..Default::default()
        },
        bind: BindSpec {
            mode: BindMode::Transceiver,
            system_id: "telxMBa1".into(),
            password_secret_ref: PasswordSecretRef {
                name: password_secret.into(),
                key: "password".into(),
            },
            system_type: "ESME".into(),
            interface_version: InterfaceVersion::V34,
            address_range: String::new(),
        },
        max_binds: 2,
        window_size: 10,
        max_messages_per_second: Some(20),
        enquire_link_interval_seconds: 30,
        reconnect: ReconnectSpec::default(),
        routing: RoutingSpec {
            priority: 100,
            weight: 1,
            prefixes: vec!["1".into()],
        },
        suspend: false,
        deletion_policy: DeletionPolicy::Delete,
        instance_name: None,
        messaging: MessagingSpec::default(),
    }
}

impl SmppVendor {
    pub fn with_instance_name(mut self, n: &str) -> Self {
        self.spec.instance_name = Some(n.into());
        self
    }
    pub fn with_host_port(mut self, host: &str, port: i32) -> Self {
        self.spec.host = host.into();
        self.spec.port = port;
        self
    }
    pub fn with_tls(mut self, tls: TlsSpec) -> Self {
        self.spec.tls = tls;
        self
    }
    pub fn with_mode(mut self, mode: BindMode) -> Self {
        self.spec.bind.mode = mode;
        self
    }
    pub fn with_messaging(mut self, m: MessagingSpec) -> Self {
        self.spec.messaging = m;
        self
    }
    pub fn with_max_binds(mut self, n: i32) -> Self {
        self.spec.max_binds = n;
        self
    }
    pub fn with_deletion_policy(mut self, p: DeletionPolicy) -> Self {
        self.spec.deletion_policy = p;
        self
    }
    pub fn with_generation(mut self, g: i64) -> Self {
        self.metadata.generation = Some(g);
        self
    }
    pub fn suspended(mut self) -> Self {
        self.spec.suspend = true;
        self
    }
    pub fn with_status(mut self, status: SmppVendorStatus) -> Self {
        self.status = Some(status);
        self
    }
}

/// A customer account "<name>" with system_id `acme`, 2 binds, limits and a route, password
/// in Secret `<name>-smpp`.
pub fn account(namespace: &str, name: &str) -> SmppAccount {
    let mut a = SmppAccount::new(name, account_spec(&format!("{name}-smpp")));
    a.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: Some(format!("uid-{namespace}-{name}")),
        generation: Some(1),
        ..Default::default()
    };
    a
}

/// The spec of [`account`].
pub fn account_spec(password_secret: &str) -> SmppAccountSpec {
    SmppAccountSpec {
        system_id: "acme".into(),
        password_secret_ref: PasswordSecretRef {
            name: password_secret.into(),
            key: "password".into(),
        },
        allowed_source_cidrs: vec!["203.0.113.0/24".into(), "2001:db8::/32".into()],
        max_binds: 2,
        max_messages_per_second: Some(50),
        allowed_senders: vec!["ACME".into()],
        allowed_destination_prefixes: vec!["1".into(), "44".into()],
        route: Some(account::RouteSpec {
            vendors: vec![
                account::RouteVendor {
                    vendor: "messaging.backup".into(),
                    priority: 20,
                },
                account::RouteVendor {
                    vendor: "messaging.sinch-atlanta".into(),
                    priority: 10,
                },
            ],
        }),
        forward_receipts: true,
        suspend: false,
    }
}

impl SmppAccount {
    pub fn with_system_id(mut self, s: &str) -> Self {
        self.spec.system_id = s.into();
        self
    }
    pub fn with_max_binds(mut self, n: i32) -> Self {
        self.spec.max_binds = n;
        self
    }
    pub fn suspended(mut self) -> Self {
        self.spec.suspend = true;
        self
    }
    pub fn with_generation(mut self, g: i64) -> Self {
        self.metadata.generation = Some(g);
        self
    }
}
