//! The TensorRT engine cache: where engines live, and the key that says when a cached engine is the right one.
//!
//! ONNX Runtime names a cached engine after the model's file name and graph, not its weights, its precision or
//! its optimisation profiles, and it reuses whatever file matches that name. So every engine goes in a folder of
//! its own, `<cache>/latentcam/tensorrt/<model stem>-<key>/`, where the key is a hash of everything that
//! changes an engine: the model's bytes (and those of its external-data files), the shape profiles (or, where
//! ONNX Runtime makes the profile itself, the shapes the model runs at), fp16, the ONNX Runtime / TensorRT
//! libraries, and the engine options latentcam sets ([`KEY_VERSION`]). The folder holds
//! `key.txt`, the text the key hashes, for whoever wonders why an engine was rebuilt.
//!
//! Hashing reads the whole model (GBs for a UNet, at about 2.5 GB/s once it is in the page cache); the result is
//! kept per path, size and modification time for the life of the process, so loading a model twice hashes it
//! once.

// Without the `tensorrt` feature only the tests use this module.
#![cfg_attr(not(feature = "tensorrt"), allow(dead_code))]

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use super::settings::{SessionSettings, ShapeProfile};
use crate::error::{Error, Result};

/// Bump when latentcam changes a TensorRT option that changes the engines it builds, so old engines are not
/// reused.
pub(crate) const KEY_VERSION: &str = "latentcam tensorrt engine key v1";

/// Where a model's TensorRT engines go, and the options that go with them.
#[derive(Debug)]
pub(crate) struct EnginePlan {
    /// The engine cache; `None` for a graph built in memory (no file to key it by, and latentcam gives two
    /// different small graphs the same role name): its engines are built at each load, which for those graphs
    /// takes seconds.
    pub cache: Option<EngineCache>,
    /// Shared by every model on this ONNX Runtime / TensorRT (TensorRT checks a timing cache's own version).
    pub timing_dir: PathBuf,
    /// `trt_profile_{min,opt,max}_shapes`; empty when there are no profiles.
    pub min_shapes: String,
    pub opt_shapes: String,
    pub max_shapes: String,
}

/// One model's engine folder.
#[derive(Debug)]
pub(crate) struct EngineCache {
    /// `<model stem>-<16 hex digits>`: the engine folder's name.
    pub key: String,
    /// What the key hashes (one item a line), also written to `key.txt` in the engine folder.
    pub descriptor: String,
    pub dir: PathBuf,
    /// `trt_engine_cache_prefix`: the model's stem, in characters safe in a file name.
    pub prefix: String,
    /// Whether the engine folder already holds an engine (if not, this load builds one: minutes).
    pub has_engine: bool,
}

impl EnginePlan {
    /// Validate the profiles, compute the key (hashing the model unless this process already did) and create
    /// the folders under `root` (normally [`cache_root`]).
    pub fn prepare(settings: &SessionSettings, root: &Path) -> Result<EnginePlan> {
        validate_profiles(&settings.shape_profiles)?;
        let timing_dir =
            root.join(format!("timing-{:016x}", fnv1a(runtime_identity(&settings.ort_library).as_bytes())));
        create_dir(&timing_dir)?;
        let cache = if settings.model_path.is_file() { Some(EngineCache::prepare(settings, root)?) } else { None };
        let shapes = |pick: fn(&ShapeProfile) -> &[i64]| profile_shapes(&settings.shape_profiles, pick);
        Ok(EnginePlan {
            cache,
            timing_dir,
            min_shapes: shapes(|p| &p.min),
            opt_shapes: shapes(|p| &p.opt),
            max_shapes: shapes(|p| &p.max),
        })
    }
}

impl EngineCache {
    fn prepare(settings: &SessionSettings, root: &Path) -> Result<EngineCache> {
        let (key, descriptor) = cache_key(settings)?;
        let dir = root.join(&key);
        create_dir(&dir)?;
        let key_file = dir.join("key.txt");
        if std::fs::read_to_string(&key_file).ok().as_deref() != Some(descriptor.as_str())
            && let Err(e) = std::fs::write(&key_file, &descriptor)
        {
            tracing::debug!(file = %key_file.display(), error = %e, "cannot write the engine cache key description");
        }
        let has_engine = std::fs::read_dir(&dir)
            .map(|entries| entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "engine")))
            .unwrap_or(false);
        Ok(EngineCache { prefix: file_stem(&settings.model_path), key, descriptor, dir, has_engine })
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::ExecutionProvider {
        ep: "tensorrt",
        cause: crate::error::because(format!("cannot create the engine cache folder {}: {e}", dir.display())),
    })
}

