//! The `SmppAccount` custom resource (`smpp.io/v1alpha1`, short name `smppa`): one customer
//! (ESME) that binds to the gateways' SMPP server. The operator writes it to
//! vendor_mgmt.customer_accounts (an argon2id hash of the password only) and reports the
//! customer's live binds in its status; the gateways hot-reload it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PasswordSecretRef;

/// A customer account: who may bind, from where, how much, and where its traffic goes.
// The repeated `type_ = "string"` inside printcolumn(...) is kube syntax, not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "smpp.io",
    version = "v1alpha1",
    kind = "SmppAccount",
    plural = "smppaccounts",
    shortname = "smppa",
    namespaced,
    status = "SmppAccountStatus",
    derive = "PartialEq",
    doc = "A customer (ESME) account on the smpp-gateway fleet's SMPP server (ports 2775 plain, 2776 TLS). The operator writes it to vendor_mgmt.customer_accounts with only a hash of the password, and reports the customer's live binds in status.",
    printcolumn(name = "SYSTEM-ID", type_ = "string", json_path = ".spec.systemId"),
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
#[serde(rename_all = "camelCase")]
pub struct SmppAccountSpec {
    /// The system_id the customer binds with, 1 to 15 characters, unique across all SmppAccounts.
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 15").message("systemId must be 1 to 15 characters (SMPP system_id limit)"))]
    pub system_id: String,
    /// Secret key holding the customer's bind password (at most 8 characters, the SMPP 3.4 limit). Only an argon2id hash of it is stored in PostgreSQL.
    pub password_secret_ref: PasswordSecretRef,
    /// Source networks allowed to bind, as CIDRs (e.g. 203.0.113.0/24, 192.0.2.7/32, 2001:db8::/32), at most 256. Empty allows any address.
    #[serde(default)]
    // The bounds keep the CEL rule within the apiserver's cost budget.
    #[schemars(length(max = 256), inner(length(min = 1, max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("each allowedSourceCidrs entry must be a CIDR such as 10.0.0.0/8 or 192.0.2.7/32"))]
    pub allowed_source_cidrs: Vec<String>,
    /// Binds this customer may hold at once across the whole gateway fleet (all pods together). A bind beyond it is refused with ESME_RBINDFAIL.
    #[serde(default = "default_max_binds")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_binds: i32,
    /// Submits per second across the fleet, each part of a long message counting as one. Beyond it, submits get ESME_RTHROTTLED. Absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_messages_per_second: Option<i32>,
    /// Sender ids (source_addr) the customer may use, exactly as sent, at most 1000. Empty allows any.
    #[serde(default)]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 20)))]
    pub allowed_senders: Vec<String>,
    /// Destination number prefixes (digits, no +) the customer may send to. Empty allows any.
    #[serde(default)]
    #[schemars(inner(regex(pattern = "^[0-9]{1,15}$")))]
    pub allowed_destination_prefixes: Vec<String>,
    /// Which vendors carry this customer's traffic. Absent or empty: the default routing (every vendor's spec.routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,
    /// Send delivery receipts back to the customer as deliver_sm on its RX or TRX binds. Receipts that arrive while it is not bound wait in its outbox.
    #[serde(default = "default_true")]
    pub forward_receipts: bool,
    /// Refuse binds and close the customer's open sessions, keeping the account.
    #[serde(default)]
    pub suspend: bool,
}

/// The vendors an account's traffic may use.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RouteSpec {
    /// Preferred vendors: the lowest priority with a bound session takes the message, the next one when it has none.
    #[serde(default)]
    pub vendors: Vec<RouteVendor>,
}

/// One vendor in an account's route.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RouteVendor {
    /// The vendor's instance name (an SmppVendor's spec.instanceName, or "<namespace>.<name>").
    #[schemars(length(min = 1, max = 255))]
    pub vendor: String,
    /// Lower is preferred.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 10000))]
    pub priority: i32,
}

