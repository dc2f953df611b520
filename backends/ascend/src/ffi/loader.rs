//! Loading the CANN (or emulator) libraries: the library search, `dlopen`, and the resolved
//! function table [`Api`] with the op versions present.

use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use moehal_ascend_sys as sys;

/// The non-`Option` function type inside a bindgen `Option<fn>` typedef.
pub trait OptFn {
    /// The function-pointer type.
    type Inner: Copy;
}
impl<T: Copy> OptFn for Option<T> {
    type Inner = T;
}

macro_rules! api {
    (required { $($r:ident : $rt:ident),* $(,)? } optional { $($o:ident : $ot:ident),* $(,)? }) => {
        /// The resolved function table. Required symbols are plain function pointers; op symbols
        /// that are probed by version are `Option`s.
        #[allow(non_snake_case, missing_docs)]
        pub struct Api {
            $(pub $r: <sys::$rt as OptFn>::Inner,)*
            $(pub $o: Option<<sys::$ot as OptFn>::Inner>,)*
        }
        impl Api {
            /// Resolve every symbol from `libs` (first library that has it wins). Fails with the
            /// list of every missing required name.
            fn resolve(libs: &[Library]) -> std::result::Result<Api, Vec<&'static str>> {
                let mut missing = Vec::new();
                $(
                    #[allow(non_snake_case)]
                    let $r: Option<<sys::$rt as OptFn>::Inner> = lookup::<sys::$rt>(libs, stringify!($r));
                    if $r.is_none() { missing.push(stringify!($r)); }
                )*
                if !missing.is_empty() {
                    return Err(missing);
                }
                Ok(Api {
                    $($r: $r.expect("checked above"),)*
                    $($o: lookup::<sys::$ot>(libs, stringify!($o)),)*
                })
            }
        }
    };
}

