//! The preview window (minifb), run on the main thread. It shows the newest processed frame from a slot and
//! never makes the pipeline wait. The title shows the output rate and the capture-to-display latency. OBS can
//! capture it as a window.
//!
//! **Size.** The window opens at the view's aspect ratio, at least 640x480: the working size scaled up by a whole
//! number (1024x512 side by side of 256x256, 768x768 for one 256x256 picture), within 90% of the screen. The
//! user may resize it: the picture is scaled to fill it at its own aspect ratio (letterboxed when the window's
//! shape differs). When the view changes shape (side by side and a single picture), the window follows on X11:
//! it keeps its height and takes the new view's aspect ratio, so no half of it is left black (elsewhere the new
//! view is letterboxed in the window as it is).
//!
//! **Keys** change the run live (through the control hub, like every other input); H shows them over the
//! picture ([`HELP`]), laid out in window space so that they fit any window. Keys are read as events, not as
//! states: minifb's input callback hands over every press and release in the order the display server sent
//! them, so a tap shorter than the loop's 10 ms poll (or than a frame, however slow the model) is one press.
//! The loop polls for input every 10 ms whether or not a frame comes, and redraws only for a new frame, a
//! change (view, help, window size) or once a second. Each press acts once: the keyboard's own auto-repeat
//! (presses of a key already down) is ignored, and the keys that step a value (arrows, Page Up/Down, `[`/`]`)
//! repeat here while held, after [`REPEAT_DELAY`] every [`REPEAT_INTERVAL`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{CStr, c_char, c_int, c_uint, c_ulong, c_void};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use minifb::{HasWindowHandle, InputCallback, Key, ScaleMode, Window, WindowOptions};
use serde_json::{Value, json};

use super::overlay::{draw_text, fit_text};
use super::{LatestSlot, WindowHost, compose, view_size};
use crate::config::View;
use crate::control::LiveValues;
use crate::error::{Error, Result};
use crate::frame::Processed;
use crate::knobs::{self, Knob};

/// How often the loop reads input (and looks for a new frame), whatever the frame rate.
const POLL: Duration = Duration::from_millis(10);
/// The picture is drawn again at least this often (minifb does not redraw an uncovered window by itself).
const REFRESH: Duration = Duration::from_secs(1);
/// How long a key's effect (or why it was refused) stays in the title.
const NOTICE: Duration = Duration::from_secs(3);
/// A held arrow (Page Up/Down, `[`/`]`) steps again after this long...
pub const REPEAT_DELAY: Duration = Duration::from_millis(400);
/// ...and then this often, while held.
pub const REPEAT_INTERVAL: Duration = Duration::from_millis(100);
/// The window opens at least this wide and high (the view's aspect ratio kept), screen permitting.
pub const MIN_WINDOW: (usize, usize) = (640, 480);
/// The share of the screen the window may take when it opens or follows the view.
const SCREEN_SHARE: f64 = 0.9;

/// The window's keys, as the help overlay shows them (README "Window keys" says the same).
pub const HELP: [&str; 14] = [
    "H / F1      this help",
    "I O S P M   view: input, output, side by side, pose, mask",
    "1-9         prompt presets ([control] presets)",
    "Up / Down   strength +/- 0.05",
    "Right/Left  guidance +/- 0.1",
    "PgUp/PgDn   steps +/- 1",
    "N           next seed",
    "F           feedback 0 / 0.2 / 0.4",
    "] / [       ControlNet scale +/- 0.1",
    "T           similarity filter on / off",
    "K / J / U   mask on/off, keep faces, invert",
    "R           back to the starting values",
    "",
    "Esc / Q     quit",
];

