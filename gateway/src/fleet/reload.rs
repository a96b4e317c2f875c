//! What to do when the vendor rows change: a pure diff between the configuration the gateway
//! runs and the one just read.

use std::collections::HashMap;

use uuid::Uuid;

use crate::fleet::config::{VendorConfig, VendorEntry};

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A vendor to start managing (valid or not: an invalid one is reported, not bound).
    Add(VendorEntry),
    /// Deleted, inactive or suspended: unbind gracefully and release its slots.
    Remove(Uuid),
    /// Connection, credentials, TLS or bind settings changed (or validity did): new binds.
    Rebind(VendorEntry),
    /// Window, TPS, enquire interval, reconnect delays, max_binds, messaging settings (id
    /// formats, long messages, default alphabet: read per message, not sent in the bind) or
    /// fields the binds do not use changed: applied to the running sessions, no rebind.
    UpdateInPlace(VendorEntry),
}

/// Old and new configuration sets → actions, ordered by vendor id for determinism.
pub fn diff(old: &HashMap<Uuid, VendorEntry>, new: &HashMap<Uuid, VendorEntry>) -> Vec<Action> {
    let mut out = Vec::new();
    for (id, n) in new {
        if !n.active {
            continue;
        }
        match old.get(id).filter(|o| o.active) {
            None => out.push(Action::Add(n.clone())),
            Some(o) if o == n => {}
            Some(o) => out.push(change(o, n)),
        }
    }
    for (id, o) in old {
        if o.active && !new.get(id).is_some_and(|n| n.active) {
            out.push(Action::Remove(*id));
        }
    }
    out.sort_by_key(|a| match a {
        Action::Add(e) | Action::Rebind(e) | Action::UpdateInPlace(e) => e.id,
        Action::Remove(id) => *id,
    });
    out
}

fn change(old: &VendorEntry, new: &VendorEntry) -> Action {
    match (&old.config, &new.config) {
        (Ok(a), Ok(b)) if a.conn == b.conn => Action::UpdateInPlace(new.clone()),
        _ => Action::Rebind(new.clone()),
    }
}

/// How to replace a bind whose connection settings changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebindStrategy {
    /// A spare unit exists in the fleet budget: bind the new one, then unbind the old one.
    MakeBeforeBreak,
    /// The budget is fully used: unbind first, then bind on the same slot.
    BreakBeforeMake,
}

