//! The page of `sd-wgpu serve` in headless Chromium (Debian's `chromium`;
//! .ci/run installs it; the test fails, never skips, without it), against the
//! real binary on the demo model and the CPU backend, 64x64 images:
//!
//! - the page loads the model's samplers and concepts; the `<hazard>` chip
//!   inserts its trigger into the prompt; the token counter counts;
//! - a bad value (steps 0, a width over the pixel limit) shows the server's
//!   error next to that field;
//! - Generate: the progress bar moves and the live preview changes before the
//!   result lands in the gallery; the result is the concept's yellow triangle
//!   on black (pixels read back from the page, judged by the demo evaluator);
//!   its download is a PNG whose `parameters` chunk is the infotext shown;
//! - img2img from an uploaded file, and Cancel, end as they should;
//! - at 375 px wide nothing scrolls sideways;
//! - with `--api-key` the page asks for the key once and works with it.
//!
//! The desktop screenshot goes to docs/images/serve.png (the README's) when
//! `SD_WGPU_SAVE_SCREENSHOT=1`, to a temporary directory otherwise.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "support/cdp.rs"]
mod cdp;
// The evaluator is shared with tests/demo.rs, which uses more of it.
#[allow(dead_code, unused_imports)]
#[path = "support/demo/mod.rs"]
mod demo;
#[path = "support/server.rs"]
mod server;

use cdp::Browser;
use server::Server;

/// The prompt the test builds: the words typed around the concept's trigger.
const BEFORE: &str = "a big ";
const TRIGGER: &str = "<hazard>";
const AFTER: &str = "in the middle";
const STEPS: u32 = 8;
/// A seed whose 8-step DDIM image shows the concept (any seed mostly does:
/// tests/demo.rs measures how often).
const SEED: u64 = 1;
const SIDE: u32 = 64;

/// How long a 64x64 generation may take on a busy 2-core CI machine.
const GENERATION: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_secs(10);

fn text(b: &mut Browser, selector: &str) -> String {
    let js = format!("document.querySelector({}).textContent", json!(selector));
    b.eval(&js).as_str().unwrap_or_default().to_string()
}

#[test]
fn page_generates_with_the_concept() {
    let t = Instant::now();
    let server = Server::start(&[]);
    let mut b = Browser::launch();
    b.viewport(1280, 900, false);
    b.navigate(&server.url);
    let model = b.wait_for(
        "the model info",
        "document.getElementById('model').textContent",
        SHORT,
    );
    assert!(model.as_str().unwrap().contains("demo"), "model shown: {model}");
    let samplers = b.eval("[...document.querySelectorAll('#sampler option')].map(o => o.value)");
    assert!(
        samplers.as_array().is_some_and(|s| s.iter().any(|n| n == "ddim")),
        "samplers offered: {samplers}"
    );

    pick_concept(&mut b);
    bad_values_show_next_to_their_field(&mut b);

    // Small, fixed-seed settings; the watchers record every change of the
    // progress bar and the preview, however short-lived.
    for (field, value) in [("steps", STEPS), ("width", SIDE), ("height", SIDE), ("batch", 1)] {
        b.type_text(&format!("#{field}"), &value.to_string(), true);
    }
    b.type_text("#seed", &SEED.to_string(), true);
    b.eval(
        "window.seen = {progress: [], previews: new Set()};
         new MutationObserver(() => seen.progress.push(Number(document.getElementById('progress').value)))
           .observe(document.getElementById('progress'), {attributes: true, attributeFilter: ['value']});
         new MutationObserver(() => seen.previews.add(document.getElementById('preview').src))
           .observe(document.getElementById('preview'), {attributes: true, attributeFilter: ['src']});
         true",
    );
    b.click("#generate");
    b.wait_for(
        "the result in the gallery",
        "(() => { const img = document.querySelector('.result img');
                  return img && img.complete && img.naturalWidth > 0
                    && document.getElementById('progress-text').textContent.startsWith('Done'); })()",
        GENERATION,
    );
    let progress: Vec<f64> = serde_json::from_value(b.eval("seen.progress")).unwrap();
    let during: Vec<f64> = progress.iter().copied().filter(|&p| p > 0.0 && p < 1.0).collect();
    assert!(
        during.windows(2).any(|w| w[1] > w[0]),
        "the progress bar should move during the job; its values: {progress:?}"
    );
    assert_eq!(
        progress.last(),
        Some(&1.0),
        "the progress bar should end full: {progress:?}"
    );
    let previews = b.eval("seen.previews.size").as_u64().unwrap();
    assert!(
        previews >= 2,
        "the live preview changed {previews} times in {STEPS} steps"
    );
    println!("progress bar values: {progress:?}; {previews} distinct previews");
    assert_eq!(text(&mut b, "#seed-used"), format!("Last seed: {SEED}"));

    let parameters = result_is_the_concept(&mut b);
    assert!(
        parameters.starts_with(&format!("{BEFORE}{TRIGGER} {AFTER}\n"))
            && parameters.contains(&format!("Steps: {STEPS},"))
            && parameters.contains(&format!("Seed: {SEED},"))
            && parameters.contains(&format!("Size: {SIDE}x{SIDE},")),
        "the PNG's parameters: {parameters:?}"
    );

    save_screenshot(&mut b);
    img2img_from_a_file(&mut b);
    cancel_stops_a_job(&mut b);
    narrow_screen_has_no_sideways_scroll(&mut b);
    assert!(b.page_errors().is_empty(), "page errors: {:?}", b.page_errors());
    println!("browser test: {:.1} s", t.elapsed().as_secs_f64());
}

