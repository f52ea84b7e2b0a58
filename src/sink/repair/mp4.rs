//! MP4/MOV: the top-level boxes of a fragmented recording (`ftyp moov`, then `moof`+`mdat` pairs, maybe an `mfra`),
//! and where its last complete fragment ends.

use std::fs::File;
use std::io;

use super::{Scan, read_upto};

/// Boxes larger than this are not read into memory (a `moov` or `moof` of a recording is kilobytes).
const MAX_META_BOX: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------------------------
// MP4 / MOV

/// A box header: its type, where its payload starts (relative to the box) and its full size.
#[derive(Clone, Copy, Debug)]
struct BoxHeader {
    kind: [u8; 4],
    header_len: u64,
    /// `None`: size 0, the box runs to the end of its container.
    size: Option<u64>,
}

/// Parse a box header from the start of `b`; `None` when `b` does not hold all of it or it is malformed.
fn box_header(b: &[u8]) -> Option<BoxHeader> {
    let size32 = u32::from_be_bytes(b.get(0..4)?.try_into().ok()?);
    let kind: [u8; 4] = b.get(4..8)?.try_into().ok()?;
    let (header_len, size) = match size32 {
        0 => (8, None),
        1 => (16, Some(u64::from_be_bytes(b.get(8..16)?.try_into().ok()?))),
        n => (8, Some(u64::from(n))),
    };
    let header_len = if &kind == b"uuid" { header_len + 16 } else { header_len };
    if b.len() < header_len as usize || size.is_some_and(|s| s < header_len) {
        return None;
    }
    Some(BoxHeader { kind, header_len, size })
}

/// The child boxes of a payload held in memory, as (type, payload); stops at the first malformed one.
fn children(payload: &[u8]) -> impl Iterator<Item = (&[u8; 4], &[u8])> {
    let mut rest = payload;
    std::iter::from_fn(move || {
        let h = box_header(rest)?;
        let size = usize::try_from(h.size.unwrap_or(rest.len() as u64)).ok()?;
        if size > rest.len() {
            return None;
        }
        let (this, next) = rest.split_at(size);
        rest = next;
        let kind: &[u8; 4] = this[4..8].try_into().ok()?;
        Some((kind, &this[h.header_len as usize..]))
    })
}

fn child<'a>(payload: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(payload).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// Big-endian reader over a box payload.
struct Fields<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(b: &'a [u8]) -> Self {
        Fields { b, at: 0 }
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let v = self.b.get(self.at..self.at + N)?.try_into().ok()?;
        self.at += N;
        Some(v)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        (self.at + n <= self.b.len()).then(|| self.at += n)
    }
}

/// What the `moov` says about one track.
#[derive(Clone, Copy, Debug, Default)]
struct Track {
    id: u32,
    timescale: u32,
    video: bool,
    default_duration: u32,
    default_size: Option<u32>,
}

fn parse_moov(moov: &[u8]) -> Vec<Track> {
    let mut tracks: Vec<Track> = children(moov)
        .filter(|(k, _)| *k == b"trak")
        .filter_map(|(_, trak)| {
            let mut tkhd = Fields::new(child(trak, b"tkhd")?);
            let version = tkhd.take::<4>()?[0];
            tkhd.skip(if version == 1 { 16 } else { 8 })?;
            let id = tkhd.u32()?;
            let mdia = child(trak, b"mdia")?;
            let mut mdhd = Fields::new(child(mdia, b"mdhd")?);
            let version = mdhd.take::<4>()?[0];
            mdhd.skip(if version == 1 { 16 } else { 8 })?;
            let timescale = mdhd.u32()?;
            let video = child(mdia, b"hdlr").and_then(|h| h.get(8..12)) == Some(b"vide");
            Some(Track { id, timescale, video, ..Track::default() })
        })
        .collect();
    if let Some(mvex) = child(moov, b"mvex") {
        for (_, trex) in children(mvex).filter(|(k, _)| *k == b"trex") {
            let mut f = Fields::new(trex);
            let (Some(_), Some(id), Some(_), Some(duration), Some(size)) =
                (f.u32(), f.u32(), f.u32(), f.u32(), f.u32())
            else {
                continue;
            };
            if let Some(t) = tracks.iter_mut().find(|t| t.id == id) {
                t.default_duration = duration;
                t.default_size = Some(size);
            }
        }
    }
    tracks
}

