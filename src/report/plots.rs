//! The report's plots, as inline SVG written here (no plotting crate writes small static SVG
//! without a browser or a font stack): the paper's Figure 4 (attention size per case, by
//! dataset), strip plots of a value per class (Dice, NSD, model volume against consensus) and
//! the class × model-pair agreement heatmap (the paper's Figure 8a).
//!
//! Invariants: every point is one SVG element with a `<title>` naming its case, so a plot is
//! readable without scripts and checkable by its element counts; text is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::esc;
use super::format::sig;

/// One case of the ranking.
pub struct Ranked {
    pub rank: String,
    pub case_id: String,
    pub dataset: String,
    pub size: f64,
    pub flagged: bool,
}

/// Figure 4: a strip per dataset, one dot per case at its attention size.
pub fn figure4(rows: &[Ranked]) -> String {
    let mut groups: BTreeMap<&str, Vec<&Ranked>> = BTreeMap::new();
    for r in rows {
        groups.entry(&r.dataset).or_default().push(r);
    }
    let (w_group, h, left, top, bottom) = (120.0, 300.0, 70.0, 20.0, 40.0);
    let width = left + w_group * groups.len().max(1) as f64 + 20.0;
    let max = rows.iter().map(|r| r.size).fold(0.0f64, f64::max).max(1e-12);
    let y = |v: f64| top + h - v / max * h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {}" width="{width}" role="img" aria-label="attention size per case, by dataset">"#,
        top + h + bottom
    );
    axis(&mut svg, left, top, h, width - 20.0, max, "attention size", y);
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
                r#"<circle class="case{}" data-case="{}" cx="{:.1}" cy="{:.1}" r="{radius}" fill="{fill}" fill-opacity="0.8"><title>{} ({}): {}</title></circle>"#,
                if r.flagged { " flagged" } else { "" },
                esc(&r.case_id),
                cx0 + dx,
                y(r.size),
                esc(&r.case_id),
                esc(dataset),
                sig(r.size, 4)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A vertical axis at `left` from `top` down `h`, five ticks up to `max`, grid lines to
/// `right`, and its label.
#[allow(clippy::too_many_arguments)]
fn axis(svg: &mut String, left: f64, top: f64, h: f64, right: f64, max: f64, label: &str, y: impl Fn(f64) -> f64) {
    let _ = write!(svg, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="dimgray"/>"#, top + h);
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" font-size="10" text-anchor="end">{}</text><line x1="{left}" x2="{right}" y1="{y2:.1}" y2="{y2:.1}" stroke="gainsboro"/>"#,
            left - 4.0,
            y(v) + 3.0,
            sig(v, 3),
            y2 = y(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="14" y="{}" font-size="11" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        top + h / 2.0,
        top + h / 2.0,
        esc(label)
    );
}

/// One value of one case in a strip plot.
pub struct Point<'a> {
    pub case_id: &'a str,
    pub value: f64,
    pub flagged: bool,
}

