//! Benchmark figures and their report: percentiles, the median over runs, and the markdown
//! written to docs/benchmarks.md. Pure functions only; the measuring is in `smpp-bench`.

use std::fmt::Write as _;

/// Nearest-rank percentile (`p` in 0..=100) of `samples`; None when empty.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

/// Median of `values` (mean of the middle two for an even count); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// A goal from the issues: the figure must stay below `limit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Below(pub f64);

/// One figure of a benchmark, measured once per run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub metric: String,
    pub unit: &'static str,
    pub target: Option<Below>,
    /// One value per run, in run order.
    pub per_run: Vec<f64>,
}

impl Row {
    pub fn new(metric: impl Into<String>, unit: &'static str, target: Option<Below>) -> Self {
        Row {
            metric: metric.into(),
            unit,
            target,
            per_run: Vec::new(),
        }
    }

    pub fn median(&self) -> Option<f64> {
        median(&self.per_run)
    }

    /// Whether the median meets the target; None without a target or without figures.
    pub fn meets_target(&self) -> Option<bool> {
        Some(self.median()? < self.target?.0)
    }
}

/// One benchmark: how it was measured and its figures (or why it could not be measured).
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: String,
    /// What exactly is timed, from which event to which.
    pub method: String,
    pub rows: Vec<Row>,
    /// Why this benchmark has no figures, when it has none.
    pub not_measured: Option<String>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: impl Into<String>, method: impl Into<String>) -> Self {
        Section {
            title: title.into(),
            method: method.into(),
            rows: Vec::new(),
            not_measured: None,
            notes: Vec::new(),
        }
    }

    pub fn failed(
        title: impl Into<String>,
        method: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Section {
            not_measured: Some(why.into()),
            ..Section::new(title, method)
        }
    }

    /// The row named `metric`, created on first use.
    pub fn row(&mut self, metric: &str, unit: &'static str, target: Option<Below>) -> &mut Row {
        if let Some(i) = self.rows.iter().position(|r| r.metric == metric) {
            return &mut self.rows[i];
        }
        self.rows.push(Row::new(metric, unit, target));
        self.rows.last_mut().expect("just pushed")
    }

    pub fn median_of(&self, metric: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.metric == metric)?.median()
    }
}

/// Which way a compared figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Better {
    /// Times, memory, CPU.
    #[default]
    Lower,
    /// Rates.
    Higher,
}

/// Ours against the peer, both medians of the same run of `make bench`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub what: String,
    pub unit: &'static str,
    pub ours: Option<f64>,
    pub kannel: Option<f64>,
    pub better: Better,
}

impl Comparison {
    /// How many times better ours is: Kannel's over ours for a time, ours over Kannel's for
    /// a rate. Above 1 means ours is ahead.
    pub fn ratio(&self) -> Option<f64> {
        match (self.ours, self.kannel, self.better) {
            (Some(o), Some(k), Better::Lower) if o > 0.0 => Some(k / o),
            (Some(o), Some(k), Better::Higher) if k > 0.0 => Some(o / k),
            _ => None,
        }
    }
}

/// Everything docs/benchmarks.md shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub date: String,
    pub command: String,
    /// (component, version) pairs.
    pub versions: Vec<(String, String)>,
    pub machine: String,
    pub comparisons: Vec<Comparison>,
    pub sections: Vec<Section>,
    /// How to run, caveats: printed last.
    pub notes: Vec<String>,
}

fn fmt_value(v: f64, unit: &str) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}").trim_end().to_string()
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| fmt_value(v, unit))
        .unwrap_or_else(|| "not measured".into())
}

