//! The report: rows with optional baselines and targets, rendered as Markdown and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::meta::Meta;

/// What a row measured (in the JSON: a number, or true/false).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Value {
    Num(f64),
    /// A yes/no outcome ("all served").
    Flag(bool),
}

/// What a row must reach. Ratio targets compare `value / baseline`; the others compare
/// the value itself (in the row's unit).
#[allow(dead_code)] // not every kind of target is used by the families so far
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Informational row: no target.
    None,
    RatioAtMost(f64),
    RatioAtLeast(f64),
    AtMost(f64),
    AtLeast(f64),
    /// A flag that must be yes.
    Yes,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub family: String,
    pub name: String,
    pub value: Value,
    pub unit: String,
    /// What the value is compared with, and its value (same unit).
    pub baseline: Option<(String, f64)>,
    pub target: Target,
    /// Where the row shows in the charts ([`crate::chart`]); `None`: the table only.
    pub plot: Option<Plot>,
}

/// What kind of baseline a bar of the "corral vs native commands vs Lua scripts" chart
/// is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Plain Redis commands and types.
    Native,
    /// A Lua script, as a library sends it (`EVALSHA`).
    Lua,
}

/// A row's place in the charts, with the numbers it contributes (server time, µs). In the
/// JSON: `{"chart": "versus" | "scale", …its fields}`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "chart", rename_all = "lowercase")]
pub enum Plot {
    /// In "corral vs native commands vs Lua scripts": corral's time for `op` against a
    /// baseline's. Rows with the same `op` share one bar group.
    Versus {
        op: String,
        corral_us: f64,
        #[serde(rename = "baseline_kind")]
        kind: Kind,
        /// The baseline's bar label: what it runs.
        baseline: String,
        baseline_us: f64,
    },
    /// In the family's "cost against scale" chart: `op`'s time at two scales. Rows with
    /// the same `op` share one bar group (a scale given twice is drawn once).
    Scale {
        op: String,
        /// A plain-Redis reference measured the same way, not a corral command.
        reference: bool,
        points: [Point; 2],
    },
}

/// One measured scale: its label ("100,000 holders"), its size (orders the bars), µs.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub scale: String,
    pub n: f64,
    pub us: f64,
}

impl Row {
    /// A numeric row, e.g. `Row::new("RESV", "wake p99", 0.4, "ms")`.
    pub fn new(family: &str, name: &str, value: f64, unit: &str) -> Row {
        Row {
            family: family.to_string(),
            name: name.to_string(),
            value: Value::Num(value),
            unit: unit.to_string(),
            baseline: None,
            target: Target::None,
            plot: None,
        }
    }

    /// A yes/no row.
    pub fn flag(family: &str, name: &str, yes: bool) -> Row {
        Row {
            value: Value::Flag(yes),
            ..Row::new(family, name, 0.0, "")
        }
    }

    /// Compares the value with `name`'s `value`, measured the same way in the same run.
    pub fn vs(mut self, name: &str, value: f64) -> Row {
        self.baseline = Some((name.to_string(), value));
        self
    }

    pub fn target(mut self, target: Target) -> Row {
        self.target = target;
        self
    }

    /// The value and the baseline's, for a chart: both must be there and in µs.
    fn us_pair(&self) -> (f64, f64) {
        match (&self.value, &self.baseline) {
            (Value::Num(v), Some((_, b))) if self.unit == "us" => (*v, *b),
            _ => panic!("row {:?}: charts take µs rows with a baseline", self.name),
        }
    }

    /// Charts the row in "corral vs native commands vs Lua scripts", in `op`'s bar
    /// group: the value is corral's, the baseline a `kind` one whose bar says `label`.
    pub fn versus(mut self, op: &str, kind: Kind, label: &str) -> Row {
        let (corral_us, baseline_us) = self.us_pair();
        self.plot = Some(Plot::Versus {
            op: op.to_string(),
            corral_us,
            kind,
            baseline: label.to_string(),
            baseline_us,
        });
        self
    }

