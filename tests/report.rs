//! `slabflow report`: the HTML page of a run's ranking renders in headless Chromium (Debian's
//! `chromium`) with one dot per case in the Figure 4 plot and one table row per case.
//! Skipped without Chromium unless SLABFLOW_REQUIRE_CHROMIUM is set (`.ci/run` installs it).

mod util;

use std::process::Command;

#[test]
fn the_report_renders_in_chromium_with_every_case() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 9, [24, 20, 10]);
    let p = util::convert_pipeline(
        t.path(),
        "[[stages]]\nkind = \"attention\"\n\n[[stages]]\nkind = \"rank\"\nbudget = 0.3\n",
    );
    let out = t.path().join("out");
    assert!(util::run(&p, &corpus, &out, &[]).status.success());
    let o = util::slabflow(&["report", "--output", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<circle class=\"case").count(), 9);
    assert_eq!(html.matches("<circle class=\"case flagged\"").count(), 3, "ceil(0.3 × 9) flagged");

    let chromium =
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|c| std::path::Path::new(c).exists());
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("SLABFLOW_REQUIRE_CHROMIUM").is_none(),
            "SLABFLOW_REQUIRE_CHROMIUM is set but Chromium is not installed"
        );
        eprintln!("skipped the rendering check: no chromium (apt-get install chromium)");
        return;
    };
    let profile = t.path().join("chromium-profile");
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let url = format!("file://{}", page.display());
    let dom = Command::new(chromium)
        .args(base)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<circle class=\"case").count(), 9, "Chromium's DOM:\n{dom}");
    assert_eq!(dom.matches("<tr").count(), 10, "a header row and a row per case");
    let png = t.path().join("report.png");
    let shot = Command::new(chromium)
        .args(base)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([&format!("--screenshot={}", png.display()), "--window-size=1000,900", &url])
        .output()
        .unwrap();
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "a rendered page, {} bytes", bytes.len());
}
