//! After a failed write (a full disk, a file-size limit): cut a recording back to the end of its last complete
//! fragment, so what was written before the failure plays.
//!
//! The file sink writes each buffer the muxer hands it as it comes; a write that fails leaves the file ending
//! inside whatever was being written then, and players reject a file that ends inside a box or element
//! (measured with `ffmpeg -v error -i F -f null -`):
//! - MP4/MOV (fragmented: `ftyp moov`, then a `moof`+`mdat` pair per track and second): cut inside a `moof`
//!   or an `mdat`, ffmpeg reports "partial file" / "Invalid NAL unit size" / "error reading header" and exits 1
//!   or decodes damaged frames. Cut after a complete pair, it decodes without a word.
//! - MKV (`matroskamux`: unknown-size Segment, a Cluster at least every second, each rewritten with its size
//!   when it closes, the open one of unknown size): cut inside the open Cluster, ffmpeg reports "File ended
//!   prematurely" (`ulimit -f` 10, 25 and 40 KiB of a 58 KB file, all three). Cut after the last complete
//!   Cluster, it decodes without a word. So MKV is repaired too.
//!
//! A file without a complete header (`moov`; EBML header, Info and Tracks) is left as it is: nothing in it
//! plays, and nothing is lost by leaving it.

mod mkv;
mod mp4;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The container of a recording, as far as the repair is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// MP4 or MOV (ISO base media file format boxes).
    Mp4,
    /// Matroska (EBML elements).
    Matroska,
}

impl Container {
    /// The container a GStreamer muxer writes, when the repair knows it.
    pub fn of_muxer(factory: &str) -> Option<Container> {
        match factory {
            "mp4mux" | "qtmux" => Some(Container::Mp4),
            "matroskamux" => Some(Container::Matroska),
            _ => None,
        }
    }
}

/// What the repair found and kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Cut {
    /// File size found.
    pub before: u64,
    /// File size left (`before` when nothing was cut).
    pub after: u64,
    /// The file has a complete header (`moov`; EBML header, Info and Tracks). Without one it is left as it is.
    pub header: bool,
    /// Complete fragments kept: `moof`+`mdat` pairs (one per track and fragment), or Matroska Clusters.
    pub fragments: u64,
    /// Video frames in the kept fragments (MP4/MOV; `None` for MKV or without a video track).
    pub frames: Option<u64>,
    /// Where the kept video ends, in seconds of media time, when the file says.
    pub seconds: Option<f64>,
}

impl Cut {
    pub fn cut_anything(&self) -> bool {
        self.after < self.before
    }
}

/// Called by the file sink after a write failed and the file was closed: repairs the file and logs what was
/// cut. The run fails anyway (the write error), so a failure of the repair is only logged.
pub fn after_failed_write(path: &Path, muxer: &str) {
    let Some(container) = Container::of_muxer(muxer) else { return };
    match cut_to_last_complete_fragment(path, container) {
        Ok(cut) if !cut.header => tracing::warn!(
            file = %path.display(),
            bytes = cut.before,
            "the write failed before the file's header was complete: nothing in it plays; left as it is"
        ),
        Ok(cut) if cut.cut_anything() && (cut.fragments == 0 || cut.frames == Some(0)) => tracing::warn!(
            file = %path.display(),
            bytes_before = cut.before,
            bytes_after = cut.after,
            fragments_kept = cut.fragments,
            "cut the recording back to its last complete box after the failed write: no video fragment was \
             complete, so no frame plays"
        ),
        Ok(cut) if cut.cut_anything() => tracing::warn!(
            file = %path.display(),
            bytes_before = cut.before,
            bytes_after = cut.after,
            fragments_kept = cut.fragments,
            frames_kept = cut.frames.map_or_else(|| "?".to_string(), |f| f.to_string()),
            seconds_kept = cut.seconds.map_or_else(|| "?".to_string(), |s| format!("{s:.2}")),
            "cut the recording back to its last complete fragment after the failed write; it plays up to there"
        ),
        Ok(cut) => tracing::info!(
            file = %path.display(),
            bytes = cut.before,
            fragments = cut.fragments,
            "the recording ends with a complete fragment: nothing to cut"
        ),
        Err(e) => tracing::error!(
            file = %path.display(),
            error = %e,
            "could not cut the recording back to its last complete fragment: it may not play to the end"
        ),
    }
}

/// Truncate `path` right after its last complete fragment (see the module doc). Returns what was kept.
pub fn cut_to_last_complete_fragment(path: &Path, container: Container) -> io::Result<Cut> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let scan = match container {
        Container::Mp4 => mp4::scan(&file, len)?,
        Container::Matroska => mkv::scan(&file, len)?,
    };
    let mut cut = Cut {
        before: len,
        after: len,
        header: scan.header,
        fragments: scan.fragments,
        frames: scan.frames,
        seconds: scan.seconds,
    };
    if scan.header && (scan.keep < len || !scan.patches.is_empty()) {
        for (offset, bytes) in &scan.patches {
            file.write_all_at(bytes, *offset)?;
        }
        file.set_len(scan.keep)?;
        file.sync_all()?;
        cut.after = scan.keep;
    }
    Ok(cut)
}

/// What a scan found: where the file should end, and what it holds up to there.
#[derive(Debug, Default)]
struct Scan {
    header: bool,
    /// Bytes to keep (the file's length when it is complete).
    keep: u64,
    fragments: u64,
    frames: Option<u64>,
    seconds: Option<f64>,
    /// Bytes to overwrite before truncating (a Matroska Segment's size made unknown).
    patches: Vec<(u64, Vec<u8>)>,
}

/// Up to `n` bytes at `offset` (fewer at the end of the file).
fn read_upto(file: &File, offset: u64, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// A file of `bytes` through [`cut_to_last_complete_fragment`]: what it kept and the bytes left.
#[cfg(test)]
fn run(bytes: &[u8], container: Container) -> (Cut, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, bytes).unwrap();
    let cut = cut_to_last_complete_fragment(&path, container).unwrap();
    let after = std::fs::read(&path).unwrap();
    assert_eq!(cut.after, after.len() as u64);
    (cut, after)
}