    /// [`Row::versus`] for a row the other way round: its value is the `kind`
    /// baseline's, its baseline corral's.
    pub fn versus_swapped(self, op: &str, kind: Kind, label: &str) -> Row {
        let mut row = self.versus(op, kind, label);
        if let Some(Plot::Versus {
            corral_us,
            baseline_us,
            ..
        }) = &mut row.plot
        {
            std::mem::swap(corral_us, baseline_us);
        }
        row
    }

    /// Charts the row in its family's "cost against scale": `op` measured at `at` (the
    /// value) and at `from` (the baseline), each a (label, size).
    pub fn scale(mut self, op: &str, at: (&str, f64), from: (&str, f64)) -> Row {
        let (us, from_us) = self.us_pair();
        let point = |(scale, n): (&str, f64), us| Point {
            scale: scale.to_string(),
            n,
            us,
        };
        self.plot = Some(Plot::Scale {
            op: op.to_string(),
            reference: false,
            points: [point(from, from_us), point(at, us)],
        });
        self
    }

    /// Marks a [`Row::scale`] row as a plain-Redis reference (drawn in grey).
    pub fn reference(mut self) -> Row {
        if let Some(Plot::Scale { reference, .. }) = &mut self.plot {
            *reference = true;
        }
        self
    }

    /// value / baseline, when both are numbers.
    pub fn ratio(&self) -> Option<f64> {
        match (&self.value, &self.baseline) {
            (Value::Num(v), Some((_, b))) => Some(v / b),
            _ => None,
        }
    }

    /// Whether the target is met; None when there is no target.
    pub fn pass(&self) -> Option<bool> {
        let num = match self.value {
            Value::Num(v) => Some(v),
            Value::Flag(_) => None,
        };
        // NaN compares false, so a missing measurement misses its target.
        let at_most = |x: Option<f64>, b: f64| x.is_some_and(|x| x <= b);
        let at_least = |x: Option<f64>, b: f64| x.is_some_and(|x| x >= b);
        match self.target {
            Target::None => None,
            Target::RatioAtMost(b) => Some(at_most(self.ratio(), b)),
            Target::RatioAtLeast(b) => Some(at_least(self.ratio(), b)),
            Target::AtMost(b) => Some(at_most(num, b)),
            Target::AtLeast(b) => Some(at_least(num, b)),
            Target::Yes => Some(matches!(self.value, Value::Flag(true))),
        }
    }

    /// The target as text: "<= 1.5x" (a ratio), "<= 2 ms" (a value), "yes".
    pub fn target_text(&self) -> String {
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        match self.target {
            Target::None => String::new(),
            // Bounds print as written in the code: 1.5, 2, 0.8.
            Target::RatioAtMost(b) => format!("<= {b}x"),
            Target::RatioAtLeast(b) => format!(">= {b}x"),
            Target::AtMost(b) => format!("<= {b}{unit}"),
            Target::AtLeast(b) => format!(">= {b}{unit}"),
            Target::Yes => "yes".to_string(),
        }
    }

    fn value_text(&self) -> String {
        match self.value {
            Value::Num(v) if self.unit.is_empty() => num(v),
            Value::Num(v) => format!("{} {}", num(v), self.unit),
            Value::Flag(true) => "yes".to_string(),
            Value::Flag(false) => "no".to_string(),
        }
    }
}

