//! The benchmark's charts: hand-written SVG, drawn from the rows' [`Plot`]s.
//!
//! - `versus.svg`, "corral vs native Redis commands vs Lua scripts": a bar group per
//!   operation (the rows' `Plot::Versus` with the same `op`), one horizontal bar each for
//!   corral, its native-command baseline and its Lua-script baseline, whichever were
//!   measured.
//! - `scale-<family>.svg`, "cost against scale": a bar group per operation (the rows'
//!   `Plot::Scale` with the same `op`), one bar per measured scale, smallest first.
//!
//! Every bar is server time per operation in µs, labelled with its value. The layout is
//! one routine, [`render`], for both kinds: a title, a subtitle, a legend, groups of
//! labelled bars under a heading each, µs axes with grid lines, and a footer saying where
//! and what ran. The versus chart has one axis for all groups; a bar far longer than the
//! rest (more than 10x the median) is cut at the axis' end and drawn with a break mark, so
//! it does not squash the others (its label still gives its value). A scale chart gives
//! each group its own axis ([`Axis`]): only the bars of one operation compare there, and
//! operations differ by 100x (ALLOC.JOBS against ALLOC.HASJOBS).

use std::fmt::Write as _;

use crate::meta::Meta;
use crate::report::{num, Kind, Plot, Point, Row};

/// One chart: its file name (in the results directory), title and SVG text.
pub struct Chart {
    pub file: String,
    pub title: String,
    pub svg: String,
}

/// Every chart the rows give (none for a kind no row plots).
pub fn all(rows: &[Row], meta: &Meta) -> Vec<Chart> {
    let mut charts = Vec::new();
    charts.extend(versus(rows, meta));
    charts.extend(scale(rows, meta));
    charts
}

/// The Markdown that shows the charts, linked by relative path (they sit next to
/// results.md); empty without charts.
pub fn markdown(charts: &[Chart]) -> String {
    let mut s = String::new();
    if charts.is_empty() {
        return s;
    }
    s += "\n## Charts\n";
    for c in charts {
        let _ = write!(s, "\n![{}]({})\n", c.title, c.file);
    }
    s
}

/// Bar colours, as (red, green, blue).
type Rgb = (u8, u8, u8);
const CORRAL: Rgb = (0x25, 0x63, 0xeb);
const NATIVE: Rgb = (0x6b, 0x72, 0x80);
const LUA: Rgb = (0xea, 0x58, 0x0c);
/// The scale charts shade their bars from light (smallest scale) to dark (largest).
const CORRAL_SHADES: (Rgb, Rgb) = ((0x93, 0xc5, 0xfd), (0x1e, 0x3a, 0x8a));
const REFERENCE_SHADES: (Rgb, Rgb) = ((0xd1, 0xd5, 0xdb), (0x4b, 0x55, 0x63));

