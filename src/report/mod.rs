//! `slabflow report`: one self-contained HTML page of a run, for the people in the loop —
//! the run summarised (cases done and failed, the errors grouped, wall time, throughput, peak
//! memory against the limit, the pipeline and the version), the paper's Figure 4, a card per
//! flagged case (its top classes' axial and coronal slices where their attention peaks: CT,
//! heat overlay, consensus contour; `cards`), the metrics plotted per class (`plots`) and
//! the ranking.
//!
//! Invariants: the page has no scripts and no external files (pictures are PNG data URIs),
//! so it opens from a file anywhere and prints; every row of `ranking.csv` is one
//! `<circle class="case">` in Figure 4 and one table row, every flagged case one
//! `<article class="card">`; text from the files is escaped; the output is only read (the
//! page is written where asked). Memory: the tables' rows, and a few chunks per card.

mod cards;
mod format;
mod plots;
mod render;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use format::{bytes, duration, ml, percent, sig};
use plots::{Point, Ranked};

use crate::pipeline::config::Pipeline;

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A CSV of the output: its columns and its rows as read (one buffer per row).
#[derive(Default)]
struct Table {
    columns: csv::StringRecord,
    rows: Vec<csv::StringRecord>,
}

/// One row of a [`Table`], its fields by column name.
#[derive(Clone, Copy)]
struct Row<'a> {
    columns: &'a csv::StringRecord,
    cells: &'a csv::StringRecord,
}

impl<'a> Row<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.cells.get(self.columns.iter().position(|c| c == name)?)
    }

    fn num(&self, name: &str) -> Option<f64> {
        self.get(name)?.parse().ok()
    }
}

impl Table {
    /// The file at `path` (`None`: it is absent).
    fn read(path: &Path) -> Result<Option<Table>, String> {
        if !crate::files::mirror::exists(path).map_err(|e| format!("{}: {e}", path.display()))? {
            return Ok(None);
        }
        let err = |e: csv::Error| format!("{}: {e}", path.display());
        let mut r = csv::Reader::from_path(path).map_err(err)?;
        let columns = r.headers().map_err(err)?.clone();
        let rows = r.records().collect::<Result<Vec<_>, _>>().map_err(err)?;
        Ok(Some(Table { columns, rows }))
    }

    fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|cells| Row { columns: &self.columns, cells })
    }

    fn row(&self, i: usize) -> Row<'_> {
        Row { columns: &self.columns, cells: &self.rows[i] }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn read_ranking(out: &Path) -> Result<Vec<Ranked>, String> {
    let path = out.join("ranking.csv");
    let table = Table::read(&path)?
        .ok_or_else(|| format!("{}: not found (run a pipeline with a rank stage first)", path.display()))?;
    table
        .rows()
        .map(|r| {
            let get = |k: &str| r.get(k).unwrap_or_default().to_string();
            Ok(Ranked {
                rank: get("rank"),
                case_id: get("case_id"),
                dataset: get("dataset"),
                size: get("attention_size").parse().map_err(|_| {
                    format!("{}: attention_size {:?} is not a number", path.display(), get("attention_size"))
                })?,
                flagged: get("flagged") == "true",
            })
        })
        .collect()
}

/// What the page is made of, read from the output.
struct Inputs {
    ranking: Vec<Ranked>,
    metrics: Table,
    /// The rows of `metrics.csv` of each case.
    metrics_of: std::collections::HashMap<String, Vec<usize>>,
    failures: Table,
    worklist: Option<Table>,
    evaluation: Option<Table>,
    profile: Option<serde_json::Value>,
    /// The pipeline of the run (from its journal), when readable.
    pipeline: Result<Pipeline, String>,
    /// `review/` as the page links it: relative beside the output's tables, else absolute.
    review_prefix: String,
}

impl Inputs {
    /// The `metrics.csv` rows of `case`.
    fn metrics_of<'a>(&'a self, case: &str) -> impl Iterator<Item = Row<'a>> + 'a {
        self.metrics_of.get(case).into_iter().flatten().map(|&i| self.metrics.row(i))
    }
}

