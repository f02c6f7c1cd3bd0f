//! The report's building blocks: tables (Markdown and CSV), sections with
//! their charts, and claims with measured verdicts.

use std::fmt::Write as _;

/// A table of measurements; every cell is already formatted.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column names (also the CSV header).
    pub columns: Vec<&'static str>,
    /// Rows, one cell per column.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these columns.
    ///
    /// ```
    /// let mut t = iomux_lab::lab::Table::new(&["a", "b"]);
    /// t.push(vec!["1".into(), "2".into()]);
    /// assert_eq!(t.csv(), "a,b\n1,2\n");
    /// t.push(vec!["x,y".into(), "3".into()]);
    /// assert!(t.csv().ends_with("\"x,y\",3\n"));
    /// assert!(t.markdown().contains("| 1 | 2 |"));
    /// ```
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Add a row (as many cells as columns).
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// The table as CSV with a header line (cells with commas or quotes are quoted).
    pub fn csv(&self) -> String {
        let mut s = self.columns.join(",");
        s.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|c| match c.contains([',', '"', '\n']) {
                    true => format!("\"{}\"", c.replace('"', "\"\"")),
                    false => c.clone(),
                })
                .collect();
            s += &cells.join(",");
            s.push('\n');
        }
        s
    }

    /// The table in Markdown (a `|` or line break in a cell becomes `/` or a space).
    pub fn markdown(&self) -> String {
        let mut s = format!("| {} |\n", self.columns.join(" | "));
        s += &format!("|{}\n", " --- |".repeat(self.columns.len()));
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|c| c.replace('|', "/").replace('\n', " "))
                .collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        s
    }
}

/// What this machine's data say about a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The data agree with the claim.
    Confirmed,
    /// The data contradict it.
    Refuted,
    /// Some of it holds, some does not.
    Partly,
    /// The data cannot settle it (missing, or within the noise).
    Inconclusive,
}

impl Outcome {
    /// The word `verdicts.csv` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Refuted => "refuted",
            Outcome::Partly => "partly",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One claim from the classic material and what this machine says about it.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The claim as the material makes it.
    pub claim: &'static str,
    /// The verdict, computed from this run's data.
    pub outcome: Outcome,
    /// The figures behind it.
    pub evidence: String,
}

impl Verdict {
    /// The verdicts as `verdicts.csv` holds them: `claim,verdict,evidence`.
    ///
    /// ```
    /// use iomux_lab::lab::{Outcome, Verdict};
    /// let v = Verdict { claim: "c", outcome: Outcome::Partly, evidence: "x, y".into() };
    /// assert_eq!(Verdict::table(&[v]).csv(), "claim,verdict,evidence\nc,partly,\"x, y\"\n");
    /// ```
    pub fn table(verdicts: &[Verdict]) -> Table {
        let mut t = Table::new(&["claim", "verdict", "evidence"]);
        for v in verdicts {
            t.push(vec![
                v.claim.to_string(),
                v.outcome.to_string(),
                v.evidence.clone(),
            ]);
        }
        t
    }
}

/// The median of a few measurements with their smallest and largest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Spread {
    /// The spread of the finite values of `xs`; `None` when there are none.
    pub(crate) fn of(xs: &[f64]) -> Option<Spread> {
        let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        Some(Spread {
            median: median(&v),
            lo: v.iter().copied().fold(f64::INFINITY, f64::min),
            hi: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// One exact value (a range of width zero), for tests.
    #[cfg(test)]
    pub(crate) fn exact(x: f64) -> Spread {
        Spread {
            median: x,
            lo: x,
            hi: x,
        }
    }

    /// A value with its range, for tests.
    #[cfg(test)]
    pub(crate) fn new(median: f64, lo: f64, hi: f64) -> Spread {
        Spread { median, lo, hi }
    }

    /// Every measurement here is above every one of `other`.
    pub(crate) fn above(&self, other: &Spread) -> bool {
        self.lo > other.hi
    }

    /// This median over `base`'s.
    pub(crate) fn ratio(&self, base: &Spread) -> f64 {
        self.median / base.median
    }

    /// "123 (110-140)".
    pub(crate) fn text(&self) -> String {
        if self.lo == self.hi {
            num(self.median)
        } else {
            format!("{} ({}-{})", num(self.median), num(self.lo), num(self.hi))
        }
    }
}

/// One experiment's part of the report.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Short name (also the CSV and chart file stem).
    pub name: &'static str,
    /// Heading.
    pub title: &'static str,
    /// What was measured and how.
    pub method: String,
    /// Tables: a caption, the table, and the CSV file it is written to, if any.
    pub tables: Vec<(String, Table, Option<String>)>,
    /// SVG charts written to the output directory.
    pub charts: Vec<String>,
    /// Claims settled by this experiment.
    pub verdicts: Vec<Verdict>,
    /// Anything skipped or odd, and why.
    pub notes: Vec<String>,
}

impl Section {
    /// The section in Markdown.
    pub fn markdown(&self, number: usize) -> String {
        let mut s = format!("## {number}. {}\n\n{}\n\n", self.title, self.method);
        for v in &self.verdicts {
            let _ = writeln!(
                s,
                "- **Claim:** {}  \n  **Verdict: {}.** {}",
                v.claim, v.outcome, v.evidence
            );
        }
        if !self.verdicts.is_empty() {
            s.push('\n');
        }
        for (caption, table, csv) in &self.tables {
            let file = csv
                .as_ref()
                .map(|f| format!(" (`{f}`)"))
                .unwrap_or_default();
            let _ = write!(s, "{caption}{file}\n\n{}\n", table.markdown());
        }
        for chart in &self.charts {
            let _ = write!(s, "![{chart}]({chart})\n\n");
        }
        for note in &self.notes {
            let _ = writeln!(s, "- Note: {note}");
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        s
    }
}

/// The median of `xs` (NaN when empty); the mean of the middle two for an
/// even count.
pub(crate) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Format a number with a sensible precision for a table.
pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn spreads_separate_only_when_their_ranges_do() {
        let a = Spread::of(&[1.0, 3.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((a.median, a.lo, a.hi), (2.0, 1.0, 3.0));
        let b = Spread::of(&[3.5, 4.0]).unwrap();
        assert!(b.above(&a) && !a.above(&b));
        let c = Spread::of(&[2.5, 5.0]).unwrap();
        assert!(!c.above(&a) && !a.above(&c) && !c.above(&b) && !b.above(&c));
        assert!(Spread::of(&[f64::NAN]).is_none());
        assert_eq!(a.text(), "2.00 (1.00-3.00)");
    }
}
