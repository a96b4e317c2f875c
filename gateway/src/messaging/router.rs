//! Route choice: which vendors may take a message, in the order to try them. Pure.
//!
//! Longest matching destination prefix first, then priority (lower value first, as in DNS SRV
//! and MX), then a weighted random order among equals. A vendor with no prefixes matches every
//! destination, with prefix length 0. Only vendors bound somewhere in the fleet are routes.

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: Uuid,
    pub name: String,
    pub priority: i32,
    pub weight: u32,
    pub prefixes: Vec<String>,
    /// At least one submit-capable session is bound anywhere in the fleet.
    pub bound: bool,
}

/// The length of the longest of `prefixes` that `dest` starts with; None when none matches.
pub fn match_len(dest: &str, prefixes: &[String]) -> Option<usize> {
    if prefixes.is_empty() {
        return Some(0);
    }
    prefixes
        .iter()
        .filter(|p| dest.starts_with(p.as_str()))
        .map(|p| p.len())
        .max()
}

/// Indices of `cands` in the order to try. `random` gives one number in [0, 1) per call
/// (injected so tests are exact).
pub fn order(dest: &str, cands: &[Candidate], mut random: impl FnMut() -> f64) -> Vec<usize> {
    let dest = dest.trim_start_matches('+');
    let mut keyed: Vec<(usize, i32, f64, usize)> = cands
        .iter()
        .enumerate()
        .filter(|(_, c)| c.bound)
        .filter_map(|(i, c)| match_len(dest, &c.prefixes).map(|l| (l, i, c)))
        .map(|(l, i, c)| {
            // Weighted random order (Efraimidis–Spirakis): key = u^(1/w), larger first.
            let w = f64::from(c.weight.max(1));
            let key = random().max(f64::MIN_POSITIVE).powf(1.0 / w);
            (l, c.priority, key, i)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.total_cmp(&a.2)));
    keyed.into_iter().map(|k| k.3).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, priority: i32, weight: u32, prefixes: &[&str], bound: bool) -> Candidate {
        Candidate {
            id: Uuid::new_v4(),
            name: name.into(),
            priority,
            weight,
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            bound,
        }
    }

    fn names(cands: &[Candidate], idx: Vec<usize>) -> Vec<&str> {
        idx.into_iter().map(|i| cands[i].name.as_str()).collect()
    }

    #[test]
    fn longest_prefix_then_priority() {
        let cands = vec![
            c("any", 1, 1, &[], true),
            c("us", 100, 1, &["1"], true),
            c("us-ny", 200, 1, &["1212", "1"], true),
            c("uk", 1, 1, &["44"], true),
        ];
        let mut r = || 0.5;
        assert_eq!(
            names(&cands, order("12125550100", &cands, &mut r)),
            ["us-ny", "us", "any"]
        );
        assert_eq!(
            names(&cands, order("+447700900000", &cands, &mut r)),
            ["uk", "any"]
        );
        assert_eq!(names(&cands, order("33123", &cands, &mut r)), ["any"]);
    }

    #[test]
    fn unbound_vendors_are_no_route() {
        let cands = vec![c("a", 1, 1, &["1"], false), c("b", 5, 1, &[], true)];
        assert_eq!(names(&cands, order("1555", &cands, || 0.5)), ["b"]);
        let none = vec![c("a", 1, 1, &[], false)];
        assert!(order("1555", &none, || 0.5).is_empty());
    }

    #[test]
    fn equal_routes_split_by_weight() {
        let cands = vec![c("heavy", 1, 3, &[], true), c("light", 1, 1, &[], true)];
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let first_heavy = (0..4000)
            .filter(|_| order("1", &cands, &mut rnd)[0] == 0)
            .count();
        // Expected share 3/4; the bound is wide enough never to flake with this fixed seed.
        assert!((2800..3200).contains(&first_heavy), "{first_heavy}");
    }
}