api! {
    required {
        aclInit: aclInitFn, aclGetRecentErrMsg: aclGetRecentErrMsgFn, aclrtGetSocName: aclrtGetSocNameFn,
        aclrtSetDevice: aclrtSetDeviceFn, aclrtResetDevice: aclrtResetDeviceFn,
        aclrtGetDeviceCount: aclrtGetDeviceCountFn, aclrtCreateContext: aclrtCreateContextFn,
        aclrtDestroyContext: aclrtDestroyContextFn, aclrtSetCurrentContext: aclrtSetCurrentContextFn,
        aclrtCreateStream: aclrtCreateStreamFn, aclrtDestroyStream: aclrtDestroyStreamFn,
        aclrtSynchronizeStream: aclrtSynchronizeStreamFn, aclrtMalloc: aclrtMallocFn, aclrtFree: aclrtFreeFn,
        aclrtMemcpy: aclrtMemcpyFn, aclrtMemset: aclrtMemsetFn, aclrtGetMemInfo: aclrtGetMemInfoFn,
        aclCreateTensor: aclCreateTensorFn, aclDestroyTensor: aclDestroyTensorFn,
        aclCreateIntArray: aclCreateIntArrayFn, aclDestroyIntArray: aclDestroyIntArrayFn,
        aclCreateTensorList: aclCreateTensorListFn, aclDestroyTensorList: aclDestroyTensorListFn,
    }
    optional {
        aclnnGroupedMatmulV4GetWorkspaceSize: aclnnGroupedMatmulV4GetWorkspaceSizeFn, aclnnGroupedMatmulV4: aclnnGroupedMatmulV4Fn,
        aclnnGroupedMatmulV3GetWorkspaceSize: aclnnGroupedMatmulV3GetWorkspaceSizeFn, aclnnGroupedMatmulV3: aclnnGroupedMatmulV3Fn,
        aclnnMoeGatingTopKSoftmaxGetWorkspaceSize: aclnnMoeGatingTopKSoftmaxGetWorkspaceSizeFn, aclnnMoeGatingTopKSoftmax: aclnnMoeGatingTopKSoftmaxFn,
        aclnnMoeGatingTopKGetWorkspaceSize: aclnnMoeGatingTopKGetWorkspaceSizeFn, aclnnMoeGatingTopK: aclnnMoeGatingTopKFn,
        aclnnMoeInitRoutingV2GetWorkspaceSize: aclnnMoeInitRoutingV2GetWorkspaceSizeFn, aclnnMoeInitRoutingV2: aclnnMoeInitRoutingV2Fn,
        aclnnMoeInitRoutingV3GetWorkspaceSize: aclnnMoeInitRoutingV3GetWorkspaceSizeFn, aclnnMoeInitRoutingV3: aclnnMoeInitRoutingV3Fn,
        aclnnMoeFinalizeRoutingV2GetWorkspaceSize: aclnnMoeFinalizeRoutingV2GetWorkspaceSizeFn, aclnnMoeFinalizeRoutingV2: aclnnMoeFinalizeRoutingV2Fn,
        aclnnEmbeddingGetWorkspaceSize: aclnnEmbeddingGetWorkspaceSizeFn, aclnnEmbedding: aclnnEmbeddingFn,
        aclnnGatherV2GetWorkspaceSize: aclnnGatherV2GetWorkspaceSizeFn, aclnnGatherV2: aclnnGatherV2Fn,
        aclnnIndexSelectGetWorkspaceSize: aclnnIndexSelectGetWorkspaceSizeFn, aclnnIndexSelect: aclnnIndexSelectFn,
        aclnnCastGetWorkspaceSize: aclnnCastGetWorkspaceSizeFn, aclnnCast: aclnnCastFn,
        aclnnSwiGluGetWorkspaceSize: aclnnSwiGluGetWorkspaceSizeFn, aclnnSwiGlu: aclnnSwiGluFn,
        aclnnInplaceMulGetWorkspaceSize: aclnnInplaceMulGetWorkspaceSizeFn, aclnnInplaceMul: aclnnInplaceMulFn,
        aclCreateScalar: aclCreateScalarFn, aclDestroyScalar: aclDestroyScalarFn,
        aclnnClampGetWorkspaceSize: aclnnClampGetWorkspaceSizeFn, aclnnClamp: aclnnClampFn,
        aclnnClampMaxGetWorkspaceSize: aclnnClampMaxGetWorkspaceSizeFn, aclnnClampMax: aclnnClampMaxFn,
        aclnnEqScalarGetWorkspaceSize: aclnnEqScalarGetWorkspaceSizeFn, aclnnEqScalar: aclnnEqScalarFn,
        aclnnInplaceMaskedFillScalarGetWorkspaceSize: aclnnInplaceMaskedFillScalarGetWorkspaceSizeFn, aclnnInplaceMaskedFillScalar: aclnnInplaceMaskedFillScalarFn,
        aclnnSoftmaxGetWorkspaceSize: aclnnSoftmaxGetWorkspaceSizeFn, aclnnSoftmax: aclnnSoftmaxFn,
        aclnnSigmoidGetWorkspaceSize: aclnnSigmoidGetWorkspaceSizeFn, aclnnSigmoid: aclnnSigmoidFn,
        aclnnGatherGetWorkspaceSize: aclnnGatherGetWorkspaceSizeFn, aclnnGather: aclnnGatherFn,
        aclnnReduceSumGetWorkspaceSize: aclnnReduceSumGetWorkspaceSizeFn, aclnnReduceSum: aclnnReduceSumFn,
        aclnnDivGetWorkspaceSize: aclnnDivGetWorkspaceSizeFn, aclnnDiv: aclnnDivFn,
        aclnnMulsGetWorkspaceSize: aclnnMulsGetWorkspaceSizeFn, aclnnMuls: aclnnMulsFn,
        aclnnSortGetWorkspaceSize: aclnnSortGetWorkspaceSizeFn, aclnnSort: aclnnSortFn,
        aclnnArangeGetWorkspaceSize: aclnnArangeGetWorkspaceSizeFn, aclnnArange: aclnnArangeFn,
        aclnnScatterGetWorkspaceSize: aclnnScatterGetWorkspaceSizeFn, aclnnScatter: aclnnScatterFn,
        aclnnFloorDividesGetWorkspaceSize: aclnnFloorDividesGetWorkspaceSizeFn, aclnnFloorDivides: aclnnFloorDividesFn,
        aclnnSearchSortedGetWorkspaceSize: aclnnSearchSortedGetWorkspaceSizeFn, aclnnSearchSorted: aclnnSearchSortedFn,
        aclnnAddsGetWorkspaceSize: aclnnAddsGetWorkspaceSizeFn, aclnnAdds: aclnnAddsFn,
        aclnnAmaxGetWorkspaceSize: aclnnAmaxGetWorkspaceSizeFn, aclnnAmax: aclnnAmaxFn,
        aclnnAminGetWorkspaceSize: aclnnAminGetWorkspaceSizeFn, aclnnAmin: aclnnAminFn,
        aclnnSqrtGetWorkspaceSize: aclnnSqrtGetWorkspaceSizeFn, aclnnSqrt: aclnnSqrtFn,
        aclnnSoftplusGetWorkspaceSize: aclnnSoftplusGetWorkspaceSizeFn, aclnnSoftplus: aclnnSoftplusFn,
        aclnnIsFiniteGetWorkspaceSize: aclnnIsFiniteGetWorkspaceSizeFn, aclnnIsFinite: aclnnIsFiniteFn,
        aclnnLogicalNotGetWorkspaceSize: aclnnLogicalNotGetWorkspaceSizeFn, aclnnLogicalNot: aclnnLogicalNotFn,
        aclnnSWhereGetWorkspaceSize: aclnnSWhereGetWorkspaceSizeFn, aclnnSWhere: aclnnSWhereFn,
        aclnnAddGetWorkspaceSize: aclnnAddGetWorkspaceSizeFn, aclnnAdd: aclnnAddFn,
        aclnnCalculateMatmulWeightSizeV2: aclnnCalculateMatmulWeightSizeV2Fn,
        aclnnTransMatmulWeightGetWorkspaceSize: aclnnTransMatmulWeightGetWorkspaceSizeFn, aclnnTransMatmulWeight: aclnnTransMatmulWeightFn,
    }
}

