//! Numbers for people: significant digits, percentages, sizes and durations. The CSVs keep
//! every digit (round-trip f64); the page shows what a reader compares.

/// `v` to `digits` significant digits, in plain notation below a million, with thin-space
/// thousands separators (e.g. `1 234 000` → "1.234 M" is not used: "1 234 000").
pub fn sig(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    // Round to the digits first (123 456 to 4 digits is 123 500; 999.96 is 1 000), then take
    // the decimals from the rounded value's magnitude.
    let magnitude = v.abs().log10().floor() as i32;
    let scale = 10f64.powi(magnitude + 1 - digits as i32);
    let rounded = (v / scale).round() * scale;
    let magnitude = rounded.abs().log10().floor() as i32;
    let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
    group(&format!("{rounded:.decimals$}"))
}

/// Thousands separated by a thin space in the integer part.
fn group(s: &str) -> String {
    let (sign, rest) = s.strip_prefix('-').map_or(("", s), |r| ("-", r));
    let (int, frac) = rest.split_once('.').map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (k, ch) in int.chars().enumerate() {
        if k > 0 && (int.len() - k).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(ch);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

/// A fraction as a percentage with one decimal.
pub fn percent(part: f64, whole: f64) -> String {
    if whole == 0.0 { "–".into() } else { format!("{:.1} %", 100.0 * part / whole) }
}

/// A volume in mL, to 3 significant digits.
pub fn ml(v: f64) -> String {
    format!("{} mL", sig(v, 3))
}

/// A duration: seconds below two minutes, then minutes, then hours.
pub fn duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Bytes as MiB or GiB.
pub fn bytes(b: f64) -> String {
    let mib = b / (1u64 << 20) as f64;
    if mib < 999.5 { format!("{} MiB", sig(mib, 3)) } else { format!("{} GiB", sig(mib / 1024.0, 3)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits() {
        assert_eq!(sig(3319419.3001968763, 4), "3\u{2009}319\u{2009}000");
        assert_eq!(sig(89747.81236197447, 4), "89\u{2009}750");
        assert_eq!(sig(0.94325672738825, 4), "0.9433");
        assert_eq!(sig(12.345, 4), "12.35");
        assert_eq!(sig(-0.000123456, 2), "-0.00012");
        assert_eq!(sig(0.0, 4), "0");
        assert_eq!(sig(999.96, 4), "1\u{2009}000");
        assert_eq!(sig(0.99996, 4), "1.000");
        assert_eq!(sig(-999.96, 4), "-1\u{2009}000");
        assert_eq!(percent(1.0, 3.0), "33.3 %");
        assert_eq!(ml(288.17712472911876), "288 mL");
        assert_eq!(duration(4000.0), "66.7 min");
        assert_eq!(bytes(1.5 * (1u64 << 30) as f64), "1.50 GiB");
    }
}
