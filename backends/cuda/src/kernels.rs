//! Kernel sources (`kernels/cuda/*.cu`, embedded at build time) and their NVRTC compilation: on
//! first use, for the device's compute capability, cached per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::raw;

/// Shared helpers, prepended to every op file.
pub const COMMON: &str = include_str!("../../../kernels/cuda/common.cuh");

/// One `.cu` file per op: `(file name, source)`.
pub const SOURCES: [(&str, &str); 9] = [
    ("grouped_gemm.cu", include_str!("../../../kernels/cuda/grouped_gemm.cu")),
    ("router_topk.cu", include_str!("../../../kernels/cuda/router_topk.cu")),
    ("moe_permute.cu", include_str!("../../../kernels/cuda/moe_permute.cu")),
    ("swiglu.cu", include_str!("../../../kernels/cuda/swiglu.cu")),
    ("moe_combine.cu", include_str!("../../../kernels/cuda/moe_combine.cu")),
    ("engram_hash.cu", include_str!("../../../kernels/cuda/engram_hash.cu")),
    ("gather_rows.cu", include_str!("../../../kernels/cuda/gather_rows.cu")),
    ("quantize.cu", include_str!("../../../kernels/cuda/quantize.cu")),
    (
        "grouped_gemm_q.cu",
        include_str!("../../../kernels/cuda/grouped_gemm_q.cu"),
    ),
];

/// The op files, by index into [`SOURCES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Unit {
    GroupedGemm = 0,
    Router = 1,
    Permute = 2,
    Swiglu = 3,
    Combine = 4,
    Engram = 5,
    Gather = 6,
    Quantize = 7,
    GemmQuant = 8,
}

impl Unit {
    pub(crate) fn file(self) -> &'static str {
        SOURCES[self as usize].0
    }
}

/// The full translation unit NVRTC sees for `file`: the common helpers, then the op file.
pub fn full_source(file: &str) -> Option<String> {
    SOURCES
        .iter()
        .find(|(f, _)| *f == file)
        .map(|(f, src)| format!("{COMMON}\n#line 1 \"{f}\"\n{src}"))
}

/// Compile one op file with NVRTC for `arch` (`"sm_90"` gives a cubin, `"compute_90"` PTX).
/// Needs `libnvrtc` only (no GPU); callers probe it with [`nvrtc_available`] first.
///
/// # Errors
/// The NVRTC log when the file does not compile, or an unknown file name.
pub fn compile(file: &str, arch: &str) -> Result<Vec<u8>, String> {
    let src = full_source(file).ok_or_else(|| format!("unknown kernel file {file}"))?;
    raw::nvrtc_compile(&src, file, arch, &[])
}

/// Whether NVRTC can be loaded here, and its version; `Err` says why not.
pub fn nvrtc_available() -> Result<(i32, i32), String> {
    if !raw::nvrtc_present() {
        return Err(
            "libnvrtc not found (searched libnvrtc.so, libnvrtc.so.13, ...; install the PyPI wheel \
                    nvidia-cuda-nvrtc and put site-packages/nvidia/cu13/lib on LD_LIBRARY_PATH)"
                .into(),
        );
    }
    raw::nvrtc_version().map_err(|e| format!("nvrtcVersion failed: {}", e.msg))
}

/// Environment variable naming a folder where compiled kernel images persist across processes
/// (`scripts/gpu/check.sh` sets it, so that its processes compile each file once instead of
/// ~20 s of NVRTC each). Unset or empty: images are cached per process only. An image is keyed by
/// the full source, the target arch and the NVRTC version, so an edited kernel or another NVRTC
/// never reuses a stale image; unreadable or unwritable entries are ignored (compiled again).
pub const CACHE_ENV: &str = "MOEHAL_CUDA_KERNEL_CACHE";

/// FNV-1a, 64 bit: a stable key across builds and processes (std's hasher promises neither).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(&[0xffu8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The image for `(file, arch)` of source `src`: read from `dir` when an entry for exactly this
/// source, arch and `nvrtc` version is there, else `compile()`d and written (to a temporary name,
/// then renamed, so a concurrent reader never sees half a file).
fn disk_cached(
    dir: Option<&std::path::Path>,
    file: &str,
    arch: &str,
    src: &str,
    nvrtc: (i32, i32),
    compile: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let Some(dir) = dir else { return compile() };
    let ver = format!("{}.{}", nvrtc.0, nvrtc.1);
    let key = fnv1a(&[src.as_bytes(), arch.as_bytes(), ver.as_bytes()]);
    let stem = file.trim_end_matches(".cu");
    let path = dir.join(format!("{stem}-{arch}-{key:016x}.bin"));
    if let Ok(img) = std::fs::read(&path) {
        if !img.is_empty() {
            return Ok(img);
        }
    }
    let img = compile()?;
    let tmp = dir.join(format!(".{stem}-{arch}-{key:016x}.{}.tmp", std::process::id()));
    if std::fs::create_dir_all(dir).is_ok()
        && std::fs::write(&tmp, &img).is_ok()
        && std::fs::rename(&tmp, &path).is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(img)
}