fn lookup<T: OptFn>(libs: &[Library], name: &str) -> Option<T::Inner> {
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    for lib in libs {
        // SAFETY: `T` is the bindgen typedef of `name` from the hand-written header (the same one the
        // emulator is checked against): an `Option` of an `extern "C"` fn pointer, pointer-sized.
        if let Ok(sym) = unsafe { lib.get::<T>(&cname) } {
            // SAFETY: `T` is `Option<fn>` (see `OptFn`), so reading it as `Option<T::Inner>` is a
            // no-op transmute of a pointer-sized value; a null symbol reads as `None`.
            let f: Option<T::Inner> = unsafe { std::mem::transmute_copy(&*sym) };
            if f.is_some() {
                return f;
            }
        }
    }
    None
}

/// Op versions present (both `aclnnX` and `aclnnXGetWorkspaceSize` resolved).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpVersions {
    /// `aclnnGroupedMatmulV4` (4), else V3 (3), else 0.
    pub gmm: u8,
    /// `aclnnMoeGatingTopKSoftmax`.
    pub gating_softmax: bool,
    /// `aclnnMoeGatingTopK`.
    pub gating: bool,
    /// `aclnnMoeInitRoutingV3` (3), else V2 (2), else 0.
    pub init_routing: u8,
    /// `aclnnMoeFinalizeRoutingV2`.
    pub finalize: bool,
    /// `aclnnEmbedding` (1), `aclnnGatherV2` (2), `aclnnIndexSelect` (3), none (0).
    pub gather: u8,
    /// `aclnnCast`.
    pub cast: bool,
    /// `aclnnSwiGlu`.
    pub swiglu: bool,
    /// `aclnnInplaceMul`.
    pub inplace_mul: bool,
    /// `aclCreateScalar` and `aclDestroyScalar` (meta API; optional here because only the
    /// scalar-taking ops need them).
    pub scalar: bool,
    /// `aclnnClamp`.
    pub clamp: bool,
    /// `aclnnClampMax`.
    pub clamp_max: bool,
    /// `aclnnEqScalar`.
    pub eq_scalar: bool,
    /// `aclnnInplaceMaskedFillScalar`.
    pub masked_fill: bool,
    /// `aclnnSoftmax`.
    pub softmax: bool,
    /// `aclnnSigmoid`.
    pub sigmoid: bool,
    /// `aclnnGather`.
    pub gather_dim: bool,
    /// `aclnnReduceSum`.
    pub reduce_sum: bool,
    /// `aclnnDiv`.
    pub div: bool,
    /// `aclnnMuls`.
    pub muls: bool,
    /// `aclnnIndexSelect` (whatever `gather` prefers).
    pub index_select: bool,
    /// `aclnnSort`.
    pub sort: bool,
    /// `aclnnArange`.
    pub arange: bool,
    /// `aclnnScatter`.
    pub scatter: bool,
    /// `aclnnFloorDivides`.
    pub floor_divides: bool,
    /// `aclnnSearchSorted`.
    pub search_sorted: bool,
    /// `aclnnAdds`.
    pub adds: bool,
    /// `aclnnAmax`.
    pub amax: bool,
    /// `aclnnAmin`.
    pub amin: bool,
    /// `aclnnSqrt`.
    pub sqrt: bool,
    /// `aclnnSoftplus`.
    pub softplus: bool,
    /// `aclnnIsFinite`.
    pub is_finite: bool,
    /// `aclnnLogicalNot`.
    pub logical_not: bool,
    /// `aclnnSWhere`.
    pub s_where: bool,
    /// `aclnnAdd` (tensor + alpha·tensor).
    pub add: bool,
    /// `aclnnTransMatmulWeight` with `aclnnCalculateMatmulWeightSizeV2` (its sizing companion):
    /// an INT8 weight packed to FRACTAL_NZ on the device (ascend-emu RULES.md NZ4-NZ5).
    pub trans_weight: bool,
}