/// "corral vs native Redis commands vs Lua scripts", from the `Plot::Versus` rows.
fn versus(rows: &[Row], meta: &Meta) -> Option<Chart> {
    // Bar groups in the order their first row came; a baseline given twice is drawn once.
    struct Op<'a> {
        op: &'a str,
        corral_us: f64,
        baselines: Vec<(Kind, &'a str, f64)>,
    }
    let mut ops: Vec<Op> = Vec::new();
    for row in rows {
        let Some(Plot::Versus {
            op,
            corral_us,
            kind,
            baseline,
            baseline_us,
        }) = &row.plot
        else {
            continue;
        };
        let i = match ops.iter().position(|o| o.op == op) {
            Some(i) => i,
            None => {
                ops.push(Op {
                    op,
                    corral_us: *corral_us,
                    baselines: Vec::new(),
                });
                ops.len() - 1
            }
        };
        if !ops[i].baselines.iter().any(|b| b.1 == baseline) {
            ops[i].baselines.push((*kind, baseline, *baseline_us));
        }
    }
    if ops.is_empty() {
        return None;
    }

    let groups = ops
        .iter()
        .map(|o| {
            let mut bars = vec![Bar {
                label: "corral".to_string(),
                us: o.corral_us,
                color: hex(CORRAL),
                note: String::new(),
            }];
            // Native baselines above Lua ones.
            for want in [Kind::Native, Kind::Lua] {
                for &(kind, label, us) in o.baselines.iter().filter(|b| b.0 == want) {
                    bars.push(Bar {
                        label: label.to_string(),
                        us,
                        color: hex(if kind == Kind::Native { NATIVE } else { LUA }),
                        note: faster_or_slower(o.corral_us, us),
                    });
                }
            }
            Group {
                heading: o.op.to_string(),
                bars,
            }
        })
        .collect::<Vec<_>>();

    let has = |k: Kind| ops.iter().any(|o| o.baselines.iter().any(|b| b.0 == k));
    let mut legend = vec![(vec![hex(CORRAL)], "corral".to_string())];
    if has(Kind::Native) {
        legend.push((vec![hex(NATIVE)], "native Redis commands".to_string()));
    }
    if has(Kind::Lua) {
        legend.push((
            vec![hex(LUA)],
            "Lua script (EVALSHA), as libraries send it".to_string(),
        ));
    }
    let title = "corral vs native Redis commands vs Lua scripts".to_string();
    let svg = render(&Spec {
        title: title.clone(),
        subtitle: vec![
            "Server time per operation, µs (INFO commandstats, best of 5 rounds). Shorter is better."
                .to_string(),
            "Each baseline bar says how corral's time compares with it.".to_string(),
        ],
        legend,
        groups,
        axis: Axis::Shared,
        footer: footer(meta),
    });
    Some(Chart {
        file: "versus.svg".to_string(),
        title,
        svg,
    })
}

/// "corral 2.4× faster" (less server time than `baseline_us`), "corral 1.7× slower", or
/// "about the same" (within 5%).
fn faster_or_slower(corral_us: f64, baseline_us: f64) -> String {
    let r = baseline_us / corral_us;
    if !r.is_finite() || r <= 0.0 {
        String::new()
    } else if (0.95..=1.05).contains(&r) {
        "about the same".to_string()
    } else if r > 1.0 {
        format!("corral {}× faster", ratio(r))
    } else {
        format!("corral {}× slower", ratio(1.0 / r))
    }
}