/// The change a key asks for, from the current values (`start`: the values the run started with); None for
/// keys that change nothing here.
fn key_change(key: Key, now: &LiveValues, start: &LiveValues, presets: &[String]) -> Option<Vec<(String, Value)>> {
    let one = |k: &str, v: Value| Some(vec![(k.to_string(), v)]);
    // A step of a knob, held in its declared range (its live name is the change's key).
    let nudge = |knob: &'static Knob, v: f64, by: f64| {
        let (min, max) = knob.float_bounds();
        one(knob.live.unwrap_or(knob.key), json!(((v + by).clamp(min, max) * 100.0).round() / 100.0))
    };
    let (min_steps, max_steps) = knobs::STEPS.int_bounds();
    let digit = [Key::Key1, Key::Key2, Key::Key3, Key::Key4, Key::Key5, Key::Key6, Key::Key7, Key::Key8, Key::Key9];
    if let Some(i) = digit.iter().position(|k| *k == key) {
        return presets.get(i).and_then(|p| one("prompt", json!(p)));
    }
    match key {
        Key::I => one("view", json!("input")),
        Key::O => one("view", json!("output")),
        Key::S => one("view", json!("side-by-side")),
        Key::P => one("view", json!("pose")),
        Key::M => one("view", json!("mask")),
        // The mask's toggles, where the run has a mask.
        Key::K => now.mask.map(|on| vec![("mask".to_string(), json!(!on))]),
        Key::J => now.mask_keep_faces.map(|on| vec![("mask-keep-faces".to_string(), json!(!on))]),
        Key::U => now.mask_invert.map(|on| vec![("mask-invert".to_string(), json!(!on))]),
        Key::Up => nudge(&knobs::STRENGTH, now.strength, 0.05),
        Key::Down => nudge(&knobs::STRENGTH, now.strength, -0.05),
        Key::Right => nudge(&knobs::GUIDANCE, now.guidance, 0.1),
        Key::Left => nudge(&knobs::GUIDANCE, now.guidance, -0.1),
        Key::PageUp => one("steps", json!((now.steps as i64 + 1).clamp(min_steps, max_steps))),
        Key::PageDown => one("steps", json!((now.steps as i64 - 1).clamp(min_steps, max_steps))),
        Key::N => one("seed", json!(now.seed.wrapping_add(1) % (i64::MAX as u64))),
        Key::F => one(
            "feedback",
            json!(match now.feedback {
                f if f < 0.2 => 0.2,
                f if f < 0.4 => 0.4,
                _ => 0.0,
            }),
        ),
        Key::RightBracket => now.controlnet_scale.and_then(|s| nudge(&knobs::CONTROLNET_SCALE, s, 0.1)),
        Key::LeftBracket => now.controlnet_scale.and_then(|s| nudge(&knobs::CONTROLNET_SCALE, s, -0.1)),
        Key::T => {
            let on = if start.similarity_threshold > 0.0 { start.similarity_threshold } else { 0.01 };
            one("similarity-threshold", json!(if now.similarity_threshold > 0.0 { 0.0 } else { on }))
        }
        Key::R => {
            let start = serde_json::to_value(start).ok()?;
            let Value::Object(map) = start else { return None };
            Some(map.into_iter().filter(|(k, _)| k != "view").collect())
        }
        _ => None,
    }
}

fn view_name(view: View) -> &'static str {
    match view {
        View::Output => "output",
        View::Input => "input",
        View::SideBySide => "side by side",
        View::Pose => "pose",
        View::Mask => "mask",
    }
}

/// Keys that step a value: held down, they repeat. Every other key acts once per press, however long it is held.
fn repeats(key: Key) -> bool {
    matches!(
        key,
        Key::Up
            | Key::Down
            | Key::Left
            | Key::Right
            | Key::PageUp
            | Key::PageDown
            | Key::LeftBracket
            | Key::RightBracket
    )
}

/// Key presses and releases, in the order the display server sent them: minifb calls this from inside
/// `update`, once per event, so a press and its release that arrive between two updates are both seen (minifb's
/// own key state, a snapshot per update, loses such a tap).
struct KeyEvents(Rc<RefCell<VecDeque<(Key, bool)>>>);

impl InputCallback for KeyEvents {
    fn add_char(&mut self, _: u32) {}
    fn set_key_state(&mut self, key: Key, down: bool) {
        self.0.borrow_mut().push_back((key, down));
    }
}

/// Which keys are down, and when held ones repeat.
#[derive(Default)]
struct Keyboard {
    /// Keys down, with when a repeating key steps next.
    held: Vec<(Key, Instant)>,
}

