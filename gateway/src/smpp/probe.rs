//! `smpp-gateway probe`: the troubleshooting checklist operators ran by hand. Tries every
//! bind mode × interface version × (given system_type, empty), one bind at a time, unbinding
//! after each, and prints how far each got. Bounded: the whole run fits in `budget`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::smpp::diagnostics::{BindFailure, Stage};
use crate::smpp::endpoint::{BindMode, Connection};
use crate::smpp::pdu::{BindKind, Version};
use crate::smpp::session::{self, NoObserver, Timeouts, Tunables};
use crate::smpp::trace::Tracer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combo {
    pub kind: BindKind,
    pub version: Version,
    pub system_type: String,
}

/// Every combination to try, the given system_type before the empty one.
pub fn combos(system_type: &str) -> Vec<Combo> {
    let mut types = vec![system_type.to_string()];
    if !system_type.is_empty() {
        types.push(String::new());
    }
    let mut out = Vec::new();
    for kind in [
        BindKind::Transceiver,
        BindKind::Transmitter,
        BindKind::Receiver,
    ] {
        for version in [Version::V34, Version::V50] {
            for t in &types {
                out.push(Combo {
                    kind,
                    version,
                    system_type: t.clone(),
                });
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Bound,
    Failed(BindFailure),
    /// Not tried: an earlier attempt failed before the bind (DNS/TCP/TLS), which no bind
    /// setting can change, or the time budget ran out.
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub combo: Combo,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// Whether a failure happened before any bind setting mattered.
fn transport_failure(f: &BindFailure) -> bool {
    matches!(
        f.stage,
        Stage::Config | Stage::Dns | Stage::Tcp | Stage::Tls
    )
}

pub async fn run(conn: &Connection, budget: Duration) -> Vec<Row> {
    let list = combos(&conn.system_type);
    let start = Instant::now();
    let per_attempt = (budget / list.len() as u32).max(Duration::from_millis(500));
    let tracer = Arc::new(Tracer::default());
    let mut rows = Vec::new();
    let mut skip: Option<String> = None;
    for combo in list {
        if let Some(why) = &skip {
            rows.push(Row {
                combo,
                outcome: Outcome::Skipped(why.clone()),
                elapsed: Duration::ZERO,
            });
            continue;
        }
        let left = budget.saturating_sub(start.elapsed());
        if left < Duration::from_millis(200) {
            rows.push(Row {
                combo,
                outcome: Outcome::Skipped("time budget used up".into()),
                elapsed: Duration::ZERO,
            });
            continue;
        }
        let limit = per_attempt.min(left);
        let mut c = conn.clone();
        c.version = combo.version;
        c.system_type = combo.system_type.clone();
        c.mode = match combo.kind {
            BindKind::Transceiver => BindMode::Transceiver,
            BindKind::Transmitter => BindMode::Transmitter,
            BindKind::Receiver => BindMode::Receiver,
        };
        let t0 = Instant::now();
        let outcome =
            match crate::smpp::dial::dial(&c, combo.kind, limit / 2, limit / 2, "probe", &tracer)
                .await
            {
                Ok(bound) => {
                    let timeouts = Timeouts {
                        unbind: Duration::from_millis(500),
                        ..Timeouts::default()
                    };
                    let tun = Tunables {
                        window: 1,
                        tps: None,
                        enquire_interval: Duration::from_secs(30),
                    };
                    let (h, join) = session::spawn(
                        bound,
                        tun,
                        timeouts,
                        "probe".into(),
                        tracer.clone(),
                        Arc::new(NoObserver),
                    );
                    h.close();
                    let _ = join.await;
                    Outcome::Bound
                }
                Err(f) => {
                    if transport_failure(&f) {
                        skip = Some(format!("same as first attempt: {}", f.reason));
                    }
                    Outcome::Failed(f)
                }
            };
        rows.push(Row {
            combo,
            outcome,
            elapsed: t0.elapsed(),
        });
    }
    rows
}

/// The table printed by the probe.
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:<8} {:<12} {:<10} {:<7} {}\n",
        "MODE", "VERSION", "SYSTEM_TYPE", "STAGE", "MS", "RESULT"
    );
    for r in rows {
        let (stage, result) = match &r.outcome {
            Outcome::Bound => ("bound", "OK: bound, then unbound".to_string()),
            Outcome::Failed(f) => (f.stage.as_str(), f.to_string()),
            Outcome::Skipped(why) => ("-", format!("skipped ({why})")),
        };
        let st = if r.combo.system_type.is_empty() {
            "\"\"".to_string()
        } else {
            r.combo.system_type.clone()
        };
        out.push_str(&format!(
            "{:<12} {:<8} {:<12} {:<10} {:<7} {}\n",
            r.combo.kind.as_str(),
            r.combo.version.as_str(),
            st,
            stage,
            r.elapsed.as_millis(),
            result
        ));
    }
    let ok: Vec<String> = rows
        .iter()
        .filter(|r| r.outcome == Outcome::Bound)
        .map(|r| {
            format!(
                "{} {} system_type={:?}",
                r.combo.kind.as_str(),
                r.combo.version.as_str(),
                r.combo.system_type
            )
        })
        .collect();
    if ok.is_empty() {
        out.push_str("\nNo combination bound. See docs/troubleshooting.md for each reason code.\n");
    } else {
        out.push_str(&format!("\nWorking: {}\n", ok.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combos_cover_modes_versions_and_types() {
        let c = combos("ESME");
        assert_eq!(c.len(), 12);
        assert!(c.contains(&Combo {
            kind: BindKind::Receiver,
            version: Version::V50,
            system_type: String::new()
        }));
        assert_eq!(combos("").len(), 6);
    }

    #[test]
    fn table_lists_every_row_and_the_working_ones() {
        let rows = vec![
            Row {
                combo: combos("")[0].clone(),
                outcome: Outcome::Failed(crate::smpp::diagnostics::bind_rejected(0x0D)),
                elapsed: Duration::from_millis(3),
            },
            Row {
                combo: combos("")[2].clone(),
                outcome: Outcome::Bound,
                elapsed: Duration::from_millis(4),
            },
        ];
        let t = render(&rows);
        assert!(t.contains("bind_esme_rbindfail"));
        assert!(t.contains("Working: transmitter 3.4"));
        assert_eq!(t.lines().filter(|l| l.starts_with("trans")).count(), 2);
    }
}
