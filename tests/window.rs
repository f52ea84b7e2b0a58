//! The preview window as a person uses it: a real pipeline (a 640x480 test pattern through the tiny SD-Turbo model
//! at 256x256, live control) shows its window on an Xvfb display; keys are pressed with real X events (XTEST,
//! through xdotool) and what the window shows is read back from screenshots of it (`xwd -id`, parsed here).
//!
//! Checked: each view fills the window at the picture's aspect ratio (the window follows the view; a window the
//! user resized letterboxes it), the help text is whole inside every window it is drawn in, toggles act once per
//! press however long the key is held (past X's auto-repeat delay), stepping keys repeat while held, and taps
//! far shorter than a frame are never lost.
#![cfg(feature = "window")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use latentcam::sink::window::HELP;
use serde_json::Value;

/// An Xvfb display of its own (Xvfb picks a free display number and says which), stopped on drop.
struct Display {
    xvfb: Child,
    name: String,
}

impl Display {
    fn start() -> Display {
        let mut xvfb = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "1600x1200x24", "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (scripts/setup.sh installs it)");
        let mut number = String::new();
        BufReader::new(xvfb.stdout.take().unwrap()).read_line(&mut number).unwrap();
        Display { xvfb, name: format!(":{}", number.trim()) }
    }

    /// Run an X tool on this display; its standard output when it succeeds.
    fn tool(&self, program: &str, args: &[&str]) -> Option<Vec<u8>> {
        let out = Command::new(program).args(args).env("DISPLAY", &self.name).stderr(Stdio::null()).output();
        let out = out.unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup.sh installs it)"));
        out.status.success().then_some(out.stdout)
    }

    fn xdotool(&self, args: &[&str]) {
        assert!(self.tool("xdotool", args).is_some(), "xdotool {args:?} failed");
    }

    /// The window's pixels, from `xwd -id` (XWD: a big-endian header, a colour table, then ZPixmap rows).
    fn screenshot(&self, window: &str) -> Option<RgbImage> {
        let d = self.tool("xwd", &["-id", window, "-silent"])?;
        let word = |i: usize| d.get(i * 4..i * 4 + 4).map(|b| u32::from_be_bytes(b.try_into().unwrap()));
        let (header, w, h) = (word(0)? as usize, word(4)?, word(5)?);
        let (lsb_first, bits, bytes_per_line) = (word(7)? == 0, word(11)?, word(12)? as usize);
        let (masks, colors) = ([word(14)?, word(15)?, word(16)?], word(19)? as usize);
        assert_eq!(bits, 32, "a 24-bit Xvfb screen gives 32-bit pixels");
        let start = header + colors * 12;
        if d.len() < start + bytes_per_line * h as usize {
            return None;
        }
        Some(RgbImage::from_fn(w, h, |x, y| {
            let at = start + y as usize * bytes_per_line + x as usize * 4;
            let b: [u8; 4] = d[at..at + 4].try_into().unwrap();
            let p = if lsb_first { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) };
            image::Rgb(masks.map(|m| ((p & m) >> m.trailing_zeros()) as u8))
        }))
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.xvfb.kill();
        let _ = self.xvfb.wait();
    }
}