/// The markdown for docs/benchmarks.md.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `{}` on {}. Every figure is the **median over runs** of one invocation; each run's \
         value is listed too. Nothing here is typed in by hand: rerun the command to refresh it.\n",
        r.command, r.date
    );
    let _ = writeln!(
        out,
        "Machine: {}. Every load runs on 127.0.0.1.\n",
        r.machine
    );
    let _ = writeln!(out, "## Versions\n\n| Component | Version |\n|---|---|");
    for (k, v) in &r.versions {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let _ = writeln!(out, "\n## Against Kannel (same run, same sink)\n");
    let _ = writeln!(
        out,
        "| Comparison | Ours (median) | Kannel (median) | Ours ahead by (above 1×: ours is better) |\n|---|---|---|---|"
    );
    for c in &r.comparisons {
        let ratio = match (c.ours, c.kannel, c.ratio()) {
            (_, _, Some(x)) => format!("{x:.1}×"),
            (Some(_), Some(_), None) => "no ratio: a figure measured 0 at this resolution".into(),
            _ => "not measured".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            c.what,
            fmt_opt(c.ours, c.unit),
            fmt_opt(c.kannel, c.unit),
            ratio
        );
    }
    for s in &r.sections {
        let _ = writeln!(out, "\n## {}\n\n{}\n", s.title, s.method);
        if let Some(why) = &s.not_measured {
            let _ = writeln!(out, "**Not measured:** {why}");
        }
        if !s.rows.is_empty() {
            let _ = writeln!(
                out,
                "| Metric | Target | Median | Met | Runs |\n|---|---|---|---|---|"
            );
            for row in &s.rows {
                let target = row
                    .target
                    .map(|t| format!("< {}", fmt_value(t.0, row.unit)))
                    .unwrap_or_else(|| "—".into());
                let met = match row.meets_target() {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "—",
                };
                let runs: Vec<String> = row.per_run.iter().map(|v| fmt_value(*v, "")).collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} ({}) |",
                    row.metric,
                    target,
                    fmt_opt(row.median(), row.unit),
                    met,
                    row.per_run.len(),
                    runs.join(", ")
                );
            }
        }
        for n in &s.notes {
            let _ = writeln!(out, "\n{n}");
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.0), Some(1.0));
        // With 20 samples p99 is the largest: one slow change shows.
        let mut t = vec![1.0; 19];
        t.push(9.0);
        assert_eq!(percentile(&t, 99.0), Some(9.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn target_and_ratio() {
        let mut row = Row::new("p99", "ms", Some(Below(500.0)));
        assert_eq!(row.meets_target(), None);
        row.per_run = vec![100.0, 900.0, 200.0];
        assert_eq!(row.meets_target(), Some(true));
        row.per_run = vec![600.0, 900.0, 200.0];
        assert_eq!(row.meets_target(), Some(false));
        let c = Comparison {
            what: "x".into(),
            unit: "ms",
            ours: Some(50.0),
            kannel: Some(500.0),
            better: Better::Lower,
        };
        assert_eq!(c.ratio(), Some(10.0));
        let rate = Comparison {
            better: Better::Higher,
            ..c.clone()
        };
        assert_eq!(rate.ratio(), Some(0.1));
        assert_eq!(Comparison { ours: None, ..c }.ratio(), None);
    }

    #[test]
    fn render_shows_figures_misses_and_gaps() {
        let mut s = Section::new("Row change", "UPDATE → bind at the sink");
        s.row("p99", "ms", Some(Below(500.0))).per_run = vec![700.0, 650.0, 800.0];
        let r = Report {
            date: "2026-11-25".into(),
            command: "make bench".into(),
            versions: vec![("rustc".into(), "1.95.0".into())],
            machine: "2 cores".into(),
            comparisons: vec![Comparison {
                what: "restart".into(),
                unit: "ms",
                ours: Some(100.0),
                kannel: None,
                better: Better::Lower,
            }],
            sections: vec![
                s,
                Section::failed("Operator", "apply → row", "the operator did not start"),
            ],
            notes: vec!["logs in target/bench-logs".into()],
        };
        let md = render(&r);
        assert!(
            md.contains("| p99 | < 500 ms | 700 ms | **no** | 3 (700, 650, 800) |"),
            "{md}"
        );
        assert!(
            md.contains("| restart | 100 ms | not measured | not measured |"),
            "{md}"
        );
        assert!(
            md.contains("**Not measured:** the operator did not start"),
            "{md}"
        );
        assert!(md.contains("| rustc | 1.95.0 |"));
        assert!(
            md.ends_with("## Notes\n\n- logs in target/bench-logs\n"),
            "{md}"
        );
    }
}