pub struct Report {
    meta: Meta,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(meta: Meta) -> Report {
        Report {
            meta,
            rows: Vec::new(),
        }
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Adds a row (and echoes it to stderr, so progress shows what was measured).
    pub fn add(&mut self, row: Row) {
        let verdict = match row.pass() {
            Some(true) => " [ok]",
            Some(false) => " [MISS]",
            None => "",
        };
        let vs = match (&row.baseline, row.ratio()) {
            (Some((b, _)), Some(r)) => format!(" = {:.2}x {b}", r),
            _ => String::new(),
        };
        eprintln!("bench:    {}: {}{vs}{verdict}", row.name, row.value_text());
        self.rows.push(row);
    }

    pub fn markdown(&self) -> String {
        let m = &self.meta;
        let mut s = String::new();
        let _ = writeln!(s, "# corral benchmark\n");
        let _ = writeln!(s, "- **Date:** {}", m.date);
        let _ = writeln!(s, "- **Machine:** {}", m.machine());
        let _ = writeln!(
            s,
            "- **Software:** redis-server {}, {}, corral {}",
            m.redis_version, m.rustc, m.git
        );
        if !m.filters.is_empty() {
            let _ = writeln!(s, "- **Sections:** those matching {}", m.filters.join(" "));
        }
        let _ = writeln!(
            s,
            "- **Reproduce:** `{}` in a checkout of corral {} (`scripts/bench --publish` \
             also copies the results to `scripts/bench-results/`)\n",
            m.command, m.git
        );
        s += "| Family | Measurement | Value | Baseline | Baseline value | Ratio | Target | Result |\n";
        s += "|---|---|---:|---|---:|---:|---|---|\n";
        for r in &self.rows {
            let (bname, bvalue) = match &r.baseline {
                Some((n, v)) => (n.clone(), with_unit(*v, &r.unit)),
                None => (String::new(), String::new()),
            };
            let ratio = r.ratio().map(|x| format!("{x:.2}x")).unwrap_or_default();
            let result = match r.pass() {
                Some(true) => "ok",
                Some(false) => "**MISS**",
                None => "",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.family,
                cell(&r.name),
                r.value_text(),
                cell(&bname),
                bvalue,
                ratio,
                r.target_text(),
                result
            );
        }
        let with_target: Vec<&Row> = self.rows.iter().filter(|r| r.pass().is_some()).collect();
        let missed: Vec<String> = with_target
            .iter()
            .filter(|r| r.pass() == Some(false))
            .map(|r| match &r.baseline {
                Some((b, _)) => format!("{} vs {b}", r.name),
                None => r.name.clone(),
            })
            .collect();
        let _ = write!(
            s,
            "\n{} targets: {} met, {} missed",
            with_target.len(),
            with_target.len() - missed.len(),
            missed.len()
        );
        if !missed.is_empty() {
            let _ = write!(s, " (MISS: {})", missed.join("; "));
        }
        s += ".\n";
        s
    }

    /// The rows as JSON, after the facts about the run ([`Meta`]).
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            meta: &'a Meta,
            rows: Vec<JsonRow<'a>>,
        }
        #[derive(Serialize)]
        struct JsonRow<'a> {
            family: &'a str,
            name: &'a str,
            value: &'a Value,
            unit: &'a str,
            baseline_name: Option<&'a str>,
            baseline_value: Option<f64>,
            ratio: Option<f64>,
            /// As in the table ("<= 1.5x"); null without a target.
            target: Option<String>,
            pass: Option<bool>,
            chart: Option<&'a Plot>,
        }
        let rows = self
            .rows
            .iter()
            .map(|r| JsonRow {
                family: &r.family,
                name: &r.name,
                value: &r.value,
                unit: &r.unit,
                baseline_name: r.baseline.as_ref().map(|(n, _)| n.as_str()),
                baseline_value: r.baseline.as_ref().map(|(_, v)| *v),
                ratio: r.ratio(),
                target: (!matches!(r.target, Target::None)).then(|| r.target_text()),
                pass: r.pass(),
                chart: r.plot.as_ref(),
            })
            .collect();
        let json = Json {
            meta: &self.meta,
            rows,
        };
        // NaN (a missing measurement) becomes null: JSON has no NaN.
        serde_json::to_string_pretty(&json).expect("the report serializes") + "\n"
    }
}

/// A number for the table: a few significant digits, thousands separated.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let digits = format!("{:.0}", a);
        let mut grouped = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(ch);
        }
        format!("{}{grouped}", if x < 0.0 { "-" } else { "" })
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn with_unit(x: f64, unit: &str) -> String {
    if unit.is_empty() {
        num(x)
    } else {
        format!("{} {unit}", num(x))
    }
}

/// A Markdown table cell: `|` would end the cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}