/// Types the prompt around a click on the concept's chip; the token counter
/// then counts it (A1111's `N/75`).
fn pick_concept(b: &mut Browser) {
    let chip = format!("#concepts button[data-trigger='{TRIGGER}']");
    b.wait_for(
        "the concept picker",
        &format!("document.querySelector({})", json!(chip)),
        SHORT,
    );
    let label = text(b, &chip);
    assert!(
        label.contains(TRIGGER) && label.contains("vector"),
        "chip: {label:?}"
    );
    b.type_text("#prompt", BEFORE, true);
    b.click(&chip);
    b.type_text("#prompt", AFTER, false);
    let prompt = b.eval("document.getElementById('prompt').value");
    assert_eq!(
        prompt,
        format!("{BEFORE}{TRIGGER} {AFTER}"),
        "the prompt after picking {TRIGGER}"
    );
    let count = b.wait_for(
        "the token count of the prompt",
        "(() => { const t = document.getElementById('prompt-tokens').textContent;
                  return /^[1-9][0-9]*\\/75$/.test(t) && t; })()",
        SHORT,
    );
    let tokens: usize = count
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Six words, the trigger at least one token, nothing near a chunk's 75.
    assert!((6..20).contains(&tokens), "token count {count}");
}

/// Steps 0, then a width over the pixel limit: each error lands next to its field.
fn bad_values_show_next_to_their_field(b: &mut Browser) {
    for (field, bad, fixed) in [("steps", "0", STEPS), ("width", "100000", SIDE)] {
        b.type_text(&format!("#{field}"), bad, true);
        b.click("#generate");
        let message = b.wait_for(
            &format!("the error next to {field}"),
            &format!("document.getElementById('err-{field}').textContent"),
            SHORT,
        );
        assert!(
            message.as_str().unwrap().contains(bad),
            "the {field} error should quote the value {bad}: {message}"
        );
        let state = b.eval(&format!(
            "({{invalid: document.getElementById('{field}').getAttribute('aria-invalid'),
                top: document.getElementById('err-top').hidden,
                gallery: document.querySelectorAll('.result').length}})"
        ));
        assert_eq!(
            state,
            json!({"invalid": "true", "top": true, "gallery": 0}),
            "after {field} {bad}"
        );
        b.type_text(&format!("#{field}"), &fixed.to_string(), true);
    }
}

