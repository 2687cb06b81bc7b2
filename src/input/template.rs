//! Path templates with `{case}`, `{dataset}`, `{model}`, `{class}` placeholders.
//!
//! A template is split into `/`-separated components; discovery walks the directory tree one
//! component at a time, matching each entry name against the component's literal pieces and
//! placeholders (a placeholder matches one or more characters, never `/`; a placeholder used
//! twice must bind the same value). A template ending in `.nii.gz` also matches `.nii`. Under an
//! `s3://` root the walk goes through the bucket's listing ([`crate::files::objects`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::files::objects::{is_dir, is_file, read_dir};

pub const PLACEHOLDERS: &[&str] = &["case", "dataset", "model", "class"];

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Var(String),
}

#[derive(Debug, Clone, Default)]
pub struct Template {
    raw: String,
    components: Vec<Vec<Piece>>,
}

pub type Bindings = BTreeMap<String, String>;

impl Template {
    pub fn parse(raw: &str) -> Result<Template, String> {
        if raw.is_empty() {
            return Err("the template is empty".into());
        }
        if raw.starts_with('/') {
            return Err(format!("'{raw}' is absolute; templates are relative to [input] root"));
        }
        let mut components = Vec::new();
        for comp in raw.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(format!("'{raw}' has an empty, '.' or '..' path component"));
            }
            let mut pieces = Vec::new();
            let mut rest = comp;
            while let Some(open) = rest.find('{') {
                if open > 0 {
                    pieces.push(Piece::Lit(rest[..open].to_string()));
                }
                let close = rest[open..].find('}').ok_or_else(|| format!("'{raw}' has an unclosed '{{'"))? + open;
                let name = &rest[open + 1..close];
                if !PLACEHOLDERS.contains(&name) {
                    return Err(format!(
                        "'{raw}' uses {{{name}}}; placeholders are {{case}}, {{dataset}}, {{model}}, {{class}}"
                    ));
                }
                if matches!(pieces.last(), Some(Piece::Var(_))) {
                    return Err(format!("'{raw}' has two placeholders with nothing between them"));
                }
                pieces.push(Piece::Var(name.to_string()));
                rest = &rest[close + 1..];
            }
            if rest.contains('}') {
                return Err(format!("'{raw}' has a '}}' without '{{'"));
            }
            if !rest.is_empty() {
                pieces.push(Piece::Lit(rest.to_string()));
            }
            components.push(pieces);
        }
        Ok(Template { raw: raw.to_string(), components })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn uses(&self, name: &str) -> bool {
        self.components.iter().flatten().any(|p| matches!(p, Piece::Var(v) if v == name))
    }

    /// The path for `bindings` under `root`; every placeholder used must be bound.
    pub fn fill(&self, root: &Path, bindings: &Bindings) -> PathBuf {
        let mut path = root.to_path_buf();
        for comp in &self.components {
            let mut s = String::new();
            for p in comp {
                match p {
                    Piece::Lit(l) => s.push_str(l),
                    Piece::Var(v) => s.push_str(bindings.get(v).map(String::as_str).unwrap_or("")),
                }
            }
            path.push(s);
        }
        path
    }

    /// Like [`Template::fill`], but where the `.nii.gz` file is absent and a `.nii` one exists,
    /// returns that. `None` when neither exists.
    pub fn find(&self, root: &Path, bindings: &Bindings) -> Option<PathBuf> {
        let path = self.fill(root, bindings);
        if is_file(&path) {
            return Some(path);
        }
        let s = path.to_str()?;
        let alt = PathBuf::from(s.strip_suffix(".gz")?);
        (s.ends_with(".nii.gz") && is_file(&alt)).then_some(alt)
    }

    /// Every existing file under `root` that matches, with its bindings, sorted by path.
    pub fn discover(&self, root: &Path) -> std::io::Result<Vec<(PathBuf, Bindings)>> {
        let mut out = Vec::new();
        self.walk(root, 0, &Bindings::new(), &mut out)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn walk(
        &self,
        dir: &Path,
        depth: usize,
        bound: &Bindings,
        out: &mut Vec<(PathBuf, Bindings)>,
    ) -> std::io::Result<()> {
        let last = depth + 1 == self.components.len();
        let comp = &self.components[depth];
        // A component without placeholders needs no directory listing.
        if comp.iter().all(|p| matches!(p, Piece::Lit(_))) {
            let Piece::Lit(name) = &comp[0] else { unreachable!() };
            let mut candidates = vec![name.clone()];
            if last && let Some(stem) = name.strip_suffix(".gz").filter(|s| s.ends_with(".nii")) {
                candidates.push(stem.to_string());
            }
            for name in candidates {
                let path = dir.join(&name);
                if last && is_file(&path) {
                    out.push((path, bound.clone()));
                    break;
                } else if !last && is_dir(&path) {
                    self.walk(&path, depth + 1, bound, out)?;
                }
            }
            return Ok(());
        }
        let gz_alt = last && matches!(comp.last(), Some(Piece::Lit(l)) if l.ends_with(".nii.gz"));
        for name in read_dir(dir)? {
            let mut b = bound.clone();
            let matched = match_pieces(comp, &name, &mut b)
                || (gz_alt && {
                    b = bound.clone();
                    match_pieces(comp, &format!("{name}.gz"), &mut b) && name.ends_with(".nii")
                });
            if !matched {
                continue;
            }
            let path = dir.join(&name);
            if last {
                if is_file(&path) {
                    out.push((path, b));
                }
            } else if is_dir(&path) {
                self.walk(&path, depth + 1, &b, out)?;
            }
        }
        Ok(())
    }
}