/// One track's run of samples in a fragment.
#[derive(Debug, Default)]
struct TrackRun {
    track: u32,
    samples: u64,
    /// Media time at the start (`tfdt`), when given.
    start: Option<u64>,
    duration: u64,
}

/// Read a `moof` (`moof_at`: its offset in the file): each track's samples and durations, and the end of the
/// data its runs point to (absolute; `None` when that cannot be told). `None` when the box is malformed.
fn parse_moof(moof: &[u8], moof_at: u64, tracks: &[Track]) -> Option<(Vec<TrackRun>, Option<u64>)> {
    let mut runs = Vec::new();
    let mut data_end: Option<u64> = Some(moof_at);
    // Without a base offset or default-base-is-moof, a track fragment's data follows the previous one's.
    let mut implicit_base = moof_at;
    for (_, traf) in children(moof).filter(|(k, _)| *k == b"traf") {
        let mut tfhd = Fields::new(child(traf, b"tfhd")?);
        let flags = u32::from_be_bytes(tfhd.take::<4>()?) & 0x00ff_ffff;
        let id = tfhd.u32()?;
        let base_offset = if flags & 0x01 != 0 { Some(tfhd.u64()?) } else { None };
        if flags & 0x02 != 0 {
            tfhd.skip(4)?;
        }
        let track = tracks.iter().find(|t| t.id == id).copied().unwrap_or_default();
        let default_duration = if flags & 0x08 != 0 { tfhd.u32()? } else { track.default_duration };
        let default_size = if flags & 0x10 != 0 { Some(tfhd.u32()?) } else { track.default_size };
        let base = match base_offset {
            Some(b) => b,
            None if flags & 0x02_0000 != 0 => moof_at,
            None => implicit_base,
        };
        let start = child(traf, b"tfdt").and_then(|p| {
            let mut f = Fields::new(p);
            let version = f.take::<4>()?[0];
            if version == 1 { f.u64() } else { f.u32().map(u64::from) }
        });
        let mut run = TrackRun { track: id, start, ..TrackRun::default() };
        let mut next = Some(base);
        for (_, trun) in children(traf).filter(|(k, _)| *k == b"trun") {
            let mut f = Fields::new(trun);
            let flags = u32::from_be_bytes(f.take::<4>()?) & 0x00ff_ffff;
            let count = f.u32()?;
            let offset = if flags & 0x01 != 0 { Some(i64::from(f.u32()? as i32)) } else { None };
            if flags & 0x04 != 0 {
                f.skip(4)?;
            }
            let mut bytes: Option<u64> = Some(0);
            if flags & 0xf00 == 0 {
                // No per-sample fields: every sample takes the defaults.
                run.duration += u64::from(count) * u64::from(default_duration);
                bytes = default_size.map(|s| u64::from(count) * u64::from(s));
            } else {
                for _ in 0..count {
                    let duration = if flags & 0x100 != 0 { f.u32()? } else { default_duration };
                    let size = if flags & 0x200 != 0 { Some(f.u32()?) } else { default_size };
                    f.skip(4 * ((flags & 0x400 != 0) as usize + (flags & 0x800 != 0) as usize))?;
                    run.duration += u64::from(duration);
                    bytes = bytes.zip(size).map(|(b, s)| b + u64::from(s));
                }
            }
            run.samples += u64::from(count);
            let begin = match offset {
                Some(o) => base.checked_add_signed(o),
                None => next,
            };
            next = begin.zip(bytes).map(|(b, n)| b + n);
            data_end = data_end.zip(next).map(|(a, b)| a.max(b));
        }
        if let Some(n) = next {
            implicit_base = n;
        }
        runs.push(run);
    }
    Some((runs, data_end))
}

