//! What a local media file holds, asked before the decoding pipeline is built (GStreamer's Discoverer, which
//! reads the container's headers and decodes one frame): whether there is a video stream at all, whether there
//! is audio, and how the video is meant to be turned for display.
//!
//! Why before: without it the decoding pipeline can only learn these things by waiting (an audio-only file
//! was refused after 20 s, every file without audio waited 5 s for an audio stream that never came, and a
//! rotated phone video's first frames could come out before its rotation tag).

use std::time::Duration;

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;

/// How long the Discoverer may take on one file (it reads headers and decodes one frame of each stream).
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(15);

/// How a video's pictures are to be turned for display: the `image-orientation` tag that demuxers derive from
/// an MP4/MOV display matrix (what phones write instead of turning the pixels) or a Matroska `ProjectionPoseRoll`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Orientation {
    #[default]
    Upright,
    Rotate90,
    Rotate180,
    Rotate270,
    Flip,
    FlipRotate90,
    FlipRotate180,
    FlipRotate270,
}

impl Orientation {
    /// From the tag's value (`rotate-90`, `flip-rotate-0`, ...); unknown values are upright (and logged).
    pub fn from_tag(tag: &str) -> Orientation {
        match tag {
            "rotate-0" => Orientation::Upright,
            "rotate-90" => Orientation::Rotate90,
            "rotate-180" => Orientation::Rotate180,
            "rotate-270" => Orientation::Rotate270,
            "flip-rotate-0" => Orientation::Flip,
            "flip-rotate-90" => Orientation::FlipRotate90,
            "flip-rotate-180" => Orientation::FlipRotate180,
            "flip-rotate-270" => Orientation::FlipRotate270,
            other => {
                tracing::warn!(tag = other, "unknown image-orientation tag: the video is not turned");
                Orientation::Upright
            }
        }
    }

    /// `videoflip`'s `video-direction` that shows the picture upright (the same table as its `auto` mode).
    pub fn video_direction(self) -> &'static str {
        match self {
            Orientation::Upright => "identity",
            Orientation::Rotate90 => "90r",
            Orientation::Rotate180 => "180",
            Orientation::Rotate270 => "90l",
            Orientation::Flip => "horiz",
            Orientation::FlipRotate90 => "ul-lr",
            Orientation::FlipRotate180 => "vert",
            Orientation::FlipRotate270 => "ur-ll",
        }
    }

    /// Whether width and height trade places.
    pub fn swaps_sides(self) -> bool {
        matches!(
            self,
            Orientation::Rotate90 | Orientation::Rotate270 | Orientation::FlipRotate90 | Orientation::FlipRotate270
        )
    }
}

/// What a file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaProbe {
    /// The first video stream's turn for display.
    pub orientation: Orientation,
    /// The first audio stream's format as GStreamer describes it (`MPEG-4 AAC`), when there is one.
    pub audio: Option<String>,
}

/// Ask what the file at `uri` holds. `Ok(None)`: the Discoverer could not tell in time (the decoding pipeline
/// then finds out the slow way). Errors are the user's: a file that is not media, or has no video.
pub fn probe(uri: &str) -> std::result::Result<Option<MediaProbe>, String> {
    let timeout = gst::ClockTime::from_nseconds(DISCOVER_TIMEOUT.as_nanos() as u64);
    let discoverer = match pbutils::Discoverer::new(timeout) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "no Discoverer: the decoding pipeline finds out what the file holds");
            return Ok(None);
        }
    };
    let info = match discoverer.discover_uri(uri) {
        Ok(info) => info,
        // The info of a failed discovery is not returned through this binding; the error says enough.
        Err(e) => return Err(not_media(&e.to_string())),
    };
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => {
            tracing::debug!(uri, "the Discoverer timed out: the decoding pipeline finds out what the file holds");
            return Ok(None);
        }
        pbutils::DiscovererResult::MissingPlugins => {
            let missing = info.missing_elements_installer_details();
            let what = missing.iter().filter_map(|d| d.split('|').nth(3)).collect::<Vec<_>>().join(", ");
            return Err(format!(
                "cannot be decoded here: GStreamer lacks {} (install gstreamer1.0-libav and \
                 gstreamer1.0-plugins-bad/-ugly: scripts/setup.sh)",
                if what.is_empty() { "a plugin".to_string() } else { what }
            ));
        }
        _ => return Err(not_media("")),
    }
    let videos: Vec<_> =
        info.video_streams().into_iter().filter(|v| !v.is_image() || info.duration().is_some()).collect();
    let audio = info
        .audio_streams()
        .first()
        .and_then(|a| a.caps())
        .map(|c| pbutils::pb_utils_get_codec_description(&c).to_string());
    let Some(video) = videos.first() else {
        return Err(match &audio {
            Some(format) => format!("has no video stream (only audio: {format}); expected a video file"),
            None => "has no video stream; expected a video file".to_string(),
        });
    };
    let orientation = video
        .tags()
        .and_then(|tags| tags.get::<gst::tags::ImageOrientation>().map(|t| t.get().to_string()))
        .map_or(Orientation::Upright, |t| Orientation::from_tag(&t));
    Ok(Some(MediaProbe { orientation, audio }))
}

fn not_media(detail: &str) -> String {
    let detail = crate::media::plain_message(detail);
    if detail.is_empty() {
        "is not a video file GStreamer can read".to_string()
    } else {
        format!("is not a video file GStreamer can read ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientations_map_to_videoflip_directions() {
        assert_eq!(Orientation::from_tag("rotate-90").video_direction(), "90r");
        assert_eq!(Orientation::from_tag("rotate-270").video_direction(), "90l");
        assert_eq!(Orientation::from_tag("flip-rotate-90").video_direction(), "ul-lr");
        assert_eq!(Orientation::from_tag("nonsense"), Orientation::Upright);
        assert!(Orientation::Rotate90.swaps_sides() && !Orientation::Rotate180.swaps_sides());
    }
}