impl Api {
    /// The aclnn ops whose two entry points both resolved, by name.
    pub fn ops(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |name: &'static str, a: bool, b: bool| {
            if a && b {
                v.push(name);
            }
        };
        add(
            "aclnnGroupedMatmulV4",
            self.aclnnGroupedMatmulV4.is_some(),
            self.aclnnGroupedMatmulV4GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnGroupedMatmulV3",
            self.aclnnGroupedMatmulV3.is_some(),
            self.aclnnGroupedMatmulV3GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeGatingTopKSoftmax",
            self.aclnnMoeGatingTopKSoftmax.is_some(),
            self.aclnnMoeGatingTopKSoftmaxGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeGatingTopK",
            self.aclnnMoeGatingTopK.is_some(),
            self.aclnnMoeGatingTopKGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeInitRoutingV2",
            self.aclnnMoeInitRoutingV2.is_some(),
            self.aclnnMoeInitRoutingV2GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeInitRoutingV3",
            self.aclnnMoeInitRoutingV3.is_some(),
            self.aclnnMoeInitRoutingV3GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMoeFinalizeRoutingV2",
            self.aclnnMoeFinalizeRoutingV2.is_some(),
            self.aclnnMoeFinalizeRoutingV2GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnEmbedding",
            self.aclnnEmbedding.is_some(),
            self.aclnnEmbeddingGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnGatherV2",
            self.aclnnGatherV2.is_some(),
            self.aclnnGatherV2GetWorkspaceSize.is_some(),
        );
        add(
            "aclnnIndexSelect",
            self.aclnnIndexSelect.is_some(),
            self.aclnnIndexSelectGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnCast",
            self.aclnnCast.is_some(),
            self.aclnnCastGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnSwiGlu",
            self.aclnnSwiGlu.is_some(),
            self.aclnnSwiGluGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnInplaceMul",
            self.aclnnInplaceMul.is_some(),
            self.aclnnInplaceMulGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnClamp",
            self.aclnnClamp.is_some(),
            self.aclnnClampGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnClampMax",
            self.aclnnClampMax.is_some(),
            self.aclnnClampMaxGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnEqScalar",
            self.aclnnEqScalar.is_some(),
            self.aclnnEqScalarGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnInplaceMaskedFillScalar",
            self.aclnnInplaceMaskedFillScalar.is_some(),
            self.aclnnInplaceMaskedFillScalarGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnSoftmax",
            self.aclnnSoftmax.is_some(),
            self.aclnnSoftmaxGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnSigmoid",
            self.aclnnSigmoid.is_some(),
            self.aclnnSigmoidGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnGather",
            self.aclnnGather.is_some(),
            self.aclnnGatherGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnReduceSum",
            self.aclnnReduceSum.is_some(),
            self.aclnnReduceSumGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnDiv",
            self.aclnnDiv.is_some(),
            self.aclnnDivGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnMuls",
            self.aclnnMuls.is_some(),
            self.aclnnMulsGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnSort",
            self.aclnnSort.is_some(),
            self.aclnnSortGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnArange",
            self.aclnnArange.is_some(),
            self.aclnnArangeGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnScatter",
            self.aclnnScatter.is_some(),
            self.aclnnScatterGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnFloorDivides",
            self.aclnnFloorDivides.is_some(),
            self.aclnnFloorDividesGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnSearchSorted",
            self.aclnnSearchSorted.is_some(),
            self.aclnnSearchSortedGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnAdds",
            self.aclnnAdds.is_some(),
            self.aclnnAddsGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnAmax",
            self.aclnnAmax.is_some(),
            self.aclnnAmaxGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnAmin",
            self.aclnnAmin.is_some(),
            self.aclnnAminGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnSqrt",
            self.aclnnSqrt.is_some(),
            self.aclnnSqrtGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnSoftplus",
            self.aclnnSoftplus.is_some(),
            self.aclnnSoftplusGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnIsFinite",
            self.aclnnIsFinite.is_some(),
            self.aclnnIsFiniteGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnLogicalNot",
            self.aclnnLogicalNot.is_some(),
            self.aclnnLogicalNotGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnSWhere",
            self.aclnnSWhere.is_some(),
            self.aclnnSWhereGetWorkspaceSize.is_some(),
        );
        add(
            "aclnnAdd",
            self.aclnnAdd.is_some(),
            self.aclnnAddGetWorkspaceSize.is_some(),
        );
        v
    }

    fn versions(&self) -> OpVersions {
        let both = |a: bool, b: bool| a && b;
        OpVersions {
            gmm: if both(
                self.aclnnGroupedMatmulV4.is_some(),
                self.aclnnGroupedMatmulV4GetWorkspaceSize.is_some(),
            ) {
                4
            } else if both(
                self.aclnnGroupedMatmulV3.is_some(),
                self.aclnnGroupedMatmulV3GetWorkspaceSize.is_some(),
            ) {
                3
            } else {
                0
            },
            gating_softmax: both(
                self.aclnnMoeGatingTopKSoftmax.is_some(),
                self.aclnnMoeGatingTopKSoftmaxGetWorkspaceSize.is_some(),
            ),
            gating: both(
                self.aclnnMoeGatingTopK.is_some(),
                self.aclnnMoeGatingTopKGetWorkspaceSize.is_some(),
            ),
            init_routing: if both(
                self.aclnnMoeInitRoutingV3.is_some(),
                self.aclnnMoeInitRoutingV3GetWorkspaceSize.is_some(),
            ) {
                3
            } else if both(
                self.aclnnMoeInitRoutingV2.is_some(),
                self.aclnnMoeInitRoutingV2GetWorkspaceSize.is_some(),
            ) {
                2
            } else {
                0
            },
            finalize: both(
                self.aclnnMoeFinalizeRoutingV2.is_some(),
                self.aclnnMoeFinalizeRoutingV2GetWorkspaceSize.is_some(),
            ),
            gather: if both(
                self.aclnnEmbedding.is_some(),
                self.aclnnEmbeddingGetWorkspaceSize.is_some(),
            ) {
                1
            } else if both(
                self.aclnnGatherV2.is_some(),
                self.aclnnGatherV2GetWorkspaceSize.is_some(),
            ) {
                2
            } else if both(
                self.aclnnIndexSelect.is_some(),
                self.aclnnIndexSelectGetWorkspaceSize.is_some(),
            ) {
                3
            } else {
                0
            },
            cast: both(self.aclnnCast.is_some(), self.aclnnCastGetWorkspaceSize.is_some()),
            swiglu: both(self.aclnnSwiGlu.is_some(), self.aclnnSwiGluGetWorkspaceSize.is_some()),
            inplace_mul: both(
                self.aclnnInplaceMul.is_some(),
                self.aclnnInplaceMulGetWorkspaceSize.is_some(),
            ),
            scalar: both(self.aclCreateScalar.is_some(), self.aclDestroyScalar.is_some()),
            clamp: both(self.aclnnClamp.is_some(), self.aclnnClampGetWorkspaceSize.is_some()),
            clamp_max: both(
                self.aclnnClampMax.is_some(),
                self.aclnnClampMaxGetWorkspaceSize.is_some(),
            ),
            eq_scalar: both(
                self.aclnnEqScalar.is_some(),
                self.aclnnEqScalarGetWorkspaceSize.is_some(),
            ),
            masked_fill: both(
                self.aclnnInplaceMaskedFillScalar.is_some(),
                self.aclnnInplaceMaskedFillScalarGetWorkspaceSize.is_some(),
            ),
            softmax: both(self.aclnnSoftmax.is_some(), self.aclnnSoftmaxGetWorkspaceSize.is_some()),
            sigmoid: both(self.aclnnSigmoid.is_some(), self.aclnnSigmoidGetWorkspaceSize.is_some()),
            gather_dim: both(self.aclnnGather.is_some(), self.aclnnGatherGetWorkspaceSize.is_some()),
            reduce_sum: both(
                self.aclnnReduceSum.is_some(),
                self.aclnnReduceSumGetWorkspaceSize.is_some(),
            ),
            div: both(self.aclnnDiv.is_some(), self.aclnnDivGetWorkspaceSize.is_some()),
            muls: both(self.aclnnMuls.is_some(), self.aclnnMulsGetWorkspaceSize.is_some()),
            index_select: both(
                self.aclnnIndexSelect.is_some(),
                self.aclnnIndexSelectGetWorkspaceSize.is_some(),
            ),
            sort: both(self.aclnnSort.is_some(), self.aclnnSortGetWorkspaceSize.is_some()),
            arange: both(self.aclnnArange.is_some(), self.aclnnArangeGetWorkspaceSize.is_some()),
            scatter: both(self.aclnnScatter.is_some(), self.aclnnScatterGetWorkspaceSize.is_some()),
            floor_divides: both(
                self.aclnnFloorDivides.is_some(),
                self.aclnnFloorDividesGetWorkspaceSize.is_some(),
            ),
            search_sorted: both(
                self.aclnnSearchSorted.is_some(),
                self.aclnnSearchSortedGetWorkspaceSize.is_some(),
            ),
            adds: both(self.aclnnAdds.is_some(), self.aclnnAddsGetWorkspaceSize.is_some()),
            amax: both(self.aclnnAmax.is_some(), self.aclnnAmaxGetWorkspaceSize.is_some()),
            amin: both(self.aclnnAmin.is_some(), self.aclnnAminGetWorkspaceSize.is_some()),
            sqrt: both(self.aclnnSqrt.is_some(), self.aclnnSqrtGetWorkspaceSize.is_some()),
            softplus: both(
                self.aclnnSoftplus.is_some(),
                self.aclnnSoftplusGetWorkspaceSize.is_some(),
            ),
            is_finite: both(
                self.aclnnIsFinite.is_some(),
                self.aclnnIsFiniteGetWorkspaceSize.is_some(),
            ),
            logical_not: both(
                self.aclnnLogicalNot.is_some(),
                self.aclnnLogicalNotGetWorkspaceSize.is_some(),
            ),
            s_where: both(self.aclnnSWhere.is_some(), self.aclnnSWhereGetWorkspaceSize.is_some()),
            add: both(self.aclnnAdd.is_some(), self.aclnnAddGetWorkspaceSize.is_some()),
            trans_weight: self.aclnnCalculateMatmulWeightSizeV2.is_some()
                && both(
                    self.aclnnTransMatmulWeight.is_some(),
                    self.aclnnTransMatmulWeightGetWorkspaceSize.is_some(),
                ),
        }
    }
}