pub(super) fn scan(file: &File, len: u64) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let mut tracks: Vec<Track> = Vec::new();
    // Each video track's end (media time) so far.
    let mut video_end: Vec<(u32, u64)> = Vec::new();
    let mut video_frames = 0u64;
    let mut at = 0u64;
    // Whether everything up to `at` is complete (the walk reached the end of the file cleanly).
    let mut clean = true;
    while at < len {
        let Some(h) = box_header(&read_upto(file, at, 32)?) else {
            clean = false;
            break;
        };
        let size = h.size.unwrap_or(len - at);
        if size > len - at {
            clean = false;
            break;
        }
        match &h.kind {
            b"moov" => {
                let moov = read_meta(file, at, &h, size)?;
                tracks = parse_moov(&moov);
                scan.header = true;
                video_end = tracks.iter().filter(|t| t.video).map(|t| (t.id, 0)).collect();
                at += size;
                scan.keep = at;
            }
            b"moof" => {
                // Its mdat must follow, whole, and hold every sample the moof points to.
                let mdat_at = at + size;
                let mdat = read_upto(file, mdat_at, 32)?;
                let Some(mh) = box_header(&mdat).filter(|m| &m.kind == b"mdat") else {
                    clean = false;
                    break;
                };
                let mdat_size = mh.size.unwrap_or(len - mdat_at);
                if mdat_size > len - mdat_at {
                    clean = false;
                    break;
                }
                let pair_end = mdat_at + mdat_size;
                let moof = read_meta(file, at, &h, size)?;
                let (runs, data_end) = parse_moof(&moof, at, &tracks).unwrap_or_default();
                if data_end.is_some_and(|end| end > pair_end) {
                    clean = false;
                    break;
                }
                for run in runs {
                    if let Some((_, end)) = video_end.iter_mut().find(|(id, _)| *id == run.track) {
                        *end = run.start.unwrap_or(*end) + run.duration;
                        video_frames += run.samples;
                    }
                }
                scan.fragments += 1;
                at = pair_end;
                scan.keep = at;
            }
            _ => {
                // ftyp, a plain file's mdat, free, styp, sidx, mfra, ...: whole, it stays.
                at += size;
                scan.keep = at;
            }
        }
    }
    if clean {
        scan.keep = len;
    }
    if let Some(&(id, end)) = video_end.first() {
        scan.frames = Some(video_frames);
        let timescale = tracks.iter().find(|t| t.id == id).map_or(0, |t| t.timescale);
        scan.seconds = (timescale > 0).then(|| end as f64 / f64::from(timescale));
    }
    Ok(scan)
}

/// Read a whole `moov`/`moof` (payload only).
fn read_meta(file: &File, at: u64, h: &BoxHeader, size: u64) -> io::Result<Vec<u8>> {
    if size > MAX_META_BOX {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a {size}-byte box at {at} is too large")));
    }
    read_upto(file, at + h.header_len, (size - h.header_len) as usize)
}