type ImageKey = (&'static str, String);

/// Process-wide cache of compiled images, keyed by (file, arch).
fn image_cache() -> &'static Mutex<HashMap<ImageKey, Arc<Vec<u8>>>> {
    static C: OnceLock<Mutex<HashMap<ImageKey, Arc<Vec<u8>>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The image of `unit` for compute capability `(major, minor)`: a cubin for `sm_XY`, else (when
/// this NVRTC does not know the GPU) PTX for the newest virtual arch it accepts, JIT-compiled by
/// the driver. Compiled once per process, or once per [`CACHE_ENV`] folder.
pub(crate) fn image(unit: Unit, cc: (i32, i32)) -> Result<Arc<Vec<u8>>, String> {
    let arch = format!("sm_{}{}", cc.0, cc.1);
    let key = (unit.file(), arch.clone());
    if let Some(img) = image_cache()
        .lock()
        .map_err(|_| "kernel cache poisoned".to_string())?
        .get(&key)
    {
        return Ok(img.clone());
    }
    let dir = std::env::var_os(CACHE_ENV)
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from);
    let img = Arc::new(compile_image(unit, &arch, dir.as_deref())?);
    image_cache()
        .lock()
        .map_err(|_| "kernel cache poisoned".to_string())?
        .insert(key, img.clone());
    Ok(img)
}

/// The image of `unit` for `arch` through the disk cache in `dir` (if any): the cubin, or PTX for
/// `compute_90` when this NVRTC does not know `arch`.
fn compile_image(unit: Unit, arch: &str, dir: Option<&std::path::Path>) -> Result<Vec<u8>, String> {
    let src = full_source(unit.file()).ok_or_else(|| format!("unknown kernel file {}", unit.file()))?;
    let nvrtc = nvrtc_available()?;
    disk_cached(dir, unit.file(), arch, &src, nvrtc, || {
        match compile(unit.file(), arch) {
            Ok(i) => Ok(i),
            Err(first) => compile(unit.file(), "compute_90").map_err(|_| first),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// The disk cache: a first process compiles and writes, a second reads without compiling; a
    /// changed source, arch or NVRTC version compiles again; an empty (truncated) entry is
    /// ignored; without a folder every call compiles.
    #[test]
    fn disk_cache_reuses_only_an_identical_key() {
        let dir = std::env::temp_dir().join(format!("moehal-kcache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let calls = Cell::new(0);
        let compile = |img: &'static [u8]| {
            let calls = &calls;
            move || {
                calls.set(calls.get() + 1);
                Ok(img.to_vec())
            }
        };
        let d = Some(dir.as_path());
        let v = (13, 0);
        assert_eq!(
            disk_cached(d, "a.cu", "sm_90", "src1", v, compile(b"one")).unwrap(),
            b"one"
        );
        assert_eq!(
            disk_cached(d, "a.cu", "sm_90", "src1", v, compile(b"two")).unwrap(),
            b"one"
        );
        assert_eq!(calls.get(), 1);
        assert_eq!(
            disk_cached(d, "a.cu", "sm_90", "src2", v, compile(b"three")).unwrap(),
            b"three"
        );
        assert_eq!(
            disk_cached(d, "a.cu", "sm_89", "src1", v, compile(b"four")).unwrap(),
            b"four"
        );
        assert_eq!(
            disk_cached(d, "a.cu", "sm_90", "src1", (13, 1), compile(b"five")).unwrap(),
            b"five"
        );
        assert_eq!(calls.get(), 4);
        for e in std::fs::read_dir(&dir).unwrap() {
            std::fs::write(e.unwrap().path(), b"").unwrap();
        }
        assert_eq!(
            disk_cached(d, "a.cu", "sm_90", "src1", v, compile(b"six")).unwrap(),
            b"six"
        );
        assert_eq!(
            disk_cached(None, "a.cu", "sm_90", "src1", v, compile(b"seven")).unwrap(),
            b"seven"
        );
        assert_eq!(calls.get(), 6);
        // Only the entries, no temporary files left behind.
        assert!(std::fs::read_dir(&dir)
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The compile step `image` uses, given a cache folder (as [`CACHE_ENV`] names one), writes the
    /// compiled image into it (needs NVRTC only; skipped without it): the entry is the cubin it
    /// returned. (The folder is passed, not set in the environment: other tests of this binary run
    /// on other threads, and the process-wide cache could already hold the image.)
    #[test]
    fn image_writes_the_cache_folder() {
        if nvrtc_available().is_err() {
            println!("skipped: NVRTC unavailable");
            return;
        }
        let dir = std::env::temp_dir().join(format!("moehal-kcache-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let img = compile_image(Unit::Swiglu, "sm_90", Some(&dir)).unwrap();
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(entries[0].to_string_lossy().contains("swiglu-sm_90-"));
        assert_eq!(std::fs::read(&entries[0]).unwrap(), img);
        assert_eq!(&img[..4], b"\x7fELF");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
