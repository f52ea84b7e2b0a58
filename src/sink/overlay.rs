//! Text over the window's picture (the key help): an 8x8 bitmap font drawn into 0RGB pixels on a darkened box,
//! laid out in window space so that it fits whatever size the window has.

use font8x8::legacy::BASIC_LEGACY;

/// Font pixels per character cell side.
pub const GLYPH_PX: usize = 8;
/// Font pixels from one line's top to the next's.
pub const LINE_PX: usize = GLYPH_PX + 2;
/// Window pixels between the box's edge and the text.
pub const MARGIN_PX: usize = 6;
/// The largest scale [`fit_text`] picks (3: 24-pixel letters on a full-HD window).
pub const MAX_SCALE: usize = 3;

/// Text laid out to fit a window: the lines to draw (wrapped where the window is too narrow) and the scale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextBlock {
    pub lines: Vec<String>,
    pub scale: usize,
}

/// The size in pixels of the box [`draw_text`] draws for `lines` at `scale`.
pub fn box_size<S: AsRef<str>>(lines: &[S], scale: usize) -> (usize, usize) {
    let cols = lines.iter().map(|l| l.as_ref().chars().count()).max().unwrap_or(0);
    (cols * GLYPH_PX * scale + 2 * MARGIN_PX, lines.len() * LINE_PX * scale + 2 * MARGIN_PX)
}

/// Lay `lines` out for a `width`x`height` window: the largest scale (up to [`MAX_SCALE`]) at which they fit as
/// they are; in a window too small for that, scale 1 with the lines wrapped to its width (at spaces, continuation
/// lines indented under the description). Only a window too short for the wrapped lines cuts off the last ones.
pub fn fit_text(lines: &[&str], width: usize, height: usize) -> TextBlock {
    for scale in (1..=MAX_SCALE).rev() {
        let (w, h) = box_size(lines, scale);
        if w <= width && h <= height {
            return TextBlock { lines: lines.iter().map(|l| l.to_string()).collect(), scale };
        }
    }
    let cols = (width.saturating_sub(2 * MARGIN_PX) / GLYPH_PX).max(1);
    TextBlock { lines: lines.iter().flat_map(|l| wrap(l, cols)).collect(), scale: 1 }
}

/// One line broken into lines of at most `cols` characters, at spaces where it can (a word longer than a line is
/// split). Continuation lines start under the line's second column (after its first run of two or more spaces,
/// as in "Up / Down   strength +/- 0.05") when that leaves room for words, else two characters in. Only spaces
/// are dropped or added: every other character is kept, in order.
pub fn wrap(line: &str, cols: usize) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= cols {
        return vec![line.to_string()];
    }
    let column = chars.windows(2).position(|w| w == [' ', ' ']).and_then(|gap| {
        let start = gap + chars[gap..].iter().take_while(|c| **c == ' ').count();
        (start < chars.len()).then_some(start)
    });
    let indent = match column {
        Some(c) if c + 10 <= cols => c,
        _ if cols >= 12 => 2,
        _ => 0,
    };
    let mut out = Vec::new();
    let mut rest: &[char] = &chars;
    let mut first = true;
    while !rest.is_empty() {
        let lead = if first { 0 } else { indent };
        let room = cols - lead;
        let (piece, next) = if rest.len() <= room {
            (rest, &rest[rest.len()..])
        } else {
            // The last space at or before the line's end (a word may end exactly at the edge).
            match rest[..=room].iter().rposition(|c| *c == ' ').filter(|at| rest[..*at].iter().any(|c| *c != ' ')) {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (&rest[..room], &rest[room..]),
            }
        };
        let text: String = piece.iter().collect();
        out.push(format!("{}{}", " ".repeat(lead), text.trim_end()));
        let skip = next.iter().take_while(|c| **c == ' ').count();
        rest = &next[skip..];
        first = false;
    }
    out
}

