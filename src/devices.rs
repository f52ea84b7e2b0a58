//! `latentcam devices`: the cameras latentcam can open and the v4l2loopback outputs it can write to. It asks
//! the source and sink modules; they do not depend on it.

pub use crate::sink::LoopbackEntry;
pub use crate::source::CameraEntry;

/// Cameras, or why they cannot be listed.
pub fn cameras() -> Result<Vec<CameraEntry>, String> {
    #[cfg(feature = "webcam")]
    {
        crate::source::webcam::list()
    }
    #[cfg(not(feature = "webcam"))]
    {
        Err("this build has no camera support (rebuild with --features webcam)".into())
    }
}

/// v4l2loopback devices, or why they cannot be listed.
pub fn loopbacks() -> Result<Vec<LoopbackEntry>, String> {
    #[cfg(feature = "v4l2")]
    {
        Ok(crate::sink::v4l2::list())
    }
    #[cfg(not(feature = "v4l2"))]
    {
        Err("this build has no v4l2 output (rebuild with --features v4l2)".into())
    }
}

/// The text `latentcam devices` prints.
pub fn report() -> String {
    let mut out = String::from("cameras:\n");
    match cameras() {
        Ok(list) if list.is_empty() => out += "  (none found)\n",
        Ok(list) => {
            for c in list {
                out += &format!("  {}: {} ({})\n", c.index, c.name, c.description);
            }
        }
        Err(e) => out += &format!("  (cannot list: {e})\n"),
    }
    out += "v4l2loopback outputs:\n";
    match loopbacks() {
        Ok(list) if list.is_empty() => {
            out += "  (none found; load the module: sudo modprobe v4l2loopback devices=1 video_nr=10 \
                    card_label=latentcam exclusive_caps=1)\n"
        }
        Ok(list) => {
            for l in list {
                out += &format!("  {}: {}\n", l.path.display(), l.card);
            }
        }
        Err(e) => out += &format!("  (cannot list: {e})\n"),
    }
    out
}
