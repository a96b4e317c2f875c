//! The `SmppVendor` custom resource (`smpp.io/v1alpha1`): one upstream SMPP vendor the
//! gateways bind to. The operator turns it into a row of vendor_mgmt.service_providers and
//! reports the gateways' bind state back in its status.
//!
//! Validation lives in the schema (defaults, enums, CEL rules) so the apiserver refuses a bad
//! manifest with a readable message before the operator ever sees it.

pub mod account;
pub mod fixtures;

pub use account::{SmppAccount, SmppAccountSpec, SmppAccountStatus};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The messaging enums, defined once in smpp-db (the column values) and used here as CR types.
pub use smpp_db::messaging::{DefaultAlphabet, IdFormat, LongMessages};

/// API group of the resource.
pub const GROUP: &str = "smpp.io";
/// Finalizer that keeps a resource until its row was deleted or orphaned.
pub const FINALIZER: &str = "smpp.io/row-cleanup";
/// SMPP 3.4 limits the password to 8 characters (9 octets with the terminating NUL).
pub const MAX_PASSWORD_LEN_V34: usize = 8;
/// SMPP 5.0 allows 8 characters as well, but vendors differ; we apply the 3.4 rule to both.
pub const MAX_SYSTEM_ID_LEN: usize = 15;

/// Condition types in `.status.conditions`.
pub mod condition {
    /// The row in PostgreSQL matches the spec.
    pub const SYNCED: &str = "Synced";
    /// The referenced Secrets exist and hold valid values.
    pub const CREDENTIALS_RESOLVED: &str = "CredentialsResolved";
    /// The gateways hold the desired number of binds.
    pub const BOUND: &str = "Bound";
    /// Everything above: the vendor carries traffic as configured.
    pub const READY: &str = "Ready";
}

/// Condition reasons; CamelCase as Kubernetes expects.
pub mod reason {
    pub const SYNCED: &str = "Synced";
    pub const DATABASE_UNAVAILABLE: &str = "DatabaseUnavailable";
    pub const DATABASE_ERROR: &str = "DatabaseError";
    pub const CONFLICT: &str = "Conflict";
    pub const RESOLVED: &str = "Resolved";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const PASSWORD_TOO_LONG: &str = "PasswordTooLong";
    pub const INVALID_SECRET: &str = "InvalidSecret";
    /// caSecretRef holds no CA certificate the gateways can load.
    pub const INVALID_CA_CERTIFICATE: &str = "InvalidCACertificate";
    /// clientCertSecretRef holds no usable certificate and matching key.
    pub const INVALID_CLIENT_CERTIFICATE: &str = "InvalidClientCertificate";
    pub const BOUND: &str = "Bound";
    pub const PARTIALLY_BOUND: &str = "PartiallyBound";
    pub const NOT_BOUND: &str = "NotBound";
    pub const CONNECTING: &str = "Connecting";
    pub const BIND_FAILED: &str = "BindFailed";
    pub const SUSPENDED: &str = "Suspended";
    pub const READY: &str = "Ready";
    pub const PENDING: &str = "Pending";
}

/// An upstream SMPP vendor: where to connect, how to bind, and how many binds the whole
/// gateway fleet may hold.
// The repeated `type_ = "string"` inside printcolumn(...) is kube syntax, not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "smpp.io",
    version = "v1alpha1",
    kind = "SmppVendor",
    plural = "smppvendors",
    shortname = "smppv",
    namespaced,
    status = "SmppVendorStatus",
    derive = "PartialEq",
    doc = "An upstream SMPP vendor that the smpp-gateway fleet binds to as an ESME. The operator writes it to vendor_mgmt.service_providers and reports the gateways' bind state in status.",
    printcolumn(name = "HOST", type_ = "string", json_path = ".spec.host"),
    printcolumn(name = "PORT", type_ = "integer", json_path = ".spec.port"),
    printcolumn(name = "TLS", type_ = "boolean", json_path = ".spec.tls.enabled"),
    printcolumn(name = "MODE", type_ = "string", json_path = ".spec.bind.mode"),
    printcolumn(name = "BOUND", type_ = "string", json_path = ".status.bound"),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "REASON",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
