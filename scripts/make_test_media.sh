#!/usr/bin/env bash
# Makes the "real phone and camera files" the conversion tests read (issue 17): short, small clips with AAC
# audio, rotation, 10-bit and 4:4:4, odd sizes, variable frame rate, shifted audio, EXIF-oriented stills and a
# few broken inputs.
#
#   scripts/make_test_media.sh OUTDIR     (the tests use OUTDIR = <repo>/target/test-media)
#
# Pictures come from ../shared/media beside the checkout when it is there (chaplin_street_9s.mp4: people
# walking, for the video; astronaut.png for the stills); without it, from ffmpeg's lavfi testsrc2, and the
# script says so. The audio is always lavfi `sine` (440 Hz with a 1760 Hz beep at the start of every second, so
# the audio's timing can be checked by ear or by analysis); the clip has no audio. LATENTCAM_TEST_MEDIA_SOURCE=DIR
# reads the shared media from DIR instead (a missing DIR means the lavfi fallback).
#
# Idempotent and safe to run concurrently (several test binaries call it at once): it holds an flock on
# OUTDIR/.lock, writes each file under a temporary name and renames it when complete, and skips files that
# exist. OUTDIR/.stamp holds the hash of this script and of exif_orient.py and the picture source: when any of
# them changes, every file is made again. When all is in place it returns in a few milliseconds.
#
# What it makes (measured with ffprobe 5.1 from Debian 12's ffmpeg; "rotation" below means the clockwise
# rotation a player applies to show the picture upright, as exiftool's Rotation and the old `rotate` tag say it;
# ffprobe's display-matrix "rotation" is counter-clockwise and so has the opposite sign):
#   aac_short.mp4 / .mov   H.264 High (x264 defaults: B-frames, as phones), 320x180, 25 fps, 25 frames, 1.0 s;
#                          AAC-LC 48 kHz stereo, 1.0 s. Both streams start at 0 (the AAC encoder delay of 1024
#                          samples is hidden by an edit list).
#   aac_long.mp4 / .mov    the same kind, 4.0 s, 100 frames, a keyframe every 25 frames (-g 25), AAC 44.1 kHz.
#   phone.mov              as an iPhone records: HEVC Main 10 (yuv420p10le, tag hvc1), stored 320x180 with the
#                          display matrix of an upright iPhone (0 1 / -1 0: rotation 90, ffprobe side data -90);
#                          ffmpeg shows it 180x320; AAC 48 kHz stereo; 2.0 s.
#   portrait_rot90.mp4     H.264 320x180 stored, rotation 90 (shown 180x320), 2.0 s, no audio.
#   portrait_rot270.mp4    the same with rotation 270 (ffprobe side data +90).
#   rot180.mp4             the same with rotation 180 (shown 320x180, upside down when ignored).
#   h264_10bit.mp4         H.264 High 10, yuv420p10le, 320x180, 1.0 s, no audio.
#   h264_444.mp4           H.264 High 4:4:4 Predictive, yuv444p, 320x180, 1.0 s, no audio.
#   odd_641x361.mp4        H.264 High 4:4:4 (yuv444p; 4:2:0 H.264 cannot code an odd size: x264 refuses it, and
#                          the SPS crop works in 2-pixel steps for 4:2:0), 641x361, 1.0 s, no audio.
#   odd_333x185.mkv        VP9 profile 0, yuv420p (the chroma planes are 167x93), 333x185, 1.0 s, no audio.
#   vfr.mp4                H.264 with variable frame rate: frames 40 ms apart for 0.8 s, then 80 ms for 0.8 s,
#                          then 120 ms (33 frames in 2 s); AAC 48 kHz, 2.0 s.
#   audio_only.m4a         AAC-LC 48 kHz stereo, 2.0 s, no video (the ipod muxer, as iTunes/phones write .m4a).
#   audio_only.mp4         the same AAC in an MP4 with no video track.
#   late_audio.mkv         H.264 + AAC; the video starts at 0, the sound at 0.5 s (-itsoffset 0.5). ffprobe says
#                          the audio stream starts at 0.479: Matroska keeps the AAC encoder delay (1024 samples
#                          = 21.3 ms at 48 kHz) in the first packet's timestamp. Video 2.0 s, audio to 2.0 s.
#   early_audio.mp4        H.264 + AAC; the audio starts at 0, the video 0.2 s later (-itsoffset 0.2 on the
#                          video: ffmpeg writes an edit list with a 0.2 s empty edit): ffprobe start_time video
#                          0.200, audio 0.000; 45 frames, to 2.0 s.
#   exif/upright.png       the reference picture: astronaut.png's top 512x384 scaled to 320x240 (lossless);
#                          without ../shared a testsrc2 frame with a red block in its top-left corner.
#   exif/orient_N.jpg      N = 1..8: upright.png's pixels transformed by the inverse of EXIF orientation N, with
#                          the EXIF Orientation tag N (written by exif_orient.py; big-endian TIFF for even N,
#                          little-endian for odd N), so that a viewer applying the tag shows upright.png (within
#                          JPEG loss). Stored sizes: 320x240 for 1-4, 240x320 for 5-8. What each tag asks of the
#                          viewer, and what is stored here (the inverse):
#                            1 nothing                          stored as is
#                            2 mirror horizontally              hflip
#                            3 rotate 180                       hflip+vflip
#                            4 mirror vertically                vflip
#                            5 transpose (main diagonal)        transpose (ffmpeg transpose=cclock_flip)
#                            6 rotate 90 clockwise              rotated 90 counter-clockwise (transpose=cclock)
#                            7 transverse (anti-diagonal)       transverse (transpose=clock_flip)
#                            8 rotate 270 clockwise             rotated 90 clockwise (transpose=clock)
#   exif/orient_6.png      the stored pixels of orient_6.jpg, lossless, with an eXIf chunk saying 6.
#   text.mp4               a text file named .mp4.
#   empty.png              0 bytes.
#
# What ffmpeg 5.1 does that this script works around:
#   - `-metadata:s:v:0 rotate=N` is dropped when the video is encoded in the same run; only a stream copy
#     (-c copy) turns it into a display matrix. So rotated files are encoded first, then re-muxed.
#   - On that stream copy, rotate=N gives a display matrix that turns the picture N degrees counter-clockwise
#     (exiftool reads Rotation = 360-N), the opposite of what the tag meant in ffmpeg 4 and on phones. So for a
#     clockwise rotation R this script passes rotate=(360-R)%360; rotate=270 writes exactly an iPhone's portrait
#     matrix (0 1 0 / -1 0 0 / 0 0 1, no translation).
#   - An MP4 output defaults to constant frame rate: frames are duplicated to fill a gap at the start or between
#     frames. early_audio.mp4 uses -fps_mode passthrough, vfr.mp4 -fps_mode vfr.
#   - Decoding, ffmpeg applies an MP4/MOV display matrix (autorotate), and also a JPEG's EXIF orientation, all 8
#     of them, flips included: its JPEG decoder turns the tag into a frame display matrix (ffprobe -show_frames:
#     "3x3 displaymatrix", whose "rotation" reads -180 for the mirror of orientation 2) and reports the frame tag
#     Orientation. Every orient_N.jpg decoded by ffmpeg is upright.png within 1.6 levels (mean). ffmpeg 5.1 does
#     not read a PNG's eXIf chunk: orient_6.png decodes as stored, 240x320.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
media=${LATENTCAM_TEST_MEDIA_SOURCE:-$root/../shared/media}