// ================================================================================ library search

/// Runtime library names, in preference order.
pub const RUNTIME_LIBS: [&str; 2] = ["libascendcl.so", "libacl_rt.so"];
/// Meta library.
pub const META_LIB: &str = "libnnopbase.so";
/// Op libraries: the monolithic one, then the per-domain splits.
pub const OP_LIBS: [&str; 7] = [
    "libopapi.so",
    "libopapi_transformer.so",
    "libopapi_nn.so",
    "libopapi_math.so",
    "libaclnn_ops_infer.so",
    "libaclnn_ops_train.so",
    "libaclnn_math.so",
];

/// Directories searched, in order: `MOEHAL_ASCEND_LIB_DIR`, then for `ASCEND_HOME_PATH` and
/// `ASCEND_TOOLKIT_HOME` their `lib64`, `<arch>-linux/lib64` and `runtime/lib64`, then each
/// `LD_LIBRARY_PATH` entry, then the same sub-folders of `/usr/local/Ascend/ascend-toolkit/latest`
/// and `/usr/local/Ascend/cann`.
/// `MOEHAL_ASCEND_LIB_DIR` is searched only when it names a directory ([`lib_dir_problem`]).
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MOEHAL_ASCEND_LIB_DIR") {
        if lib_dir_problem(Path::new(&d)).is_none() {
            dirs.push(PathBuf::from(d));
        }
    }
    let arch = std::env::consts::ARCH;
    let under = |root: &Path, dirs: &mut Vec<PathBuf>| {
        for sub in [
            "lib64".to_string(),
            format!("{arch}-linux/lib64"),
            "runtime/lib64".to_string(),
        ] {
            dirs.push(root.join(sub));
        }
    };
    for var in ["ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"] {
        if let Some(r) = std::env::var_os(var) {
            under(Path::new(&r), &mut dirs);
        }
    }
    if let Some(p) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
    }
    for root in ["/usr/local/Ascend/ascend-toolkit/latest", "/usr/local/Ascend/cann"] {
        under(Path::new(root), &mut dirs);
    }
    dirs
}