// instanceName names the row; a transition rule on the field alone only fires when both old
// and new set it, so this rule also forbids adding or removing it after creation.
#[x_kube(validation = Rule::new(
    "has(self.instanceName) == has(oldSelf.instanceName)"
).message(
    "spec.instanceName is fixed at creation: it cannot be added or removed later (delete the resource with deletionPolicy: Orphan and re-create it to point at another row)"
).reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct SmppVendorSpec {
    /// Hostname or IP address of the vendor's SMPP endpoint.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port of the vendor's SMPP endpoint, 1..65535 (e.g. 3601 for Sinch over TLS, 2775 plain).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: i32,
    /// Transport security towards the vendor.
    #[serde(default)]
    pub tls: TlsSpec,
    /// How the gateways bind: mode, credentials and SMPP identity.
    pub bind: BindSpec,
    /// Binds the whole gateway fleet may hold for this vendor at once (across ALL pods together). Vendors limit binds per system_id; Sinch allows 2.
    #[serde(default = "default_max_binds")]
    #[schemars(range(min = 1, max = 64))]
    pub max_binds: i32,
    /// Requests in flight per bind before waiting for responses (the SMPP window).
    #[serde(default = "default_window_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub window_size: i32,
    /// Messages per second allowed towards this vendor across the whole fleet; each bind gets its share. Absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_messages_per_second: Option<i32>,
    /// Seconds between enquire_link keep-alives on each bind.
    #[serde(default = "default_enquire_link")]
    #[schemars(range(min = 1, max = 3600))]
    pub enquire_link_interval_seconds: i32,
    /// Exponential backoff between reconnect attempts after a failed or lost bind.
    #[serde(default)]
    pub reconnect: ReconnectSpec,
    /// How the gateway picks this vendor for a message.
    #[serde(default)]
    pub routing: RoutingSpec,
    /// How messages are written for this vendor and how its message ids are read. Every field has a default that suits most vendors.
    #[serde(default)]
    pub messaging: MessagingSpec,
    /// Keep the row but unbind everywhere (desired sessions drop to 0).
    #[serde(default)]
    pub suspend: bool,
    /// What happens to the row when this resource is deleted: Delete removes it, Orphan keeps it and hands it back to manual management.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// The row's instance_name in vendor_mgmt.service_providers (the vendor name the gateway reports). Defaults to "<namespace>.<name>". Set it to adopt an existing row written by hand. Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.instanceName is immutable: it names the row this resource owns").reason(Reason::FieldValueForbidden))]
    pub instance_name: Option<String>,
}

/// TLS settings. caSecretRef and clientCertSecretRef require enabled: true.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "self.enabled || (!has(self.caSecretRef) && !has(self.clientCertSecretRef))"
).message("tls.caSecretRef and tls.clientCertSecretRef require tls.enabled: true"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Connect over TLS. Some vendor ports (e.g. Sinch 3601) accept TLS only.
    #[serde(default)]
    pub enabled: bool,
    /// Name sent as SNI and verified in the vendor's certificate. Defaults to host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
    /// Secret key holding the PEM CA bundle to verify the vendor with. Absent means the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
    /// A kubernetes.io/tls Secret (tls.crt, tls.key) with the client certificate for vendors that require mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<TlsSecretRef>,
    /// Skip verifying the vendor's certificate. For testing only: it allows anyone in the path to read credentials.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// The SMPP bind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BindSpec {
    /// Bind type: Transceiver (one TRX bind), Transmitter (TX only), Receiver (RX only), or TransmitterAndReceiver (a TX and an RX bind as a pair).
    #[serde(default)]
    pub mode: BindMode,
    /// The system_id (username) the vendor issued, at most 15 characters.
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 15").message("bind.systemId must be 1 to 15 characters (SMPP system_id limit)"))]
    pub system_id: String,
    /// Secret key holding the bind password. SMPP 3.4 allows at most 8 characters; the operator reports a longer one as CredentialsResolved=False.
    pub password_secret_ref: PasswordSecretRef,
    /// The system_type the vendor expects, often empty or e.g. "ESME"; at most 12 characters.
    #[serde(default)]
    #[x_kube(validation = Rule::new("size(self) <= 12").message("bind.systemType must be at most 12 characters (SMPP system_type limit)"))]
    pub system_type: String,
    /// SMPP interface version sent in the bind: "3.4" (what most vendors expect) or "5.0".
    #[serde(default)]
    pub interface_version: InterfaceVersion,
    /// address_range sent in the bind (for receivers); usually empty.
    #[serde(default)]
    #[x_kube(validation = Rule::new("size(self) <= 40").message("bind.addressRange must be at most 40 characters (SMPP address_range limit)"))]
    pub address_range: String,
}

/// SMPP bind type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindMode {
    /// One bind_transceiver: submit and receive on the same bind.
    #[default]
    Transceiver,
    /// bind_transmitter: submit only.
    Transmitter,
    /// bind_receiver: receive (delivery receipts, MO) only.
    Receiver,
    /// A bind_transmitter and a bind_receiver, as a pair.
    TransmitterAndReceiver,
}

