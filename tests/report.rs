//! `slabflow report` as a person sees it: the page of a run with a card per flagged case.
//! - Every picture decodes (the `png` crate) and is not blank (pixel statistics).
//! - Every picture equals, pixel for pixel, a reference rendered with numpy from the Zarr
//!   arrays read by zarr-python (`tests/python/report_pixels.py`).
//! - Headless Chromium (Debian's `chromium`) loads the page with every dot, card and picture;
//!   a screenshot at 1000 px shows nothing cut at the right edge; the page prints to PDF.
//!
//! The Chromium part is skipped without Chromium unless SLABFLOW_REQUIRE_CHROMIUM is set
//! (`.ci/run` installs it).

mod util;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;

/// The embedded pictures of `html`: (case, class, view, decoded RGB, width, height).
fn pictures(html: &str) -> Vec<(String, String, String, Vec<u8>, usize, usize)> {
    let mut out = Vec::new();
    for part in html.split(r#"<img class="slice" "#).skip(1) {
        let attr = |name: &str| {
            let start = part.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            part[start..start + part[start..].find('"').unwrap()].to_string()
        };
        let src = attr("src");
        let data = src.strip_prefix("data:image/png;base64,").expect("a PNG data URI");
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
        let mut d = png::Decoder::new(std::io::Cursor::new(bytes));
        d.set_transformations(png::Transformations::EXPAND);
        let mut r = d.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        out.push((
            attr("data-case"),
            attr("data-class"),
            attr("data-view"),
            buf,
            info.width as usize,
            info.height as usize,
        ));
    }
    out
}

fn chromium() -> Option<&'static str> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|c| Path::new(c).exists());
    if found.is_none() {
        assert!(
            std::env::var_os("SLABFLOW_REQUIRE_CHROMIUM").is_none(),
            "SLABFLOW_REQUIRE_CHROMIUM is set but Chromium is not installed"
        );
        eprintln!("skipped the rendering check: no chromium (apt-get install chromium)");
    }
    found
}