impl Keyboard {
    /// One event. Returns the key when it acts: a press of a key that was up. A press of a key already down is
    /// the keyboard's auto-repeat (X sends only presses for it, as minifb asks for XKB's detectable auto-repeat)
    /// and is ignored.
    fn event(&mut self, key: Key, down: bool, now: Instant) -> Option<Key> {
        let at = self.held.iter().position(|(k, _)| *k == key);
        match (down, at) {
            (true, None) => {
                self.held.push((key, now + REPEAT_DELAY));
                tracing::debug!("window key {key:?} pressed");
                Some(key)
            }
            (true, Some(_)) => {
                tracing::debug!("window key {key:?} repeat from the keyboard ignored");
                None
            }
            (false, Some(i)) => {
                self.held.swap_remove(i);
                tracing::debug!("window key {key:?} released");
                None
            }
            (false, None) => None,
        }
    }

    /// Held keys that step again now.
    fn due(&mut self, now: Instant) -> Vec<Key> {
        let mut keys = Vec::new();
        for (key, next) in &mut self.held {
            if repeats(*key) && now >= *next {
                // One step per call however late the call is: a stalled loop does not make a burst.
                *next = now + REPEAT_INTERVAL;
                keys.push(*key);
            }
        }
        keys
    }

    /// The window lost the keyboard: keys still down will be released elsewhere.
    fn release_all(&mut self) {
        self.held.clear();
    }
}

/// Where a `picture`-sized image goes in a `window`-sized one: the largest rectangle of the picture's aspect
/// ratio, centred (x, y, width, height).
fn fit_rect(picture: (u32, u32), window: (usize, usize)) -> (usize, usize, usize, usize) {
    let (pw, ph) = (picture.0.max(1) as usize, picture.1.max(1) as usize);
    let (ww, wh) = window;
    let (w, h) = if ww * ph <= wh * pw {
        (ww, ((ww * ph) as f64 / pw as f64).round() as usize)
    } else {
        (((wh * pw) as f64 / ph as f64).round() as usize, wh)
    };
    let (w, h) = (w.min(ww), h.min(wh));
    ((ww - w) / 2, (wh - h) / 2, w, h)
}

/// `size` scaled down, aspect kept, to fit the share of the screen a window may take.
fn within_screen(size: (f64, f64), screen: Option<(usize, usize)>) -> (usize, usize) {
    let (mut w, mut h) = size;
    if let Some((sw, sh)) = screen {
        let fit = (SCREEN_SHARE * sw as f64 / w).min(SCREEN_SHARE * sh as f64 / h).min(1.0);
        (w, h) = (w * fit, h * fit);
    }
    ((w.round() as usize).max(1), (h.round() as usize).max(1))
}

/// The size the window opens at for a `picture`-sized view: the picture scaled up (never down) by the smallest
/// whole number that makes it at least [`MIN_WINDOW`]; when that is too large for the screen, the largest size
/// of the picture's aspect ratio that fits.
fn default_size(picture: (u32, u32), screen: Option<(usize, usize)>) -> (usize, usize) {
    let (pw, ph) = (picture.0.max(1) as usize, picture.1.max(1) as usize);
    let scale = MIN_WINDOW.0.div_ceil(pw).max(MIN_WINDOW.1.div_ceil(ph)).max(1);
    within_screen(((pw * scale) as f64, (ph * scale) as f64), screen)
}

/// The size the window takes when the view becomes `picture`-shaped: its height kept, the view's aspect ratio,
/// within the screen.
fn follow_size(window: (usize, usize), picture: (u32, u32), screen: Option<(usize, usize)>) -> (usize, usize) {
    let h = window.1.max(1) as f64;
    within_screen((h * f64::from(picture.0.max(1)) / f64::from(picture.1.max(1)), h), screen)
}