say() { printf 'make_test_media: %s\n' "$*"; }
fail() {
    printf 'make_test_media: error: %s\n' "$*" >&2
    exit 1
}

FILES=(
    aac_short.mp4 aac_short.mov aac_long.mp4 aac_long.mov phone.mov
    portrait_rot90.mp4 portrait_rot270.mp4 rot180.mp4 h264_10bit.mp4 h264_444.mp4
    odd_641x361.mp4 odd_333x185.mkv vfr.mp4 audio_only.m4a audio_only.mp4 late_audio.mkv early_audio.mp4
    exif/upright.png exif/orient_1.jpg exif/orient_2.jpg exif/orient_3.jpg exif/orient_4.jpg
    exif/orient_5.jpg exif/orient_6.jpg exif/orient_7.jpg exif/orient_8.jpg exif/orient_6.png
    text.mp4 empty.png
)

mkdir -p "$out/exif"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$out/.lock"
    flock 9
fi

if [ -f "$media/chaplin_street_9s.mp4" ] && [ -f "$media/astronaut.png" ]; then
    source_kind="shared"
else
    source_kind="lavfi"
fi
stamp_want="$(cat "${BASH_SOURCE[0]}" "$here/exif_orient.py" | sha256sum | cut -d' ' -f1) $source_kind"

