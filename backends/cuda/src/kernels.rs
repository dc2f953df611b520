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

type ImageKey = (&'static str, String);

/// Process-wide cache of compiled images, keyed by (file, arch).
fn image_cache() -> &'static Mutex<HashMap<ImageKey, Arc<Vec<u8>>>> {
    static C: OnceLock<Mutex<HashMap<ImageKey, Arc<Vec<u8>>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The image of `unit` for compute capability `(major, minor)`: a cubin for `sm_XY`, else (when
/// this NVRTC does not know the GPU) PTX for the newest virtual arch it accepts, JIT-compiled by
/// the driver. Compiled once per process.
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
    let img = match compile(unit.file(), &arch) {
        Ok(i) => i,
        Err(first) => compile(unit.file(), "compute_90").map_err(|_| first)?,
    };
    let img = Arc::new(img);
    image_cache()
        .lock()
        .map_err(|_| "kernel cache poisoned".to_string())?
        .insert(key, img.clone());
    Ok(img)
}