impl BindMode {
    /// The bind_mode column value.
    pub fn row_value(self) -> &'static str {
        match self {
            BindMode::Transceiver => "TRX",
            BindMode::Transmitter => "TX",
            BindMode::Receiver => "RX",
            BindMode::TransmitterAndReceiver => "TX_RX",
        }
    }
}

/// SMPP interface version.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InterfaceVersion {
    /// SMPP 3.4 (0x34).
    #[default]
    #[serde(rename = "3.4")]
    V34,
    /// SMPP 5.0 (0x50).
    #[serde(rename = "5.0")]
    V50,
}

impl InterfaceVersion {
    /// The interface_version column value.
    pub fn row_value(self) -> &'static str {
        match self {
            InterfaceVersion::V34 => "3.4",
            InterfaceVersion::V50 => "5.0",
        }
    }
}

/// What happens to the row when the resource is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the row; the gateways unbind.
    #[default]
    Delete,
    /// Keep the row and clear its ownership, so it is managed by hand (SQL) again.
    Orphan,
}

/// A key in a Secret in the resource's namespace holding the bind password.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PasswordSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A key in a Secret in the resource's namespace holding a PEM CA bundle.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CaSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A kubernetes.io/tls Secret in the resource's namespace (keys tls.crt and tls.key).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TlsSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Reconnect backoff: the delay doubles from initialDelaySeconds up to maxDelaySeconds, with jitter.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.maxDelaySeconds >= self.initialDelaySeconds").message("reconnect.maxDelaySeconds must be at least reconnect.initialDelaySeconds"))]
#[serde(rename_all = "camelCase")]
pub struct ReconnectSpec {
    /// First delay after a failed bind, in seconds.
    #[serde(default = "default_reconnect_initial")]
    #[schemars(range(min = 1, max = 3600))]
    pub initial_delay_seconds: i32,
    /// Longest delay between attempts, in seconds.
    #[serde(default = "default_reconnect_max")]
    #[schemars(range(min = 1, max = 3600))]
    pub max_delay_seconds: i32,
}

impl Default for ReconnectSpec {
    fn default() -> Self {
        ReconnectSpec {
            initial_delay_seconds: default_reconnect_initial(),
            max_delay_seconds: default_reconnect_max(),
        }
    }
}

/// Routing: which messages go to this vendor.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RoutingSpec {
    /// Lower is preferred: vendors with the lowest priority that match take the traffic.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 10000))]
    pub priority: i32,
    /// Share of traffic among matching vendors of equal priority.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 10000))]
    pub weight: i32,
    /// Destination number prefixes (digits, no +) this vendor serves; empty means all.
    #[serde(default)]
    #[schemars(inner(regex(pattern = "^[0-9]{1,15}$")))]
    pub prefixes: Vec<String>,
}

impl Default for RoutingSpec {
    fn default() -> Self {
        RoutingSpec {
            priority: default_priority(),
            weight: default_weight(),
            prefixes: Vec::new(),
        }
    }
}

/// Messaging settings: message-id formats, long-message method and the default alphabet.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MessagingSpec {
    /// How the vendor writes message ids, in submit_sm_resp and in delivery receipts. They often differ (e.g. hex in submit_sm_resp, decimal in the receipt); the gateway needs both to match a receipt to its message.
    #[serde(default)]
    pub message_ids: MessageIdsSpec,
    /// How a message too long for one short message is sent. Udh (default): concatenation UDH in short_message (esm_class UDHI), the most widely supported. Sar: sar_msg_ref_num, sar_total_segments and sar_segment_seqnum TLVs. Payload: the whole text in one submit_sm's message_payload TLV.
    #[serde(default)]
    pub long_messages: LongMessages,
    /// What data_coding 0 means to this vendor. Gsm7 (default): the GSM 03.38 default alphabet, one septet per byte (unpacked). Latin1: ISO-8859-1. Ascii: IA5 / ASCII.
    #[serde(default)]
    pub default_alphabet: DefaultAlphabet,
}

/// Message-id formats. Each is Auto (default), AsIs, Decimal or Hex.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MessageIdsSpec {
    /// How the vendor writes the message_id of submit_sm_resp. Auto (default): match exactly first, then by numeric value under every plausible reading (decimal, hex), with arbitrary precision and leading zeros kept in what is stored and shown. AsIs: compare exactly as written. Decimal: a decimal number (leading zeros carry no meaning). Hex: a hexadecimal number, any letter case.
    #[serde(default)]
    pub submit_resp: IdFormat,
    /// How the vendor writes the id in delivery receipts (the "id:" field or the receipted_message_id TLV). Same values as submitResp: Auto (default), AsIs, Decimal or Hex. Under Auto, a receipt whose all-digit id matches only through a numeric reading waits 3 s for a message written exactly like it (an early receipt); declare both formats to avoid the wait.
    #[serde(default)]
    pub receipt: IdFormat,
}

