//! Text over the window's picture (the key help): an 8x8 bitmap font drawn into 0RGB pixels on a darkened box.

use font8x8::legacy::BASIC_LEGACY;

const GLYPH_PX: usize = 8;
const MARGIN_PX: usize = 6;

/// Draw `lines` at the top left of a `width`-wide 0RGB buffer, `scale` pixels per font pixel, over a box that
/// halves the picture's brightness. Text that does not fit is clipped; characters outside ASCII show as `?`.
pub fn draw_text(pixels: &mut [u32], width: usize, lines: &[&str], scale: usize) {
    let height = pixels.len() / width.max(1);
    let scale = scale.max(1);
    let cols = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let box_w = (cols * GLYPH_PX * scale + 2 * MARGIN_PX).min(width);
    let box_h = (lines.len() * (GLYPH_PX + 2) * scale + 2 * MARGIN_PX).min(height);
    for y in 0..box_h {
        for p in &mut pixels[y * width..y * width + box_w] {
            *p = (*p >> 1) & 0x007f_7f7f;
        }
    }
    for (row, line) in lines.iter().enumerate() {
        let top = MARGIN_PX + row * (GLYPH_PX + 2) * scale;
        for (col, c) in line.chars().enumerate() {
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
}
