//! moehal-cpu: the CPU backend of moehal.
//!
//! Every op of `OPS.md` on host memory, with AVX-512, AVX2+FMA, aarch64 NEON and portable kernels
//! chosen once at run time ([`simd::Kernels::best`]) and threads from one shared rayon pool
//! ([`pool::Pool::global`]). The op modules work on raw slices; all `unsafe` code lives in [`simd`].
//! On CPUs with AMX ([`Isa::Amx`], detected and granted at run time) bf16 prefill `grouped_gemm` runs
//! on tiles (`simd::amx`, C microkernel in `csrc/amx.c`), and [`amx_int8`] offers an int8 tile GEMM.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod amx_int8;
pub mod backend;
pub mod elem;
pub mod engram;
pub mod env;
pub mod grouped_gemm;
pub mod moe_combine;
pub mod moe_permute;
pub mod pool;
pub mod quant;
pub mod router_topk;
pub mod simd;
pub mod swiglu;

pub use backend::CpuBackend;
pub use elem::{Elem, ElemKind};
pub use grouped_gemm::{GemmArgs, Layout, PackedWeights, Weights};
pub use pool::Pool;
pub use simd::{Isa, Kernels};
