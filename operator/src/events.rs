//! Publishing Kubernetes Events (events.k8s.io/v1) about an SmppVendor.
//!
//! kube-runtime's Recorder folds every Event with the same reason and action into one series
//! for six minutes and keeps the first note, so "updated row: max_binds" after "updated row:
//! password" would show the old text. Each Event here is published once per occurrence
//! (the operator only emits them on actual changes and condition transitions), so every note
//! is kept as written.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use smpp_crds::reason;

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

/// The Event for a change of the Ready condition, if the change deserves one, so that
/// `kubectl get events` (and Argo CD's event view) show trouble and recovery:
/// - Ready turned True: Normal `Ready`, naming what it was before.
/// - Ready left True: Warning with the Ready condition's reason and message (`BindFailed`,
///   `SecretNotFound`, ...), except a suspension, which was asked for: Normal `Suspended`.
/// - A vendor that was not Ready starts failing to bind (`BindFailed` from another reason):
///   Warning too, so a vendor that never bound is not silent.
///
/// Nothing else: an unchanged Ready, or one that moves between not-Ready reasons while it
/// connects, gives no Event. The note is the condition's message, which never holds a secret.
pub fn ready_transition(previous: Option<&Condition>, now: &Condition) -> Option<Event> {
    let was_ready = previous.is_some_and(|p| p.status == "True");
    let event = |type_, reason: &str, note: String| Event {
        type_,
        reason: reason.into(),
        action: "Reconcile".into(),
        note,
    };
    if now.status == "True" {
        if was_ready {
            return None;
        }
        let note = match previous {
            Some(p) => format!("Ready again (was {}): {}", p.reason, now.message),
            None => format!("Ready: {}", now.message),
        };
        return Some(event(EventType::Normal, reason::READY, note));
    }
    if was_ready {
        let type_ = if now.reason == reason::SUSPENDED {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let note = format!("no longer Ready: {}", now.message);
        return Some(event(type_, &now.reason, note));
    }
    let newly_failing = now.status == "False"
        && now.reason == reason::BIND_FAILED
        && previous.is_none_or(|p| p.reason != reason::BIND_FAILED);
    newly_failing.then(|| {
        let note = format!("not Ready: {}", now.message);
        event(EventType::Warning, reason::BIND_FAILED, note)
    })
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

    fn ready(status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Default::default(),
            ),
        }
    }

    fn kind(e: &Option<Event>) -> Option<(EventType, &str)> {
        e.as_ref().map(|e| (e.type_, e.reason.as_str()))
    }

    #[test]
    fn ready_transitions_give_warning_then_normal() {
        use EventType::{Normal, Warning};
        let ok = ready("True", "Ready", "synced and 2/2 binds up");
        let failed = ready(
            "False",
            "BindFailed",
            "Bound: 0/2 binds up; last gateway error: bind_resp: ESME_RINVPASWD",
        );
        let partial = ready("False", "PartiallyBound", "Bound: 1/2 binds up");
        let connecting = ready("False", "Connecting", "Bound: 0/2 binds up; connecting");

        // Leaving Ready: a Warning with the condition's reason and message.
        let left = ready_transition(Some(&ok), &failed);
        assert_eq!(kind(&left), Some((Warning, "BindFailed")));
        let note = left.unwrap().note;
        assert!(
            note.contains("no longer Ready") && note.contains("ESME_RINVPASWD"),
            "{note}"
        );
        assert_eq!(
            kind(&ready_transition(Some(&ok), &partial)),
            Some((Warning, "PartiallyBound"))
        );
        let missing = ready(
            "False",
            "SecretNotFound",
            "CredentialsResolved: Secret ns/x not found",
        );
        assert_eq!(
            kind(&ready_transition(Some(&ok), &missing)),
            Some((Warning, "SecretNotFound"))
        );
        let unknown = ready("Unknown", "Pending", "Bound: bind state unknown");
        assert_eq!(
            kind(&ready_transition(Some(&ok), &unknown)),
            Some((Warning, "Pending"))
        );

        // Back: a Normal Ready that names what it was.
        let back = ready_transition(Some(&failed), &ok);
        assert_eq!(kind(&back), Some((Normal, "Ready")));
        assert!(back.unwrap().note.contains("was BindFailed"));
        assert_eq!(kind(&ready_transition(None, &ok)), Some((Normal, "Ready")));

        // No repeats while nothing changes.
        assert_eq!(ready_transition(Some(&ok), &ok), None);
        assert_eq!(ready_transition(Some(&failed), &failed), None);
        // Connecting while never Ready is not trouble yet; failing to bind is.
        assert_eq!(ready_transition(None, &connecting), None);
        assert_eq!(ready_transition(Some(&connecting), &partial), None);
        assert_eq!(
            kind(&ready_transition(Some(&connecting), &failed)),
            Some((Warning, "BindFailed"))
        );
        assert_eq!(
            kind(&ready_transition(None, &failed)),
            Some((Warning, "BindFailed"))
        );
        // Suspending is asked for: Normal.
        let suspended = ready("False", "Suspended", "Bound: spec.suspend is true");
        assert_eq!(
            kind(&ready_transition(Some(&ok), &suspended)),
            Some((Normal, "Suspended"))
        );
    }
}