/// `latentcam run` with its window on `display`, its log collected as it comes.
struct Run {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Run {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        log[log.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` every 50 ms until it gives a value; on timeout fail saying what was awaited and what was seen last.
fn wait_for<T>(what: &str, timeout: Duration, run: &Run, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}\nlog:\n{}", run.log_tail());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn params(addr: SocketAddr) -> Value {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /params HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

/// Columns and rows of the window that are entirely black: what a letterbox bar (or an undrawn half) is.
fn black_lines(shot: &RgbImage) -> (Vec<u32>, Vec<u32>) {
    let black = |x, y| shot.get_pixel(x, y).0 == [0, 0, 0];
    let cols = (0..shot.width()).filter(|&x| (0..shot.height()).all(|y| black(x, y))).collect();
    let rows = (0..shot.height()).filter(|&y| (0..shot.width()).all(|x| black(x, y))).collect();
    (cols, rows)
}

/// The columns where the picture is: from the first to the last one that is not entirely black.
fn picture_columns(shot: &RgbImage) -> (u32, u32) {
    let (black, _) = black_lines(shot);
    let first = (0..shot.width()).find(|x| !black.contains(x)).unwrap_or(0);
    let last = (0..shot.width()).rev().find(|x| !black.contains(x)).unwrap_or(0);
    (first, last + 1)
}

/// White pixels that belong to the help text: pure white, and every neighbour white or darkened (the box
/// halves the picture under it, so no channel is above 127 there). The picture itself has no such pixels.
fn text_pixels(shot: &RgbImage) -> Vec<(u32, u32)> {
    let (w, h) = shot.dimensions();
    let white = |x: u32, y: u32| shot.get_pixel(x, y).0 == [255, 255, 255];
    let dark_or_white = |x: u32, y: u32| white(x, y) || shot.get_pixel(x, y).0.iter().all(|c| *c <= 127);
    let mut found = Vec::new();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            if white(x, y) && (y - 1..=y + 1).all(|ny| (x - 1..=x + 1).all(|nx| dark_or_white(nx, ny))) {
                found.push((x, y));
            }
        }
    }
    found
}

/// Lit pixels of the help text in the 8x8 font at scale 1.
fn help_font_pixels() -> usize {
    let glyph = |c: char| font8x8::legacy::BASIC_LEGACY[if c.is_ascii() { c as usize } else { '?' as usize }];
    HELP.iter().flat_map(|l| l.chars()).map(|c| glyph(c).iter().map(|r| r.count_ones() as usize).sum::<usize>()).sum()
}

/// The scale the whole help text shows at in `shot`: every lit pixel of every glyph there (none cut off by the
/// window's or the picture's edge), or why not.
fn whole_help(shot: &RgbImage) -> Result<usize, String> {
    let lit = text_pixels(shot).len();
    let font = help_font_pixels();
    (1..=4)
        .find(|s| lit == font * s * s)
        .ok_or_else(|| format!("{lit} help text pixels in {:?}; the whole text is {font} x scale²", shot.dimensions()))
}

const PIPELINE: &str = r#"
mode = "live"
stats-interval-s = 0
[source]
kind = "test-pattern"
width = 640
height = 480
fps = 15
[model]
dir = "MODEL"
size = [256, 256]
[params]
steps = 1
strength = 0.3
seed = 0
[control]
http = "127.0.0.1:0"
stdin = false
[[sink]]
kind = "window"
view = "side-by-side"
"#;

#[test]
#[ignore = "needs Xvfb, xwd and xdotool (scripts/setup.sh installs them)"]
fn window_keys_views_and_help_under_xvfb_as_a_person_uses_them() {
    let started = Instant::now();
    let x = Display::start();
    let tmp = common::temp_dir();
    let file = tmp.path().join("window.toml");
    let model = common::model_dir("tiny-sd-turbo");
    std::fs::write(&file, PIPELINE.replace("MODEL", common::path_str(&model))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentcam"))
        .args(["--ep", "cpu", "--threads", "2", "run", common::path_str(&file)])
        .env("DISPLAY", &x.name)
        .env_remove("WAYLAND_DISPLAY")
        .env("RUST_LOG", "latentcam=info,latentcam::sink::window=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn({
        let log = log.clone();
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        }
    });
    let mut run = Run { child, log };
    let minute = Duration::from_secs(60);
    let addr: SocketAddr = wait_for("the HTTP control address", minute, &run, || {
        run.log()
            .iter()
            .find_map(|l| l.split("HTTP and WebSocket on http://").nth(1)?.split(' ').next()?.parse().ok())
            .ok_or_else(|| "no address logged yet".into())
    });
    let id = wait_for("the window", minute, &run, || {
        let out = x.tool("xdotool", &["search", "--name", "^latentcam"]).unwrap_or_default();
        String::from_utf8_lossy(&out).lines().next().map(str::to_string).ok_or_else(|| "none".into())
    });
    // Keys go to the focused window (no window manager here to give it the focus).
    x.xdotool(&["windowfocus", "--sync", &id]);
    let shot = || x.screenshot(&id).ok_or_else(|| "no screenshot".to_string());
    let view = || params(addr)["view"].as_str().unwrap_or_default().to_string();
    let press = |keys: &[&str]| x.xdotool(&[&["key", "--delay", "0"], keys].concat());
    let long = Duration::from_secs(30);

    // A view fills its window: the window has the picture's aspect ratio and no black column or row.
    let fills = |what: &str, aspect: u32| {
        wait_for(what, long, &run, || {
            let s = shot()?;
            let (w, h) = s.dimensions();
            let (cols, rows) = black_lines(&s);
            let ok = w.abs_diff(aspect * h) <= 1 && cols.len() + rows.len() <= 1 && text_pixels(&s).is_empty();
            if ok { Ok(s) } else { Err(format!("{w}x{h}, {} black columns, {} black rows", cols.len(), rows.len())) }
        })
    };
    let side = fills("the side-by-side view to fill the window", 2);
    assert!(side.width() >= 640, "opens at least 640 wide: {:?}", side.dimensions());
    eprintln!("side by side opens at {:?}", side.dimensions());

    // O: the window takes the single picture's shape (its height kept); no black half.
    press(&["o"]);
    let output = fills("the output view to fill a square window", 1);
    assert_eq!(view(), "output");
    assert_eq!(output.height(), side.height(), "the window keeps its height");

    // H (a tap): the whole help text in the window.
    press(&["h"]);
    let scale = wait_for("the help in the output view", long, &run, || whole_help(&shot()?));
    eprintln!("help at scale {scale} in {:?}", output.dimensions());

    // H held for a second, past X's auto-repeat delay (Xvfb: 660 ms, then 25 a second): one toggle. The help goes
    // off and stays off while the key is down (a toggle per repeat would flash it on and off).
    let log_before = run.log().len();
    let hold = std::thread::spawn({
        let display = x.name.clone();
        move || {
            let status = Command::new("xdotool")
                .args(["keydown", "h", "sleep", "1.0", "keyup", "h"])
                .env("DISPLAY", display)
                .status()
                .unwrap();
            assert!(status.success());
        }
    });
    let mut shots_while_held = 0;
    let mut help_seen_after_off = false;
    let mut off = false;
    while !hold.is_finished() {
        if let Ok(s) = shot() {
            let lit = !text_pixels(&s).is_empty();
            off |= !lit;
            help_seen_after_off |= off && lit;
            shots_while_held += 1;
        }
    }
    hold.join().unwrap();
    wait_for("the help to be off after the hold", long, &run, || {
        let lit = text_pixels(&shot()?).len();
        if lit == 0 { Ok(()) } else { Err(format!("{lit} help pixels")) }
    });
    assert!(!help_seen_after_off, "the help came back while H was held ({shots_while_held} screenshots)");
    let held_log = run.log()[log_before..].to_vec();
    let repeats = held_log.iter().filter(|l| l.contains("window key H repeat from the keyboard ignored")).count();
    assert!(repeats >= 3, "X auto-repeated H while held (Xvfb's auto-repeat is on): {repeats}\n{held_log:?}");
    let time_of = |l: &String| -> f64 {
        let t = l.split_whitespace().next().unwrap_or_default();
        let hms = t.split('T').nth(1).unwrap_or_default().trim_end_matches('Z');
        hms.split(':').fold(0.0, |acc, p| acc * 60.0 + p.parse::<f64>().unwrap_or(0.0))
    };
    let press_at = held_log.iter().find(|l| l.contains("window key H pressed")).map(time_of);
    let first_repeat = held_log.iter().find(|l| l.contains("window key H repeat")).map(time_of);
    if let (Some(p), Some(r)) = (press_at, first_repeat) {
        eprintln!(
            "H held 1 s: {repeats} X auto-repeats ignored (first {:.0} ms after the press), one toggle; \
             {shots_while_held} screenshots while held",
            (r - p) * 1000.0
        );
    }

    // Taps far shorter than a frame: three press+release pairs sent at once (0 ms each), then a 30 ms press;
    // every one counts, once. Then N held a second: once.
    let fps: f64 = {
        let title =
            String::from_utf8_lossy(&x.tool("xdotool", &["getwindowname", &id]).unwrap_or_default()).to_string();
        title.split(" fps").next().and_then(|t| t.rsplit(' ').next()).and_then(|f| f.parse().ok()).unwrap_or(0.0)
    };
    let seed = |run: &Run, want: u64| {
        wait_for(&format!("seed {want}"), long, run, || match params(addr)["seed"].as_u64() {
            Some(s) if s == want => Ok(()),
            s => Err(format!("seed {s:?}")),
        });
        // ... and no more presses than sent.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(params(addr)["seed"].as_u64(), Some(want), "{}", run.log_tail());
    };
    press(&["n", "n", "n"]);
    seed(&run, 3);
    x.xdotool(&["keydown", "n", "sleep", "0.03", "keyup", "n"]);
    seed(&run, 4);
    x.xdotool(&["keydown", "n", "sleep", "1.0", "keyup", "n"]);
    seed(&run, 5);
    eprintln!("taps of 0 ms (x3), 30 ms and a 1 s hold of N: seed 0 -> 5; frames were shown at {fps:.1} fps");

    // Up held a second repeats (one step per 0.1 s after 0.4 s); a 0 ms tap of Down is one step.
    x.xdotool(&["keydown", "Up", "sleep", "1.0", "keyup", "Up"]);
    std::thread::sleep(Duration::from_millis(300));
    let strength = params(addr)["strength"].as_f64().unwrap();
    assert!((0.45..=0.75).contains(&strength), "Up held a second from 0.3: {strength}");
    press(&["Down"]);
    wait_for("one step down", long, &run, || {
        let s = params(addr)["strength"].as_f64().unwrap();
        if (s - (strength - 0.05)).abs() < 1e-6 { Ok(()) } else { Err(format!("strength {s}")) }
    });
    eprintln!("Up held 1 s: strength 0.3 -> {strength:.2}; a tap of Down: one step");

    // I, then the user makes the window 320x240: the square picture is letterboxed, centred, at its aspect.
    press(&["i"]);
    wait_for("the input view", long, &run, || if view() == "input" { Ok(()) } else { Err(view()) });
    x.xdotool(&["windowsize", &id, "320", "240"]);
    wait_for("the input letterboxed in 320x240", long, &run, || {
        let s = shot()?;
        let columns = picture_columns(&s);
        let (_, rows) = black_lines(&s);
        let ok = s.dimensions() == (320, 240) && columns.0.abs_diff(40) <= 1 && columns.1.abs_diff(280) <= 1;
        if ok && rows.is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}: picture in columns {columns:?}", s.dimensions()))
        }
    });

    // The help in a window narrower than its lines: wrapped, whole, drawn over the bars too (window space).
    press(&["h"]);
    let scale = wait_for("the whole help in 320x240", long, &run, || whole_help(&shot()?));
    assert_eq!(scale, 1);
    let text = text_pixels(&shot().unwrap());
    assert!(text.iter().any(|(x, _)| *x < 40), "the help is not confined to the picture");
    assert!(text.iter().all(|(x, y)| *x < 320 && *y < 240));

    // S: the window follows to side by side (height kept), with the help whole in it; H off: it fills it.
    press(&["s"]);
    wait_for("side by side at 480x240 with the help", long, &run, || {
        let s = shot()?;
        if s.dimensions() == (480, 240) { whole_help(&s) } else { Err(format!("{:?}", s.dimensions())) }
    });
    press(&["h"]);
    fills("side by side to fill 480x240", 2);

    // The user makes it large: larger letters, still whole.
    x.xdotool(&["windowsize", &id, "1200", "600"]);
    fills("side by side to fill 1200x600", 2);
    press(&["h"]);
    let scale = wait_for("the help in 1200x600", long, &run, || whole_help(&shot()?));
    assert!(scale >= 2, "larger letters in a large window: {scale}");

    // Esc quits cleanly.
    press(&["Escape"]);
    let deadline = Instant::now() + long;
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "latentcam did not exit after Esc\n{}", run.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "Esc is a clean exit: {status:?}\n{}", run.log_tail());
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}