/// `units_in_use`: units held fleet-wide (by any live pod, this one included).
pub fn rebind_strategy(config: &VendorConfig, units_in_use: u32) -> RebindStrategy {
    if units_in_use < config.units() {
        RebindStrategy::MakeBeforeBreak
    } else {
        RebindStrategy::BreakBeforeMake
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::config::{parse, tests::row};
    use smpp_db::Secret;

    fn set(rows: &[&smpp_db::providers::ServiceProvider]) -> HashMap<Uuid, VendorEntry> {
        rows.iter().map(|r| (r.id, parse(r))).collect()
    }

    #[test]
    fn add_remove_and_nothing() {
        let a = row("a");
        let b = row("b");
        let old = set(&[&a]);
        let new = set(&[&a, &b]);
        assert_eq!(diff(&old, &new), vec![Action::Add(parse(&b))]);
        assert_eq!(diff(&new, &old), vec![Action::Remove(b.id)]);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn inactive_and_suspended_remove() {
        let a = row("a");
        let mut off = a.clone();
        off.config.is_active = false;
        off.config_version += 1;
        assert_eq!(diff(&set(&[&a]), &set(&[&off])), vec![Action::Remove(a.id)]);
        let mut sus = a.clone();
        sus.config.suspended = true;
        assert_eq!(diff(&set(&[&a]), &set(&[&sus])), vec![Action::Remove(a.id)]);
        // re-activating adds it again
        assert_eq!(
            diff(&set(&[&off]), &set(&[&a])),
            vec![Action::Add(parse(&a))]
        );
    }

    #[test]
    fn credentials_and_connection_rebind() {
        let a = row("a");
        for change in [
            |r: &mut smpp_db::providers::ServiceProvider| r.config.password = Secret::new("other"),
            |r: &mut smpp_db::providers::ServiceProvider| r.config.port = 2776,
            |r: &mut smpp_db::providers::ServiceProvider| r.config.tls_enabled = true,
            |r: &mut smpp_db::providers::ServiceProvider| r.config.bind_mode = "TX".into(),
            |r: &mut smpp_db::providers::ServiceProvider| r.config.interface_version = "5.0".into(),
            |r: &mut smpp_db::providers::ServiceProvider| r.config.system_type = "ESME".into(),
        ] {
            let mut b = a.clone();
            change(&mut b);
            b.config_version += 1;
            assert_eq!(
                diff(&set(&[&a]), &set(&[&b])),
                vec![Action::Rebind(parse(&b))]
            );
        }
    }

    #[test]
    fn window_tps_enquire_update_in_place() {
        let a = row("a");
        for change in [
            |r: &mut smpp_db::providers::ServiceProvider| r.config.window_size = 50,
            |r: &mut smpp_db::providers::ServiceProvider| {
                r.config.max_messages_per_second = Some(5)
            },
            |r: &mut smpp_db::providers::ServiceProvider| {
                r.config.enquire_link_interval_seconds = 5
            },
            |r: &mut smpp_db::providers::ServiceProvider| r.config.max_binds = 3,
        ] {
            let mut b = a.clone();
            change(&mut b);
            b.config_version += 1;
            assert_eq!(
                diff(&set(&[&a]), &set(&[&b])),
                vec![Action::UpdateInPlace(parse(&b))]
            );
        }
    }

    #[test]
    fn messaging_changes_update_in_place() {
        use crate::fleet::config::Messaging;
        use smpp_db::messaging::{DefaultAlphabet, IdFormat, LongMessages};
        let a = row("a");
        for change in [
            |r: &mut smpp_db::providers::ServiceProvider| {
                r.config.message_id_submit_format = "Hex".into()
            },
            |r: &mut smpp_db::providers::ServiceProvider| {
                r.config.message_id_receipt_format = "Decimal".into()
            },
            |r: &mut smpp_db::providers::ServiceProvider| r.config.long_messages = "Sar".into(),
            |r: &mut smpp_db::providers::ServiceProvider| {
                r.config.default_alphabet = "Latin1".into()
            },
        ] {
            let mut b = a.clone();
            change(&mut b);
            b.config_version += 1;
            let actions = diff(&set(&[&a]), &set(&[&b]));
            assert_eq!(actions, vec![Action::UpdateInPlace(parse(&b))]);
            // The action carries the new settings for the running sessions.
            let Action::UpdateInPlace(e) = &actions[0] else {
                unreachable!()
            };
            assert_ne!(e.config.as_ref().unwrap().messaging, Messaging::default());
        }
        // All four at once, with a connection change too: the connection decides (rebind).
        let mut b = a.clone();
        b.config.message_id_submit_format = "Hex".into();
        b.config.port = 2776;
        assert_eq!(
            diff(&set(&[&a]), &set(&[&b])),
            vec![Action::Rebind(parse(&b))]
        );
        // Same value in another letter case: the parsed config is unchanged, so nothing to do
        // beyond the version bump (still in place, never a rebind).
        let mut c = a.clone();
        c.config.long_messages = "UDH".into();
        c.config_version += 1;
        assert_eq!(
            diff(&set(&[&a]), &set(&[&c])),
            vec![Action::UpdateInPlace(parse(&c))]
        );
        let m = parse(&c).config.unwrap().messaging;
        assert_eq!(m.long_messages, LongMessages::Udh);
        assert_eq!(m.submit_ids, IdFormat::Auto);
        assert_eq!(m.default_alphabet, DefaultAlphabet::Gsm7);
    }

    #[test]
    fn unknown_messaging_value_rebinds_as_invalid() {
        let a = row("a");
        let mut bad = a.clone();
        bad.config.default_alphabet = "utf8".into();
        assert!(
            matches!(diff(&set(&[&a]), &set(&[&bad]))[..], [Action::Rebind(ref e)] if e.config.as_ref().is_err_and(|m| m.contains("default_alphabet")))
        );
    }

    #[test]
    fn becoming_invalid_or_valid_rebinds() {
        let a = row("a");
        let mut bad = a.clone();
        bad.config.bind_mode = "nope".into();
        assert!(
            matches!(diff(&set(&[&a]), &set(&[&bad]))[..], [Action::Rebind(ref e)] if e.config.is_err())
        );
        assert!(
            matches!(diff(&set(&[&bad]), &set(&[&a]))[..], [Action::Rebind(ref e)] if e.config.is_ok())
        );
    }

    #[test]
    fn strategy_depends_on_spare_budget() {
        let mut r = row("a");
        r.config.max_binds = 2;
        let c = parse(&r).config.unwrap();
        assert_eq!(rebind_strategy(&c, 1), RebindStrategy::MakeBeforeBreak);
        assert_eq!(rebind_strategy(&c, 2), RebindStrategy::BreakBeforeMake);
    }
}
