//! Publishing Kubernetes Events (events.k8s.io/v1) about an SmppVendor.
//!
//! kube-runtime's Recorder folds every Event with the same reason and action into one series
//! for six minutes and keeps the first note, so "updated row: max_binds" after "updated row:
//! password" would show the old text. Each Event here is published once per occurrence
//! (the operator only emits them on actual changes and condition transitions), so every note
//! is kept as written.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// One Event to publish. Notes name columns, Secrets and keys, never secret values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    /// Short CamelCase reason (kubectl describe: Reason).
    pub reason: String,
    /// What the operator did (CreateRow, RevertRow, ...).
    pub action: String,
    pub note: String,
}

/// Who reports: the controller name and this replica.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Publisher {
            client,
            controller: controller.into(),
            instance: instance.into(),
        }
    }

    /// The events.k8s.io/v1 object for `ev` about `regarding`.
    pub fn build(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let name = regarding
            .name
            .clone()
            .unwrap_or_else(|| self.controller.clone());
        K8sEvent {
            metadata: ObjectMeta {
                // Unique per occurrence, like the apiserver's own events.
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            // The API limits the note to 1 kB.
            note: Some(truncate(&ev.note, 1024)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(match ev.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            ..Default::default()
        }
    }

    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &ns);
        api.create(
            &PostParams::default(),
            &self.build(ev, regarding, Timestamp::now()),
        )
        .await?;
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_a_complete_event() {
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let p = Publisher::new(client, "smpp-operator", "op-0");
        let regarding = ObjectReference {
            name: Some("v".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        let ev = Event {
            type_: EventType::Warning,
            reason: "DriftReverted".into(),
            action: "RevertRow".into(),
            note: "é".repeat(600),
        };
        let e = p.build(
            &ev,
            &regarding,
            Timestamp::from_second(1_700_000_000).unwrap(),
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert!(e.metadata.name.unwrap().starts_with("v."));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reporting_instance.as_deref(), Some("op-0"));
        let note = e.note.unwrap();
        assert!(
            note.len() <= 1024 && note.ends_with("..."),
            "{}",
            note.len()
        );
    }
}