/// `$XDG_CACHE_HOME/latentcam/tensorrt` (or `~/.cache/...`, or the temporary folder).
pub(crate) fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("latentcam")
        .join("tensorrt")
}

/// The `trt_profile_*_shapes` option for one of min/opt/max: `name:1x4x64x64,name2:...`. An input named twice
/// is two profiles (ONNX Runtime's rule).
pub(crate) fn profile_shapes(profiles: &[ShapeProfile], pick: fn(&ShapeProfile) -> &[i64]) -> String {
    let one = |p: &ShapeProfile| {
        let dims: Vec<String> = pick(p).iter().map(i64::to_string).collect();
        format!("{}:{}", p.input, dims.join("x"))
    };
    profiles.iter().map(one).collect::<Vec<_>>().join(",")
}

/// ONNX Runtime ignores malformed profiles with a warning and makes its own; say what is wrong instead.
pub(crate) fn validate_profiles(profiles: &[ShapeProfile]) -> Result<()> {
    for p in profiles {
        let bad =
            |problem: String| Err(Error::invalid("TensorRT shape profile", format!("input `{}`: {problem}", p.input)));
        if p.input.is_empty() || p.input.contains([',', ':']) {
            return bad("the input name must be non-empty, without `,` or `:`".into());
        }
        if p.min.is_empty() || p.min.len() != p.opt.len() || p.min.len() != p.max.len() {
            return bad(format!(
                "min {:?}, opt {:?} and max {:?} must have the same, non-zero rank",
                p.min, p.opt, p.max
            ));
        }
        let ordered =
            p.min.iter().zip(&p.opt).zip(&p.max).all(|((min, opt), max)| 1 <= *min && min <= opt && opt <= max);
        if !ordered {
            return bad(format!(
                "need 1 <= min <= opt <= max in every dimension (min {:?}, opt {:?}, max {:?})",
                p.min, p.opt, p.max
            ));
        }
    }
    Ok(())
}

/// The engine folder name and the text it hashes.
pub(crate) fn cache_key(settings: &SessionSettings) -> Result<(String, String)> {
    let hash_err = |e: std::io::Error| Error::ExecutionProvider {
        ep: "tensorrt",
        cause: crate::error::because(format!(
            "cannot hash the model {} for the engine cache key: {e}",
            settings.model_path.display()
        )),
    };
    let model = digest(&settings.model_path, true).map_err(hash_err)?;
    let name = settings.model_path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let mut text = String::new();
    let _ = writeln!(text, "{KEY_VERSION}");
    let _ = writeln!(text, "model {name} {} {:016x}", model.len, model.hash);
    let dir = settings.model_path.parent().unwrap_or(Path::new(""));
    for location in &model.external {
        match digest(&dir.join(location), false) {
            Ok(d) => _ = writeln!(text, "external-data {location} {} {:016x}", d.len, d.hash),
            // ONNX Runtime fails the load itself; the key only needs to differ from a present file's.
            Err(e) => _ = writeln!(text, "external-data {location} unreadable ({})", e.kind()),
        }
    }
    let _ = writeln!(text, "fp16 {}", settings.fp16);
    for p in &settings.shape_profiles {
        let dims = |d: &[i64]| d.iter().map(i64::to_string).collect::<Vec<_>>().join("x");
        let _ = writeln!(text, "profile {} min {} opt {} max {}", p.input, dims(&p.min), dims(&p.opt), dims(&p.max));
    }
    if settings.shape_profiles.is_empty()
        && let Some(hint) = &settings.shape_hint
    {
        let _ = writeln!(text, "implicit profile, runs at {hint}");
    }
    text.push_str(&runtime_identity(&settings.ort_library));
    let key = format!("{}-{:016x}", file_stem(&settings.model_path), fnv1a(text.as_bytes()));
    Ok((key, text))
}