/// The window's pixels: the picture scaled into the window at its aspect ratio (nearest pixel: cheap enough to
/// draw every frame even in a debug build, and sharp at the whole-number scales the window opens at), black
/// around it, the help over it (in window space).
struct Canvas {
    /// The picture, 0RGB.
    source: Vec<u32>,
    /// The window, 0RGB.
    pixels: Vec<u32>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas { source: Vec::new(), pixels: Vec::new() }
    }

    /// Draw `tiles` side by side (each as tall as the first) into a `window`-sized buffer.
    fn draw(&mut self, tiles: &[&RgbImage], window: (usize, usize), help: bool) {
        let ph = tiles.first().map_or(0, |t| t.height() as usize);
        let pw: usize = tiles.iter().map(|t| t.width() as usize).sum();
        self.source.clear();
        self.source.resize(pw * ph, 0);
        let mut left = 0;
        for tile in tiles {
            let tw = tile.width() as usize;
            for (row, src) in tile.as_raw().chunks_exact(tw * 3).take(ph).enumerate() {
                let dst = &mut self.source[row * pw + left..][..tw];
                for (d, p) in dst.iter_mut().zip(src.chunks_exact(3)) {
                    *d = (p[0] as u32) << 16 | (p[1] as u32) << 8 | p[2] as u32;
                }
            }
            left += tw;
        }
        let (ww, wh) = window;
        self.pixels.clear();
        self.pixels.resize(ww * wh, 0);
        let (x0, y0, w, h) = fit_rect((pw as u32, ph as u32), window);
        if w > 0 && h > 0 && pw > 0 && ph > 0 {
            // Each window pixel shows the picture pixel under its centre.
            let columns: Vec<usize> = (0..w).map(|x| ((2 * x + 1) * pw / (2 * w)).min(pw - 1)).collect();
            let mut last: Option<(usize, usize)> = None;
            for y in 0..h {
                let sy = ((2 * y + 1) * ph / (2 * h)).min(ph - 1);
                let start = (y0 + y) * ww + x0;
                match last {
                    // The same picture row as the window row above: copy it.
                    Some((row, above)) if row == sy => self.pixels.copy_within(above..above + w, start),
                    _ => {
                        let src = &self.source[sy * pw..][..pw];
                        for (d, x) in self.pixels[start..start + w].iter_mut().zip(&columns) {
                            *d = src[*x];
                        }
                    }
                }
                last = Some((sy, start));
            }
        }
        if help {
            let block = fit_text(&HELP, ww, wh);
            draw_text(&mut self.pixels, ww, &block.lines, block.scale);
        }
    }
}

type XOpenDisplay = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type XDisplayFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type XScreenSize = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type XResizeWindow = unsafe extern "C" fn(*mut c_void, c_ulong, c_uint, c_uint) -> c_int;

/// The two things the window needs from X that minifb does not offer: the screen's size, and resizing the
/// window when the view changes shape. libX11 is loaded at run time (as minifb loads it), on a connection of its
/// own.
struct Xlib {
    library: *mut c_void,
    display: *mut c_void,
    screen: (usize, usize),
    resize: XResizeWindow,
    flush: XDisplayFn,
    close: XDisplayFn,
}

impl Xlib {
    fn open() -> Option<Xlib> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to its Xlib signature; the display
        // pointer is checked before use and closed once (Drop).
        unsafe {
            let library = libc::dlopen(c"libX11.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if library.is_null() {
                return None;
            }
            let symbol = |name: &CStr| {
                let p = libc::dlsym(library, name.as_ptr());
                (!p.is_null()).then_some(p)
            };
            let found = (|| {
                Some((
                    std::mem::transmute::<*mut c_void, XOpenDisplay>(symbol(c"XOpenDisplay")?),
                    std::mem::transmute::<*mut c_void, XDisplayFn>(symbol(c"XDefaultScreen")?),
                    std::mem::transmute::<*mut c_void, XScreenSize>(symbol(c"XDisplayWidth")?),
                    std::mem::transmute::<*mut c_void, XScreenSize>(symbol(c"XDisplayHeight")?),
                    std::mem::transmute::<*mut c_void, XResizeWindow>(symbol(c"XResizeWindow")?),
                    std::mem::transmute::<*mut c_void, XDisplayFn>(symbol(c"XFlush")?),
                    std::mem::transmute::<*mut c_void, XDisplayFn>(symbol(c"XCloseDisplay")?),
                ))
            })();
            let Some((open, default_screen, width, height, resize, flush, close)) = found else {
                libc::dlclose(library);
                return None;
            };
            let display = open(std::ptr::null());
            if display.is_null() {
                libc::dlclose(library);
                return None;
            }
            let screen = default_screen(display);
            let screen = (width(display, screen).max(1) as usize, height(display, screen).max(1) as usize);
            Some(Xlib { library, display, screen, resize, flush, close })
        }
    }

    /// Give `window` a new size (its top left corner stays where it is).
    fn resize_window(&self, window: c_ulong, (w, h): (usize, usize)) {
        // SAFETY: an open display (see `open`) and the id of a window that exists (minifb's, while it is open).
        unsafe {
            (self.resize)(self.display, window, w as c_uint, h as c_uint);
            (self.flush)(self.display);
        }
    }
}