/// The gallery's image, read back from the page, shows the concept: a yellow
/// triangle on black by the demo evaluator; its download is that image as a
/// PNG with a `parameters` chunk equal to the infotext shown. Returns it.
fn result_is_the_concept(b: &mut Browser) -> String {
    let got = b.eval(
        "(async () => {
           const img = document.querySelector('.result img');
           const c = document.createElement('canvas');
           c.width = img.naturalWidth; c.height = img.naturalHeight;
           const ctx = c.getContext('2d');
           ctx.drawImage(img, 0, 0);
           const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
           const rgb = [...rgba].filter((_, i) => i % 4 !== 3);
           const link = document.querySelector('.result a.download');
           const bytes = new Uint8Array(await (await fetch(link.href)).arrayBuffer());
           return {width: c.width, height: c.height, rgb, png: [...bytes], name: link.download,
                   infotext: document.querySelector('.result .infotext').textContent};
         })()",
    );
    let (w, h) = (got["width"].as_u64().unwrap(), got["height"].as_u64().unwrap());
    assert_eq!((w, h), (u64::from(SIDE), u64::from(SIDE)), "image size");
    let rgb: Vec<u8> = serde_json::from_value(got["rgb"].clone()).unwrap();
    let spec = demo::Spec::load(demo::Spec::default_path()).unwrap();
    let measured = demo::measure(&rgb, SIDE as usize, &spec);
    let shape = measured.shape.as_ref();
    assert!(
        measured.background == "black"
            && shape.is_some_and(|s| s.colour == "yellow" && s.shape == "triangle"),
        "{BEFORE}{TRIGGER} {AFTER} should be a yellow triangle on black; measured {measured:?}"
    );

    assert_eq!(got["name"], format!("sd-wgpu-{SEED}.png"), "download file name");
    let png: Vec<u8> = serde_json::from_value(got["png"].clone()).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(&png))
        .read_info()
        .expect("the download is a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut pixels).unwrap();
    assert_eq!(
        pixels[..rgb.len()],
        rgb[..],
        "the download's pixels are the shown image's"
    );
    let info = reader.info();
    let parameters = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .map(|c| c.text.clone())
        .or_else(|| {
            let c = info.utf8_text.iter().find(|c| c.keyword == "parameters")?;
            c.get_text().ok()
        })
        .expect("the download has a `parameters` text chunk");
    assert_eq!(got["infotext"], parameters, "the infotext shown is the PNG's");
    parameters
}

/// The README's picture: the desktop page after the generation.
fn save_screenshot(b: &mut Browser) {
    // Cut to the page's height, without the empty space under it.
    let height = b
        .eval("Math.ceil(document.querySelector('main').getBoundingClientRect().bottom) + 12")
        .as_u64()
        .unwrap();
    b.viewport(1280, height.clamp(400, 900) as u32, false);
    let png = b.screenshot();
    let path = if std::env::var_os("SD_WGPU_SAVE_SCREENSHOT").is_some_and(|v| v == "1") {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images/serve.png")
    } else {
        std::env::temp_dir().join("sd-wgpu-serve.png")
    };
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("screenshot: {}", path.display());
}

/// Image to image: the first result, uploaded as a file, at strength 0.5.
fn img2img_from_a_file(b: &mut Browser) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("init.png");
    let png: Vec<u8> = serde_json::from_value(b.eval(
        "(async () => [...new Uint8Array(await (await fetch(
           document.querySelector('.result a.download').href)).arrayBuffer())])()",
    ))
    .unwrap();
    std::fs::write(&file, png).unwrap();
    b.click("input[name='mode'][value='img2img']");
    b.set_file("#init-file", &file);
    b.wait_for(
        "the uploaded image's preview",
        "(() => { const i = document.getElementById('init-preview'); return !i.hidden && i.naturalWidth; })()",
        SHORT,
    );
    b.eval("const s = document.getElementById('strength'); s.value = '0.5'; s.dispatchEvent(new Event('input')); true");
    b.click("#generate");
    let infotext = b.wait_for(
        "the img2img result",
        "(() => { const r = document.querySelectorAll('.result');
                  return r.length === 2 && document.getElementById('progress-text').textContent.startsWith('Done')
                    && r[0].querySelector('.infotext').textContent; })()",
        GENERATION,
    );
    assert!(
        infotext.as_str().unwrap().contains("Denoising strength: 0.5"),
        "img2img infotext: {infotext}"
    );
    b.click("input[name='mode'][value='txt2img']");
}