/// Why a value of `MOEHAL_ASCEND_LIB_DIR` cannot be searched, or `None` when it names a directory:
/// `"MOEHAL_ASCEND_LIB_DIR=<path> names a file, not a directory"` or `"... does not exist"` (or
/// `"... is not a directory"` for anything else). Issue 16: set to a file, the CLI warned that it
/// "is not a directory" and then reported it "searched first"; both now say this one thing, and
/// such a value is not searched ([`search_dirs`]).
pub fn lib_dir_problem(dir: &Path) -> Option<String> {
    let what = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return None,
        Ok(m) if m.is_file() => "names a file, not a directory",
        Ok(_) => "is not a directory",
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
        Err(_) => "cannot be read as a directory",
    };
    Some(format!("MOEHAL_ASCEND_LIB_DIR={} {what}", dir.display()))
}

/// What to say after "`lib` not found (searched: ...)", by the value of `MOEHAL_ASCEND_LIB_DIR`:
/// unset, `"set MOEHAL_ASCEND_LIB_DIR or ASCEND_HOME_PATH"`; a directory, that it `"was searched
/// first and has {missing}"` (issue 16: not to set what is set); anything else,
/// [`lib_dir_problem`]'s words and that it was not searched. One wording for every library
/// moehal loads from the CANN directories (the ACL runtime here, HCCL in `moehal-ep`).
pub fn not_found_hint(lib: &str, missing: &str) -> String {
    match std::env::var_os("MOEHAL_ASCEND_LIB_DIR") {
        Some(d) => match lib_dir_problem(Path::new(&d)) {
            Some(problem) => {
                format!("{problem}, so it was not searched: set it to the directory that holds {lib}")
            }
            None => format!(
                "MOEHAL_ASCEND_LIB_DIR={} was searched first and has {missing}",
                Path::new(&d).display()
            ),
        },
        None => "set MOEHAL_ASCEND_LIB_DIR or ASCEND_HOME_PATH".to_string(),
    }
}