#[test]
fn the_report_shows_every_case_and_pictures_of_the_flagged_ones() {
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    util::synth(&corpus, 9, [40, 36, 20]);
    let p = util::convert_pipeline(
        t.path(),
        "[runtime]\nslab_depth = 6\n[[stages]]\nkind = \"attention\"\n[[stages]]\nkind = \"metrics\"\n[[stages]]\nkind = \"rank\"\nbudget = 0.3\n[[stages]]\nkind = \"review\"\n",
    );
    let out = t.path().join("out");
    let o = util::run(&p, &corpus, &out, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let o = util::slabflow(&["report", "--output", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<circle class=\"case").count(), 9);
    assert_eq!(html.matches("<circle class=\"case flagged\"").count(), 3, "ceil(0.3 × 9) flagged");
    assert_eq!(html.matches("<article class=\"card\"").count(), 3, "a card per flagged case");
    assert!(!html.contains("could not be made") && !html.contains("No peak recorded"), "{html}");
    // Nothing fetched: no script, no link or source off the page (the SVG namespace is a name).
    for outside in ["<script", "src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(outside), "not self-contained: {outside}");
    }
    for section in [
        "id=\"summary\"",
        "id=\"figure4\"",
        "id=\"plot-dice\"",
        "id=\"plot-nsd\"",
        "id=\"plot-agreement\"",
        "id=\"ranking\"",
    ] {
        assert!(html.contains(section), "missing {section}");
    }
    assert!(html.contains("9 done, 0 failed") && html.contains("of the 1.00 GiB limit"), "the run summarised");

    // Each card: its top classes (worklist.csv), an axial and a coronal picture of each.
    let worklist = std::fs::read_to_string(out.join("worklist.csv")).unwrap();
    let expected: usize = worklist.lines().skip(1).map(|l| l.split(',').nth(4).unwrap().split(';').count() * 2).sum();
    let pics = pictures(&html);
    assert_eq!(pics.len(), expected, "two pictures per listed class");
    // Attention is largest where models disagree, which need not be inside the consensus:
    // most pictures, not all, show its contour.
    let mut with_contour = 0;
    for (case, class, view, rgb, w, h) in &pics {
        assert_eq!(rgb.len(), w * h * 3);
        assert!(*w.max(h) == 256 && *w.min(h) >= 8, "{case}/{class}/{view}: {w}×{h}");
        let mut colours: Vec<[u8; 3]> = rgb.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        let lit = colours.iter().filter(|c| c.iter().any(|&v| v > 40)).count();
        let contour = colours.iter().filter(|c| **c == [0, 255, 255]).count();
        colours.sort();
        colours.dedup();
        assert!(colours.len() >= 8, "{case}/{class}/{view}: {} colours, a blank picture", colours.len());
        assert!(lit * 10 > w * h, "{case}/{class}/{view}: {lit} of {} pixels lit", w * h);
        with_contour += (contour > 0) as usize;
        let heat = rgb.chunks(3).filter(|c| c[0] > c[2].saturating_add(30)).count();
        assert!(heat > 0, "{case}/{class}/{view}: no attention overlay at its peak");
    }
    assert!(with_contour * 2 >= pics.len(), "{with_contour} of {} pictures show a consensus contour", pics.len());
    // Pixel for pixel against numpy, the edge letters against nibabel's axis codes.
    let said = util::python_script("report_pixels.py", &[&out, &page]);
    assert!(said.contains(&format!("OK {} pictures", pics.len())), "{said}");

    // Released mode: binary uint8 maps, every attention voxel at the top heat level — still a
    // heat colour (not a grey that reads as bone), and the same pixels as numpy's; every case
    // flagged, two of them stored in another voxel order (nibabel's as_reoriented: axes
    // exchanged, slices from the other end); the page written elsewhere (--to) links the
    // review files by their absolute paths.
    let corpus2 = t.path().join("corpus2");
    assert!(Command::new("cp").arg("-r").arg(&corpus).arg(&corpus2).status().unwrap().success());
    for (case, how) in [("BDMAP_00000002", "swapxy"), ("BDMAP_00000004", "flipz")] {
        let said = util::python_script("reorient_case.py", &[&corpus2.join(case), Path::new(how)]);
        assert!(said.contains("OK"), "{said}");
    }
    let released = t.path().join("released.toml");
    std::fs::write(
        &released,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("kind = \"attention\"\n", "kind = \"attention\"\nmode = \"released\"\n")
            .replace("budget = 0.3", "budget = 1.0"),
    )
    .unwrap();
    let out2 = t.path().join("out-released");
    let o = util::run(&released, &corpus2, &out2, &[]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let page2 = t.path().join("elsewhere.html");
    let o = util::slabflow(&["report", "--output", out2.to_str().unwrap(), "--to", page2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", util::stderr(&o));
    let html2 = std::fs::read_to_string(&page2).unwrap();
    assert_eq!(html2.matches("<article class=\"card\"").count(), 9, "every case flagged");
    let pics2 = pictures(&html2);
    for case in ["BDMAP_00000002", "BDMAP_00000004"] {
        assert!(pics2.iter().any(|p| p.0 == case), "the reoriented {case} has pictures");
    }
    for (case, class, view, rgb, _, _) in &pics2 {
        let yellow = rgb.chunks(3).filter(|c| c[0] > 200 && c[1] > 150 && c[2] < 120).count();
        assert!(yellow > 0, "{case}/{class}/{view}: the released map's voxels are not drawn as heat");
    }
    let review = std::path::absolute(&out2).unwrap().join("review");
    assert!(html2.contains(&format!("href=\"{}/", review.display())), "links from elsewhere are absolute");
    let said = util::python_script("report_pixels.py", &[&out2, &page2]);
    assert!(said.contains(&format!("OK {} pictures", pics2.len())), "{said}");

    let Some(chromium) = chromium() else { return };
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
        "--hide-scrollbars",
    ];
    let browse = |args: &[&str]| {
        Command::new(chromium)
            .args(base)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let url = format!("file://{}", page.display());
    let dom = browse(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<circle class=\"case").count(), 9, "Chromium's DOM:\n{dom}");
    assert_eq!(dom.matches("<article class=\"card\"").count(), 3);
    assert_eq!(dom.matches("<img class=\"slice\"").count(), pics.len());
    let ranking = dom.split("<table id=\"ranking\">").nth(1).and_then(|t| t.split("</table>").next()).unwrap();
    assert_eq!(ranking.matches("<tr").count(), 9 + 1, "a row per case and the header");
    let png = t.path().join("report.png");
    let shot = browse(&[&format!("--screenshot={}", png.display()), "--window-size=1000,5000", &url]);
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let mut d = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = d.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    let (w, h, ch) = (info.width as usize, info.height as usize, info.color_type.samples());
    assert_eq!(w, 1000, "the page at the window's width");
    // Nothing overflows: the right margin is page background on every row.
    for y in 0..h {
        for x in w - 8..w {
            let px = &buf[(y * w + x) * ch..(y * w + x) * ch + 3];
            assert!(px.iter().all(|&v| v >= 240), "content at the right edge (x {x}, y {y}): {px:?}");
        }
    }
    // The pictures were decoded and drawn: only they hold the contour's cyan.
    let cyan = buf.chunks(ch).filter(|p| p[0] < 40 && p[1] > 215 && p[2] > 215).count();
    assert!(cyan > 100, "{cyan} contour pixels in the screenshot: the pictures did not render");
    let pdf = t.path().join("report.pdf");
    let printed = browse(&["--no-pdf-header-footer", &format!("--print-to-pdf={}", pdf.display()), &url]);
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(bytes.starts_with(b"%PDF") && bytes.len() > 20_000, "a printed page, {} bytes", bytes.len());
}