/// Observed state, written by the operator only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmppVendorStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// id of the row in vendor_mgmt.service_providers (the gateway's vendor_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    /// Binds currently bound across the fleet (live gateway heartbeats only).
    #[serde(default)]
    pub bound_sessions: i32,
    /// Binds wanted: maxBinds, or 0 while suspended.
    #[serde(default)]
    pub desired_sessions: i32,
    /// boundSessions/desiredSessions, e.g. "2/2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
    /// The most recent bind error a gateway reported, with its stage and likely cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Each live bind slot as its gateway pod reports it.
    #[serde(default)]
    pub sessions: Vec<SessionStatus>,
    /// Synced, CredentialsResolved, Bound and Ready.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One bind slot held by a gateway pod.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// Gateway pod holding the slot.
    pub pod: String,
    /// claimed, connecting, bound, backoff or unbinding.
    pub state: String,
    /// When the session entered this state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The last error of this session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn default_max_binds() -> i32 {
    1
}
fn default_window_size() -> i32 {
    10
}
fn default_enquire_link() -> i32 {
    30
}
fn default_reconnect_initial() -> i32 {
    1
}
fn default_reconnect_max() -> i32 {
    60
}
fn default_priority() -> i32 {
    100
}
fn default_weight() -> i32 {
    1
}
fn default_password_key() -> String {
    "password".into()
}
fn default_ca_key() -> String {
    "ca.crt".into()
}

impl SmppVendor {
    /// The row's instance_name: spec.instanceName, or "<namespace>.<name>".
    pub fn instance_name(&self) -> String {
        match &self.spec.instance_name {
            Some(n) => n.clone(),
            None => format!(
                "{}.{}",
                self.namespace().unwrap_or_default(),
                self.name_any()
            ),
        }
    }

    /// Binds wanted across the fleet: 0 while suspended, else maxBinds.
    pub fn desired_sessions(&self) -> i32 {
        if self.spec.suspend {
            0
        } else {
            self.spec.max_binds
        }
    }

    /// Names of the Secrets this resource reads (for the Secret watch mapper).
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names = vec![self.spec.bind.password_secret_ref.name.as_str()];
        if let Some(ca) = &self.spec.tls.ca_secret_ref {
            names.push(ca.name.as_str());
        }
        if let Some(c) = &self.spec.tls.client_cert_secret_ref {
            names.push(c.name.as_str());
        }
        names
    }

    /// Whether the resource is being deleted.
    pub fn is_deleting(&self) -> bool {
        self.meta().deletion_timestamp.is_some()
    }
}

impl SmppVendorStatus {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The CRD manifest as committed in crds/smppvendor.yaml.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let yaml = serde_yaml::to_string(&SmppVendor::crd()).expect("CRD serialises");
    format!("# Generated by `cargo run -p smpp-crds --bin crdgen`; do not edit.\n---\n{yaml}")
}