/// A ratio with two significant decimals below 10 ("2.46", "1.05"), fewer above ("12.3",
/// "160").
fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// One "cost against scale" chart per family, from the `Plot::Scale` rows.
fn scale(rows: &[Row], meta: &Meta) -> Vec<Chart> {
    // Families and their operations in the order their first row came.
    struct Op<'a> {
        op: &'a str,
        reference: bool,
        points: Vec<&'a Point>,
    }
    let mut families: Vec<(&str, Vec<Op>)> = Vec::new();
    for row in rows {
        let Some(Plot::Scale {
            op,
            reference,
            points,
        }) = &row.plot
        else {
            continue;
        };
        let f = match families.iter().position(|f| f.0 == row.family) {
            Some(f) => f,
            None => {
                families.push((&row.family, Vec::new()));
                families.len() - 1
            }
        };
        let ops = &mut families[f].1;
        let i = match ops.iter().position(|o| o.op == op) {
            Some(i) => i,
            None => {
                ops.push(Op {
                    op,
                    reference: *reference,
                    points: Vec::new(),
                });
                ops.len() - 1
            }
        };
        for p in points {
            if !ops[i].points.iter().any(|q| q.n == p.n) {
                ops[i].points.push(p);
            }
        }
    }

    families
        .into_iter()
        .map(|(family, mut ops)| {
            // corral's operations first, the plain-Redis references after them.
            ops.sort_by_key(|o| o.reference);
            let mut any_reference = false;
            let groups = ops
                .iter_mut()
                .map(|o| {
                    o.points.sort_by(|a, b| a.n.total_cmp(&b.n));
                    any_reference |= o.reference;
                    let shades = if o.reference {
                        REFERENCE_SHADES
                    } else {
                        CORRAL_SHADES
                    };
                    let first_us = o.points[0].us;
                    let k = o.points.len();
                    let bars = o
                        .points
                        .iter()
                        .enumerate()
                        .map(|(i, p)| Bar {
                            label: p.scale.clone(),
                            us: p.us,
                            color: shade(shades, i, k),
                            note: if i == 0 || !(p.us / first_us).is_finite() {
                                String::new()
                            } else {
                                format!("×{}", ratio(p.us / first_us))
                            },
                        })
                        .collect();
                    Group {
                        heading: o.op.to_string(),
                        bars,
                    }
                })
                .collect();
            let swatches = |(light, dark): (Rgb, Rgb)| vec![hex(light), hex(dark)];
            let mut legend = vec![(
                swatches(CORRAL_SHADES),
                "corral, smallest to largest scale".to_string(),
            )];
            if any_reference {
                legend.push((
                    swatches(REFERENCE_SHADES),
                    "plain Redis, same access pattern (reference)".to_string(),
                ));
            }
            let title = format!("{family}: cost against scale");
            let svg = render(&Spec {
                title: title.clone(),
                subtitle: vec![
                    "Server time per operation, µs (INFO commandstats, best of 5 rounds), as the key grows."
                        .to_string(),
                    "Bars of equal length: the cost does not depend on size. ×N: time relative to the smallest."
                        .to_string(),
                ],
                legend,
                groups,
                axis: Axis::PerGroup,
                footer: footer(meta),
            });
            Chart {
                file: format!("scale-{}.svg", family.to_lowercase()),
                title,
                svg,
            }
        })
        .collect()
}

/// The colour of bar `i` of `k`: from `light` (the first) to `dark` (the last).
fn shade((light, dark): (Rgb, Rgb), i: usize, k: usize) -> String {
    let t = if k <= 1 {
        1.0
    } else {
        i as f64 / (k - 1) as f64
    };
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    hex((
        mix(light.0, dark.0),
        mix(light.1, dark.1),
        mix(light.2, dark.2),
    ))
}

/// "#rrggbb".
fn hex((r, g, b): Rgb) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The line under each chart: what ran where, when, and how to run it again.
fn footer(m: &Meta) -> String {
    let date = m.date.split(' ').next().unwrap_or(&m.date);
    format!(
        "corral {} · redis-server {} · {}, {} CPUs · {date} · {}",
        m.git, m.redis_version, m.cpu, m.nproc, m.command
    )
}

// ---------------------------------------------------------------------------------------
// Drawing.

/// A bar: its label (left of it), server time, colour, and a note after its value.
struct Bar {
    label: String,
    us: f64,
    color: String,
    note: String,
}

/// Bars under a heading.
struct Group {
    heading: String,
    bars: Vec<Bar>,
}

/// What [`render`] draws. A legend entry is its swatch colours and its text.
struct Spec {
    title: String,
    subtitle: Vec<String>,
    legend: Vec<(Vec<String>, String)>,
    groups: Vec<Group>,
    axis: Axis,
    footer: String,
}

/// How the groups' bars are scaled.
enum Axis {
    /// One axis for every group, whose bars compare across groups. A bar far longer than
    /// the rest (over 10x the median) is cut at the axis' end, with a break mark.
    Shared,
    /// Each group on its own axis, with its own tick labels: only bars within a group
    /// compare. Nothing is cut.
    PerGroup,
}

const WIDTH: f64 = 800.0;
/// Outer margin.
const PAD: f64 = 16.0;
const BAR_H: f64 = 16.0;
/// From one bar's top to the next one's.
const BAR_PITCH: f64 = 22.0;
/// A group heading's line.
const HEADING_H: f64 = 20.0;
/// Space after a group.
const GROUP_GAP: f64 = 12.0;
const FONT: &str = "-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";