# The fast path: everything made by this very script from the same source. A different stamp (a changed script,
# or the shared media appeared or went away) makes everything again; a run that failed half-way leaves the
# stamp and its complete files, and the next run makes only what is missing.
if [ "$(cat "$out/.stamp" 2>/dev/null || true)" = "$stamp_want" ]; then
    all=1
    for f in "${FILES[@]}"; do
        [ -e "$out/$f" ] || { all=0; break; }
    done
    [ $all = 1 ] && exit 0
else
    for f in "${FILES[@]}"; do rm -f "$out/$f"; done
    printf '%s\n' "$stamp_want" >"$out/.stamp"
fi

command -v ffmpeg >/dev/null 2>&1 || fail "ffmpeg is needed (scripts/setup.sh installs it)"
command -v ffprobe >/dev/null 2>&1 || fail "ffprobe is needed (it comes with ffmpeg)"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed (for exif_orient.py)"

if [ $source_kind = shared ]; then
    say "pictures from $media (chaplin_street_9s.mp4, astronaut.png); audio: lavfi sine"
    video_in=(-i "$media/chaplin_street_9s.mp4")
    still_in=(-i "$media/astronaut.png")
    still_vf="crop=512:384:0:0,scale=320:240"
else
    say "$media not found: pictures from ffmpeg's lavfi testsrc2 instead of the real clips; audio: lavfi sine"
    video_in=(-f lavfi -i "testsrc2=size=640x360:rate=25")
    still_in=(-f lavfi -i "testsrc2=size=320x240:rate=1")
    # testsrc2 is nearly symmetric top to bottom: a red block in the top-left corner makes every flip visible.
    still_vf="drawbox=x=0:y=0:w=120:h=80:color=red:t=fill"
fi
sine() { printf 'sine=frequency=440:beep_factor=4:sample_rate=%s' "$1"; }
ff=(ffmpeg -nostdin -hide_banner -loglevel error -y)
scale="scale=320:180"