impl Drop for Xlib {
    fn drop(&mut self) {
        // SAFETY: opened in `open`, closed only here.
        unsafe {
            (self.close)(self.display);
            libc::dlclose(self.library);
        }
    }
}

/// Whether minifb drew this window through X11 (it tries Wayland first).
fn is_x11(window: &Window) -> bool {
    // raw-window-handle's type is not named here (it is minifb's dependency, not ours): its Debug form says.
    window.window_handle().is_ok_and(|h| format!("{:?}", h.as_raw()).starts_with("Xlib"))
}

/// The open window and what goes with it.
struct Preview {
    window: Window,
    /// Set on X11: the window then follows the view's shape.
    x11: Option<Xlib>,
    events: Rc<RefCell<VecDeque<(Key, bool)>>>,
    keyboard: Keyboard,
    canvas: Canvas,
    /// The picture size the window's shape was last set for.
    shaped_for: (u32, u32),
    /// The window size last drawn, and when.
    drawn: Option<((usize, usize), Instant)>,
    active: bool,
}

impl Preview {
    fn open(picture: (u32, u32)) -> Result<Preview> {
        let xlib = Xlib::open();
        let (w, h) = default_size(picture, xlib.as_ref().map(|x| x.screen));
        let options = WindowOptions { resize: true, scale_mode: ScaleMode::UpperLeft, ..Default::default() };
        let mut window = Window::new("latentcam", w, h, options)
            .map_err(|e| Error::Sink { sink: "window".into(), problem: format!("cannot open a window: {e}") })?;
        let events = Rc::new(RefCell::new(VecDeque::new()));
        window.set_input_callback(Box::new(KeyEvents(events.clone())));
        let x11 = xlib.filter(|_| is_x11(&window));
        tracing::debug!(width = w, height = h, x11 = x11.is_some(), "window opened");
        Ok(Preview {
            window,
            x11,
            events,
            keyboard: Keyboard::default(),
            canvas: Canvas::new(),
            shaped_for: picture,
            drawn: None,
            active: false,
        })
    }

    /// The view now shows a `picture`-sized image: on X11 the window takes its shape (a change between side by
    /// side and a single picture), keeping its height.
    fn follow(&mut self, picture: (u32, u32)) {
        let (old, new) = (self.shaped_for, picture);
        self.shaped_for = picture;
        if u64::from(old.0) * u64::from(new.1) == u64::from(new.0) * u64::from(old.1) {
            return;
        }
        if let Some(x11) = &self.x11 {
            let size = follow_size(self.window.get_size(), picture, Some(x11.screen));
            tracing::debug!(width = size.0, height = size.1, "window follows the view");
            x11.resize_window(self.window.get_window_handle() as c_ulong, size);
        }
    }
}

/// What a loop pass needs besides the window: the state keys change.
struct State {
    view: View,
    help: bool,
    notice: Option<(String, Instant)>,
    /// Something shown changed: draw again.
    dirty: bool,
}