/// A long job, cancelled once it runs: the page says so and adds no image.
fn cancel_stops_a_job(b: &mut Browser) {
    b.type_text("#steps", "150", true);
    b.click("#generate");
    b.wait_for(
        "the long job's first step",
        "document.getElementById('progress-text').textContent.startsWith('step')",
        GENERATION,
    );
    b.click("#cancel");
    b.wait_for(
        "the cancelled job",
        "document.getElementById('progress-text').textContent === 'Cancelled'",
        SHORT,
    );
    let state: Value = b.eval(
        "({results: document.querySelectorAll('.result').length,
           generate: document.getElementById('generate').disabled,
           cancel: document.getElementById('cancel').disabled})",
    );
    assert_eq!(
        state,
        json!({"results": 2, "generate": false, "cancel": true}),
        "after Cancel"
    );
}

/// At a phone's 375 px the page fits its width: nothing scrolls sideways.
fn narrow_screen_has_no_sideways_scroll(b: &mut Browser) {
    b.viewport(375, 800, true);
    let widths = b.wait_for(
        "the 375-px layout",
        "new Promise(r => requestAnimationFrame(() => r(window.innerWidth === 375 && {
           page: document.documentElement.scrollWidth,
           widest: Math.max(...[...document.querySelectorAll('body *')]
             .filter(e => e.getClientRects().length).map(e => e.getBoundingClientRect().right)) })))",
        SHORT,
    );
    assert!(
        widths["page"].as_f64().unwrap() <= 375.0 && widths["widest"].as_f64().unwrap() <= 375.0,
        "at 375 px wide: {widths}"
    );
}

/// With `--api-key`, the page asks for the key, keeps it for the session and
/// sends it with every call (the progress stream included: a job completes).
#[test]
fn page_asks_for_the_api_key() {
    const KEY: &str = "browser-test-key";
    let server = Server::start(&["--api-key", KEY]);
    let mut b = Browser::launch();
    b.viewport(1280, 900, false);
    b.navigate(&server.url);
    b.wait_for("the key form", "!document.getElementById('auth').hidden", SHORT);
    b.type_text("#api-key", "wrong", true);
    b.click("#auth button");
    b.wait_for(
        "the refusal of a wrong key",
        "document.getElementById('err-api-key').textContent",
        SHORT,
    );
    b.type_text("#api-key", KEY, true);
    b.click("#auth button");
    b.wait_for(
        "the model info",
        "document.getElementById('model').textContent",
        SHORT,
    );
    assert_eq!(b.eval("sessionStorage.getItem('sd-wgpu-api-key')"), KEY);
    // Asked once: a reload keeps the key.
    b.navigate(&server.url);
    b.wait_for(
        "the model info after a reload",
        "document.getElementById('model').textContent",
        SHORT,
    );
    assert_eq!(
        b.eval("document.getElementById('auth').hidden"),
        true,
        "asked again after a reload"
    );
    b.type_text("#prompt", "a red circle", true);
    for (field, value) in [("steps", 4), ("width", SIDE), ("height", SIDE)] {
        b.type_text(&format!("#{field}"), &value.to_string(), true);
    }
    b.click("#generate");
    b.wait_for(
        "the result with the key",
        "(() => { const img = document.querySelector('.result img'); return img && img.naturalWidth; })()",
        GENERATION,
    );
    assert!(b.page_errors().is_empty(), "page errors: {:?}", b.page_errors());
}