# ffprobe one value: probe FILE STREAM ENTRY (e.g. probe f v:0 stream=start_time).
probe() {
    ffprobe -v error -select_streams "$2" -show_entries "$3" -of default=noprint_wrappers=1:nokey=1 "$1" | sed -n 1p
}
# The display matrix's rotation as ffprobe reports it (counter-clockwise degrees; empty when there is none).
probe_rotation() {
    ffprobe -v error -select_streams v:0 -show_entries stream_side_data=rotation \
        -of default=noprint_wrappers=1:nokey=1 "$1" | sed -n 1p
}
# WxH of the first frame as ffmpeg decodes it (autorotated).
decoded_size() {
    ffmpeg -nostdin -v error -i "$1" -frames:v 1 -f image2pipe -c:v ppm - |
        { head -c 20 | sed -n 2p | tr ' ' x; cat >/dev/null; }
}
expect() { # what, got, wanted
    [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
}

# mk NAME FUNCTION DESCRIPTION: FUNCTION writes the file given as its argument (a temporary name with the
# same extension, renamed to NAME when it returns successfully); skipped when NAME exists.
# FUNCTION runs under set -e (not in an `||` list, which would turn set -e off inside it): any failing command
# stops the script, and the EXIT trap removes the temporary files and names the file that failed.
tmp=""
making=""
on_exit() {
    local rc=$?
    if [ -n "$tmp" ]; then rm -f "$tmp" "$tmp".*; fi
    if [ $rc != 0 ] && [ -n "$making" ]; then printf 'make_test_media: error: making %s failed\n' "$making" >&2; fi
}
trap on_exit EXIT
mk() {
    local name=$1 fn=$2 desc=$3
    local dst="$out/$name"
    [ -e "$dst" ] && return 0
    making=$name
    tmp="$(dirname "$dst")/.part-$$-$(basename "$dst")"
    rm -f "$tmp"
    "$fn" "$tmp"
    mv -f "$tmp" "$dst"
    tmp=""
    making=""
    say "made $name: $desc"
}

# A rotated H.264 (or any) file: encode to a temporary file, then stream-copy with the rotate tag (see above).
# remux_rotated SRC DST CLOCKWISE_DEGREES
remux_rotated() {
    local tag=$(((360 - $3) % 360))
    "${ff[@]}" -i "$1" -map 0 -c copy -metadata:s:v:0 rotate=$tag "$2"
    rm -f "$1"
    local want
    case $3 in 90) want=-90 ;; 180) want=180 ;; 270) want=90 ;; esac
    local got
    got=$(probe_rotation "$2")
    [ "$got" = "$want" ] || { [ $3 = 180 ] && [ "$got" = -180 ]; } ||
        fail "$(basename "$2"): display matrix rotation '$got', expected $want"
}