/// The model file's stem in characters safe in a file name (for the folder name and the engine prefix).
fn file_stem(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
    let safe: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(64)
        .collect();
    if safe.is_empty() { "model".to_string() } else { safe }
}

/// The libraries an engine depends on, one a line: the ONNX Runtime library, and the first TensorRT provider
/// library and `libnvinfer` found where the dynamic loader would look (`LD_LIBRARY_PATH`, beside ONNX Runtime,
/// the usual system folders), each as real path, size and modification time. A TensorRT upgrade changes the
/// key even where TensorRT would not refuse the old engine.
pub(crate) fn runtime_identity(ort_library: &Path) -> String {
    let mut text = String::new();
    if !ort_library.as_os_str().is_empty() {
        let _ = writeln!(text, "onnxruntime {}", file_identity(ort_library));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    dirs.extend(ort_library.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf));
    dirs.extend(
        ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"]
            .map(PathBuf::from),
    );
    for (what, prefix) in [("tensorrt-provider", "libonnxruntime_providers_tensorrt.so"), ("nvinfer", "libnvinfer.so")]
    {
        let found = dirs.iter().find_map(|dir| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| std::fs::canonicalize(e.path()).unwrap_or_else(|_| e.path()))
                .collect();
            files.sort();
            files.dedup();
            (!files.is_empty()).then_some(files)
        });
        for file in found.unwrap_or_default() {
            let _ = writeln!(text, "{what} {}", file_identity(&file));
        }
    }
    text
}

/// `path size mtime` (real path, modification time in nanoseconds since 1970), or what could not be read.
fn file_identity(path: &Path) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match std::fs::metadata(&real) {
        Ok(m) => {
            let mtime = m.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
            format!("{} {} {}", real.display(), m.len(), mtime.map_or(0, |d| d.as_nanos()))
        }
        Err(e) => format!("{} unreadable ({})", real.display(), e.kind()),
    }
}

/// A file's length and hash, and (for an ONNX file) the external-data files it names.
#[derive(Debug)]
pub(crate) struct Digest {
    pub len: u64,
    pub hash: u64,
    pub external: BTreeSet<String>,
}

type DigestCache = Mutex<HashMap<(PathBuf, u64, Option<SystemTime>, bool), Arc<Digest>>>;

/// Files hashed in this process, by real path, size, modification time and whether external data was looked for.
static DIGESTS: OnceLock<DigestCache> = OnceLock::new();

/// The digest of `path`, hashed once per process for a given size and modification time.
pub(crate) fn digest(path: &Path, find_external: bool) -> std::io::Result<Arc<Digest>> {
    let real = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&real)?;
    let id = (real, meta.len(), meta.modified().ok(), find_external);
    let cache = DIGESTS.get_or_init(Default::default);
    if let Some(d) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return Ok(Arc::clone(d));
    }
    // Not under the lock: two threads may hash the same file at once, which is only wasted time.
    let started = Instant::now();
    let d = Arc::new(hash_file(&id.0, find_external)?);
    tracing::debug!(
        file = %id.0.display(), bytes = d.len, hash = format_args!("{:016x}", d.hash),
        external = d.external.len(), ms = started.elapsed().as_millis(), "hashed for the TensorRT engine cache key"
    );
    cache.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Arc::clone(&d));
    Ok(d)
}

const CHUNK: usize = 1 << 20;

/// Hash a whole file in 1 MiB reads; with `find_external`, also collect the ONNX external-data locations.
fn hash_file(path: &Path, find_external: bool) -> std::io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Fnv4::new();
    let mut external = BTreeSet::new();
    // [bytes of the last read not yet scanned for locations][this read]
    let mut buf = vec![0u8; LOCATION_CARRY + CHUNK];
    let mut kept = 0;
    loop {
        let n = match file.read(&mut buf[kept..kept + CHUNK]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[kept..kept + n]);
        if n == 0 {
            break;
        }
        if find_external {
            let end = kept + n;
            let keep_from = scan_locations(&buf[..end], &mut external);
            buf.copy_within(keep_from..end, 0);
            kept = end - keep_from;
        }
    }
    Ok(Digest { len: hasher.len, hash: hasher.finish(), external })
}