/// A strip per class (`strips`: class name and its points) on a shared axis from `lo` to `hi`
/// (values outside are drawn at the edge), with each class's median as a bar. `reference`:
/// a value drawn as a dashed line (1 for a ratio). A class of more than `DOTS` cases is drawn
/// as a box (quartiles, whiskers at the 5th and 95th percentiles) with the flagged cases and
/// at most `OUTLIERS` of the others beyond the whiskers as dots: the page stays small for a
/// whole corpus.
pub fn strips(label: &str, strips: &[(String, Vec<Point>)], lo: f64, hi: f64, reference: Option<f64>) -> String {
    let (w_strip, h, left, top, bottom) = (76.0, 200.0, 70.0, 12.0, 70.0);
    let width = left + w_strip * strips.len().max(1) as f64 + 10.0;
    let span = (hi - lo).max(1e-12);
    let y = |v: f64| top + h - ((v.clamp(lo, hi) - lo) / span) * h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {}" width="{width}" role="img" aria-label="{} per class">"#,
        top + h + bottom,
        esc(label)
    );
    // The axis, from lo.
    let _ = write!(svg, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="dimgray"/>"#, top + h);
    for k in 0..=4 {
        let v = lo + span * k as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" font-size="10" text-anchor="end">{}</text><line x1="{left}" x2="{}" y1="{y2:.1}" y2="{y2:.1}" stroke="gainsboro"/>"#,
            left - 4.0,
            y(v) + 3.0,
            sig(v, 3),
            width - 10.0,
            y2 = y(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="14" y="{}" font-size="11" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        top + h / 2.0,
        top + h / 2.0,
        esc(label)
    );
    if let Some(r) = reference {
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="4 3"/>"##,
            width - 10.0,
            y = y(r)
        );
    }
    for (s, (class, points)) in strips.iter().enumerate() {
        let cx = left + w_strip * s as f64 + w_strip / 2.0;
        let _ = write!(
            svg,
            r#"<text x="{cx}" y="{}" font-size="10" text-anchor="end" transform="rotate(-35 {cx} {})">{} ({})</text>"#,
            top + h + 14.0,
            top + h + 14.0,
            esc(class),
            points.len()
        );
        let values: Vec<f64> = points.iter().map(|p| p.value).collect();
        let shown: Vec<&Point> = if points.len() <= DOTS {
            points.iter().collect()
        } else {
            let (p5, q1, q3, p95) =
                (quantile(&values, 0.05), quantile(&values, 0.25), quantile(&values, 0.75), quantile(&values, 0.95));
            let _ = write!(
                svg,
                r##"<rect class="box" x="{}" y="{:.1}" width="44" height="{:.1}" fill="#dbe8f4" stroke="#1f77b4"><title>{}: quartiles {} to {}</title></rect><line x1="{cx}" x2="{cx}" y1="{:.1}" y2="{:.1}" stroke="#1f77b4"/><line x1="{cx}" x2="{cx}" y1="{:.1}" y2="{:.1}" stroke="#1f77b4"/>"##,
                cx - 22.0,
                y(q3),
                (y(q1) - y(q3)).max(0.5),
                esc(class),
                sig(q1, 4),
                sig(q3, 4),
                y(q3),
                y(p95),
                y(q1),
                y(p5),
            );
            let mut beyond: Vec<&Point> = points.iter().filter(|p| p.value < p5 || p.value > p95).collect();
            beyond.sort_by(|a, b| {
                (a.value - q1.midpoint(q3)).abs().total_cmp(&(b.value - q1.midpoint(q3)).abs()).reverse()
            });
            let flagged = points.iter().filter(|p| p.flagged);
            flagged.chain(beyond.into_iter().filter(|p| !p.flagged).take(OUTLIERS)).collect()
        };
        for (i, p) in shown.iter().enumerate() {
            let dx = ((i * 37) % 41) as f64 - 20.0;
            let (fill, radius) = if p.flagged { ("#d62728", 3.0) } else { ("#1f77b4", 2.2) };
            let _ = write!(
                svg,
                r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="{radius}" fill="{fill}" fill-opacity="0.6"><title>{}: {}</title></circle>"#,
                cx + dx,
                y(p.value),
                esc(p.case_id),
                sig(p.value, 4)
            );
        }
        if let Some(m) = median(values) {
            let _ = write!(
                svg,
                r#"<line class="median" x1="{}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="black" stroke-width="2"><title>{} median: {}</title></line>"#,
                cx - 26.0,
                cx + 26.0,
                esc(class),
                sig(m, 4),
                y = y(m)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Classes of more cases than this are drawn as boxes.
const DOTS: usize = 200;
/// Dots beyond a box's whiskers drawn at most (besides the flagged cases).
const OUTLIERS: usize = 20;

/// The `q` quantile of `v` (linear between order statistics, as numpy's default).
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let at = q * (s.len() - 1) as f64;
    let (i, f) = (at.floor() as usize, at - at.floor());
    if i + 1 < s.len() { s[i] + (s[i + 1] - s[i]) * f } else { s[i] }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// The class × model-pair heatmap of the mean Dice between two models' masks (the paper's
/// Figure 8a): `cells[class][pair]` is `Some(mean)` where any case had either mask.
pub fn heatmap(classes: &[String], pairs: &[String], cells: &[Vec<Option<f64>>]) -> String {
    let (cw, ch, left, top) = (92.0, 22.0, 110.0, 30.0);
    let width = left + cw * pairs.len() as f64 + 10.0;
    let height = top + ch * classes.len() as f64 + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" role="img" aria-label="mean Dice between models, per class and pair">"#
    );
    for (j, p) in pairs.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            left + cw * j as f64 + cw / 2.0,
            top - 8.0,
            esc(p)
        );
    }
    for (i, class) in classes.iter().enumerate() {
        let y0 = top + ch * i as f64;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
            left - 6.0,
            y0 + ch / 2.0 + 4.0,
            esc(class)
        );
        for (j, v) in cells[i].iter().enumerate() {
            let x0 = left + cw * j as f64;
            // White (0) to dark blue (1); the text turns white on dark cells.
            let (fill, text, label) = match v {
                Some(v) => {
                    let t = v.clamp(0.0, 1.0);
                    let c = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
                    (
                        format!("rgb({},{},{})", c(255.0, 8.0), c(255.0, 48.0), c(255.0, 107.0)),
                        if t > 0.6 { "white" } else { "black" },
                        sig(*v, 3),
                    )
                }
                None => ("#f2f2f2".to_string(), "gray", "–".to_string()),
            };
            let _ = write!(
                svg,
                r#"<rect class="cell" x="{x0}" y="{y0}" width="{}" height="{}" fill="{fill}" stroke="white"/><text x="{}" y="{}" font-size="11" text-anchor="middle" fill="{text}">{label}</text>"#,
                cw - 1.0,
                ch - 1.0,
                x0 + cw / 2.0,
                y0 + ch / 2.0 + 4.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.25), 1.75, "numpy.quantile([1, 2, 3, 4], 0.25)");
    }
}