#[cfg(test)]
mod tests_support {
    /// Collects the paths of schema properties that have no description.
    pub fn walk_descriptions(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                if sub.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk_descriptions(sub, &p, missing);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn defaults_fill_an_minimal_manifest() {
        let spec: SmppVendorSpec = serde_json::from_value(serde_json::json!({
            "host": "h", "port": 2775,
            "bind": {"systemId": "sys", "passwordSecretRef": {"name": "s"}}
        }))
        .unwrap();
        assert_eq!(spec.max_binds, 1);
        assert_eq!(spec.window_size, 10);
        assert_eq!(spec.bind.mode, BindMode::Transceiver);
        assert_eq!(spec.bind.interface_version, InterfaceVersion::V34);
        assert_eq!(spec.bind.password_secret_ref.key, "password");
        assert!(!spec.tls.enabled);
        assert_eq!(spec.reconnect, ReconnectSpec::default());
        assert_eq!(spec.routing.priority, 100);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(spec.messaging, MessagingSpec::default());
        assert_eq!(spec.messaging.message_ids.submit_resp, IdFormat::Auto);
        assert_eq!(spec.messaging.message_ids.receipt, IdFormat::Auto);
        assert_eq!(spec.messaging.long_messages, LongMessages::Udh);
        assert_eq!(spec.messaging.default_alphabet, DefaultAlphabet::Gsm7);
    }

    #[test]
    fn messaging_parses_and_partial_blocks_keep_defaults() {
        let spec: SmppVendorSpec = serde_json::from_value(serde_json::json!({
            "host": "h", "port": 2775,
            "bind": {"systemId": "sys", "passwordSecretRef": {"name": "s"}},
            "messaging": {"messageIds": {"submitResp": "Hex"}, "defaultAlphabet": "Latin1"}
        }))
        .unwrap();
        assert_eq!(spec.messaging.message_ids.submit_resp, IdFormat::Hex);
        assert_eq!(spec.messaging.message_ids.receipt, IdFormat::Auto);
        assert_eq!(spec.messaging.long_messages, LongMessages::Udh);
        assert_eq!(spec.messaging.default_alphabet, DefaultAlphabet::Latin1);
        let bad =
            serde_json::from_value::<MessagingSpec>(serde_json::json!({"longMessages": "Bogus"}));
        assert!(bad.is_err());
    }

    #[test]
    fn messaging_schema_lists_every_value_with_defaults() {
        let crd = serde_json::to_value(SmppVendor::crd()).unwrap();
        let m = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["messaging"];
        let p = &m["properties"];
        let enum_of = |v: &serde_json::Value| -> Vec<String> {
            v["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("no enum in {v}"))
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let names = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ids: Vec<&str> = IdFormat::ALL.iter().map(|v| v.as_str()).collect();
        for key in ["submitResp", "receipt"] {
            let f = &p["messageIds"]["properties"][key];
            assert_eq!(enum_of(f), names(&ids), "{key}");
            assert_eq!(f["default"], "Auto");
            for v in &ids {
                assert!(
                    f["description"].as_str().unwrap().contains(v),
                    "{key} lacks {v}"
                );
            }
        }
        let lm: Vec<&str> = LongMessages::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(enum_of(&p["longMessages"]), names(&lm));
        assert_eq!(p["longMessages"]["default"], "Udh");
        let da: Vec<&str> = DefaultAlphabet::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(enum_of(&p["defaultAlphabet"]), names(&da));
        assert_eq!(p["defaultAlphabet"]["default"], "Gsm7");
        for (f, all) in [(&p["longMessages"], &lm), (&p["defaultAlphabet"], &da)] {
            for v in all.iter() {
                assert!(
                    f["description"].as_str().unwrap().contains(v),
                    "{f} lacks {v}"
                );
            }
        }
    }

    #[test]
    fn row_values_of_enums() {
        assert_eq!(BindMode::Transceiver.row_value(), "TRX");
        assert_eq!(BindMode::Transmitter.row_value(), "TX");
        assert_eq!(BindMode::Receiver.row_value(), "RX");
        assert_eq!(BindMode::TransmitterAndReceiver.row_value(), "TX_RX");
        assert_eq!(InterfaceVersion::V50.row_value(), "5.0");
        let v: InterfaceVersion = serde_json::from_str("\"5.0\"").unwrap();
        assert_eq!(v, InterfaceVersion::V50);
    }

    #[test]
    fn schema_carries_rules_defaults_and_columns() {
        let crd = serde_json::to_string(&SmppVendor::crd()).unwrap();
        for needle in [
            "self >= 1 && self <= 65535",
            "size(self) >= 1 && size(self) <= 15",
            "size(self) <= 12",
            "self == oldSelf",
            "has(self.instanceName) == has(oldSelf.instanceName)",
            "tls.caSecretRef and tls.clientCertSecretRef require tls.enabled",
            "\"TransmitterAndReceiver\"",
            "\"3.4\"",
            "\"smppv\"",
            ".status.conditions[?(@.type==\\\"Ready\\\")].reason",
        ] {
            assert!(crd.contains(needle), "CRD lacks {needle}");
        }
    }

    #[test]
    fn every_schema_property_has_a_description() {
        let crd = serde_json::to_value(SmppVendor::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut missing = Vec::new();
        crate::tests_support::walk_descriptions(spec, "spec", &mut missing);
        assert!(
            missing.is_empty(),
            "properties without description: {missing:?}"
        );
    }

    #[test]
    fn instance_name_defaults_to_namespace_dot_name() {
        let v = fixtures::vendor("messaging", "sinch-atlanta");
        assert_eq!(v.instance_name(), "messaging.sinch-atlanta");
        let v = fixtures::vendor("messaging", "x").with_instance_name("Sinch_Atlanta");
        assert_eq!(v.instance_name(), "Sinch_Atlanta");
        assert_eq!(v.desired_sessions(), 2);
        assert_eq!(v.clone().suspended().desired_sessions(), 0);
    }
}