/// Observed state, written by the operator only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmppAccountStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// id of the row in vendor_mgmt.customer_accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The customer's binds open across the fleet (live gateway pods only).
    #[serde(default)]
    pub bound_sessions: i32,
    /// boundSessions/maxBinds, e.g. "1/2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
    /// Each open customer bind.
    #[serde(default)]
    pub sessions: Vec<CustomerSessionStatus>,
    /// Synced, CredentialsResolved and Ready.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One open customer bind.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomerSessionStatus {
    /// Gateway pod the customer is bound to.
    pub pod: String,
    /// TX, RX or TRX.
    pub bind_type: String,
    /// The customer's address and port.
    pub remote_addr: String,
    /// When the bind was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

fn default_max_binds() -> i32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_priority() -> i32 {
    100
}

impl SmppAccount {
    /// Whether the resource is being deleted.
    pub fn is_deleting(&self) -> bool {
        self.meta().deletion_timestamp.is_some()
    }

    /// "<namespace>/<name>", for logs and Events.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    /// Names of the Secrets this resource reads (for the Secret watch mapper).
    pub fn secret_names(&self) -> Vec<&str> {
        vec![self.spec.password_secret_ref.name.as_str()]
    }

    /// The route as stored: vendors in order of preference (empty: default routing).
    pub fn route_entries(&self) -> Vec<smpp_db::accounts::RouteEntry> {
        let mut v: Vec<_> = self
            .spec
            .route
            .iter()
            .flat_map(|r| r.vendors.iter())
            .map(|r| smpp_db::accounts::RouteEntry {
                vendor: r.vendor.clone(),
                priority: r.priority,
            })
            .collect();
        v.sort_by_key(|r| r.priority);
        v
    }
}

impl SmppAccountStatus {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The CRD manifest as committed in crds/smppaccount.yaml.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let yaml = serde_yaml::to_string(&SmppAccount::crd()).expect("CRD serialises");
    format!(
        "# Generated by `cargo run -p smpp-crds --bin crdgen -- account`; do not edit.\n---\n{yaml}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn defaults_fill_a_minimal_manifest() {
        let spec: SmppAccountSpec = serde_json::from_value(serde_json::json!({
            "systemId": "acme", "passwordSecretRef": {"name": "acme-smpp"}
        }))
        .unwrap();
        assert_eq!(spec.max_binds, 1);
        assert!(spec.forward_receipts);
        assert!(!spec.suspend);
        assert_eq!(spec.password_secret_ref.key, "password");
        assert!(spec.allowed_source_cidrs.is_empty());
        assert_eq!(spec.route, None);
    }

    #[test]
    fn route_entries_are_ordered_by_priority() {
        let mut a = SmppAccount::new(
            "acme",
            serde_json::from_value(serde_json::json!({
                "systemId": "acme", "passwordSecretRef": {"name": "s"},
                "route": {"vendors": [{"vendor": "b", "priority": 20}, {"vendor": "a", "priority": 10}, {"vendor": "c"}]}
            }))
            .unwrap(),
        );
        a.metadata.namespace = Some("ns".into());
        let r = a.route_entries();
        let names: Vec<_> = r.iter().map(|e| e.vendor.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(r[2].priority, 100);
        assert_eq!(a.key(), "ns/acme");
    }

    #[test]
    fn schema_carries_rules_and_columns() {
        let crd = serde_json::to_string(&SmppAccount::crd()).unwrap();
        for needle in [
            "isCIDR(c)",
            "size(self) >= 1 && size(self) <= 15",
            "\"smppa\"",
            ".status.conditions[?(@.type==\\\"Ready\\\")].reason",
            "SYSTEM-ID",
        ] {
            assert!(crd.contains(needle), "CRD lacks {needle}");
        }
    }

    #[test]
    fn every_schema_property_has_a_description() {
        let crd = serde_json::to_value(SmppAccount::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut missing = Vec::new();
        crate::tests_support::walk_descriptions(spec, "spec", &mut missing);
        assert!(
            missing.is_empty(),
            "properties without description: {missing:?}"
        );
    }
}