fn open_lib(path: &Path) -> std::result::Result<Library, String> {
    // SAFETY: loading a library runs its initialisers; these are the vendor's (or the emulator's)
    // runtime libraries, loaded the way their documentation says (RTLD_NOW | RTLD_GLOBAL).
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| format!("{}: {e}", path.display()))
}

/// The loaded libraries and the function table; the libraries stay loaded as long as this lives.
pub struct Loaded {
    /// Function table.
    pub api: Api,
    /// Versions found.
    pub versions: OpVersions,
    /// Paths of the libraries loaded.
    pub paths: Vec<PathBuf>,
    _libs: Vec<Library>,
}

/// Load the runtime from the first of `dirs` that has one, meta and op libraries from the first
/// directory that has each, and resolve every symbol.
pub fn load(dirs: &[PathBuf]) -> std::result::Result<Loaded, String> {
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    let Some(rt_path) = RUNTIME_LIBS.iter().find_map(|n| find(n)) else {
        let shown: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
        let hint = not_found_hint("libascendcl.so", "neither library");
        return Err(format!(
            "libascendcl.so / libacl_rt.so not found (searched: {}; {hint})",
            if shown.is_empty() {
                "nothing".to_string()
            } else {
                shown.join(", ")
            }
        ));
    };
    let mut paths = vec![rt_path];
    paths.extend(find(META_LIB));
    paths.extend(OP_LIBS.iter().filter_map(|n| find(n)));
    let mut libs = Vec::new();
    for p in &paths {
        libs.push(open_lib(p)?);
    }
    let api = Api::resolve(&libs).map_err(|missing| {
        let shown: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
        format!("missing symbols: {} (in {})", missing.join(", "), shown.join(", "))
    })?;
    let versions = api.versions();
    Ok(Loaded {
        api,
        versions,
        paths,
        _libs: libs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: a file is said to be a file, a missing path missing; a directory is searched.
    #[test]
    fn lib_dir_problem_names_a_file_and_a_missing_path() {
        let dir = std::env::temp_dir().join(format!("moehal-ascend-libdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(lib_dir_problem(&dir), None);
        assert_eq!(
            lib_dir_problem(&file),
            Some(format!(
                "MOEHAL_ASCEND_LIB_DIR={} names a file, not a directory",
                file.display()
            ))
        );
        let gone = dir.join("missing");
        assert_eq!(
            lib_dir_problem(&gone),
            Some(format!("MOEHAL_ASCEND_LIB_DIR={} does not exist", gone.display()))
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