/// How an ONNX file names an external-data file: the `StringStringEntryProto { key: "location", value: ... }`
/// of a tensor's `external_data`, encoded (field 1, length 8, "location", field 2, then the value's length).
const LOCATION_ENTRY: &[u8] = b"\x0a\x08location\x12";
/// Longer names are not file names (PATH_MAX).
const MAX_LOCATION: usize = 4096;
/// The most a read can leave unscanned: an entry whose value runs past its end.
const LOCATION_CARRY: usize = LOCATION_ENTRY.len() + 2 + MAX_LOCATION;

/// Add the external-data locations found in `data` to `out`; return where the bytes that could still start an
/// entry begin (to be scanned again with the next read). Horspool search: about as fast as the hash.
fn scan_locations(data: &[u8], out: &mut BTreeSet<String>) -> usize {
    let m = LOCATION_ENTRY.len();
    let mut shift = [m; 256];
    for (i, &b) in LOCATION_ENTRY[..m - 1].iter().enumerate() {
        shift[b as usize] = m - 1 - i;
    }
    let mut undecided = None;
    let mut i = 0;
    while i + m <= data.len() {
        let last = data[i + m - 1];
        if last == LOCATION_ENTRY[m - 1] && data[i..i + m - 1] == LOCATION_ENTRY[..m - 1] {
            match location_at(&data[i + m..]) {
                Location::Found(name) => _ = out.insert(name),
                Location::Incomplete => {
                    undecided = Some(i);
                    break;
                }
                Location::NotOne => {}
            }
        }
        i += shift[last as usize];
    }
    let tail = data.len().saturating_sub(m - 1);
    undecided.map_or(tail, |u| u.min(tail))
}

enum Location {
    Found(String),
    Incomplete,
    NotOne,
}