/// Draw `lines` at the top left of a `width`-wide 0RGB buffer, `scale` pixels per font pixel, over a box that
/// halves the picture's brightness. Text that does not fit is clipped; characters outside ASCII show as `?`.
pub fn draw_text<S: AsRef<str>>(pixels: &mut [u32], width: usize, lines: &[S], scale: usize) {
    let height = pixels.len() / width.max(1);
    let scale = scale.max(1);
    let (box_w, box_h) = box_size(lines, scale);
    let (box_w, box_h) = (box_w.min(width), box_h.min(height));
    for y in 0..box_h {
        for p in &mut pixels[y * width..y * width + box_w] {
            *p = (*p >> 1) & 0x007f_7f7f;
        }
    }
    for (row, line) in lines.iter().enumerate() {
        let top = MARGIN_PX + row * LINE_PX * scale;
        for (col, c) in line.as_ref().chars().enumerate() {
            let glyph = BASIC_LEGACY[if c.is_ascii() { c as usize } else { '?' as usize }];
            let left = MARGIN_PX + col * GLYPH_PX * scale;
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..GLYPH_PX {
                    if bits & (1 << gx) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (x, y) = (left + gx * scale + dx, top + gy * scale + dy);
                            if x < width && y < height {
                                pixels[y * width + x] = 0x00ff_ffff;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Lit font pixels of `lines` at scale 1 (what [`draw_text`] draws, times the scale squared).
pub fn lit_pixels<S: AsRef<str>>(lines: &[S]) -> usize {
    lines
        .iter()
        .flat_map(|l| l.as_ref().chars().collect::<Vec<_>>())
        .map(|c| BASIC_LEGACY[if c.is_ascii() { c as usize } else { '?' as usize }])
        .map(|glyph| glyph.iter().map(|row| row.count_ones() as usize).sum::<usize>())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_white_on_a_darkened_box_and_clipped() {
        let (w, h) = (64, 48);
        let mut pixels = vec![0x0080_8080u32; w * h];
        draw_text(&mut pixels, w, &["H", "a very long line that does not fit"], 1);
        assert!(pixels.contains(&0x00ff_ffff), "glyph pixels drawn");
        assert_eq!(pixels[0], 0x0040_4040, "the box halves the picture");
        assert_eq!(pixels[h * w - 1], 0x0080_8080, "outside the box untouched");
        // An 'H' has its left stroke in column 1 of the glyph, rows 0-6.
        let lit = (0..8).filter(|y| pixels[(MARGIN_PX + y) * w + MARGIN_PX + 1] == 0x00ff_ffff).count();
        assert!(lit >= 6, "{lit}");
    }

    const HELP: [&str; 4] =
        ["H / F1      this help", "I O S P     view: input, output, side by side, pose", "", "Esc / Q     quit"];

    fn non_spaces(lines: &[String]) -> String {
        lines.concat().chars().filter(|c| *c != ' ').collect()
    }

    #[test]
    fn text_takes_the_largest_scale_that_fits_and_wraps_only_when_none_does() {
        let (w1, h1) = box_size(&HELP, 1);
        assert_eq!((w1, h1), (51 * 8 + 12, 4 * 10 + 12));
        assert_eq!(fit_text(&HELP, 2000, 2000).scale, MAX_SCALE);
        let two = fit_text(&HELP, 2 * 51 * 8 + 12, 1000);
        assert_eq!((two.scale, two.lines.len()), (2, 4), "exactly fits at 2");
        let one = fit_text(&HELP, w1, h1);
        assert_eq!((one.scale, one.lines.len()), (1, 4));
        // Narrower than one line at scale 1: wrapped to the width, nothing lost.
        for width in [w1 - 1, 256, 200, 120, 40] {
            let block = fit_text(&HELP, width, 1000);
            assert_eq!(block.scale, 1);
            let (bw, _) = box_size(&block.lines, 1);
            assert!(bw <= width.max(8 + 2 * MARGIN_PX), "{width}: {bw} {:?}", block.lines);
            assert_eq!(non_spaces(&block.lines), non_spaces(&HELP.map(String::from)), "{width}");
            assert_eq!(lit_pixels(&block.lines), lit_pixels(&HELP), "{width}");
        }
    }

    #[test]
    fn wrapped_lines_break_at_spaces_under_the_description() {
        let lines = wrap("I O S P     view: input, output, side by side, pose", 30);
        assert_eq!(lines, ["I O S P     view: input,", "            output, side by", "            side, pose"]);
        assert!(lines.iter().all(|l| l.chars().count() <= 30));
        // Too narrow for the description column: a small indent; a word longer than a line is split.
        assert_eq!(wrap("Up / Down   strength", 12), ["Up / Down", "  strength"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(wrap("", 3), [""]);
    }

    #[test]
    fn every_drawn_pixel_of_fitted_text_is_inside_the_window() {
        for (w, h) in [(256, 256), (320, 240), (480, 480), (960, 480), (1920, 1080)] {
            let block = fit_text(&HELP, w, h);
            let mut pixels = vec![0u32; w * h];
            draw_text(&mut pixels, w, &block.lines, block.scale);
            let lit = pixels.iter().filter(|p| **p == 0x00ff_ffff).count();
            assert_eq!(lit, lit_pixels(&HELP) * block.scale * block.scale, "{w}x{h}: {block:?}");
        }
    }
}
