//! Matroska: the EBML header, the Segment's Info and Tracks, then Clusters; where the last complete Cluster ends.

use std::fs::File;
use std::io;

use super::{Scan, read_upto};

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TRACKS: u32 = 0x1654_AE6B;
const CLUSTER: u32 = 0x1F43_B675;
const TIMECODE_SCALE: u32 = 0x2A_D7B1;
const CLUSTER_TIMECODE: u32 = 0xE7;
/// The Segment's children: an unknown-size Cluster ends where one of these starts.
const SEGMENT_CHILDREN: [u32; 9] =
    [0x114D_9B74, INFO, TRACKS, CLUSTER, 0x1C53_BB6B, 0x1254_C367, 0x1043_A770, 0x1941_A469, EBML];

/// An element header: its ID, header length, and size (`None`: unknown).
#[derive(Clone, Copy, Debug)]
struct Element {
    id: u32,
    header_len: u64,
    size: Option<u64>,
    /// The size field's length (the last bytes of the header), to make the size unknown.
    size_len: usize,
}

/// A variable-length integer at the start of `b`: (value with the length marker kept or not, length).
fn vint(b: &[u8], keep_marker: bool) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 || b.len() < len {
        return None;
    }
    let mut v = if keep_marker { u64::from(first) } else { u64::from(first) & (0xff >> len) };
    for &byte in &b[1..len] {
        v = (v << 8) | u64::from(byte);
    }
    Some((v, len))
}

fn element(b: &[u8]) -> Option<Element> {
    let (id, id_len) = vint(b, true)?;
    if id_len > 4 {
        return None;
    }
    let (size, size_len) = vint(&b[id_len..], false)?;
    let unknown = size == (1u64 << (7 * size_len)) - 1;
    Some(Element { id: id as u32, header_len: (id_len + size_len) as u64, size: (!unknown).then_some(size), size_len })
}

/// An unsigned integer element's payload.
fn uint(b: &[u8]) -> u64 {
    b.iter().take(8).fold(0, |v, &x| (v << 8) | u64::from(x))
}

pub(super) fn scan(file: &File, len: u64) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let Some(ebml) = element(&read_upto(file, 0, 16)?).filter(|e| e.id == EBML) else { return Ok(scan) };
    let Some(ebml_size) = ebml.size else { return Ok(scan) };
    let segment_at = ebml.header_len + ebml_size;
    let Some(segment) = element(&read_upto(file, segment_at, 16)?).filter(|e| e.id == SEGMENT) else {
        return Ok(scan);
    };
    let body = segment_at + segment.header_len;
    // The end of a Segment of known size, when the file holds all of it.
    let known_end = segment.size.map(|s| body + s).filter(|&end| end <= len);
    let segment_end = known_end.unwrap_or(len);
    let (mut info, mut tracks) = (false, false);
    let mut timecode_scale = 1_000_000u64;
    let mut at = body;
    let mut clean = true;
    while at < segment_end {
        let Some(e) = element(&read_upto(file, at, 12)?) else {
            clean = false;
            break;
        };
        let end = match e.size {
            Some(size) => at + e.header_len + size,
            None if e.id == CLUSTER => match unknown_cluster_end(file, at + e.header_len, known_end, len)? {
                Some(end) => end,
                None => segment_end + 1, // runs into the end of the file: incomplete
            },
            None => segment_end + 1,
        };
        if end > segment_end {
            if e.id == CLUSTER && info && tracks {
                scan.seconds = cluster_start(file, at + e.header_len, timecode_scale)?;
            }
            clean = false;
            break;
        }
        match e.id {
            INFO => {
                info = true;
                let payload = read_upto(file, at + e.header_len, (end - at - e.header_len).min(4096) as usize)?;
                let mut rest = &payload[..];
                while let Some(c) = element(rest) {
                    let Some(size) = c.size.map(|s| s as usize).filter(|s| c.header_len as usize + s <= rest.len())
                    else {
                        break;
                    };
                    let value = &rest[c.header_len as usize..c.header_len as usize + size];
                    if c.id == TIMECODE_SCALE && uint(value) > 0 {
                        timecode_scale = uint(value);
                    }
                    rest = &rest[c.header_len as usize + size..];
                }
            }
            TRACKS => tracks = true,
            CLUSTER => scan.fragments += 1,
            _ => {}
        }
        at = end;
        scan.keep = at;
        scan.header = info && tracks;
    }
    if segment.size.is_some() && known_end.is_none() {
        clean = false; // the file ends inside a Segment of known size
    }
    if clean {
        scan.keep = len;
    } else if let Some(size) = segment.size
        && body + size > scan.keep
    {
        // The Segment's size would point past the end: make it unknown (all ones), as while recording.
        let mut unknown = vec![0xff; segment.size_len];
        unknown[0] = 0xff >> (segment.size_len - 1);
        let size_at = segment_at + segment.header_len - segment.size_len as u64;
        scan.patches.push((size_at, unknown));
    }
    Ok(scan)
}