fn read_inputs(out: &Path, file: &Path) -> Result<Inputs, String> {
    let beside = file.parent().is_some_and(|d| d == out || d.canonicalize().ok() == out.canonicalize().ok());
    let review_prefix = if beside {
        "review/".to_string()
    } else {
        let abs = std::path::absolute(out).unwrap_or_else(|_| out.to_owned());
        format!("{}/", crate::files::mirror::display(&abs.join("review")))
    };
    let profile =
        crate::files::mirror::read(&out.join("profile.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let pipeline = match crate::checkpoint::Manifest::read(out) {
        Ok(Some(m)) => Pipeline::saved_in(&m, out).map_err(|e| e.to_string()),
        Ok(None) => Err(format!("{}: no run journal", out.display())),
        Err(e) => Err(e.to_string()),
    };
    let metrics = Table::read(&out.join("metrics.csv"))?.unwrap_or_default();
    let mut metrics_of: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for (i, r) in metrics.rows().enumerate() {
        metrics_of.entry(r.get("case_id").unwrap_or_default().to_string()).or_default().push(i);
    }
    Ok(Inputs {
        ranking: read_ranking(out)?,
        metrics,
        metrics_of,
        failures: Table::read(&out.join("failures.csv"))?.unwrap_or_default(),
        worklist: Table::read(&out.join("worklist.csv"))?,
        evaluation: Table::read(&out.join("evaluation_summary.csv"))?,
        profile,
        pipeline,
        review_prefix,
    })
}

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td { background: #fdecea; }
figure { margin: 0.8em 0; }
svg { max-width: 100%; height: auto; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 12px; }
code { font-size: 12px; overflow-wrap: anywhere; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; margin: 1em 0; break-inside: avoid; }
.card h3 { margin: 0.2em 0 0.5em; }
.views { display: flex; flex-wrap: wrap; gap: 1.2em; }
.class { flex: 0 1 auto; }
.pair { display: flex; gap: 0.6em; align-items: flex-start; }
.view { position: relative; display: inline-block; margin: 14px 14px 18px; }
.view img { display: block; image-rendering: pixelated; }
.edge { position: absolute; font: bold 11px system-ui, sans-serif; color: #444; }
.edge.l { left: -12px; top: 50%; } .edge.r { right: -12px; top: 50%; }
.edge.t { top: -14px; left: 50%; } .edge.b { bottom: -14px; left: 50%; }
.bar { position: absolute; left: 6px; bottom: 6px; height: 3px; background: white; box-shadow: 0 0 0 1px black; }
.barlabel { position: absolute; left: 6px; bottom: 11px; font-size: 10px; color: white; text-shadow: 0 0 2px black; }
.caption { font-size: 11px; color: #555; max-width: 270px; }
.note { color: #666; font-size: 13px; }
@media print { .card { page-break-inside: avoid; } body { max-width: none; } }
"#;

/// Writes the report of the run in `out` to `file`; returns the number of cases shown.
pub fn write_report(out: &Path, file: &Path) -> Result<usize, String> {
    let inputs = read_inputs(out, file)?;
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>slabflow report: {out}</title>
<style>{STYLE}</style></head><body>
<h1>slabflow report</h1>
<p class="note">{out} — made by slabflow {version}.</p>
"#,
        out = esc(&crate::files::mirror::display(out)),
        version = env!("CARGO_PKG_VERSION"),
    );
    summary(&mut html, &inputs);
    figure(&mut html, &inputs.ranking);
    cards_section(&mut html, out, &inputs);
    metrics_section(&mut html, &inputs);
    ranking_table(&mut html, &inputs.ranking);
    html.push_str("</body></html>\n");
    crate::files::durable::write_atomic(file, html.as_bytes()).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(inputs.ranking.len())
}

/// `error` with each whole occurrence of `id` (not inside a longer name) as `{case}`.
fn without_id(error: &str, id: &str) -> String {
    if id.is_empty() {
        return error.to_string();
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::new();
    let mut rest = error;
    while let Some(at) = rest.find(id) {
        let (before, after) = (rest[..at].chars().next_back(), rest[at + id.len()..].chars().next());
        out.push_str(&rest[..at]);
        out.push_str(if word(before) || word(after) { id } else { "{case}" });
        rest = &rest[at + id.len()..];
    }
    out.push_str(rest);
    out
}

/// The run summarised: counts, errors grouped, time, memory, the pipeline.
fn summary(html: &mut String, inputs: &Inputs) {
    let (done, failed) = (inputs.ranking.len(), inputs.failures.rows.len());
    let flagged = inputs.ranking.iter().filter(|r| r.flagged).count();
    let _ = write!(
        html,
        r#"<h2 id="summary">Run summary</h2><table class="summary"><tbody>
<tr><th>cases</th><td>{} done, {} failed ({} of {})</td></tr>
<tr><th>flagged for revision</th><td>{flagged} ({})</td></tr>
"#,
        done,
        failed,
        percent(failed as f64, (done + failed) as f64),
        done + failed,
        percent(flagged as f64, done as f64)
    );
    if inputs.profile.is_none() {
        html.push_str(
            r#"<tr><th>last run</th><td class="note">no profile.json: a sharded run (each shard's log has its figures) or a rerun that computed nothing</td></tr>"#,
        );
    }
    if let Some(p) = &inputs.profile {
        let f = |k: &str| p.get(k).and_then(|v| v.as_f64());
        if let (Some(wall), Some(cases)) = (f("wall_s"), f("cases")) {
            let rate =
                if wall > 0.0 { format!("{} cases per hour", sig(cases / wall * 3600.0, 3)) } else { "–".into() };
            let _ = write!(
                html,
                "<tr><th>last run</th><td>{} cases computed in {} ({rate})</td></tr>",
                cases as u64,
                duration(wall)
            );
        }
        if let (Some(peak), Some(limit)) = (f("peak_rss_bytes"), f("memory_limit_bytes")) {
            let _ = write!(
                html,
                "<tr><th>peak memory</th><td>{} of the {} limit ({})</td></tr>",
                bytes(peak),
                bytes(limit),
                percent(peak, limit)
            );
        }
        if let Some(b) = p.get("bound_by").and_then(|v| v.as_str()) {
            let why = p.get("why").and_then(|v| v.as_str()).unwrap_or("");
            let _ = write!(html, "<tr><th>bound by</th><td>{} ({})</td></tr>", esc(b), esc(why));
        }
        if let Some(v) = p.get("slabflow").and_then(|v| v.as_str()) {
            let _ = write!(html, "<tr><th>run by</th><td>slabflow {}</td></tr>", esc(v));
        }
    }
    html.push_str("</tbody></table>\n");
    if failed > 0 {
        // Errors grouped by their text with the case's id taken out.
        let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in inputs.failures.rows() {
            let (id, error) = (r.get("case_id").unwrap_or_default(), r.get("error").unwrap_or_default());
            let key = without_id(error, id);
            groups.entry(key).or_default().push(id);
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        html.push_str(r#"<h3>Failures, grouped</h3><table id="failures"><thead><tr><th>cases</th><th>error</th><th>which</th></tr></thead><tbody>"#);
        for (error, ids) in &groups {
            let shown: Vec<String> = ids.iter().take(5).map(|s| esc(s)).collect();
            let more = if ids.len() > 5 { format!(" and {} more", ids.len() - 5) } else { String::new() };
            let _ = write!(
                html,
                r#"<tr><td class="num">{}</td><td><code>{}</code></td><td>{}{more}</td></tr>"#,
                ids.len(),
                esc(error),
                shown.join(", ")
            );
        }
        html.push_str("</tbody></table>\n");
    }
    match &inputs.pipeline {
        Ok(p) => {
            let _ = writeln!(
                html,
                "<details open><summary>The pipeline that ran</summary><pre>{}</pre></details>",
                esc(&p.text)
            );
        }
        Err(e) => {
            let _ = write!(html, r#"<p class="note">The pipeline is not shown: {}</p>"#, esc(e));
        }
    }
}

fn figure(html: &mut String, rows: &[Ranked]) {
    let _ = write!(
        html,
        r#"<h2 id="ranking-figure">Attention by dataset</h2>
<p>Attention size is the sum over classes of each voxel's attention (inconsistency + uncertainty + overlap), as in
Figure 4 of AbdomenAtlas-8K; the {} flagged cases in red.</p>
<figure id="figure4">{}<figcaption>Attention size per case, by dataset (cases per dataset in brackets).</figcaption></figure>
"#,
        rows.iter().filter(|r| r.flagged).count(),
        plots::figure4(rows)
    );
}

/// The classes a card shows for `case`: the worklist's, else those with attention, most first
/// (at most three), each with its peak (z, y) when `metrics.csv` has one.
fn top_classes(inputs: &Inputs, case: &str) -> Vec<(String, Option<(usize, usize)>)> {
    let peak = |class: &str| {
        let r = inputs.metrics_of(case).find(|r| r.get("class") == Some(class))?;
        Some((r.num("attention_peak_z")? as usize, r.num("attention_peak_y")? as usize))
    };
    let listed = inputs.worklist.as_ref().and_then(|w| {
        let r = w.rows().find(|r| r.get("case_id") == Some(case))?;
        Some(r.get("classes")?.split(';').filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>())
    });
    let classes = listed.unwrap_or_else(|| {
        let mut with: Vec<(&str, f64)> = inputs
            .metrics_of(case)
            .filter_map(|r| Some((r.get("class")?, r.num("attention_sum")?)))
            .filter(|(_, a)| *a > 0.0)
            .collect();
        with.sort_by(|a, b| b.1.total_cmp(&a.1));
        with.into_iter().take(3).map(|(c, _)| c.to_string()).collect()
    });
    classes.into_iter().map(|c| (c.clone(), peak(&c))).collect()
}

/// One picture with its orientation letters and scale bar (`data-*`: which it is, for tests
/// and scripts).
fn view(html: &mut String, case: &str, class: &str, plane: &str, what: &str, p: &render::Picture) {
    use base64::Engine as _;
    // A scale bar of a round length near a quarter of the width.
    let quarter = p.width as f64 * p.mm_per_px / 4.0;
    let mm = [5.0, 10.0, 20.0, 50.0, 100.0, 200.0].into_iter().rev().find(|&m| m <= quarter).unwrap_or(5.0);
    let [l, r, t, b] = p.edges;
    let _ = write!(
        html,
        r#"<figure class="view-figure"><div class="view" style="width:{w}px;height:{h}px"><img class="slice" data-case="{case}" data-class="{class}" data-view="{plane}" alt="{alt}" width="{w}" height="{h}" decoding="async" src="data:image/png;base64,{png}"><span class="edge l">{l}</span><span class="edge r">{r}</span><span class="edge t">{t}</span><span class="edge b">{b}</span><div class="bar" style="width:{bar:.0}px"></div><span class="barlabel">{mm} mm</span></div><figcaption class="caption">{what}{none}</figcaption></figure>"#,
        w = p.width,
        h = p.height,
        alt = esc(what),
        case = esc(case),
        class = esc(class),
        plane = plane,
        png = base64::engine::general_purpose::STANDARD.encode(&p.png),
        bar = mm / p.mm_per_px,
        what = esc(what),
        none = match (p.map, p.attention) {
            (false, _) => " (no attention map written)",
            (true, false) => " (no attention in this slice)",
            (true, true) => "",
        },
    );
}

fn cards_section(html: &mut String, out: &Path, inputs: &Inputs) {
    let flagged: Vec<&Ranked> = inputs.ranking.iter().filter(|r| r.flagged).collect();
    let _ = write!(
        html,
        r#"<h2 id="cards">Flagged cases</h2>
<p>For each flagged case and its top classes: the axial and the coronal slice where the class's attention is largest.
CT in the abdominal window ({} to {} HU), the attention as a heat overlay (scaled to its maximum in the slice), the
consensus pseudo label (mean p &gt; 0.5) as a cyan contour. Radiological convention: the patient's right on the
image's left; the letters at the edges come from the CT's affine.</p>
"#,
        render::WINDOW.0,
        render::WINDOW.1
    );
    let pipeline = match &inputs.pipeline {
        Ok(p) => p,
        Err(e) => {
            let _ = write!(html, r#"<p class="note">No pictures: {}</p>"#, esc(e));
            return;
        }
    };
    let total: f64 = inputs.ranking.iter().map(|r| r.size).sum();
    // Cards in parallel (each reads a few chunks at a time), then in ranking order.
    use rayon::prelude::*;
    let cards: Vec<String> = flagged.par_iter().map(|r| card(out, inputs, pipeline, r, total)).collect();
    for c in cards {
        html.push_str(&c);
    }
}

/// The card of flagged case `r`.
fn card(out: &Path, inputs: &Inputs, pipeline: &Pipeline, r: &Ranked, total: f64) -> String {
    let mut page = String::new();
    let html = &mut page;
    let _ = write!(
        html,
        r#"<article class="card" id="case-{id}"><h3>#{rank} {id} <span class="note">({dataset}) — attention size {size}, {share} of all cases' attention</span></h3>"#,
        id = esc(&r.case_id),
        rank = esc(&r.rank),
        dataset = esc(&r.dataset),
        size = sig(r.size, 4),
        share = percent(r.size, total)
    );
    let classes = top_classes(inputs, &r.case_id);
    let with_peak: Vec<(usize, usize, usize)> = classes
        .iter()
        .filter_map(|(c, p)| {
            let (z, y) = (*p)?;
            Some((pipeline.input.classes.iter().position(|k| k == c)?, z, y))
        })
        .collect();
    if with_peak.len() < classes.len() {
        let _ = write!(
            html,
            r#"<p class="note">No peak recorded for {}: metrics.csv has no attention_peak columns for them (made before slabflow recorded peaks; rerun with --fresh to show them).</p>"#,
            classes.iter().filter(|(_, p)| p.is_none()).map(|(c, _)| esc(c)).collect::<Vec<_>>().join(", ")
        );
    }
    match cards::case_views(out, &pipeline.input, &r.case_id, &with_peak) {
        Ok(views) => {
            html.push_str(r#"<div class="views">"#);
            for v in &views {
                let volume = inputs
                    .metrics_of(&r.case_id)
                    .find(|m| m.get("class") == Some(v.class.as_str()))
                    .and_then(|m| m.num("volume_ml"))
                    .map_or(String::new(), |v| format!(r#" <span class="note">consensus {}</span>"#, ml(v)));
                let _ = write!(html, r#"<section class="class"><h4>{}{volume}</h4><div class="pair">"#, esc(&v.class));
                view(html, &r.case_id, &v.class, "axial", &v.axial.0, &v.axial.1);
                view(html, &r.case_id, &v.class, "coronal", &v.coronal.0, &v.coronal.1);
                html.push_str("</div></section>");
            }
            html.push_str("</div>");
        }
        Err(e) => {
            let _ = write!(html, r#"<p class="note">The pictures could not be made: {}</p>"#, esc(&e));
        }
    }
    review_links(html, out, &inputs.review_prefix, pipeline, r, &classes);
    html.push_str("</article>\n");
    page
}

/// A path as a shell word: quoted unless it is made of safe characters only.
fn shell(path: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c);
    if !path.is_empty() && path.chars().all(safe) {
        path.to_string()
    } else {
        format!("'{}'", path.replace('\'', r"'\''"))
    }
}

/// A path as a URL path: `%`, `#`, `?`, spaces and quotes percent-encoded.
fn url_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        match b {
            b'%' | b'#' | b'?' | b' ' | b'"' | b'\'' | b'<' | b'>' => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// Links to the case's review files and the commands that open them. `prefix`: the review
/// folder as seen from the page.
fn review_links(
    html: &mut String,
    out: &Path,
    prefix: &str,
    p: &Pipeline,
    case: &Ranked,
    classes: &[(String, Option<(usize, usize)>)],
) {
    let dir = out.join("review").join(&case.case_id);
    let exists = |f: &str| crate::files::mirror::exists(&dir.join(f)).unwrap_or(false);
    if !exists("pseudo_labels.nii.gz") {
        html.push_str(r#"<p class="note">No review files (add a review stage to export them).</p>"#);
        return;
    }
    let bindings = [("case".to_string(), case.case_id.clone()), ("dataset".to_string(), case.dataset.clone())]
        .into_iter()
        .collect();
    let t = &p.input.templates.ct;
    let ct = t.find(&p.input.root, &bindings).unwrap_or_else(|| t.fill(&p.input.root, &bindings));
    // The attention heatmaps of the classes shown (none when the maps were not written).
    let files: Vec<String> = std::iter::once("pseudo_labels.nii.gz".to_string())
        .chain(classes.iter().map(|(c, _)| format!("attention_{c}.nii.gz")).filter(|f| exists(f)))
        .collect();
    let links: Vec<String> = files
        .iter()
        .map(|f| format!(r#"<a href="{}">{}</a>"#, esc(&url_path(&format!("{prefix}{}/{f}", case.case_id))), esc(f)))
        .collect();
    let shown = crate::files::mirror::display(&dir);
    let seg = shell(&format!("{shown}/pseudo_labels.nii.gz"));
    let overlay = files.get(1).map(|f| shell(&format!("{shown}/{f}")));
    let ct = shell(&ct.display().to_string());
    let itk = match &overlay {
        Some(o) => format!("itksnap -g {ct} -s {seg} -o {o}"),
        None => format!("itksnap -g {ct} -s {seg}"),
    };
    let slicer = match &overlay {
        Some(o) => format!("Slicer {ct} {seg} {o}"),
        None => format!("Slicer {ct} {seg}"),
    };
    let _ = write!(
        html,
        r#"<p>Review files: {}.<br>ITK-SNAP (the labels as a segmentation, the heatmap as an overlay): <code>{}</code><br>3D Slicer (each file as a volume): <code>{}</code></p>"#,
        links.join(", "),
        esc(&itk),
        esc(&slicer),
    );
}

/// Per class: Dice and NSD against the labels, each model's volume against the consensus,
/// the models' agreement; the evaluate stage's table when present.
fn metrics_section(html: &mut String, inputs: &Inputs) {
    if inputs.metrics.is_empty() {
        return;
    }
    html.push_str(r#"<h2 id="metrics">Metrics per class</h2>"#);
    let flagged: std::collections::BTreeSet<&str> =
        inputs.ranking.iter().filter(|r| r.flagged).map(|r| r.case_id.as_str()).collect();
    let mut classes: Vec<String> = Vec::new();
    for r in inputs.metrics.rows() {
        if let Some(c) = r.get("class")
            && !classes.iter().any(|k| k == c)
        {
            classes.push(c.to_string());
        }
    }
    let strip = |value: &dyn Fn(Row) -> Option<f64>| -> Vec<(String, Vec<Point>)> {
        classes
            .iter()
            .map(|c| {
                let points = inputs
                    .metrics
                    .rows()
                    .filter(|r| r.get("class") == Some(c.as_str()))
                    .filter_map(|r| {
                        let id = r.get("case_id")?;
                        Some(Point { case_id: id, value: value(r)?, flagged: flagged.contains(id) })
                    })
                    .collect();
                (c.clone(), points)
            })
            .collect()
    };
    for (key, label, what) in [
        ("dice", "Dice", "Dice of the consensus against the original labels"),
        ("nsd", "NSD", "Normalised surface Dice of the consensus against the original labels"),
    ] {
        let s = strip(&|r| r.num(key));
        if s.iter().all(|(_, p)| p.is_empty()) {
            let _ = write!(html, r#"<p class="note">No {label}: no case has original labels.</p>"#);
            continue;
        }
        let _ = write!(
            html,
            r#"<figure id="plot-{key}">{}<figcaption>{what}, one dot per case (flagged in red), the median as a bar.</figcaption></figure>"#,
            plots::strips(label, &s, 0.0, 1.0, None)
        );
    }
    // Each model's volume against the consensus volume.
    let models: Vec<String> =
        inputs.metrics.columns.iter().filter_map(|k| k.strip_prefix("volume_ml_").map(String::from)).collect();
    for m in &models {
        let key = format!("volume_ml_{m}");
        let s = strip(&|r| {
            let (v, c) = (r.num(&key)?, r.num("volume_ml")?);
            (c > 0.0).then(|| v / c)
        });
        let _ = write!(
            html,
            r#"<figure id="plot-volume-{}">{}<figcaption>{}'s volume over the consensus volume (1 = the same; shown from 0 to 2, beyond at the edge).</figcaption></figure>"#,
            esc(m),
            plots::strips(&format!("{m} / consensus"), &s, 0.0, 2.0, Some(1.0)),
            esc(m)
        );
    }
    // Agreement between the models: mean Dice per class and pair (the columns' order).
    let pairs: Vec<(String, String)> = crate::stages::metrics::model_pairs(models.len())
        .into_iter()
        .map(|(a, b)| (format!("dice_{}_{}", models[a], models[b]), format!("{} · {}", models[a], models[b])))
        .filter(|(k, _)| inputs.metrics.columns.iter().any(|c| c == k))
        .collect();
    if !pairs.is_empty() {
        let cells: Vec<Vec<Option<f64>>> = classes
            .iter()
            .map(|c| {
                pairs
                    .iter()
                    .map(|(p, _)| {
                        let v: Vec<f64> = inputs
                            .metrics
                            .rows()
                            .filter(|r| r.get("class") == Some(c.as_str()))
                            .filter_map(|r| r.num(p))
                            .collect();
                        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                    })
                    .collect()
            })
            .collect();
        let names: Vec<String> = pairs.iter().map(|(_, n)| n.clone()).collect();
        let _ = write!(
            html,
            r#"<figure id="plot-agreement">{}<figcaption>Mean Dice between two models' masks (p &gt; 0.5), per class and pair of models (Figure 8a of the paper).</figcaption></figure>"#,
            plots::heatmap(&classes, &names, &cells)
        );
    }
    if let Some(table) = &inputs.evaluation
        && !table.is_empty()
    {
        let cols = &table.columns;
        html.push_str(r#"<h3>Attention against the errors (evaluate stage, Table 1 of the paper)</h3><table id="evaluation"><thead><tr>"#);
        for c in cols {
            let _ = write!(html, "<th>{}</th>", esc(c));
        }
        html.push_str("</tr></thead><tbody>");
        for r in table.rows() {
            html.push_str("<tr>");
            for c in cols {
                let v = r.get(c).unwrap_or_default();
                match v.parse::<f64>() {
                    Ok(x) => {
                        let _ = write!(html, r#"<td class="num">{}</td>"#, sig(x, 4));
                    }
                    Err(_) => {
                        let _ = write!(html, "<td>{}</td>", esc(v));
                    }
                }
            }
            html.push_str("</tr>");
        }
        html.push_str("</tbody></table>\n");
    }
}

fn ranking_table(html: &mut String, rows: &[Ranked]) {
    let total: f64 = rows.iter().map(|r| r.size).sum();
    html.push_str(
        r#"<h2 id="ranking-table">Ranking</h2>
<table id="ranking"><thead><tr><th>rank</th><th>case</th><th>dataset</th><th>attention size</th><th>share</th><th>flagged</th></tr></thead><tbody>
"#,
    );
    for r in rows {
        let id = esc(&r.case_id);
        let case = if r.flagged { format!(r##"<a href="#case-{id}">{id}</a>"##) } else { id };
        let _ = writeln!(
            html,
            r#"<tr{}><td class="num">{}</td><td>{case}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td></tr>"#,
            if r.flagged { r#" class="flagged""# } else { "" },
            esc(&r.rank),
            esc(&r.dataset),
            sig(r.size, 4),
            percent(r.size, total),
            if r.flagged { "yes" } else { "" }
        );
    }
    html.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_group_without_their_case_and_paths_quote() {
        assert_eq!(
            without_id("case_1/ct.nii.gz of case_1: truncated", "case_1"),
            "{case}/ct.nii.gz of {case}: truncated"
        );
        assert_eq!(without_id("case_10 and case_1", "case_1"), "case_10 and {case}");
        assert_eq!(shell("/data/a b/ct.nii.gz"), "'/data/a b/ct.nii.gz'");
        assert_eq!(shell("/data/ab/ct.nii.gz"), "/data/ab/ct.nii.gz");
        assert_eq!(shell("it's"), r"'it'\''s'");
        assert_eq!(url_path("review/a#1/x.nii.gz"), "review/a%231/x.nii.gz");
    }
}
