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

    /// The table in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!("| {} |\n", self.columns.join(" | "));
        s += &format!("|{}\n", " --- |".repeat(self.columns.len()));
        for row in &self.rows {
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        s
    }
}

/// One claim from the classic material and what this machine says about it.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The claim as the material makes it.
    pub claim: &'static str,
    /// The measured answer, with the figures.
    pub verdict: String,
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
                "- **Claim:** {}  \n  **Measured:** {}",
                v.claim, v.verdict
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
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
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
}
