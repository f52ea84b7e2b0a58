//! GStreamer helpers shared by the sources and the sinks: initialisation, making elements (a missing one names
//! the package that has it), enum properties, and reading errors off a pipeline's bus.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::error::{Error, Result};

/// Initialise GStreamer once; failure (missing libraries) is a clear error, not a panic.
pub fn init() -> Result<()> {
    gst::init()
        .map_err(|e| Error::Source { source_name: "gstreamer".into(), problem: format!("cannot initialise: {e}") })
}

/// The message for an element this machine lacks.
pub fn missing_plugin(factory: &str) -> String {
    format!(
        "GStreamer element `{factory}` is missing (install the GStreamer plugins: scripts/setup.sh, or apt-get \
         install gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
         gstreamer1.0-plugins-ugly gstreamer1.0-libav)"
    )
}

/// A new element of `factory`; `owner` makes the error: a source's or a sink's.
pub fn element(factory: &str, owner: &dyn Fn(String) -> Error) -> Result<gst::Element> {
    gst::ElementFactory::make(factory).build().map_err(|_| owner(missing_plugin(factory)))
}

/// Set an enum property by its nick, when the element has it (versions differ).
pub fn set_enum(element: &gst::Element, property: &str, value: &str) {
    if element.find_property(property).is_some() {
        element.set_property_from_str(property, value);
    }
}

/// Add elements to a bin and link them in order.
pub fn add_and_link(bin: &gst::Pipeline, chain: &[&gst::Element]) -> std::result::Result<(), String> {
    bin.add_many(chain.iter().copied()).map_err(|e| format!("cannot add elements: {e}"))?;
    gst::Element::link_many(chain.iter().copied()).map_err(|e| format!("cannot link elements: {e}"))
}

/// The first error message on the bus, if any, as one line.
pub fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            return Some(error_text(err));
        }
    }
    None
}

fn error_text(err: &gst::message::Error) -> String {
    let mut text = err.error().to_string();
    if let Some(debug) = err.debug() {
        // The debug string's last part usually names the real cause ("no decoder for...", "No space left");
        // its source-code trace means nothing to a user.
        let detail = plain_message(&debug);
        if let Some(detail) = detail.lines().last().filter(|l| !l.is_empty() && l.len() < 300) {
            text = format!("{text} ({detail})");
        }
    }
    text
}

/// A GStreamer message without its source-code traces (`../gst/gstfoo.c(123): func (): /GstPipeline:...`),
/// which name GStreamer's C files and elements, not anything the user gave.
pub fn plain_message(text: &str) -> String {
    let is_trace = |line: &str| {
        let line = line.trim();
        line.split_once(".c(").is_some_and(|(file, rest)| {
            !file.contains(' ') && rest.split_once("):").is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        }) || line.starts_with("/GstPipeline:")
    };
    text.lines().filter(|l| !is_trace(l)).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}

/// Wait for end-of-stream to come out of the pipeline (after `end_of_stream` on its sources): what the muxers
/// write at the end is then on disk. An error on the way, or no end within `timeout`, is returned as text.
pub fn wait_for_eos(pipeline: &gst::Pipeline, timeout: Duration) -> std::result::Result<(), String> {
    let Some(bus) = pipeline.bus() else { return Err("the pipeline has no bus".into()) };
    let timeout = gst::ClockTime::from_nseconds(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
    match bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(err) => Err(error_text(err)),
            _ => Ok(()),
        },
        None => Err(format!("did not finish within {} s", timeout.seconds())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn traces_are_not_shown() {
        let debug = "../plugins/elements/gsttypefindelement.c(1186): gst_type_find_element_loop (): \
                     /GstPipeline:latentcam-source/GstURISourceBin:urisourcebin0/GstTypeFindElement:typefindelement0";
        assert_eq!(super::plain_message(debug), "");
        let disk = "../plugins/elements/gstfilesink.c(694): gst_file_sink_event (): /GstPipeline:p/GstFileSink:f:\n\
                    system error: No space left on device";
        assert_eq!(super::plain_message(disk), "system error: No space left on device");
    }
}