/// Matches `name` against `pieces`, extending `bound`; backtracks over placeholder lengths.
fn match_pieces(pieces: &[Piece], name: &str, bound: &mut Bindings) -> bool {
    match pieces.first() {
        None => name.is_empty(),
        Some(Piece::Lit(l)) => {
            name.strip_prefix(l.as_str()).is_some_and(|rest| match_pieces(&pieces[1..], rest, bound))
        }
        Some(Piece::Var(v)) => {
            if let Some(value) = bound.get(v).cloned() {
                return name.strip_prefix(value.as_str()).is_some_and(|rest| match_pieces(&pieces[1..], rest, bound));
            }
            for end in (1..=name.len()).filter(|&e| name.is_char_boundary(e)) {
                bound.insert(v.clone(), name[..end].to_string());
                if match_pieces(&pieces[1..], &name[end..], bound) {
                    return true;
                }
            }
            bound.remove(v);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn discovers_cases_and_datasets_and_plain_nii() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("ds1/BDMAP_1/ct.nii.gz"));
        touch(&t.path().join("ds1/BDMAP_2/ct.nii"));
        touch(&t.path().join("ds2/X_9/ct.nii.gz"));
        touch(&t.path().join("ds2/X_10/other.nii.gz"));
        let tpl = Template::parse("{dataset}/{case}/ct.nii.gz").unwrap();
        let found = tpl.discover(t.path()).unwrap();
        let ids: Vec<_> = found.iter().map(|(_, b)| (b["dataset"].as_str(), b["case"].as_str())).collect();
        assert_eq!(ids, [("ds1", "BDMAP_1"), ("ds1", "BDMAP_2"), ("ds2", "X_9")]);
        assert!(found[1].0.ends_with("ds1/BDMAP_2/ct.nii"));
    }

    #[test]
    fn placeholders_inside_file_names() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("imagesTr/liver_007_0000.nii.gz"));
        touch(&t.path().join("imagesTr/liver_012_0000.nii"));
        let tpl = Template::parse("imagesTr/{case}_0000.nii.gz").unwrap();
        let found = tpl.discover(t.path()).unwrap();
        let ids: Vec<_> = found.iter().map(|(_, b)| b["case"].clone()).collect();
        assert_eq!(ids, ["liver_007", "liver_012"]);
    }

    #[test]
    fn fill_and_find_fall_back_to_nii() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("c1/predictions/unet/liver.nii"));
        let tpl = Template::parse("{case}/predictions/{model}/{class}.nii.gz").unwrap();
        let b: Bindings =
            [("case", "c1"), ("model", "unet"), ("class", "liver")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        assert!(tpl.find(t.path(), &b).unwrap().ends_with("liver.nii"));
    }

    #[test]
    fn bad_templates_are_explained() {
        assert!(Template::parse("{patient}/ct.nii.gz").unwrap_err().contains("{patient}"));
        assert!(Template::parse("/abs/{case}.nii").is_err());
        assert!(Template::parse("{case}{dataset}.nii").is_err());
        assert!(Template::parse("{case/ct.nii").is_err());
    }
}