/// The length-prefixed value after [`LOCATION_ENTRY`].
fn location_at(data: &[u8]) -> Location {
    let (len, used) = match data {
        [] => return Location::Incomplete,
        [b0, ..] if b0 & 0x80 == 0 => (*b0 as usize, 1),
        [_] => return Location::Incomplete,
        [b0, b1, ..] if b1 & 0x80 == 0 => ((b0 & 0x7f) as usize | (*b1 as usize) << 7, 2),
        _ => return Location::NotOne,
    };
    if len == 0 || len > MAX_LOCATION {
        return Location::NotOne;
    }
    match data.get(used..used + len) {
        None => Location::Incomplete,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => Location::Found(s.to_string()),
            _ => Location::NotOne,
        },
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `data` (the key text).
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// FNV-1a 64 in four interleaved lanes (byte `i` of the stream goes to lane `i % 4`), folded with the length
/// into one FNV-1a 64 at the end. Not a cryptographic hash; a cache key only has to tell different model files
/// apart. The lanes' multiplications overlap, so it runs at about 2.7 GB/s where plain FNV-1a manages 0.8.
#[derive(Clone, Debug)]
pub(crate) struct Fnv4 {
    lanes: [u64; 4],
    len: u64,
}

impl Fnv4 {
    pub fn new() -> Fnv4 {
        Fnv4 { lanes: [FNV_OFFSET; 4], len: 0 }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !self.len.is_multiple_of(4)
            && let Some((&b, rest)) = data.split_first()
        {
            self.byte(b);
            data = rest;
        }
        let mut lanes = self.lanes;
        let mut words = data.chunks_exact(4);
        for w in &mut words {
            for (lane, &b) in lanes.iter_mut().zip(w) {
                *lane = (*lane ^ u64::from(b)).wrapping_mul(FNV_PRIME);
            }
        }
        self.lanes = lanes;
        self.len += (data.len() - words.remainder().len()) as u64;
        for &b in words.remainder() {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        let lane = &mut self.lanes[(self.len % 4) as usize];
        *lane = (*lane ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        self.len += 1;
    }

    pub fn finish(&self) -> u64 {
        let mut bytes = [0u8; 40];
        for (i, lane) in self.lanes.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&lane.to_le_bytes());
        }
        bytes[32..].copy_from_slice(&self.len.to_le_bytes());
        fnv1a(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(input: &str, min: &[i64], opt: &[i64], max: &[i64]) -> ShapeProfile {
        ShapeProfile { input: input.into(), min: min.into(), opt: opt.into(), max: max.into() }
    }

    fn settings(model: &Path) -> SessionSettings {
        SessionSettings { model_path: model.to_path_buf(), ..Default::default() }
    }

    #[test]
    fn profile_strings_have_the_onnx_runtime_format() {
        let profiles = [
            profile("sample", &[1, 4, 32, 32], &[1, 4, 64, 64], &[2, 4, 96, 96]),
            profile("timestep", &[1], &[1], &[2]),
        ];
        assert_eq!(profile_shapes(&profiles, |p| &p.min), "sample:1x4x32x32,timestep:1");
        assert_eq!(profile_shapes(&profiles, |p| &p.opt), "sample:1x4x64x64,timestep:1");
        assert_eq!(profile_shapes(&profiles, |p| &p.max), "sample:2x4x96x96,timestep:2");
        assert_eq!(profile_shapes(&[], |p| &p.min), "");
        assert!(validate_profiles(&profiles).is_ok());
    }

    #[test]
    fn malformed_profiles_are_refused() {
        for bad in [
            profile("", &[1], &[1], &[1]),
            profile("a,b", &[1], &[1], &[1]),
            profile("a:b", &[1], &[1], &[1]),
            profile("x", &[], &[], &[]),
            profile("x", &[1, 4], &[1], &[1, 4]),
            profile("x", &[1, 8], &[1, 4], &[1, 16]),
            profile("x", &[0, 4], &[1, 4], &[1, 4]),
        ] {
            let err = validate_profiles(std::slice::from_ref(&bad)).unwrap_err();
            assert!(err.to_string().contains("TensorRT shape profile"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn fnv4_does_not_depend_on_how_the_stream_is_split() {
        let data: Vec<u8> = (0..10_007u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut whole = Fnv4::new();
        whole.update(&data);
        for split in [1, 2, 3, 5, 4096, 9999] {
            let mut parts = Fnv4::new();
            for c in data.chunks(split) {
                parts.update(c);
            }
            assert_eq!(parts.finish(), whole.finish(), "split {split}");
        }
        let mut other = data.clone();
        other[5000] ^= 1;
        let mut changed = Fnv4::new();
        changed.update(&other);
        assert_ne!(changed.finish(), whole.finish());
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a 64 test vector");
    }

    /// `dir/unet.onnx` with `bytes`.
    fn model(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("unet.onnx");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn the_key_follows_bytes_profiles_and_fp16_and_nothing_else() {
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let body: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut changed = body.clone();
        changed[2 * CHUNK + 3] ^= 0x40;
        let (one, same, other) = (model(a.path(), &body), model(b.path(), &body), model(c.path(), &changed));

        let key = |s: &SessionSettings| cache_key(s).unwrap().0;
        let base = key(&settings(&one));
        assert!(base.starts_with("unet-"), "{base}");
        assert_eq!(key(&settings(&one)), base, "stable");
        assert_eq!(key(&settings(&same)), base, "same bytes in another folder");
        assert_ne!(key(&settings(&other)), base, "one bit of the model changed");

        let fp16 = SessionSettings { fp16: true, ..settings(&one) };
        assert_ne!(key(&fp16), base, "fp16");
        let profiled = |max| SessionSettings {
            shape_profiles: vec![profile("sample", &[1, 4, 32, 32], &[1, 4, 64, 64], &[1, 4, max, max])],
            ..settings(&one)
        };
        assert_ne!(key(&profiled(96)), base, "profiles");
        assert_ne!(key(&profiled(96)), key(&profiled(128)), "profile shapes");
        assert_eq!(key(&profiled(96)), key(&profiled(96)));
        let graph = SessionSettings { cuda_graph: true, ..settings(&one) };
        assert_eq!(key(&graph), base, "CUDA graphs do not change the engine");
        let lib = SessionSettings { ort_library: one.clone(), ..settings(&one) };
        assert_ne!(key(&lib), base, "the ONNX Runtime library");
        // Without profiles, the shapes ONNX Runtime will make its profile from keep sizes apart.
        let hinted = |size: &str| SessionSettings { shape_hint: Some(size.into()), ..settings(&one) };
        assert_ne!(key(&hinted("image 512x512")), base, "a shape hint");
        assert_ne!(key(&hinted("image 512x512")), key(&hinted("image 768x512")), "the hinted size");
    }

    #[test]
    fn external_data_files_are_part_of_the_key() {
        let dir = tempfile::tempdir().unwrap();
        // A graph that names `weights.bin` (as a tensor's external_data entry does), split across reads.
        let mut onnx = vec![7u8; CHUNK - 6];
        onnx.extend_from_slice(LOCATION_ENTRY);
        onnx.push(b"weights.bin".len() as u8);
        onnx.extend_from_slice(b"weights.bin");
        onnx.extend_from_slice(&[0x1a, 0x06, b'o', b'f', b'f', b's', b'e', b't']);
        let path = model(dir.path(), &onnx);
        std::fs::write(dir.path().join("weights.bin"), [1u8; 4096]).unwrap();

        let (key, text) = cache_key(&settings(&path)).unwrap();
        assert!(text.contains("external-data weights.bin 4096 "), "{text}");
        std::fs::write(dir.path().join("weights.bin"), [2u8; 4097]).unwrap();
        let (changed, _) = cache_key(&settings(&path)).unwrap();
        assert_ne!(changed, key);
    }

    #[test]
    fn locations_are_found_wherever_the_reads_split_them() {
        let mut data = b"head".to_vec();
        for name in ["a.bin", "sub/b.data", &"x".repeat(300)] {
            data.extend_from_slice(LOCATION_ENTRY);
            let len = name.len();
            if len < 128 {
                data.push(len as u8);
            } else {
                data.extend_from_slice(&[(len as u8 & 0x7f) | 0x80, (len >> 7) as u8]);
            }
            data.extend_from_slice(name.as_bytes());
            data.extend_from_slice(b"\x12\x04junk");
        }
        let mut whole = BTreeSet::new();
        scan_locations(&data, &mut whole);
        assert_eq!(whole.len(), 3, "{whole:?}");
        for split in 1..data.len() {
            let mut found = BTreeSet::new();
            let keep = scan_locations(&data[..split], &mut found);
            let mut rest = data[keep..split].to_vec();
            rest.extend_from_slice(&data[split..]);
            scan_locations(&rest, &mut found);
            assert_eq!(found, whole, "split at {split}");
        }
    }

    #[test]
    fn a_file_is_hashed_once_per_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = model(dir.path(), b"0123456789");
        let first = digest(&path, true).unwrap();
        assert!(Arc::ptr_eq(&first, &digest(&path, true).unwrap()), "cached");
        std::fs::write(&path, b"01234567890").unwrap();
        let second = digest(&path, true).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_ne!(first.hash, second.hash);
    }

    #[test]
    fn prepare_makes_the_folders_and_describes_the_key() {
        let root = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = model(dir.path(), b"not really onnx");
        let s = SessionSettings {
            fp16: true,
            shape_profiles: vec![profile("sample", &[1, 4, 32, 32], &[1, 4, 64, 64], &[1, 4, 96, 96])],
            ..settings(&path)
        };
        let plan = EnginePlan::prepare(&s, root.path()).unwrap();
        assert!(plan.timing_dir.is_dir());
        assert_eq!(plan.opt_shapes, "sample:1x4x64x64");
        let cache = plan.cache.unwrap();
        assert_eq!(cache.dir, root.path().join(&cache.key));
        assert!(cache.dir.is_dir());
        assert_eq!(std::fs::read_to_string(cache.dir.join("key.txt")).unwrap(), cache.descriptor);
        assert!(!cache.has_engine);
        assert_eq!(cache.prefix, "unet");
        std::fs::write(cache.dir.join("unet_123_sm89.engine"), b"").unwrap();
        assert!(EnginePlan::prepare(&s, root.path()).unwrap().cache.unwrap().has_engine);

        // A graph built in memory has no file to key an engine by: no engine cache.
        let in_memory = SessionSettings { model_path: "LCM step".into(), ..Default::default() };
        let plan = EnginePlan::prepare(&in_memory, root.path()).unwrap();
        assert!(plan.cache.is_none() && plan.timing_dir.is_dir());

        let bad = SessionSettings { shape_profiles: vec![profile("sample", &[2], &[1], &[1])], ..settings(&path) };
        assert!(EnginePlan::prepare(&bad, root.path()).is_err());
    }
}