/// Act on one key press (or repeat). Returns false for the keys that quit.
fn act(key: Key, state: &mut State, host: &dyn WindowHost, start: Option<&LiveValues>) -> bool {
    match key {
        Key::Escape | Key::Q => return false,
        Key::H | Key::F1 => {
            state.help = !state.help;
            state.dirty = true;
        }
        _ => match (host.control(), start) {
            (Some(hub), Some(start)) => {
                let Some(change) = key_change(key, &hub.values(), start, hub.presets()) else { return true };
                let said = match hub.apply(&change) {
                    Ok(_) => change.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "),
                    Err(e) => e.to_string(),
                };
                state.notice = Some((said, Instant::now()));
            }
            // Without live control the window still switches its own view.
            _ => {
                let view = match key {
                    Key::I => View::Input,
                    Key::O => View::Output,
                    Key::S => View::SideBySide,
                    Key::P => View::Pose,
                    Key::M => View::Mask,
                    _ => state.view,
                };
                state.dirty |= view != state.view;
                state.view = view;
            }
        },
    }
    true
}

pub fn run(view: View, slot: &LatestSlot, host: &mut dyn WindowHost) -> Result<()> {
    let mut preview: Option<Preview> = None;
    let mut frame: Option<Arc<Processed>> = None;
    // The newest frame has not been shown yet.
    let mut fresh = false;
    let mut state = State { view, help: false, notice: None, dirty: false };
    let mut last_tick = Instant::now();
    let mut shown = 0u64;
    let mut shown_since = (Instant::now(), 0u64);
    let mut fps = 0.0;
    let mut seen = 0;
    let start = host.control().map(|hub| hub.values());
    loop {
        if host.pipeline_done() {
            return Ok(());
        }
        // The view follows live control (HTTP, OSC, stdin and this window's own keys).
        if let Some(v) = host.control().and_then(|hub| hub.newer(&mut seen)).and_then(|v| v.view) {
            state.dirty |= v != state.view;
            state.view = v;
        }
        if let Some(f) = slot.take() {
            frame = Some(f);
            fresh = true;
        }
        if let Some(frame) = &frame {
            let picture = view_size(state.view, frame.output.width(), frame.output.height());
            match &mut preview {
                None => preview = Some(Preview::open(picture)?),
                Some(p) if p.shaped_for != picture => p.follow(picture),
                Some(_) => {}
            }
        }
        if let (Some(p), Some(frame)) = (preview.as_mut(), &frame) {
            let size = p.window.get_size();
            let due = match p.drawn {
                Some((drawn, at)) => drawn != size || at.elapsed() >= REFRESH,
                None => true,
            };
            if fresh || state.dirty || due {
                match state.view {
                    View::SideBySide => p.canvas.draw(&[&frame.input, &frame.output], size, state.help),
                    view => p.canvas.draw(&[compose(frame, view).as_ref()], size, state.help),
                }
                p.window
                    .update_with_buffer(&p.canvas.pixels, size.0, size.1)
                    .map_err(|e| Error::Sink { sink: "window".into(), problem: e.to_string() })?;
                p.drawn = Some((size, Instant::now()));
                state.dirty = false;
                if fresh {
                    host.delivered(frame.captured);
                    shown += 1;
                    fresh = false;
                }
            } else {
                p.window.update();
            }
            if !p.window.is_open() {
                host.request_stop();
                return Ok(());
            }
            let active = p.window.is_active();
            if p.active && !active {
                p.keyboard.release_all();
            }
            p.active = active;
            let now = Instant::now();
            let events: Vec<(Key, bool)> = p.events.borrow_mut().drain(..).collect();
            let mut keys: Vec<Key> =
                events.into_iter().filter_map(|(key, down)| p.keyboard.event(key, down, now)).collect();
            keys.extend(p.keyboard.due(now));
            for key in keys {
                if !act(key, &mut state, &*host, start.as_ref()) {
                    host.request_stop();
                    return Ok(());
                }
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(200) {
            let (since, count) = shown_since;
            if since.elapsed() >= Duration::from_secs(1) {
                fps = (shown - count) as f64 / since.elapsed().as_secs_f64();
                shown_since = (Instant::now(), shown);
            }
            if let Some(p) = preview.as_mut() {
                let latency = host.latency_p50_ms().map_or("-".into(), |l| format!("{l:.0} ms"));
                let said = match &state.notice {
                    Some((text, at)) if at.elapsed() < NOTICE => text.clone(),
                    _ => "H keys, Esc quit".into(),
                };
                let view = view_name(state.view);
                p.window.set_title(&format!("latentcam — {view} — {fps:.1} fps, latency {latency} — {said}"));
            }
            host.tick();
            last_tick = Instant::now();
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> LiveValues {
        LiveValues::sample()
    }

    fn change(key: Key, now: &LiveValues) -> Option<Vec<(String, Value)>> {
        key_change(key, now, &values(), &["a fox".to_string()])
    }

    #[test]
    fn keys_ask_for_changes_within_range() {
        let v = values();
        assert_eq!(change(Key::Up, &v), Some(vec![("strength".into(), json!(0.55))]));
        assert_eq!(
            change(Key::PageDown, &LiveValues { steps: 1, ..v.clone() }),
            Some(vec![("steps".into(), json!(1))])
        );
        assert_eq!(change(Key::N, &v), Some(vec![("seed".into(), json!(8))]));
        assert_eq!(change(Key::Key1, &v), Some(vec![("prompt".into(), json!("a fox"))]));
        assert_eq!(change(Key::Key2, &v), None, "no second preset");
        assert_eq!(change(Key::T, &v), Some(vec![("similarity-threshold".into(), json!(0.0))]));
        assert_eq!(change(Key::RightBracket, &v), None, "no ControlNet scale without [pose]");
        assert_eq!(change(Key::F, &v), Some(vec![("feedback".into(), json!(0.2))]));
        assert_eq!(change(Key::S, &v), Some(vec![("view".into(), json!("side-by-side"))]));
        let strong = LiveValues { strength: 1.0, ..v.clone() };
        assert_eq!(change(Key::Up, &strong), Some(vec![("strength".into(), json!(1.0))]), "clamped");
        // R: every value back to the start, except the view.
        let reset = change(Key::R, &LiveValues { seed: 99, ..v }).unwrap();
        assert!(reset.contains(&("seed".into(), json!(7))) && !reset.iter().any(|(k, _)| k == "view"));
    }

    #[test]
    fn each_press_acts_once_and_only_stepping_keys_repeat_while_held() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut k = Keyboard::default();
        // A tap whose press and release arrive together (between two polls) is one press.
        assert_eq!(k.event(Key::N, true, ms(0)), Some(Key::N));
        assert_eq!(k.event(Key::N, false, ms(0)), None);
        // Three taps in one batch are three presses.
        let taps = [true, false, true, false, true, false].map(|down| k.event(Key::N, down, ms(1)));
        assert_eq!(taps.iter().flatten().count(), 3);
        // H held past the keyboard's repeat delay: X sends more presses (detectable auto-repeat), one toggle.
        assert_eq!(k.event(Key::H, true, ms(10)), Some(Key::H));
        for t in (670..1000).step_by(40) {
            assert_eq!(k.event(Key::H, true, ms(t)), None);
            assert!(k.due(ms(t)).is_empty(), "H does not repeat");
        }
        k.event(Key::H, false, ms(1010));
        // Up held for a second: one press, then a step every REPEAT_INTERVAL after REPEAT_DELAY.
        assert_eq!(k.event(Key::Up, true, ms(2000)), Some(Key::Up));
        let steps: usize = (2000..3000).step_by(10).map(|t| k.due(ms(t)).len()).sum();
        let expected = ((1000 - REPEAT_DELAY.as_millis()) / REPEAT_INTERVAL.as_millis()) as usize;
        assert!((expected..=expected + 1).contains(&steps), "{steps} repeats, expected about {expected}");
        k.event(Key::Up, false, ms(3000));
        assert!(k.due(ms(5000)).is_empty(), "released: no more steps");
        // A stalled loop makes one step, not a burst.
        k.event(Key::Down, true, ms(6000));
        assert_eq!(k.due(ms(9000)), [Key::Down]);
        // Focus lost while held: the release goes elsewhere; the key does not go on stepping.
        k.release_all();
        assert!(k.due(ms(20000)).is_empty());
        assert_eq!(k.event(Key::Down, true, ms(20001)), Some(Key::Down), "a new press after focus came back");
    }

    #[test]
    fn the_window_opens_at_the_views_aspect_at_least_640x480_within_the_screen() {
        assert_eq!(default_size((512, 256), None), (1024, 512), "side by side of 256x256");
        assert_eq!(default_size((256, 256), None), (768, 768));
        assert_eq!(default_size((512, 288), None), (1024, 576));
        assert_eq!(default_size((1024, 768), None), (1024, 768), "never scaled down to the minimum");
        assert_eq!(default_size((1024, 288), Some((1920, 1080))), (1728, 486), "90% of the screen");
        assert_eq!(default_size((256, 256), Some((1366, 768))), (691, 691), "a small screen");
        // Following a view: the height kept, the new aspect ratio.
        assert_eq!(follow_size((960, 480), (256, 256), None), (480, 480));
        assert_eq!(follow_size((480, 480), (512, 256), Some((1600, 1200))), (960, 480));
        assert_eq!(follow_size((1000, 1000), (512, 256), Some((1600, 1200))), (1440, 720));
    }

    #[test]
    fn the_picture_fills_the_window_at_its_aspect_ratio() {
        assert_eq!(fit_rect((512, 256), (960, 480)), (0, 0, 960, 480));
        assert_eq!(fit_rect((256, 256), (960, 480)), (240, 0, 480, 480));
        assert_eq!(fit_rect((256, 256), (320, 240)), (40, 0, 240, 240));
        assert_eq!(fit_rect((512, 256), (300, 400)), (0, 125, 300, 150));
        assert_eq!(fit_rect((256, 256), (0, 0)), (0, 0, 0, 0));
    }

    #[test]
    fn the_canvas_scales_the_picture_letterboxes_it_and_draws_the_help_in_window_space() {
        let picture = RgbImage::from_pixel(256, 256, image::Rgb([200, 100, 50]));
        let mut canvas = Canvas::new();
        canvas.draw(&[&picture], (480, 480), false);
        assert!(canvas.pixels.iter().all(|p| *p == 0x00c8_6432), "filled, no border");
        canvas.draw(&[&picture], (320, 240), false);
        let at = |x: usize, y: usize| canvas.pixels[y * 320 + x];
        assert_eq!((at(39, 120), at(40, 120), at(279, 120), at(280, 120)), (0, 0x00c8_6432, 0x00c8_6432, 0));
        // The help in a window narrower than its lines: wrapped, every glyph pixel inside the window.
        canvas.draw(&[&picture], (320, 240), true);
        let lit = canvas.pixels.iter().filter(|p| **p == 0x00ff_ffff).count();
        assert_eq!(lit, super::super::overlay::lit_pixels(&HELP));
        // Side by side: the two pictures each fill their half, scaled by 2.
        let (red, blue) = (RgbImage::from_pixel(256, 256, image::Rgb([255, 0, 0])), RgbImage::new(256, 256));
        let blue =
            RgbImage::from_fn(
                256,
                256,
                |x, y| if (x, y) == (255, 255) { image::Rgb([0, 0, 255]) } else { blue[(x, y)] },
            );
        canvas.draw(&[&red, &blue], (1024, 512), false);
        let at = |x: usize, y: usize| canvas.pixels[y * 1024 + x];
        assert_eq!((at(0, 0), at(511, 511), at(512, 0)), (0x00ff_0000, 0x00ff_0000, 0));
        assert_eq!((at(1021, 509), at(1022, 510), at(1023, 511)), (0, 0x0000_00ff, 0x0000_00ff), "2x2 per pixel");
        // A large window: larger letters.
        canvas.draw(&[&picture], (960, 480), true);
        let lit = canvas.pixels.iter().filter(|p| **p == 0x00ff_ffff).count();
        assert_eq!(lit, 4 * super::super::overlay::lit_pixels(&HELP));
    }
}