/// Where an unknown-size Cluster whose payload starts at `at` ends: at the next Segment child, or at the end
/// of a Segment of known size (`segment_end`, within the file). `None` when it runs into the end of the file
/// (inside a child, or right after one: whether more was to come cannot be told).
fn unknown_cluster_end(file: &File, mut at: u64, segment_end: Option<u64>, len: u64) -> io::Result<Option<u64>> {
    loop {
        if Some(at) == segment_end {
            return Ok(Some(at));
        }
        if at >= len {
            return Ok(None);
        }
        let Some(e) = element(&read_upto(file, at, 12)?) else { return Ok(None) };
        if SEGMENT_CHILDREN.contains(&e.id) {
            return Ok(Some(at));
        }
        let Some(size) = e.size else { return Ok(None) };
        at += e.header_len + size;
    }
}

/// A Cluster's start time in seconds (its Timecode, the first child), when it is there.
fn cluster_start(file: &File, payload_at: u64, timecode_scale: u64) -> io::Result<Option<f64>> {
    let b = read_upto(file, payload_at, 16)?;
    Ok(element(&b).filter(|e| e.id == CLUSTER_TIMECODE).and_then(|e| {
        let size = e.size? as usize;
        let value = b.get(e.header_len as usize..e.header_len as usize + size)?;
        Some(uint(value) as f64 * timecode_scale as f64 / 1e9)
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{Container, run};
    use super::*;

    /// An element with a 1-byte ID... or longer: `id` is written with its marker bits, the size as 8 bytes.
    fn el(id: u32, payload: &[u8]) -> Vec<u8> {
        let mut b: Vec<u8> = id.to_be_bytes().into_iter().skip_while(|&x| x == 0).collect();
        b.push(0x01);
        b.extend_from_slice(&(payload.len() as u64).to_be_bytes()[1..]);
        b.extend_from_slice(payload);
        b
    }

    /// An element of unknown size (8-byte size field of ones).
    fn el_unknown(id: u32, payload: &[u8]) -> Vec<u8> {
        let mut b: Vec<u8> = id.to_be_bytes().into_iter().skip_while(|&x| x == 0).collect();
        b.extend_from_slice(&[0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        b.extend_from_slice(payload);
        b
    }

    fn cluster_payload(timecode_ms: u16, blocks: usize) -> Vec<u8> {
        let mut p = vec![0xE7, 0x82];
        p.extend_from_slice(&timecode_ms.to_be_bytes());
        for i in 0..blocks {
            p.extend(el(0xA3, &[0x81, 0, i as u8, 0x80, 1, 2, 3, 4, 5, 6]));
        }
        p
    }

    /// EBML header, Segment (unknown size unless `segment_known`), SeekHead, Info, Tracks, then clusters:
    /// `closed` of known size, then one of unknown size that is followed by nothing (the open one).
    fn mkv(closed: u16, open: bool, segment_known: bool) -> (Vec<u8>, Vec<u64>) {
        let head = el(EBML, &[0x42, 0x86, 0x81, 0x01]);
        let mut body = el(0x114D_9B74, &[0xEC, 0x80]);
        body.extend(el(INFO, &[0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40]));
        body.extend(el(TRACKS, &el(0xAE, &[0xD7, 0x81, 0x01])));
        let segment_header_len = 4 + 8;
        let body_at = (head.len() + segment_header_len) as u64;
        let mut ends = vec![body_at + body.len() as u64];
        for c in 0..closed {
            body.extend(el(CLUSTER, &cluster_payload(c * 100, 4)));
            ends.push(body_at + body.len() as u64);
        }
        if open {
            body.extend(el_unknown(CLUSTER, &cluster_payload(closed * 100, 4)));
        }
        let segment = if segment_known { el(SEGMENT, &body) } else { el_unknown(SEGMENT, &body) };
        ([head, segment].concat(), ends)
    }

    #[test]
    fn mkv_cut_inside_the_open_cluster_goes_back_to_the_last_closed_one() {
        let (file, ends) = mkv(3, true, false);
        for len in [file.len() - 1, file.len() - 12, *ends.last().unwrap() as usize + 5] {
            let (cut, after) = run(&file[..len], Container::Matroska);
            assert!(cut.header);
            assert_eq!((cut.after, cut.fragments), (*ends.last().unwrap(), 3), "cut at {len}");
            assert_eq!(after[..], file[..cut.after as usize]);
            // The open cluster's start, when its Timecode is there: 300 ms at a 1 ms timecode scale.
            let timecode_there = len >= *ends.last().unwrap() as usize + 12 + 4;
            assert_eq!(cut.seconds, timecode_there.then_some(0.3), "cut at {len}");
        }
        // Inside a closed cluster (its size known): back to the one before.
        let (cut, _) = run(&file[..ends[2] as usize - 3], Container::Matroska);
        assert_eq!((cut.after, cut.fragments), (ends[1], 1));
        // Right after Tracks, nothing more: kept as it is, it plays no frames.
        let (cut, _) = run(&file[..ends[0] as usize + 3], Container::Matroska);
        assert_eq!((cut.after, cut.fragments), (ends[0], 0));
    }

    #[test]
    fn mkv_unknown_size_clusters_end_at_the_next_cluster() {
        // Clusters of unknown size one after the other: all but the last are complete.
        let (mut file, ends) = mkv(0, true, false);
        let second_at = file.len() as u64;
        file.extend(el_unknown(CLUSTER, &cluster_payload(100, 4)));
        file.extend(el_unknown(CLUSTER, &cluster_payload(200, 2)));
        let (cut, _) = run(&file[..file.len() - 4], Container::Matroska);
        assert_eq!(cut.fragments, 2);
        assert!(cut.after > second_at && cut.after > ends[0]);
        // Ending exactly after a block: whether more was to come cannot be told, the open cluster goes.
        let (cut, _) = run(&file, Container::Matroska);
        assert_eq!(cut.fragments, 2);
        assert!(cut.cut_anything());
    }

    #[test]
    fn mkv_complete_files_are_left_as_they_are() {
        for known in [false, true] {
            let (file, _) = mkv(3, false, known);
            let (cut, after) = run(&file, Container::Matroska);
            assert!(cut.header && !cut.cut_anything(), "segment size known: {known}");
            assert_eq!(cut.fragments, 3);
            assert_eq!(after, file);
        }
    }

    #[test]
    fn mkv_a_known_segment_size_past_the_cut_becomes_unknown() {
        let (file, ends) = mkv(3, true, true);
        let (cut, after) = run(&file[..file.len() - 5], Container::Matroska);
        assert_eq!((cut.after, cut.fragments), (ends[3], 3));
        let segment = element(&after[ebml_len(&after)..]).unwrap();
        assert_eq!((segment.id, segment.size), (SEGMENT, None));
        // The rest is as it was.
        let at = ebml_len(&after) + 12;
        assert_eq!(after[at..], file[at..ends[3] as usize]);
    }

    fn ebml_len(b: &[u8]) -> usize {
        let e = element(b).unwrap();
        (e.header_len + e.size.unwrap()) as usize
    }

    #[test]
    fn mkv_without_tracks_is_left_as_it_is() {
        let (file, ends) = mkv(1, true, false);
        let len = ends[0] as usize - 4; // inside Tracks
        let (cut, after) = run(&file[..len], Container::Matroska);
        assert!(!cut.header && !cut.cut_anything());
        assert_eq!(after, file[..len]);
        let (cut, _) = run(b"not a matroska file at all", Container::Matroska);
        assert!(!cut.header);
    }
}