gen_aac_short_mp4() {
    "${ff[@]}" "${video_in[@]}" -f lavfi -i "$(sine 48000)" -t 1 -vf "$scale" -c:v libx264 \
        -c:a aac -ac 2 "$1"
}
gen_aac_short_mov() { "${ff[@]}" -i "$out/aac_short.mp4" -map 0 -c copy "$1"; }
gen_aac_long_mp4() {
    "${ff[@]}" "${video_in[@]}" -f lavfi -i "$(sine 44100)" -t 4 -vf "$scale" -c:v libx264 -g 25 \
        -c:a aac -ac 2 "$1"
}
gen_aac_long_mov() { "${ff[@]}" -i "$out/aac_long.mp4" -map 0 -c copy "$1"; }
gen_phone_mov() {
    "${ff[@]}" "${video_in[@]}" -f lavfi -i "$(sine 48000)" -t 2 -vf "$scale" \
        -c:v libx265 -pix_fmt yuv420p10le -tag:v hvc1 -x265-params log-level=error \
        -c:a aac -ac 2 "$1.enc.mov"
    remux_rotated "$1.enc.mov" "$1" 90
    expect "phone.mov decoded size" "$(decoded_size "$1")" 180x320
    expect "phone.mov pix_fmt" "$(probe "$1" v:0 stream=pix_fmt)" yuv420p10le
}
rotated_h264() { # OUT CLOCKWISE
    "${ff[@]}" "${video_in[@]}" -t 2 -vf "$scale" -c:v libx264 -an "$1.enc.mp4"
    remux_rotated "$1.enc.mp4" "$1" "$2"
}
gen_rot90() {
    rotated_h264 "$1" 90
    expect "portrait_rot90.mp4 decoded size" "$(decoded_size "$1")" 180x320
}
gen_rot270() {
    rotated_h264 "$1" 270
    expect "portrait_rot270.mp4 decoded size" "$(decoded_size "$1")" 180x320
}
gen_rot180() { rotated_h264 "$1" 180; }
gen_h264_10bit() {
    "${ff[@]}" "${video_in[@]}" -t 1 -vf "$scale" -c:v libx264 -pix_fmt yuv420p10le -profile:v high10 -an "$1"
    expect "h264_10bit.mp4 profile" "$(probe "$1" v:0 stream=profile)" "High 10"
}
gen_h264_444() {
    "${ff[@]}" "${video_in[@]}" -t 1 -vf "$scale" -c:v libx264 -pix_fmt yuv444p -an "$1"
    expect "h264_444.mp4 profile" "$(probe "$1" v:0 stream=profile)" "High 4:4:4 Predictive"
}
gen_odd_641() {
    "${ff[@]}" "${video_in[@]}" -t 1 -vf "scale=641:361" -c:v libx264 -pix_fmt yuv444p -an "$1"
    expect "odd_641x361.mp4 size" "$(decoded_size "$1")" 641x361
}
gen_odd_333() {
    "${ff[@]}" "${video_in[@]}" -t 1 -vf "scale=333:185" -c:v libvpx-vp9 -pix_fmt yuv420p \
        -deadline realtime -cpu-used 8 -b:v 300k -an "$1"
    expect "odd_333x185.mkv size" "$(decoded_size "$1")" 333x185
}
gen_vfr() {
    # Keep source frames 0-19 (40 ms apart), then 20, 22, .. 38 (80 ms), then 41, 44, .. 47 (120 ms);
    # -fps_mode vfr keeps their timestamps.
    "${ff[@]}" "${video_in[@]}" -f lavfi -i "$(sine 48000)" -t 2 \
        -vf "$scale,select='if(lt(n\,20)\,1\,if(lt(n\,40)\,not(mod(n\,2))\,not(mod(n-38\,3))))'" -fps_mode vfr \
        -c:v libx264 -c:a aac -ac 2 "$1"
    local deltas
    deltas=$(ffprobe -v error -select_streams v:0 -show_entries packet=pts_time -of csv=p=0 "$1" | sort -n |
        awk 'NR > 1 { printf "%.3f\n", $1 - prev } { prev = $1 }' | sort -u | tr '\n' ' ')
    expect "vfr.mp4 frame intervals" "$deltas" "0.040 0.080 0.120 "
}
gen_audio_only_m4a() { "${ff[@]}" -f lavfi -i "$(sine 48000)" -t 2 -c:a aac -ac 2 "$1"; }
gen_audio_only_mp4() { "${ff[@]}" -f lavfi -i "$(sine 48000)" -t 2 -c:a aac -ac 2 -f mp4 "$1"; }
gen_late_audio() {
    "${ff[@]}" "${video_in[@]}" -itsoffset 0.5 -f lavfi -i "$(sine 48000)" -t 2 -vf "$scale" \
        -c:v libx264 -c:a aac -ac 2 "$1"
    expect "late_audio.mkv audio start" "$(probe "$1" a:0 stream=start_time)" 0.479000
}
gen_early_audio() {
    "${ff[@]}" -itsoffset 0.2 "${video_in[@]}" -f lavfi -i "$(sine 48000)" -t 2 -vf "$scale" \
        -fps_mode passthrough -c:v libx264 -c:a aac -ac 2 "$1"
    expect "early_audio.mp4 video start" "$(probe "$1" v:0 stream=start_time)" 0.200000
    expect "early_audio.mp4 audio start" "$(probe "$1" a:0 stream=start_time)" 0.000000
}
gen_upright() { "${ff[@]}" "${still_in[@]}" -frames:v 1 -vf "$still_vf" -pix_fmt rgb24 "$1"; }
# The inverse of each EXIF orientation, as an ffmpeg filter (see the table at the top).
stored_filter() {
    case $1 in
        1) echo null ;;
        2) echo hflip ;;
        3) echo hflip,vflip ;;
        4) echo vflip ;;
        5) echo transpose=cclock_flip ;;
        6) echo transpose=cclock ;;
        7) echo transpose=clock_flip ;;
        8) echo transpose=clock ;;
    esac
}
# exif_still OUT N: the upright picture transformed by the inverse of orientation N, tagged N.
exif_still() {
    local ext=${1##*.} endian=--little-endian
    [ $(($2 % 2)) = 0 ] && endian=--big-endian
    local q=()
    [ "$ext" = jpg ] && q=(-q:v 2)
    "${ff[@]}" -i "$out/exif/upright.png" -vf "$(stored_filter "$2")" "${q[@]}" -frames:v 1 "$1.raw.$ext"
    python3 "$here/exif_orient.py" write "$1.raw.$ext" "$1" "$2" "$endian"
    rm -f "$1.raw.$ext"
    expect "$(basename "$1") orientation (exif_orient.py read)" "$(python3 "$here/exif_orient.py" read "$1")" "$2"
    if [ "$ext" = jpg ]; then # an independent reader: ffmpeg's JPEG decoder exports the EXIF tags
        local tag
        tag=$(ffprobe -v error -show_entries frame_tags=Orientation -of default=noprint_wrappers=1:nokey=1 "$1")
        expect "$(basename "$1") orientation (ffprobe)" "$(echo $tag)" "$2"
    fi
}
gen_text() { printf 'This is a text file, not a video: latentcam must refuse it cleanly.\n' >"$1"; }
gen_empty() { : >"$1"; }

start=$(date +%s.%N)
mk aac_short.mp4 gen_aac_short_mp4 "H.264 320x180 25 fps (B-frames) + AAC 48 kHz stereo, 1.0 s"
mk aac_short.mov gen_aac_short_mov "the streams of aac_short.mp4 in MOV"
mk aac_long.mp4 gen_aac_long_mp4 "H.264 320x180 25 fps, keyframe every 25 + AAC 44.1 kHz stereo, 4.0 s"
mk aac_long.mov gen_aac_long_mov "the streams of aac_long.mp4 in MOV"
mk phone.mov gen_phone_mov "HEVC Main 10 hvc1 320x180 stored, rotation 90 (shown 180x320) + AAC, 2.0 s"
mk portrait_rot90.mp4 gen_rot90 "H.264 320x180 stored, rotation 90 (shown 180x320), 2.0 s, no audio"
mk portrait_rot270.mp4 gen_rot270 "H.264 320x180 stored, rotation 270 (shown 180x320), 2.0 s, no audio"
mk rot180.mp4 gen_rot180 "H.264 320x180, rotation 180, 2.0 s, no audio"
mk h264_10bit.mp4 gen_h264_10bit "H.264 High 10 yuv420p10le 320x180, 1.0 s, no audio"
mk h264_444.mp4 gen_h264_444 "H.264 High 4:4:4 yuv444p 320x180, 1.0 s, no audio"
mk odd_641x361.mp4 gen_odd_641 "H.264 High 4:4:4 yuv444p 641x361, 1.0 s, no audio"
mk odd_333x185.mkv gen_odd_333 "VP9 yuv420p 333x185, 1.0 s, no audio"
mk vfr.mp4 gen_vfr "H.264 320x180, frames 40/80/120 ms apart (33 in 2 s) + AAC, 2.0 s"
mk audio_only.m4a gen_audio_only_m4a "AAC 48 kHz stereo, 2.0 s, no video"
mk audio_only.mp4 gen_audio_only_mp4 "AAC 48 kHz stereo in MP4, 2.0 s, no video"
mk late_audio.mkv gen_late_audio "H.264 from 0 s + AAC from 0.5 s (first packet 0.479), to 2.0 s"
mk early_audio.mp4 gen_early_audio "AAC from 0 s + H.264 from 0.2 s (edit list), to 2.0 s"
mk exif/upright.png gen_upright "the upright reference still, 320x240 RGB PNG"
for n in 1 2 3 4 5 6 7 8; do
    eval "gen_orient_$n() { exif_still \"\$1\" $n; }"
    mk "exif/orient_$n.jpg" "gen_orient_$n" "JPEG, EXIF orientation $n ($(stored_filter $n) of upright.png stored)"
done
gen_orient_6_png() { exif_still "$1" 6; }
mk exif/orient_6.png gen_orient_6_png "PNG with an eXIf chunk, orientation 6 (transpose=cclock of upright.png)"
mk text.mp4 gen_text "a text file named .mp4"
mk empty.png gen_empty "0 bytes"

say "all ${#FILES[@]} files in $out ($(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s)"