#[cfg(test)]
mod tests {
    use super::super::{Container, run};

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(payload);
        b
    }

    /// A box with a 64-bit `largesize`.
    fn bx64(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = 1u32.to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(&((payload.len() + 16) as u64).to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    fn full(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = (u32::from(version) << 24 | flags).to_be_bytes().to_vec();
        p.extend_from_slice(payload);
        bx(kind, &p)
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    fn be(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    const TIMESCALE: u32 = 25;

    fn ftyp() -> Vec<u8> {
        bx(b"ftyp", b"isomiso6")
    }

    /// One video track (ID 1, 25 units a second), one audio track (ID 2).
    fn moov() -> Vec<u8> {
        let trak = |id: u32, handler: &[u8; 4], timescale: u32| {
            let tkhd = full(b"tkhd", 0, 3, &be(&[0, 0, id, 0, 0]));
            let mdhd = full(b"mdhd", 0, 0, &be(&[0, 0, timescale, 0, 0]));
            let mut hdlr = be(&[0]);
            hdlr.extend_from_slice(handler);
            hdlr.extend_from_slice(&[0; 13]);
            let hdlr = full(b"hdlr", 0, 0, &hdlr);
            bx(b"trak", &cat(&[tkhd, bx(b"mdia", &cat(&[mdhd, hdlr]))]))
        };
        let trex = |id: u32| full(b"trex", 0, 0, &be(&[id, 1, 1, 0, 0]));
        let mvhd = full(b"mvhd", 0, 0, &[0; 96]);
        bx(
            b"moov",
            &cat(&[mvhd, trak(1, b"vide", TIMESCALE), trak(2, b"soun", 48000), bx(b"mvex", &cat(&[trex(1), trex(2)]))]),
        )
    }

    /// A fragment of `sizes.len()` samples of track `track` starting at media time `start`: `moof` + `mdat`.
    /// `extra_offset` moves the samples' data offset (to point past the mdat).
    fn fragment(track: u32, start: u32, sizes: &[u32], extra_offset: u32) -> Vec<u8> {
        let build = |data_offset: u32| {
            let tfhd = full(b"tfhd", 0, 0x02_0000, &be(&[track]));
            let tfdt = full(b"tfdt", 0, 0, &be(&[start]));
            let mut trun = be(&[sizes.len() as u32, data_offset]);
            trun.extend(sizes.iter().flat_map(|s| be(&[1, *s])));
            let trun = full(b"trun", 0, 0x01 | 0x100 | 0x200, &trun);
            bx(b"moof", &cat(&[full(b"mfhd", 0, 0, &be(&[1])), bx(b"traf", &cat(&[tfhd, tfdt, trun]))]))
        };
        let moof_len = build(0).len() as u32;
        let moof = build(moof_len + 8 + extra_offset);
        let data: Vec<u8> = (0..sizes.iter().sum::<u32>()).map(|i| i as u8).collect();
        cat(&[moof, bx(b"mdat", &data)])
    }

    fn video(start: u32) -> Vec<u8> {
        fragment(1, start, &[500, 120, 130, 140, 150], 0)
    }

    fn audio(start: u32) -> Vec<u8> {
        fragment(2, start * 1920, &[60, 61, 62], 0)
    }

    /// `ftyp moov` then three seconds (5 video frames each... at 25 units a second, 0.2 s of video each).
    fn recording() -> (Vec<u8>, Vec<u64>) {
        let mut file = cat(&[ftyp(), moov()]);
        let mut ends = vec![file.len() as u64];
        for second in 0..3 {
            file.extend(audio(second * 5));
            ends.push(file.len() as u64);
            file.extend(video(second * 5));
            ends.push(file.len() as u64);
        }
        (file, ends)
    }

    #[test]
    fn a_complete_recording_is_left_as_it_is() {
        let (file, _) = recording();
        let (cut, after) = run(&file, Container::Mp4);
        assert_eq!(after, file);
        assert!(cut.header && !cut.cut_anything());
        assert_eq!((cut.fragments, cut.frames), (6, Some(15)));
        assert_eq!(cut.seconds, Some(15.0 / f64::from(TIMESCALE)));
    }

    #[test]
    fn a_cut_anywhere_in_a_fragment_goes_back_to_the_last_complete_one() {
        let (file, ends) = recording();
        // Every length from inside the first fragment's moof to the last byte: the file ends at the last pair
        // that is wholly there (boxes' headers, moofs and mdats cut anywhere).
        for len in ends[0] + 1..file.len() as u64 {
            let (cut, after) = run(&file[..len as usize], Container::Mp4);
            let kept = ends.iter().rposition(|&e| e <= len).unwrap();
            assert_eq!(cut.after, ends[kept], "cut at {len}");
            assert_eq!(after[..], file[..ends[kept] as usize]);
            assert_eq!(cut.fragments, kept as u64);
            assert_eq!(cut.frames, Some(5 * (kept as u64 / 2)), "cut at {len}");
            assert!(cut.header);
        }
    }

    #[test]
    fn a_cut_inside_a_moof_or_an_mdat_or_a_box_header() {
        let (file, ends) = recording();
        let moof_at = ends[3] as usize; // the second second's audio fragment
        for (what, len) in [("moof", moof_at + 20), ("mdat", ends[4] as usize - 3), ("box header", moof_at + 5)] {
            let (cut, _) = run(&file[..len], Container::Mp4);
            assert_eq!(cut.after, ends[3], "{what}");
            assert_eq!(cut.before, len as u64);
            assert_eq!((cut.fragments, cut.frames, cut.seconds), (3, Some(5), Some(0.2)), "{what}");
        }
    }

    #[test]
    fn sixty_four_bit_sizes() {
        let v = video(0);
        let moof_len = u32::from_be_bytes(v[0..4].try_into().unwrap()) as usize;
        // The same fragment with a largesize mdat (8 bytes more header: the data offset moves by 8).
        let frag = fragment(1, 0, &[500, 120, 130, 140, 150], 8);
        let moof = &frag[..moof_len];
        let data = &frag[moof_len + 8..];
        let mut file = cat(&[ftyp(), bx64(b"moov", &moov()[8..]), moof.to_vec(), bx64(b"mdat", data)]);
        let complete = file.len() as u64;
        let (cut, after) = run(&file, Container::Mp4);
        assert_eq!((cut.after, cut.fragments, cut.frames), (complete, 1, Some(5)));
        assert_eq!(after, file);
        // A second one cut inside its largesize header, then inside its data.
        file.extend_from_slice(moof);
        file.extend(bx64(b"mdat", data));
        for len in [complete as usize + moof_len + 12, file.len() - 1] {
            let (cut, _) = run(&file[..len], Container::Mp4);
            assert_eq!((cut.after, cut.fragments), (complete, 1), "cut at {len}");
        }
    }

    #[test]
    fn without_a_complete_moov_the_file_is_left_as_it_is() {
        let (file, ends) = recording();
        for len in [4, 20, ends[0] as usize - 1] {
            let (cut, after) = run(&file[..len], Container::Mp4);
            assert!(!cut.header && !cut.cut_anything(), "cut at {len}");
            assert_eq!(after, file[..len]);
        }
        // No moov at all, whole fragments: nothing plays, left as it is.
        let bare = cat(&[ftyp(), video(0), video(5)[..30].to_vec()]);
        let (cut, after) = run(&bare, Container::Mp4);
        assert!(!cut.header);
        assert_eq!(after, bare);
    }

    #[test]
    fn a_trailing_mfra_is_kept_whole_or_cut_off() {
        let (mut file, ends) = recording();
        let mfra = bx(b"mfra", &cat(&[full(b"tfra", 0, 0, &[0; 40]), full(b"mfro", 0, 0, &be(&[56]))]));
        file.extend(&mfra);
        let (cut, after) = run(&file, Container::Mp4);
        assert_eq!(after, file);
        assert!(!cut.cut_anything());
        let (cut, _) = run(&file[..file.len() - 10], Container::Mp4);
        assert_eq!((cut.after, cut.fragments), (*ends.last().unwrap(), 6));
    }

    #[test]
    fn a_fragment_whose_samples_point_past_its_mdat_is_cut_off() {
        let (mut file, ends) = recording();
        file.extend(fragment(1, 15, &[100, 100], 50));
        let (cut, _) = run(&file, Container::Mp4);
        assert_eq!((cut.after, cut.fragments), (*ends.last().unwrap(), 6));
    }

    #[test]
    fn samples_of_default_size_and_duration() {
        // tfhd gives the defaults (duration 1, 100 bytes), trun only a count and a data offset.
        let build = |data_offset: u32, count: u32| {
            let tfhd = full(b"tfhd", 0, 0x02_0000 | 0x08 | 0x10, &be(&[1, 1, 100]));
            let trun = full(b"trun", 0, 0x01, &be(&[count, data_offset]));
            bx(b"moof", &cat(&[full(b"mfhd", 0, 0, &be(&[1])), bx(b"traf", &cat(&[tfhd, trun]))]))
        };
        let moof_len = build(0, 0).len() as u32;
        let pair = |count: u32, bytes: usize| cat(&[build(moof_len + 8, count), bx(b"mdat", &vec![0; bytes])]);
        let file = cat(&[ftyp(), moov(), pair(4, 400), pair(4, 399)]);
        let (cut, _) = run(&file, Container::Mp4);
        // The second mdat is a byte short of its samples: it goes.
        assert_eq!((cut.fragments, cut.frames, cut.seconds), (1, Some(4), Some(4.0 / f64::from(TIMESCALE))));
        assert_eq!(cut.after as usize, file.len() - pair(4, 399).len());
    }

    #[test]
    fn a_plain_mp4_is_left_as_it_is() {
        let file = cat(&[ftyp(), bx(b"mdat", &[7; 300]), moov()]);
        let (cut, after) = run(&file, Container::Mp4);
        assert!(cut.header && !cut.cut_anything());
        assert_eq!(after, file);
    }
}