/// Rough width of `text` at `size` px in a sans-serif font (no font metrics here): enough
/// to keep labels from running into each other or off the canvas.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.58
}

/// `text` escaped for SVG.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The label after a bar: "1.12 µs", with its note.
fn value_label(bar: &Bar) -> String {
    let value = if bar.us.is_finite() {
        format!("{} µs", num(bar.us))
    } else {
        "n/a".to_string()
    };
    if bar.note.is_empty() {
        value
    } else {
        format!("{value}  ·  {}", bar.note)
    }
}

/// A round step for about `parts` ticks up to `max`: 1, 2, 2.5 or 5 times a power of ten.
fn nice_step(max: f64, parts: f64) -> f64 {
    let raw = (max / parts).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A tick label: "0", "0.5", "2", "2.5", "10".
fn tick_label(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The axis' end: a round number at or above every value — but, with `cut_outliers`, the
/// values more than 10x the median, which are drawn cut.
fn axis_max(values: &[f64], cut_outliers: bool) -> f64 {
    let mut v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if v.is_empty() {
        return 1.0;
    }
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    let top = v
        .iter()
        .copied()
        .filter(|&x| !cut_outliers || x <= 10.0 * median)
        .fold(0.0, f64::max);
    let step = nice_step(top, 5.0);
    (top / step).ceil().max(1.0) * step
}

/// The chart as SVG text.
fn render(spec: &Spec) -> String {
    // Each group's axis end: the same for all (bars compare across groups; outliers are cut)
    // or its own (nothing cut).
    let values = |g: &Group| g.bars.iter().map(|b| b.us).collect::<Vec<_>>();
    let maxes: Vec<f64> = match spec.axis {
        Axis::Shared => {
            let all: Vec<f64> = spec.groups.iter().flat_map(values).collect();
            vec![axis_max(&all, true); spec.groups.len()]
        }
        Axis::PerGroup => spec
            .groups
            .iter()
            .map(|g| axis_max(&values(g), false))
            .collect(),
    };
    let bars = || {
        spec.groups
            .iter()
            .zip(&maxes)
            .flat_map(|(g, &max)| g.bars.iter().map(move |b| (b, max)))
    };

    // Left column: the bar labels, right-aligned against the bars.
    let label_w = bars()
        .map(|(b, _)| text_width(&b.label, 12.0))
        .fold(0.0, f64::max)
        .clamp(80.0, 300.0);
    let x0 = PAD + label_w + 10.0;
    // The bars' full length: as long as every value label still fits after its bar.
    let room = WIDTH - PAD - x0;
    let plot_w = bars()
        .map(|(b, max)| {
            let frac = if b.us.is_finite() {
                (b.us / max).min(1.0)
            } else {
                0.0
            };
            let label = 6.0 + text_width(&value_label(b), 12.0);
            if frac > 0.0 {
                (room - label) / frac
            } else {
                room
            }
        })
        .fold(room, f64::min)
        .max(200.0);
    let x = |us: f64, max: f64| x0 + plot_w * (us / max).min(1.0);

    let mut out = String::new();
    let mut y = PAD + 18.0;
    let _ = writeln!(
        out,
        r##"<text x="{PAD}" y="{y}" font-size="18" font-weight="bold" fill="#111">{}</text>"##,
        esc(&spec.title)
    );
    for line in &spec.subtitle {
        y += 18.0;
        let _ = writeln!(
            out,
            r##"<text x="{PAD}" y="{y}" font-size="12.5" fill="#444">{}</text>"##,
            esc(line)
        );
    }

    // Legend: swatches and text, left to right.
    y += 22.0;
    let mut lx = PAD;
    for (colors, text) in &spec.legend {
        for c in colors {
            let _ = writeln!(
                out,
                r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{c}"/>"#,
                y - 10.0
            );
            lx += 14.0;
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{y}" font-size="12" fill="#222">{}</text>"##,
            lx + 2.0,
            esc(text)
        );
        lx += 2.0 + text_width(text, 12.0) + 18.0;
    }

    // Groups: a heading, then the grid (behind the bars only, not across the heading), the
    // bars, and the tick labels (under each group on its own axis, else under the last).
    y += 12.0;
    let mut any_cut = false;
    for (n, (g, &max)) in spec.groups.iter().zip(&maxes).enumerate() {
        y += HEADING_H;
        let _ = writeln!(
            out,
            r##"<text x="{PAD}" y="{}" font-size="13" font-weight="bold" fill="#111">{}</text>"##,
            y - 6.0,
            esc(&g.heading)
        );
        let (top, bottom) = (
            y - 4.0,
            y + BAR_PITCH * (g.bars.len() - 1) as f64 + BAR_H + 4.0,
        );
        let step = nice_step(max, 5.0);
        let ticks: Vec<f64> = (0..=(max / step).round() as usize)
            .map(|i| step * i as f64)
            .collect();
        for (i, &v) in ticks.iter().enumerate() {
            let _ = writeln!(
                out,
                r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{bottom}" stroke="{}" stroke-width="1"/>"##,
                if i == 0 { "#9ca3af" } else { "#e5e7eb" },
                tx = x(v, max),
            );
        }
        for b in &g.bars {
            let mid = y + BAR_H / 2.0 + 4.0;
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{mid}" font-size="12" fill="#333" text-anchor="end">{}</text>"##,
                x0 - 8.0,
                esc(&b.label)
            );
            let end = if b.us.is_finite() && b.us > 0.0 {
                x(b.us, max)
            } else {
                x0
            };
            if end > x0 {
                let _ = writeln!(
                    out,
                    r#"<rect x="{x0}" y="{y}" width="{:.1}" height="{BAR_H}" fill="{}"/>"#,
                    end - x0,
                    b.color
                );
            }
            if b.us > max * 1.0001 {
                // Two white slashes near the end: the bar goes on past the axis.
                any_cut = true;
                for dx in [-22.0, -15.0] {
                    let _ = writeln!(
                        out,
                        r#"<path d="M{:.1} {} L{:.1} {}" stroke="white" stroke-width="2.5"/>"#,
                        end + dx - 3.0,
                        y + BAR_H + 2.0,
                        end + dx + 3.0,
                        y - 2.0
                    );
                }
            }
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{mid}" font-size="12" fill="#111">{}</text>"##,
                end + 6.0,
                esc(&value_label(b))
            );
            y += BAR_PITCH;
        }
        y = bottom;
        let last = n + 1 == spec.groups.len();
        if matches!(spec.axis, Axis::PerGroup) || last {
            y += 12.0;
            for &v in &ticks {
                let _ = writeln!(
                    out,
                    r##"<text x="{:.1}" y="{y}" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
                    x(v, max),
                    tick_label(v)
                );
            }
            y += 8.0;
        }
        y += GROUP_GAP;
    }

    y += 12.0;
    let axis_title = match spec.axis {
        Axis::PerGroup => "server time per operation, µs (each operation on its own axis)",
        Axis::Shared if any_cut => {
            "server time per operation, µs (a bar with // is cut: it goes on past the axis)"
        }
        Axis::Shared => "server time per operation, µs",
    };
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{y}" font-size="12" fill="#333" text-anchor="middle">{}</text>"##,
        x0 + plot_w / 2.0,
        esc(axis_title)
    );
    y += 24.0;
    let _ = writeln!(
        out,
        r##"<text x="{PAD}" y="{y}" font-size="10.5" fill="#777">{}</text>"##,
        esc(&spec.footer)
    );
    let height = (y + PAD).ceil();

    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"{FONT}\">\n\
         <title>{}</title>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{out}</svg>\n",
        esc(&spec.title)
    )
}
