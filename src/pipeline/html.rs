//! `slabflow report`: one self-contained HTML page of a run's ranking — the paper's Figure 4
//! (attention size of every case, grouped by dataset, the flagged ones marked) as inline SVG,
//! and the ranking table. No scripts, no external files: it opens anywhere, and prints.
//!
//! Invariants: every row of `ranking.csv` is one `<circle class="case">` in the plot and one
//! table row; text from the files is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One row of `ranking.csv`.
struct Row {
    rank: String,
    case_id: String,
    dataset: String,
    size: f64,
    flagged: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn read_ranking(path: &Path) -> Result<Vec<Row>, String> {
    let mut r = csv::Reader::from_path(path)
        .map_err(|e| format!("{}: {e} (run a pipeline with a rank stage first)", path.display()))?;
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
        let get = |i: usize| rec.get(i).unwrap_or_default().to_string();
        rows.push(Row {
            rank: get(0),
            case_id: get(1),
            dataset: get(2),
            size: get(3)
                .parse()
                .map_err(|_| format!("{}: attention_size {:?} is not a number", path.display(), get(3)))?,
            flagged: get(4) == "true",
        });
    }
    Ok(rows)
}

/// Figure 4: a strip per dataset, one dot per case at its attention size.
fn figure(rows: &[Row]) -> String {
    let mut groups: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        groups.entry(&r.dataset).or_default().push(r);
    }
    let (w_group, h, left, top, bottom) = (120.0, 360.0, 70.0, 20.0, 60.0);
    let width = left + w_group * groups.len().max(1) as f64 + 20.0;
    let max = rows.iter().map(|r| r.size).fold(0.0f64, f64::max).max(1e-12);
    let y = |v: f64| top + h - v / max * h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" role="img" aria-label="attention size per case, by dataset">"#,
        top + h + bottom
    );
    let _ = write!(svg, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="dimgray"/>"#, top + h);
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text><line x1="{left}" x2="{}" y1="{y2}" y2="{y2}" stroke="gainsboro"/>"#,
            left - 4.0,
            y(v) + 3.0,
            format_size(v),
            width - 20.0,
            y2 = y(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="14" y="{}" font-size="11" transform="rotate(-90 14 {})" text-anchor="middle">attention size</text>"#,
        top + h / 2.0,
        top + h / 2.0
    );
    for (g, (dataset, cases)) in groups.iter().enumerate() {
        let cx0 = left + w_group * g as f64 + w_group / 2.0;
        let _ = write!(
            svg,
            r#"<text x="{cx0}" y="{}" font-size="11" text-anchor="middle">{} ({})</text>"#,
            top + h + 18.0,
            esc(dataset),
            cases.len()
        );
        for (i, r) in cases.iter().enumerate() {
            // A fixed spread within the strip, so dots of equal size do not hide each other.
            let dx = ((i * 37) % 61) as f64 - 30.0;
            let (fill, radius) = if r.flagged { ("#d62728", 4.5) } else { ("#7f7f7f", 3.0) };
            let _ = write!(
                svg,
                r#"<circle class="case{}" data-case="{}" cx="{}" cy="{}" r="{radius}" fill="{fill}" fill-opacity="0.8"><title>{} ({}): {}</title></circle>"#,
                if r.flagged { " flagged" } else { "" },
                esc(&r.case_id),
                cx0 + dx,
                y(r.size),
                esc(&r.case_id),
                esc(dataset),
                format_size(r.size)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn format_size(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// Writes the report of the run in `out` to `file`; returns the number of cases shown.
pub fn write_report(out: &Path, file: &Path) -> Result<usize, String> {
    let rows = read_ranking(&out.join("ranking.csv"))?;
    let flagged = rows.iter().filter(|r| r.flagged).count();
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>slabflow report: {out}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.flagged td {{ background: #fdecea; }}
</style></head><body>
<h1>Attention ranking</h1>
<p>{n} cases from {out}; {flagged} flagged for revision (red). Attention size is the sum over classes of each
voxel's attention (inconsistency + uncertainty + overlap), as in Figure 4 of AbdomenAtlas-8K.</p>
<figure id="figure4">{svg}<figcaption>Attention size per case, by dataset; flagged cases in red.</figcaption></figure>
<h2>Ranking</h2>
<table id="ranking"><thead><tr><th>rank</th><th>case</th><th>dataset</th><th>attention size</th><th>flagged</th></tr></thead><tbody>
"#,
        out = esc(&crate::files::mirror::display(out)),
        n = rows.len(),
        svg = figure(&rows),
    );
    for r in &rows {
        let _ = writeln!(
            html,
            r#"<tr{}><td class="num">{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td></tr>"#,
            if r.flagged { r#" class="flagged""# } else { "" },
            esc(&r.rank),
            esc(&r.case_id),
            esc(&r.dataset),
            r.size,
            if r.flagged { "yes" } else { "" }
        );
    }
    html.push_str("</tbody></table></body></html>\n");
    crate::files::durable::write_atomic(file, html.as_bytes()).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(rows.len())
}
