//! Validation rules of every op (OPS.md, Conventions: "a bad argument returns an error naming the op
//! and the field, and nothing is written").
//!
//! One test per rule. Each test starts from a valid call of the op (checked by the `*_valid_call_*`
//! tests, which also prove that a valid call does write its outputs, so the "unchanged" assertion
//! can fail), breaks exactly one thing, and asserts `Err(InvalidArgument { op, field, .. })` with the
//! exact op and field, and that every output buffer still holds its poison bytes afterwards.
//! Structural rules are hit through `validate()`; value-dependent rules through the `Reference`
//! backend (`validate().and_then(|a| backend.op(a))`), which must check before writing.

use moehal_core::engram::{toy, EngramLayer};
use moehal_core::host::{buffer_from_slice, HostMemory};
use moehal_core::ops::grouped_gemm::{
    check_group_end, counts_from_group_end, group_end_from_counts, pack_masked, unpack_masked,
};
use moehal_core::ops::{
    EngramHash, EngramLookup, GatherRows, GroupLimit, GroupScore, GroupedGemm, MoeCombine, MoePermute, RouterConfig,
    RouterTopk, Scoring, Swiglu, TableFormat, WeightLayout,
};
use moehal_core::{Backend, BackendExt, Buffer, DType, Error, Reference, Result, TensorMut, TensorRef};

// ------------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------------

/// Poison byte of outputs (0xA5A5A5A5 is a finite f32 and an odd-looking integer; any write shows).
const POISON: u8 = 0xA5;

/// Description of one tensor argument: dtype, shape, optional strides, offset (elements), how many
/// bytes the buffer lacks (to make a view run past it), read-only memory, and initial bytes.
#[derive(Clone, Debug)]
struct Spec {
    dtype: DType,
    shape: Vec<usize>,
    strides: Option<Vec<usize>>,
    offset: usize,
    short: usize,
    readonly: bool,
    fill: u8,
    data: Vec<u8>,
}

impl Spec {
    /// An input: zero-filled unless data is given.
    fn input(dtype: DType, shape: &[usize]) -> Self {
        Spec {
            dtype,
            shape: shape.to_vec(),
            strides: None,
            offset: 0,
            short: 0,
            readonly: false,
            fill: 0,
            data: Vec::new(),
        }
    }
    /// An output: poison-filled.
    fn output(dtype: DType, shape: &[usize]) -> Self {
        Spec {
            fill: POISON,
            ..Spec::input(dtype, shape)
        }
    }
    fn with_data<T: bytemuck::Pod>(mut self, v: &[T]) -> Self {
        self.data = bytemuck::cast_slice(v).to_vec();
        self
    }
    /// Elements the view may touch, from element 0 of the buffer.
    fn extent(&self) -> usize {
        let numel: usize = self.shape.iter().product();
        if numel == 0 {
            return self.offset;
        }
        match &self.strides {
            None => self.offset + numel,
            Some(s) => self.offset + self.shape.iter().zip(s).map(|(d, s)| (d - 1) * s).sum::<usize>() + 1,
        }
    }
    fn buffer(&self) -> Buffer {
        let len = (self.extent() * self.dtype.size()).saturating_sub(self.short);
        let mut bytes = vec![self.fill; len];
        let start = (self.offset * self.dtype.size()).min(len);
        let n = self.data.len().min(len - start);
        bytes[start..start + n].copy_from_slice(&self.data[..n]);
        if self.readonly {
            Buffer::new(Box::new(HostMemory::from_owner(bytes)))
        } else {
            buffer_from_slice(&bytes).unwrap()
        }
    }
    fn view<'a>(&self, b: &'a Buffer) -> TensorRef<'a> {
        let v = b.view(self.dtype, &self.shape).with_offset(self.offset);
        match &self.strides {
            Some(s) => v.with_strides(s),
            None => v,
        }
    }
    fn view_mut<'a>(&self, b: &'a mut Buffer) -> TensorMut<'a> {
        let v = b.view_mut(self.dtype, &self.shape).with_offset(self.offset);
        match &self.strides {
            Some(s) => v.with_strides(s),
            None => v,
        }
    }
    // Breakers, one per structural rule of `TensorRef::check`.
    fn set_dtype(&mut self, d: DType) {
        self.dtype = d;
    }
    fn add_dim(&mut self) {
        self.shape.push(1);
    }
    fn drop_dim(&mut self) {
        self.shape.pop();
    }
    /// Double the outermost stride (every test tensor has an outer dimension > 1).
    fn non_contiguous(&mut self) {
        let mut s = vec![1usize; self.shape.len()];
        for i in (0..self.shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.shape[i + 1];
        }
        s[0] *= 2;
        self.strides = Some(s);
    }
    fn past_buffer(&mut self) {
        self.short = 1;
    }
    fn read_only(&mut self) {
        self.readonly = true;
    }
}

/// All bytes of a host buffer.
fn snapshot(b: &Buffer) -> Vec<u8> {
    Reference.download_vec::<u8>(b, b.len()).unwrap()
}

/// The result of one call and whether every output buffer kept its initial bytes.
struct Outcome {
    result: Result<()>,
    untouched: bool,
}

fn expect_invalid(o: Outcome, op: &str, field: &str) {
    match &o.result {
        Err(Error::InvalidArgument {
            op: o_op,
            field: o_field,
            ..
        }) => {
            assert_eq!((*o_op, *o_field), (op, field), "wrong op/field: {:?}", o.result)
        }
        other => panic!("expected InvalidArgument {{ op: {op}, field: {field} }}, got {other:?}"),
    }
    assert!(
        o.untouched,
        "{op}/{field}: an output was written although the call failed"
    );
}

fn expect_ok_and_written(o: Outcome) {
    assert_eq!(o.result, Ok(()));
    assert!(
        !o.untouched,
        "a valid call wrote nothing: the fixture cannot detect writes"
    );
}

/// Declares one test: start from `$fixture`, apply `$break` to it, expect `$op`/`$field`.
macro_rules! rule {
    ($name:ident, $fixture:expr, |$c:ident| $break:expr, $op:expr, $field:expr) => {
        #[test]
        fn $name() {
            let mut $c = $fixture;
            $break;
            expect_invalid($c.run(), $op, $field);
        }
    };
}

// ------------------------------------------------------------------------------------------------
// grouped_gemm
// ------------------------------------------------------------------------------------------------

struct Gemm {
    x: Spec,
    w: Spec,
    layout: WeightLayout,
    group_end: Spec,
    row_scale: Option<Spec>,
    bias: Option<Spec>,
    y: Spec,
}

const GG: &str = "grouped_gemm";

/// M = 4, K = 3, N = 2, G = 2; group_end = [1, 3] (row 3 is a tail row).
fn gemm(layout: WeightLayout) -> Gemm {
    let w_shape = match layout {
        WeightLayout::NK => [2, 2, 3],
        WeightLayout::KN => [2, 3, 2],
    };
    Gemm {
        x: Spec::input(DType::F32, &[4, 3]).with_data(&[1.0f32; 12]),
        w: Spec::input(DType::F32, &w_shape).with_data(&[0.5f32; 12]),
        layout,
        group_end: Spec::input(DType::I64, &[2]).with_data(&[1i64, 3]),
        row_scale: Some(Spec::input(DType::F32, &[4]).with_data(&[1.0f32; 4])),
        bias: Some(Spec::input(DType::F32, &[2, 2])),
        y: Spec::output(DType::F32, &[4, 2]),
    }
}

impl Gemm {
    fn ge(&mut self, v: &[i64]) {
        self.group_end = Spec::input(DType::I64, &[v.len()]).with_data(v);
    }
    fn rs(&mut self) -> &mut Spec {
        self.row_scale.as_mut().unwrap()
    }
    fn bias(&mut self) -> &mut Spec {
        self.bias.as_mut().unwrap()
    }
    fn run(&self) -> Outcome {
        let (x, w, ge) = (self.x.buffer(), self.w.buffer(), self.group_end.buffer());
        let rs = self.row_scale.as_ref().map(Spec::buffer);
        let bias = self.bias.as_ref().map(Spec::buffer);
        let mut y = self.y.buffer();
        let before = snapshot(&y);
        let args = GroupedGemm {
            x: self.x.view(&x),
            w: self.w.view(&w),
            layout: self.layout,
            group_end: self.group_end.view(&ge),
            row_scale: self.row_scale.as_ref().zip(rs.as_ref()).map(|(s, b)| s.view(b)),
            bias: self.bias.as_ref().zip(bias.as_ref()).map(|(s, b)| s.view(b)),
            y: self.y.view_mut(&mut y),
        };
        let result = args.validate().and_then(|a| Reference.grouped_gemm(a));
        Outcome {
            result,
            untouched: snapshot(&y) == before,
        }
    }
}

#[test]
fn gemm_valid_call_writes() {
    expect_ok_and_written(gemm(WeightLayout::NK).run());
    expect_ok_and_written(gemm(WeightLayout::KN).run());
    let mut c = gemm(WeightLayout::NK);
    c.row_scale = None;
    c.bias = None;
    expect_ok_and_written(c.run());
}

use WeightLayout::{KN, NK};
rule!(gemm_x_dtype, gemm(NK), |c| c.x.set_dtype(DType::I32), GG, "x");
rule!(gemm_x_rank, gemm(NK), |c| c.x.add_dim(), GG, "x");
rule!(gemm_x_non_contiguous, gemm(NK), |c| c.x.non_contiguous(), GG, "x");
rule!(gemm_x_past_buffer, gemm(NK), |c| c.x.past_buffer(), GG, "x");
rule!(
    gemm_w_dtype_differs_from_x,
    gemm(NK),
    |c| c.w.set_dtype(DType::BF16),
    GG,
    "w"
);
rule!(gemm_w_rank, gemm(NK), |c| c.w.drop_dim(), GG, "w");
rule!(gemm_w_non_contiguous, gemm(NK), |c| c.w.non_contiguous(), GG, "w");
rule!(gemm_w_past_buffer, gemm(NK), |c| c.w.past_buffer(), GG, "w");
rule!(gemm_w_k_mismatch_nk, gemm(NK), |c| c.w.shape[2] = 4, GG, "w");
rule!(gemm_w_k_mismatch_kn, gemm(KN), |c| c.w.shape[1] = 4, GG, "w");
rule!(
    gemm_group_end_dtype,
    gemm(NK),
    |c| c.group_end.set_dtype(DType::I32),
    GG,
    "group_end"
);
rule!(
    gemm_group_end_rank,
    gemm(NK),
    |c| c.group_end.add_dim(),
    GG,
    "group_end"
);
rule!(
    gemm_group_end_non_contiguous,
    gemm(NK),
    |c| c.group_end.non_contiguous(),
    GG,
    "group_end"
);
rule!(
    gemm_group_end_past_buffer,
    gemm(NK),
    |c| c.group_end.past_buffer(),
    GG,
    "group_end"
);
rule!(
    gemm_group_end_len_not_g,
    gemm(NK),
    |c| c.ge(&[1, 2, 3]),
    GG,
    "group_end"
);
rule!(
    gemm_y_dtype_differs_from_x,
    gemm(NK),
    |c| c.y.set_dtype(DType::F16),
    GG,
    "y"
);
rule!(gemm_y_rank, gemm(NK), |c| c.y.add_dim(), GG, "y");
rule!(gemm_y_non_contiguous, gemm(NK), |c| c.y.non_contiguous(), GG, "y");
rule!(gemm_y_past_buffer, gemm(NK), |c| c.y.past_buffer(), GG, "y");
rule!(gemm_y_read_only, gemm(NK), |c| c.y.read_only(), GG, "y");
rule!(gemm_y_m_mismatch, gemm(NK), |c| c.y.shape[0] = 5, GG, "y");
rule!(gemm_y_n_mismatch_nk, gemm(NK), |c| c.y.shape[1] = 3, GG, "y");
rule!(gemm_y_n_mismatch_kn, gemm(KN), |c| c.y.shape[1] = 3, GG, "y");
rule!(
    gemm_row_scale_dtype,
    gemm(NK),
    |c| c.rs().set_dtype(DType::BF16),
    GG,
    "row_scale"
);
rule!(gemm_row_scale_rank, gemm(NK), |c| c.rs().add_dim(), GG, "row_scale");
rule!(
    gemm_row_scale_non_contiguous,
    gemm(NK),
    |c| c.rs().non_contiguous(),
    GG,
    "row_scale"
);
rule!(
    gemm_row_scale_past_buffer,
    gemm(NK),
    |c| c.rs().past_buffer(),
    GG,
    "row_scale"
);
rule!(
    gemm_row_scale_len_not_m,
    gemm(NK),
    |c| c.rs().shape[0] = 3,
    GG,
    "row_scale"
);
rule!(
    gemm_bias_dtype,
    gemm(NK),
    |c| c.bias().set_dtype(DType::F16),
    GG,
    "bias"
);
rule!(gemm_bias_rank, gemm(NK), |c| c.bias().drop_dim(), GG, "bias");
rule!(
    gemm_bias_non_contiguous,
    gemm(NK),
    |c| c.bias().non_contiguous(),
    GG,
    "bias"
);
rule!(gemm_bias_past_buffer, gemm(NK), |c| c.bias().past_buffer(), GG, "bias");
rule!(gemm_bias_g_mismatch, gemm(NK), |c| c.bias().shape[0] = 3, GG, "bias");
rule!(gemm_bias_n_mismatch, gemm(NK), |c| c.bias().shape[1] = 3, GG, "bias");
// Value-dependent (Reference backend).
rule!(gemm_group_end_decreasing, gemm(NK), |c| c.ge(&[3, 1]), GG, "group_end");
rule!(
    gemm_group_end_negative_first,
    gemm(NK),
    |c| c.ge(&[-1, 3]),
    GG,
    "group_end"
);
rule!(gemm_group_end_past_m, gemm(NK), |c| c.ge(&[1, 5]), GG, "group_end");

/// A shape whose element count overflows usize must be rejected, not wrapped: in a release build
/// `[2^33, 2^31]` has `numel()` = 2^64 mod 2^64 = 0, so the view passes as "empty" although it
/// addresses 2^64 elements; in a debug build `numel()` panics. (core bug, see the report)
#[test]
fn gemm_x_numel_overflow_is_an_error_not_a_wrap() {
    let mut c = gemm(NK);
    c.x.shape = vec![1 << 33, 1 << 31];
    // The buffer stays 48 bytes: nothing of this shape fits.
    let x = buffer_from_slice(&[0u8; 48]).unwrap();
    let (w, ge) = (c.w.buffer(), c.group_end.buffer());
    let mut y = c.y.buffer();
    let before = snapshot(&y);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        GroupedGemm {
            x: c.x.view(&x),
            w: c.w.view(&w),
            layout: NK,
            group_end: c.group_end.view(&ge),
            row_scale: None,
            bias: None,
            y: c.y.view_mut(&mut y),
        }
        .validate()
        .map(|_| ())
    }));
    match r {
        Ok(Err(Error::InvalidArgument { op, field, .. })) => assert_eq!((op, field), (GG, "x")),
        Ok(other) => panic!("x of 2^64 elements in a 48-byte buffer: expected InvalidArgument, got {other:?}"),
        Err(_) => panic!("x of 2^64 elements: validate() panicked (usize overflow in numel) instead of an error"),
    }
    assert_eq!(snapshot(&y), before);
}

// ------------------------------------------------------------------------------------------------
// router_topk
// ------------------------------------------------------------------------------------------------

const RT: &str = "router_topk";

struct Router {
    config: RouterConfig,
    logits: Spec,
    bias: Option<Spec>,
    ids: Spec,
    weights: Spec,
    expert_counts: Option<Spec>,
}

/// T = 3, E = 8, k = 2, sigmoid, 4 groups of 2 keep 2 with top2_sum, bias, counts.
fn router() -> Router {
    let logits: Vec<f32> = (0..24).map(|i| (i % 7) as f32 * 0.3 - 1.0).collect();
    Router {
        config: RouterConfig {
            topk: 2,
            scoring: Scoring::Sigmoid,
            group: Some(GroupLimit {
                n_group: 4,
                topk_group: 2,
                score: GroupScore::Top2Sum,
            }),
            renormalize: true,
            routed_scaling_factor: 2.5,
        },
        logits: Spec::input(DType::F32, &[3, 8]).with_data(&logits),
        bias: Some(Spec::input(DType::F32, &[8])),
        ids: Spec::output(DType::I32, &[3, 2]),
        weights: Spec::output(DType::F32, &[3, 2]),
        expert_counts: Some(Spec::output(DType::I64, &[8])),
    }
}

impl Router {
    fn group(&mut self) -> &mut GroupLimit {
        self.config.group.as_mut().unwrap()
    }
    fn bias(&mut self) -> &mut Spec {
        self.bias.as_mut().unwrap()
    }
    fn counts(&mut self) -> &mut Spec {
        self.expert_counts.as_mut().unwrap()
    }
    fn run(&self) -> Outcome {
        let logits = self.logits.buffer();
        let bias = self.bias.as_ref().map(Spec::buffer);
        let (mut ids, mut weights) = (self.ids.buffer(), self.weights.buffer());
        let mut counts = self.expert_counts.as_ref().map(Spec::buffer);
        let before = (snapshot(&ids), snapshot(&weights), counts.as_ref().map(snapshot));
        let args = RouterTopk {
            config: self.config,
            logits: self.logits.view(&logits),
            bias: self.bias.as_ref().zip(bias.as_ref()).map(|(s, b)| s.view(b)),
            ids: self.ids.view_mut(&mut ids),
            weights: self.weights.view_mut(&mut weights),
            expert_counts: self
                .expert_counts
                .as_ref()
                .zip(counts.as_mut())
                .map(|(s, b)| s.view_mut(b)),
        };
        let result = args.validate().and_then(|a| Reference.router_topk(a));
        let after = (snapshot(&ids), snapshot(&weights), counts.as_ref().map(snapshot));
        Outcome {
            result,
            untouched: before.0 == after.0 && before.1 == after.1 && before.2 == after.2,
        }
    }
}

#[test]
fn router_valid_call_writes() {
    expect_ok_and_written(router().run());
}

/// `n_group` of 0 or 1 means no group limit: the other group fields are then not checked.
#[test]
fn router_n_group_0_or_1_is_no_group_limit() {
    for n_group in [0, 1] {
        let mut c = router();
        *c.group() = GroupLimit {
            n_group,
            topk_group: 0,
            score: GroupScore::Top2Sum,
        };
        c.config.topk = 8; // k = E is legal without groups
        c.ids.shape[1] = 8;
        c.weights.shape[1] = 8;
        expect_ok_and_written(c.run());
    }
}

rule!(
    router_logits_dtype,
    router(),
    |c| c.logits.set_dtype(DType::I32),
    RT,
    "logits"
);
rule!(router_logits_rank, router(), |c| c.logits.add_dim(), RT, "logits");
rule!(
    router_logits_non_contiguous,
    router(),
    |c| c.logits.non_contiguous(),
    RT,
    "logits"
);
rule!(
    router_logits_past_buffer,
    router(),
    |c| c.logits.past_buffer(),
    RT,
    "logits"
);
rule!(
    router_zero_experts,
    router(),
    |c| {
        c.logits.shape[1] = 0;
        c.config.group = None;
        c.bias = None;
        c.expert_counts = None
    },
    RT,
    "logits"
);
rule!(router_k_zero, router(), |c| c.config.topk = 0, RT, "k");
rule!(
    router_k_above_e,
    router(),
    |c| {
        c.config.topk = 9;
        c.config.group = None
    },
    RT,
    "k"
);
rule!(
    router_scale_nan,
    router(),
    |c| c.config.routed_scaling_factor = f32::NAN,
    RT,
    "routed_scaling_factor"
);
rule!(
    router_scale_inf,
    router(),
    |c| c.config.routed_scaling_factor = f32::NEG_INFINITY,
    RT,
    "routed_scaling_factor"
);
rule!(
    router_n_group_not_dividing_e,
    router(),
    |c| c.group().n_group = 3,
    RT,
    "n_group"
);
rule!(
    router_n_group_above_e,
    router(),
    |c| c.group().n_group = 16,
    RT,
    "n_group"
);
rule!(
    router_topk_group_zero,
    router(),
    |c| c.group().topk_group = 0,
    RT,
    "topk_group"
);
rule!(
    router_topk_group_above_n_group,
    router(),
    |c| c.group().topk_group = 5,
    RT,
    "topk_group"
);
// 4 groups of 2, keep 1: at most 2 selectable experts, k = 3 cannot be met.
rule!(
    router_k_above_kept_experts,
    router(),
    |c| {
        c.group().topk_group = 1;
        c.config.topk = 3
    },
    RT,
    "k"
);
rule!(
    router_top2_sum_one_expert_per_group,
    router(),
    |c| {
        *c.group() = GroupLimit {
            n_group: 8,
            topk_group: 2,
            score: GroupScore::Top2Sum,
        }
    },
    RT,
    "group_score"
);
rule!(
    router_bias_dtype,
    router(),
    |c| c.bias().set_dtype(DType::BF16),
    RT,
    "bias"
);
rule!(router_bias_rank, router(), |c| c.bias().add_dim(), RT, "bias");
rule!(
    router_bias_non_contiguous,
    router(),
    |c| c.bias().non_contiguous(),
    RT,
    "bias"
);
rule!(
    router_bias_past_buffer,
    router(),
    |c| c.bias().past_buffer(),
    RT,
    "bias"
);
rule!(router_bias_len_not_e, router(), |c| c.bias().shape[0] = 7, RT, "bias");
rule!(router_ids_dtype, router(), |c| c.ids.set_dtype(DType::I64), RT, "ids");
rule!(router_ids_rank, router(), |c| c.ids.drop_dim(), RT, "ids");
rule!(
    router_ids_non_contiguous,
    router(),
    |c| c.ids.non_contiguous(),
    RT,
    "ids"
);
rule!(router_ids_past_buffer, router(), |c| c.ids.past_buffer(), RT, "ids");
rule!(router_ids_t_mismatch, router(), |c| c.ids.shape[0] = 2, RT, "ids");
rule!(router_ids_k_mismatch, router(), |c| c.ids.shape[1] = 3, RT, "ids");
rule!(router_ids_read_only, router(), |c| c.ids.read_only(), RT, "ids");
rule!(
    router_weights_dtype,
    router(),
    |c| c.weights.set_dtype(DType::BF16),
    RT,
    "weights"
);
rule!(router_weights_rank, router(), |c| c.weights.add_dim(), RT, "weights");
rule!(
    router_weights_non_contiguous,
    router(),
    |c| c.weights.non_contiguous(),
    RT,
    "weights"
);
rule!(
    router_weights_past_buffer,
    router(),
    |c| c.weights.past_buffer(),
    RT,
    "weights"
);
rule!(
    router_weights_t_mismatch,
    router(),
    |c| c.weights.shape[0] = 4,
    RT,
    "weights"
);
rule!(
    router_weights_k_mismatch,
    router(),
    |c| c.weights.shape[1] = 1,
    RT,
    "weights"
);
rule!(
    router_weights_read_only,
    router(),
    |c| c.weights.read_only(),
    RT,
    "weights"
);
rule!(
    router_counts_dtype,
    router(),
    |c| c.counts().set_dtype(DType::I32),
    RT,
    "expert_counts"
);
rule!(
    router_counts_rank,
    router(),
    |c| c.counts().add_dim(),
    RT,
    "expert_counts"
);
rule!(
    router_counts_non_contiguous,
    router(),
    |c| c.counts().non_contiguous(),
    RT,
    "expert_counts"
);
rule!(
    router_counts_past_buffer,
    router(),
    |c| c.counts().past_buffer(),
    RT,
    "expert_counts"
);
rule!(
    router_counts_len_not_e,
    router(),
    |c| c.counts().shape[0] = 9,
    RT,
    "expert_counts"
);
rule!(
    router_counts_read_only,
    router(),
    |c| c.counts().read_only(),
    RT,
    "expert_counts"
);

// ------------------------------------------------------------------------------------------------
// moe_permute
// ------------------------------------------------------------------------------------------------

const MP: &str = "moe_permute";

struct Permute {
    num_experts: usize,
    ids: Spec,
    x: Option<Spec>,
    group_end: Spec,
    src_token: Spec,
    slot_row: Spec,
    x_perm: Option<Spec>,
}

/// T = 3, k = 2, E = 4, H = 2, ids with a dropped slot and a repeated expert.
fn permute() -> Permute {
    Permute {
        num_experts: 4,
        ids: Spec::input(DType::I32, &[3, 2]).with_data(&[1i32, 3, -1, 1, 2, 2]),
        x: Some(Spec::input(DType::F32, &[3, 2]).with_data(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])),
        group_end: Spec::output(DType::I64, &[4]),
        src_token: Spec::output(DType::I64, &[6]),
        slot_row: Spec::output(DType::I64, &[3, 2]),
        x_perm: Some(Spec::output(DType::F32, &[6, 2])),
    }
}

impl Permute {
    fn x(&mut self) -> &mut Spec {
        self.x.as_mut().unwrap()
    }
    fn xp(&mut self) -> &mut Spec {
        self.x_perm.as_mut().unwrap()
    }
    fn set_ids(&mut self, v: &[i32]) {
        self.ids = Spec::input(DType::I32, &[3, 2]).with_data(v);
    }
    fn run(&self) -> Outcome {
        let ids = self.ids.buffer();
        let x = self.x.as_ref().map(Spec::buffer);
        let (mut ge, mut st, mut sr) = (self.group_end.buffer(), self.src_token.buffer(), self.slot_row.buffer());
        let mut xp = self.x_perm.as_ref().map(Spec::buffer);
        let before = (snapshot(&ge), snapshot(&st), snapshot(&sr), xp.as_ref().map(snapshot));
        let args = MoePermute {
            num_experts: self.num_experts,
            ids: self.ids.view(&ids),
            x: self.x.as_ref().zip(x.as_ref()).map(|(s, b)| s.view(b)),
            group_end: self.group_end.view_mut(&mut ge),
            src_token: self.src_token.view_mut(&mut st),
            slot_row: self.slot_row.view_mut(&mut sr),
            x_perm: self.x_perm.as_ref().zip(xp.as_mut()).map(|(s, b)| s.view_mut(b)),
        };
        let result = args.validate().and_then(|a| Reference.moe_permute(a));
        let after = (snapshot(&ge), snapshot(&st), snapshot(&sr), xp.as_ref().map(snapshot));
        Outcome {
            result,
            untouched: before == after,
        }
    }
}

#[test]
fn permute_valid_call_writes() {
    expect_ok_and_written(permute().run());
    let mut c = permute();
    c.x = None;
    c.x_perm = None;
    expect_ok_and_written(c.run());
}

rule!(permute_ids_dtype, permute(), |c| c.ids.set_dtype(DType::I64), MP, "ids");
rule!(permute_ids_rank, permute(), |c| c.ids.drop_dim(), MP, "ids");
rule!(
    permute_ids_non_contiguous,
    permute(),
    |c| c.ids.non_contiguous(),
    MP,
    "ids"
);
rule!(permute_ids_past_buffer, permute(), |c| c.ids.past_buffer(), MP, "ids");
rule!(
    permute_zero_experts,
    permute(),
    |c| {
        c.num_experts = 0;
        c.group_end.shape[0] = 0
    },
    MP,
    "num_experts"
);
rule!(
    permute_group_end_dtype,
    permute(),
    |c| c.group_end.set_dtype(DType::I32),
    MP,
    "group_end"
);
rule!(
    permute_group_end_rank,
    permute(),
    |c| c.group_end.add_dim(),
    MP,
    "group_end"
);
rule!(
    permute_group_end_non_contiguous,
    permute(),
    |c| c.group_end.non_contiguous(),
    MP,
    "group_end"
);
rule!(
    permute_group_end_past_buffer,
    permute(),
    |c| c.group_end.past_buffer(),
    MP,
    "group_end"
);
rule!(
    permute_group_end_len_not_e,
    permute(),
    |c| c.group_end.shape[0] = 5,
    MP,
    "group_end"
);
rule!(
    permute_group_end_read_only,
    permute(),
    |c| c.group_end.read_only(),
    MP,
    "group_end"
);
rule!(
    permute_src_token_dtype,
    permute(),
    |c| c.src_token.set_dtype(DType::I32),
    MP,
    "src_token"
);
rule!(
    permute_src_token_rank,
    permute(),
    |c| c.src_token.add_dim(),
    MP,
    "src_token"
);
rule!(
    permute_src_token_non_contiguous,
    permute(),
    |c| c.src_token.non_contiguous(),
    MP,
    "src_token"
);
rule!(
    permute_src_token_past_buffer,
    permute(),
    |c| c.src_token.past_buffer(),
    MP,
    "src_token"
);
rule!(
    permute_src_token_len_not_tk,
    permute(),
    |c| c.src_token.shape[0] = 5,
    MP,
    "src_token"
);
rule!(
    permute_src_token_read_only,
    permute(),
    |c| c.src_token.read_only(),
    MP,
    "src_token"
);
rule!(
    permute_slot_row_dtype,
    permute(),
    |c| c.slot_row.set_dtype(DType::I32),
    MP,
    "slot_row"
);
rule!(
    permute_slot_row_rank,
    permute(),
    |c| c.slot_row.drop_dim(),
    MP,
    "slot_row"
);
rule!(
    permute_slot_row_non_contiguous,
    permute(),
    |c| c.slot_row.non_contiguous(),
    MP,
    "slot_row"
);
rule!(
    permute_slot_row_past_buffer,
    permute(),
    |c| c.slot_row.past_buffer(),
    MP,
    "slot_row"
);
rule!(
    permute_slot_row_t_mismatch,
    permute(),
    |c| c.slot_row.shape[0] = 2,
    MP,
    "slot_row"
);
rule!(
    permute_slot_row_k_mismatch,
    permute(),
    |c| c.slot_row.shape[1] = 3,
    MP,
    "slot_row"
);
rule!(
    permute_slot_row_read_only,
    permute(),
    |c| c.slot_row.read_only(),
    MP,
    "slot_row"
);
rule!(permute_x_dtype, permute(), |c| c.x().set_dtype(DType::I32), MP, "x");
rule!(permute_x_rank, permute(), |c| c.x().add_dim(), MP, "x");
rule!(permute_x_non_contiguous, permute(), |c| c.x().non_contiguous(), MP, "x");
rule!(permute_x_past_buffer, permute(), |c| c.x().past_buffer(), MP, "x");
rule!(permute_x_t_mismatch, permute(), |c| c.x().shape[0] = 4, MP, "x");
rule!(
    permute_x_perm_dtype_differs_from_x,
    permute(),
    |c| c.xp().set_dtype(DType::BF16),
    MP,
    "x_perm"
);
rule!(permute_x_perm_rank, permute(), |c| c.xp().drop_dim(), MP, "x_perm");
rule!(
    permute_x_perm_non_contiguous,
    permute(),
    |c| c.xp().non_contiguous(),
    MP,
    "x_perm"
);
rule!(
    permute_x_perm_past_buffer,
    permute(),
    |c| c.xp().past_buffer(),
    MP,
    "x_perm"
);
rule!(
    permute_x_perm_rows_not_tk,
    permute(),
    |c| c.xp().shape[0] = 5,
    MP,
    "x_perm"
);
rule!(
    permute_x_perm_h_mismatch,
    permute(),
    |c| c.xp().shape[1] = 3,
    MP,
    "x_perm"
);
rule!(
    permute_x_perm_read_only,
    permute(),
    |c| c.xp().read_only(),
    MP,
    "x_perm"
);
rule!(permute_x_without_x_perm, permute(), |c| c.x_perm = None, MP, "x_perm");
rule!(permute_x_perm_without_x, permute(), |c| c.x = None, MP, "x");
// Value-dependent (Reference backend).
rule!(
    permute_id_minus_two,
    permute(),
    |c| c.set_ids(&[1, 3, -1, 1, 2, -2]),
    MP,
    "ids"
);
rule!(
    permute_id_equal_e,
    permute(),
    |c| c.set_ids(&[1, 3, -1, 1, 4, 2]),
    MP,
    "ids"
);

// ------------------------------------------------------------------------------------------------
// swiglu
// ------------------------------------------------------------------------------------------------

const SW: &str = "swiglu";

struct Glu {
    h: Spec,
    out: Spec,
    limit: Option<f32>,
}

/// M = 3, I = 2.
fn glu() -> Glu {
    Glu {
        h: Spec::input(DType::F32, &[3, 4]).with_data(&[0.5f32; 12]),
        out: Spec::output(DType::F32, &[3, 2]),
        limit: Some(10.0),
    }
}

impl Glu {
    fn run(&self) -> Outcome {
        let h = self.h.buffer();
        let mut out = self.out.buffer();
        let before = snapshot(&out);
        let args = Swiglu {
            h: self.h.view(&h),
            out: self.out.view_mut(&mut out),
            limit: self.limit,
        };
        let result = args.validate().and_then(|a| Reference.swiglu(a));
        Outcome {
            result,
            untouched: snapshot(&out) == before,
        }
    }
}

#[test]
fn swiglu_valid_call_writes() {
    expect_ok_and_written(glu().run());
}

rule!(swiglu_h_dtype, glu(), |c| c.h.set_dtype(DType::I32), SW, "h");
rule!(swiglu_h_rank, glu(), |c| c.h.add_dim(), SW, "h");
rule!(swiglu_h_non_contiguous, glu(), |c| c.h.non_contiguous(), SW, "h");
rule!(swiglu_h_past_buffer, glu(), |c| c.h.past_buffer(), SW, "h");
rule!(swiglu_h_odd_width, glu(), |c| c.h.shape[1] = 5, SW, "h");
rule!(
    swiglu_out_dtype_differs_from_h,
    glu(),
    |c| c.out.set_dtype(DType::BF16),
    SW,
    "out"
);
rule!(swiglu_out_rank, glu(), |c| c.out.drop_dim(), SW, "out");
rule!(swiglu_out_non_contiguous, glu(), |c| c.out.non_contiguous(), SW, "out");
rule!(swiglu_out_past_buffer, glu(), |c| c.out.past_buffer(), SW, "out");
rule!(swiglu_out_m_mismatch, glu(), |c| c.out.shape[0] = 2, SW, "out");
rule!(swiglu_out_i_mismatch, glu(), |c| c.out.shape[1] = 4, SW, "out");
rule!(swiglu_out_read_only, glu(), |c| c.out.read_only(), SW, "out");
rule!(swiglu_limit_zero, glu(), |c| c.limit = Some(0.0), SW, "limit");
rule!(swiglu_limit_negative, glu(), |c| c.limit = Some(-1.0), SW, "limit");
rule!(swiglu_limit_nan, glu(), |c| c.limit = Some(f32::NAN), SW, "limit");
rule!(swiglu_limit_inf, glu(), |c| c.limit = Some(f32::INFINITY), SW, "limit");

// ------------------------------------------------------------------------------------------------
// moe_combine
// ------------------------------------------------------------------------------------------------

const MC: &str = "moe_combine";

struct Combine {
    y_perm: Spec,
    slot_row: Spec,
    weights: Spec,
    out: Spec,
}

/// R = 6, H = 2, T = 3, k = 2.
fn combine() -> Combine {
    Combine {
        y_perm: Spec::input(DType::F32, &[6, 2]).with_data(&[1.0f32; 12]),
        slot_row: Spec::input(DType::I64, &[3, 2]).with_data(&[0i64, 1, -1, 2, 3, 5]),
        weights: Spec::input(DType::F32, &[3, 2]).with_data(&[0.5f32; 6]),
        out: Spec::output(DType::F32, &[3, 2]),
    }
}

impl Combine {
    fn set_slot_rows(&mut self, v: &[i64]) {
        self.slot_row = Spec::input(DType::I64, &[3, 2]).with_data(v);
    }
    fn run(&self) -> Outcome {
        let (y, s, w) = (self.y_perm.buffer(), self.slot_row.buffer(), self.weights.buffer());
        let mut out = self.out.buffer();
        let before = snapshot(&out);
        let args = MoeCombine {
            y_perm: self.y_perm.view(&y),
            slot_row: self.slot_row.view(&s),
            weights: self.weights.view(&w),
            out: self.out.view_mut(&mut out),
        };
        let result = args.validate().and_then(|a| Reference.moe_combine(a));
        Outcome {
            result,
            untouched: snapshot(&out) == before,
        }
    }
}

#[test]
fn combine_valid_call_writes() {
    expect_ok_and_written(combine().run());
}

rule!(
    combine_y_perm_dtype,
    combine(),
    |c| c.y_perm.set_dtype(DType::I32),
    MC,
    "y_perm"
);
rule!(combine_y_perm_rank, combine(), |c| c.y_perm.add_dim(), MC, "y_perm");
rule!(
    combine_y_perm_non_contiguous,
    combine(),
    |c| c.y_perm.non_contiguous(),
    MC,
    "y_perm"
);
rule!(
    combine_y_perm_past_buffer,
    combine(),
    |c| c.y_perm.past_buffer(),
    MC,
    "y_perm"
);
rule!(
    combine_slot_row_dtype,
    combine(),
    |c| c.slot_row.set_dtype(DType::I32),
    MC,
    "slot_row"
);
rule!(
    combine_slot_row_rank,
    combine(),
    |c| c.slot_row.drop_dim(),
    MC,
    "slot_row"
);
rule!(
    combine_slot_row_non_contiguous,
    combine(),
    |c| c.slot_row.non_contiguous(),
    MC,
    "slot_row"
);
rule!(
    combine_slot_row_past_buffer,
    combine(),
    |c| c.slot_row.past_buffer(),
    MC,
    "slot_row"
);
rule!(
    combine_weights_dtype,
    combine(),
    |c| c.weights.set_dtype(DType::BF16),
    MC,
    "weights"
);
rule!(combine_weights_rank, combine(), |c| c.weights.add_dim(), MC, "weights");
rule!(
    combine_weights_non_contiguous,
    combine(),
    |c| c.weights.non_contiguous(),
    MC,
    "weights"
);
rule!(
    combine_weights_past_buffer,
    combine(),
    |c| c.weights.past_buffer(),
    MC,
    "weights"
);
rule!(
    combine_weights_t_mismatch,
    combine(),
    |c| c.weights.shape[0] = 2,
    MC,
    "weights"
);
rule!(
    combine_weights_k_mismatch,
    combine(),
    |c| c.weights.shape[1] = 3,
    MC,
    "weights"
);
rule!(
    combine_out_dtype_differs,
    combine(),
    |c| c.out.set_dtype(DType::F16),
    MC,
    "out"
);
rule!(combine_out_rank, combine(), |c| c.out.add_dim(), MC, "out");
rule!(
    combine_out_non_contiguous,
    combine(),
    |c| c.out.non_contiguous(),
    MC,
    "out"
);
rule!(combine_out_past_buffer, combine(), |c| c.out.past_buffer(), MC, "out");
rule!(combine_out_t_mismatch, combine(), |c| c.out.shape[0] = 4, MC, "out");
rule!(combine_out_h_mismatch, combine(), |c| c.out.shape[1] = 3, MC, "out");
rule!(combine_out_read_only, combine(), |c| c.out.read_only(), MC, "out");
// Value-dependent (Reference backend).
rule!(
    combine_slot_row_minus_two,
    combine(),
    |c| c.set_slot_rows(&[0, 1, -2, 2, 3, 5]),
    MC,
    "slot_row"
);
rule!(
    combine_slot_row_equal_r,
    combine(),
    |c| c.set_slot_rows(&[0, 1, -1, 2, 3, 6]),
    MC,
    "slot_row"
);

// ------------------------------------------------------------------------------------------------
// engram_hash
// ------------------------------------------------------------------------------------------------

const EH: &str = "engram_hash";

struct Hash {
    layer: EngramLayer,
    ids: Spec,
    positions: Option<Spec>,
    alive: Option<Spec>,
    history: Vec<i64>,
    rows: Spec,
}

/// The toy layer (N = 3, K = 2, C = 4, V' = 50), T = 5.
fn hash() -> Hash {
    Hash {
        layer: toy::layer().unwrap(),
        ids: Spec::input(DType::I64, &[5]).with_data(&[7i64, 3, 7, 3, 49]),
        positions: Some(Spec::input(DType::I64, &[5]).with_data(&[0i64, 1, 2, 0, 1])),
        alive: Some(Spec::input(DType::U8, &[5]).with_data(&[1u8, 1, 0, 1, 1])),
        history: vec![4, 5],
        rows: Spec::output(DType::I64, &[5, 4]),
    }
}

impl Hash {
    fn pos(&mut self) -> &mut Spec {
        self.positions.as_mut().unwrap()
    }
    fn alive(&mut self) -> &mut Spec {
        self.alive.as_mut().unwrap()
    }
    fn set_ids(&mut self, v: &[i64]) {
        self.ids = Spec::input(DType::I64, &[v.len()]).with_data(v);
    }
    fn run(&self) -> Outcome {
        let ids = self.ids.buffer();
        let pos = self.positions.as_ref().map(Spec::buffer);
        let alive = self.alive.as_ref().map(Spec::buffer);
        let mut rows = self.rows.buffer();
        let before = snapshot(&rows);
        let args = EngramHash {
            layer: &self.layer,
            ids: self.ids.view(&ids),
            positions: self.positions.as_ref().zip(pos.as_ref()).map(|(s, b)| s.view(b)),
            alive: self.alive.as_ref().zip(alive.as_ref()).map(|(s, b)| s.view(b)),
            history: &self.history,
            rows: self.rows.view_mut(&mut rows),
        };
        let result = args.validate().and_then(|a| Reference.engram_hash(a));
        Outcome {
            result,
            untouched: snapshot(&rows) == before,
        }
    }
}

#[test]
fn hash_valid_call_writes() {
    expect_ok_and_written(hash().run());
}

rule!(hash_ids_dtype, hash(), |c| c.ids.set_dtype(DType::I32), EH, "ids");
rule!(hash_ids_rank, hash(), |c| c.ids.add_dim(), EH, "ids");
rule!(hash_ids_non_contiguous, hash(), |c| c.ids.non_contiguous(), EH, "ids");
rule!(hash_ids_past_buffer, hash(), |c| c.ids.past_buffer(), EH, "ids");
rule!(
    hash_positions_dtype,
    hash(),
    |c| c.pos().set_dtype(DType::I32),
    EH,
    "positions"
);
rule!(hash_positions_rank, hash(), |c| c.pos().add_dim(), EH, "positions");
rule!(
    hash_positions_non_contiguous,
    hash(),
    |c| c.pos().non_contiguous(),
    EH,
    "positions"
);
rule!(
    hash_positions_past_buffer,
    hash(),
    |c| c.pos().past_buffer(),
    EH,
    "positions"
);
rule!(
    hash_positions_len_not_t,
    hash(),
    |c| c.pos().shape[0] = 4,
    EH,
    "positions"
);
rule!(
    hash_alive_dtype,
    hash(),
    |c| c.alive().set_dtype(DType::I32),
    EH,
    "alive"
);
rule!(hash_alive_rank, hash(), |c| c.alive().add_dim(), EH, "alive");
rule!(
    hash_alive_non_contiguous,
    hash(),
    |c| c.alive().non_contiguous(),
    EH,
    "alive"
);
rule!(hash_alive_past_buffer, hash(), |c| c.alive().past_buffer(), EH, "alive");
rule!(hash_alive_len_not_t, hash(), |c| c.alive().shape[0] = 6, EH, "alive");
rule!(
    hash_history_too_long,
    hash(),
    |c| c.history = vec![1, 2, 3],
    EH,
    "history"
);
rule!(
    hash_history_id_negative,
    hash(),
    |c| c.history = vec![-1],
    EH,
    "history"
);
rule!(hash_history_id_v, hash(), |c| c.history = vec![3, 50], EH, "history");
rule!(hash_rows_dtype, hash(), |c| c.rows.set_dtype(DType::I32), EH, "rows");
rule!(hash_rows_rank, hash(), |c| c.rows.drop_dim(), EH, "rows");
rule!(
    hash_rows_non_contiguous,
    hash(),
    |c| c.rows.non_contiguous(),
    EH,
    "rows"
);
rule!(hash_rows_past_buffer, hash(), |c| c.rows.past_buffer(), EH, "rows");
rule!(hash_rows_t_mismatch, hash(), |c| c.rows.shape[0] = 4, EH, "rows");
rule!(hash_rows_c_mismatch, hash(), |c| c.rows.shape[1] = 6, EH, "rows");
rule!(hash_rows_read_only, hash(), |c| c.rows.read_only(), EH, "rows");
// Value-dependent (Reference backend).
rule!(hash_id_negative, hash(), |c| c.set_ids(&[7, 3, -1, 3, 49]), EH, "ids");
rule!(hash_id_v, hash(), |c| c.set_ids(&[7, 3, 7, 3, 50]), EH, "ids");

// ------------------------------------------------------------------------------------------------
// gather_rows
// ------------------------------------------------------------------------------------------------

const GR: &str = "gather_rows";

struct Gather {
    table: Spec,
    format: TableFormat,
    rows: Spec,
    out: Spec,
}

/// R = 3, D = 4 f32 table; T = 2, C = 2.
fn gather() -> Gather {
    let table: Vec<f32> = (0..12).map(|i| i as f32).collect();
    Gather {
        table: Spec::input(DType::F32, &[3, 4]).with_data(&table),
        format: TableFormat::F32,
        rows: Spec::input(DType::I64, &[2, 2]).with_data(&[2i64, 0, 1, 1]),
        out: Spec::output(DType::F32, &[2, 8]),
    }
}

/// R = 3, D = 32 fp8 table (33 bytes per row); T = 2, C = 2; f32 out.
fn gather_fp8() -> Gather {
    let mut table = vec![0x38u8; 3 * 33];
    for r in 0..3 {
        table[r * 33 + 32] = 127;
    }
    Gather {
        table: Spec::input(DType::U8, &[3, 33]).with_data(&table),
        format: TableFormat::Fp8E4m3Ue8m0,
        rows: Spec::input(DType::I64, &[2, 2]).with_data(&[2i64, 0, 1, 1]),
        out: Spec::output(DType::F32, &[2, 64]),
    }
}

impl Gather {
    fn set_rows(&mut self, v: &[i64]) {
        self.rows = Spec::input(DType::I64, &[2, 2]).with_data(v);
    }
    fn run(&self) -> Outcome {
        let (table, rows) = (self.table.buffer(), self.rows.buffer());
        let mut out = self.out.buffer();
        let before = snapshot(&out);
        let args = GatherRows {
            table: self.table.view(&table),
            format: self.format,
            rows: self.rows.view(&rows),
            out: self.out.view_mut(&mut out),
        };
        let result = args.validate().and_then(|a| Reference.gather_rows(a));
        Outcome {
            result,
            untouched: snapshot(&out) == before,
        }
    }
}

#[test]
fn gather_valid_call_writes() {
    expect_ok_and_written(gather().run());
    expect_ok_and_written(gather_fp8().run());
    let mut c = gather_fp8();
    c.out.set_dtype(DType::BF16);
    expect_ok_and_written(c.run());
}

rule!(
    gather_rows_dtype,
    gather(),
    |c| c.rows.set_dtype(DType::I32),
    GR,
    "rows"
);
rule!(gather_rows_rank, gather(), |c| c.rows.drop_dim(), GR, "rows");
rule!(
    gather_rows_non_contiguous,
    gather(),
    |c| c.rows.non_contiguous(),
    GR,
    "rows"
);
rule!(gather_rows_past_buffer, gather(), |c| c.rows.past_buffer(), GR, "rows");
rule!(
    gather_table_dtype_not_format,
    gather(),
    |c| c.table.set_dtype(DType::BF16),
    GR,
    "table"
);
rule!(gather_table_rank, gather(), |c| c.table.add_dim(), GR, "table");
rule!(
    gather_table_non_contiguous,
    gather(),
    |c| c.table.non_contiguous(),
    GR,
    "table"
);
rule!(
    gather_table_past_buffer,
    gather(),
    |c| c.table.past_buffer(),
    GR,
    "table"
);
rule!(
    gather_fp8_width_not_multiple_of_33,
    gather_fp8(),
    |c| {
        c.table.shape[1] = 32;
    },
    GR,
    "table"
);
rule!(
    gather_fp8_out_dtype_f16,
    gather_fp8(),
    |c| c.out.set_dtype(DType::F16),
    GR,
    "out"
);
rule!(
    gather_f32_table_bf16_out,
    gather(),
    |c| c.out.set_dtype(DType::BF16),
    GR,
    "out"
);
rule!(gather_out_rank, gather(), |c| c.out.add_dim(), GR, "out");
rule!(
    gather_out_non_contiguous,
    gather(),
    |c| c.out.non_contiguous(),
    GR,
    "out"
);
rule!(gather_out_past_buffer, gather(), |c| c.out.past_buffer(), GR, "out");
rule!(gather_out_t_mismatch, gather(), |c| c.out.shape[0] = 3, GR, "out");
rule!(gather_out_width_not_cd, gather(), |c| c.out.shape[1] = 4, GR, "out");
rule!(
    gather_fp8_out_width_not_cd,
    gather_fp8(),
    |c| c.out.shape[1] = 66,
    GR,
    "out"
);
rule!(gather_out_read_only, gather(), |c| c.out.read_only(), GR, "out");
// Value-dependent (Reference backend).
rule!(
    gather_row_negative,
    gather(),
    |c| c.set_rows(&[2, 0, -1, 1]),
    GR,
    "rows"
);
rule!(gather_row_equal_r, gather(), |c| c.set_rows(&[2, 0, 1, 3]), GR, "rows");
rule!(
    gather_fp8_row_equal_r,
    gather_fp8(),
    |c| c.set_rows(&[3, 0, 1, 1]),
    GR,
    "rows"
);

/// `C * D` must not overflow: a `[1, 4]` row index tensor over a `[0, 2^62]` table (both views
/// fit their buffers: the table is empty) gives `C * D = 2^64`. Expect an error, not a debug
/// overflow panic or a wrapped width of 0 (core bug, see the report).
#[test]
fn gather_c_times_d_overflow_is_an_error() {
    let mut c = gather();
    c.table.shape = vec![0, 1 << 62];
    c.table.data.clear();
    c.rows = Spec::input(DType::I64, &[1, 4]);
    c.out.shape = vec![1, 0];
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.run()));
    match r {
        Ok(o) => expect_invalid(o, GR, "out"),
        Err(_) => panic!("gather_rows validate() panicked on C*D overflow instead of returning an error"),
    }
}

// ------------------------------------------------------------------------------------------------
// engram_lookup
// ------------------------------------------------------------------------------------------------

const EL: &str = "engram_lookup";

struct Lookup {
    layer: EngramLayer,
    ids: Spec,
    positions: Option<Spec>,
    alive: Option<Spec>,
    history: Vec<i64>,
    table: Spec,
    format: TableFormat,
    out: Spec,
}

/// The toy layer (R = 60 rows, C = 4), D = 2 f32 table, T = 3.
fn lookup() -> Lookup {
    let table: Vec<f32> = (0..120).map(|i| i as f32).collect();
    Lookup {
        layer: toy::layer().unwrap(),
        ids: Spec::input(DType::I64, &[3]).with_data(&[7i64, 3, 49]),
        positions: Some(Spec::input(DType::I64, &[3]).with_data(&[0i64, 1, 2])),
        alive: Some(Spec::input(DType::U8, &[3]).with_data(&[1u8, 1, 1])),
        history: vec![1],
        table: Spec::input(DType::F32, &[60, 2]).with_data(&table),
        format: TableFormat::F32,
        out: Spec::output(DType::F32, &[3, 8]),
    }
}

impl Lookup {
    fn run(&self) -> Outcome {
        let (ids, table) = (self.ids.buffer(), self.table.buffer());
        let pos = self.positions.as_ref().map(Spec::buffer);
        let alive = self.alive.as_ref().map(Spec::buffer);
        let mut out = self.out.buffer();
        let before = snapshot(&out);
        let args = EngramLookup {
            layer: &self.layer,
            ids: self.ids.view(&ids),
            positions: self.positions.as_ref().zip(pos.as_ref()).map(|(s, b)| s.view(b)),
            alive: self.alive.as_ref().zip(alive.as_ref()).map(|(s, b)| s.view(b)),
            history: &self.history,
            table: self.table.view(&table),
            format: self.format,
            out: self.out.view_mut(&mut out),
        };
        let result = args.validate().and_then(|a| Reference.engram_lookup(a));
        Outcome {
            result,
            untouched: snapshot(&out) == before,
        }
    }
}

#[test]
fn lookup_valid_call_writes() {
    expect_ok_and_written(lookup().run());
}

rule!(lookup_ids_dtype, lookup(), |c| c.ids.set_dtype(DType::I32), EL, "ids");
rule!(lookup_ids_rank, lookup(), |c| c.ids.add_dim(), EL, "ids");
rule!(
    lookup_positions_len_not_t,
    lookup(),
    |c| c.positions.as_mut().unwrap().shape[0] = 2,
    EL,
    "positions"
);
rule!(
    lookup_alive_dtype,
    lookup(),
    |c| c.alive.as_mut().unwrap().set_dtype(DType::I64),
    EL,
    "alive"
);
rule!(
    lookup_history_too_long,
    lookup(),
    |c| c.history = vec![1, 2, 3],
    EL,
    "history"
);
rule!(lookup_history_id_v, lookup(), |c| c.history = vec![50], EL, "history");
rule!(
    lookup_table_rows_not_layer_rows,
    lookup(),
    |c| c.table.shape[0] = 59,
    EL,
    "table"
);
rule!(
    lookup_table_dtype_not_format,
    lookup(),
    |c| c.format = TableFormat::BF16,
    EL,
    "table"
);
rule!(lookup_out_dtype, lookup(), |c| c.out.set_dtype(DType::BF16), EL, "out");
rule!(lookup_out_width_not_cd, lookup(), |c| c.out.shape[1] = 6, EL, "out");
rule!(lookup_out_read_only, lookup(), |c| c.out.read_only(), EL, "out");
// Value-dependent (Reference backend).
rule!(
    lookup_id_negative,
    lookup(),
    |c| c.ids = Spec::input(DType::I64, &[3]).with_data(&[7i64, -1, 49]),
    EL,
    "ids"
);
rule!(
    lookup_id_v,
    lookup(),
    |c| c.ids = Spec::input(DType::I64, &[3]).with_data(&[7i64, 3, 50]),
    EL,
    "ids"
);

// ------------------------------------------------------------------------------------------------
// grouped_gemm helpers
// ------------------------------------------------------------------------------------------------

fn field_of<T: std::fmt::Debug>(r: Result<T>) -> (&'static str, &'static str) {
    match r {
        Err(Error::InvalidArgument { op, field, .. }) => (op, field),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn check_group_end_rules() {
    assert_eq!(check_group_end(&[], 0), Ok(()));
    assert_eq!(check_group_end(&[0, 0, 2, 2, 5], 5), Ok(()));
    assert_eq!(check_group_end(&[0, 0, 2, 2, 4], 5), Ok(()));
    assert_eq!(field_of(check_group_end(&[2, 1], 5)), (GG, "group_end"));
    assert_eq!(field_of(check_group_end(&[-1, 1], 5)), (GG, "group_end"));
    assert_eq!(field_of(check_group_end(&[1, 6], 5)), (GG, "group_end"));
    assert_eq!(field_of(check_group_end(&[i64::MIN], 5)), (GG, "group_end"));
}

#[test]
fn group_end_count_conversions() {
    // counts [2, 0, 3, 1] -> ends [2, 2+0, 2+3, 5+1] = [2, 2, 5, 6].
    assert_eq!(group_end_from_counts(&[2, 0, 3, 1]), Ok(vec![2, 2, 5, 6]));
    assert_eq!(counts_from_group_end(&[2, 2, 5, 6]), Ok(vec![2, 0, 3, 1]));
    assert_eq!(group_end_from_counts(&[]), Ok(vec![]));
    assert_eq!(field_of(group_end_from_counts(&[1, -1])), (GG, "counts"));
    assert_eq!(field_of(group_end_from_counts(&[i64::MAX, 1])), (GG, "counts"));
    assert_eq!(field_of(counts_from_group_end(&[3, 2])), (GG, "group_end"));
    assert_eq!(field_of(counts_from_group_end(&[-2])), (GG, "group_end"));
}

#[test]
fn pack_unpack_masked_roundtrip() {
    // G = 3, max_m = 2, K = 2; valid [1, 0, 2]: rows g0r0, g2r0, g2r1.
    let x: Vec<i32> = (0..12).collect();
    let (packed, ends) = pack_masked(&x, 2, 2, &[1, 0, 2]).unwrap();
    assert_eq!(packed, vec![0, 1, 8, 9, 10, 11]);
    assert_eq!(ends, vec![1, 1, 3]);
    // Back into a masked buffer: rows past valid[g] keep their contents (-1).
    let mut out = vec![-1i32; 12];
    unpack_masked(&packed, 2, 2, &[1, 0, 2], &mut out).unwrap();
    assert_eq!(out, vec![0, 1, -1, -1, -1, -1, -1, -1, 8, 9, 10, 11]);
    // Empty.
    assert_eq!(pack_masked::<f32>(&[], 0, 3, &[0, 0]), Ok((vec![], vec![0, 0])));
}

#[test]
fn pack_masked_errors() {
    let x = [0f32; 12];
    assert_eq!(field_of(pack_masked(&x[..11], 2, 2, &[1, 0, 2])), (GG, "x"));
    assert_eq!(field_of(pack_masked(&x, 2, 2, &[1, -1, 2])), (GG, "valid"));
    assert_eq!(field_of(pack_masked(&x, 2, 2, &[1, 3, 0])), (GG, "valid"));
}

#[test]
fn unpack_masked_errors_write_nothing() {
    let y = [7f32; 6];
    let cases: [(&[i64], usize, &str); 4] = [
        (&[1, 0, 2], 11, "out"),
        (&[1, -1, 2], 12, "valid"),
        (&[1, 0, 3], 12, "valid"),
        // sum(valid) = 4 rows of N = 2, y holds 3.
        (&[2, 0, 2], 12, "y"),
    ];
    for (valid, len, field) in cases {
        let mut out = vec![-1f32; len];
        assert_eq!(
            field_of(unpack_masked(&y, 2, 2, valid, &mut out)),
            (GG, field),
            "valid {valid:?}"
        );
        assert!(
            out.iter().all(|&v| v == -1.0),
            "unpack_masked(valid = {valid:?}) failed with `{field}` after writing {out:?}"
        );
    }
}

/// Sizes whose product overflows usize are an error, not a debug overflow panic.
#[test]
fn pack_masked_size_overflow_is_an_error() {
    let r = std::panic::catch_unwind(|| pack_masked::<f32>(&[], usize::MAX, 2, &[0]).map(|_| ()));
    match r {
        Ok(r) => assert_eq!(field_of(r), (GG, "x")),
        Err(_) => panic!("pack_masked panicked on G * max_m * K overflow"),
    }
    let r = std::panic::catch_unwind(|| unpack_masked::<f32>(&[], 2, usize::MAX, &[0], &mut []));
    match r {
        Ok(r) => assert_eq!(field_of(r), (GG, "out")),
        Err(_) => panic!("unpack_masked panicked on G * max_m * N overflow"),
    }
}

/// Harness check: output buffers start as poison, read-only ones included, and `snapshot` sees it.
#[test]
fn harness_snapshot_reads_back_poison() {
    let b = Spec::output(DType::F32, &[2, 2]).buffer();
    assert_eq!(snapshot(&b), vec![POISON; 16]);
    let r = Spec::output(DType::F32, &[2, 2]);
    let mut ro = r.clone();
    ro.read_only();
    let rb = ro.buffer();
    assert!(!rb.writable());
    assert_eq!(snapshot(&rb), vec![POISON; 16]);
}

// ------------------------------------------------------------------------------------------------
// Error classes (issue 16 item 5): a rule of OPS.md broken is InvalidArgument; a limit of moehal's
// own, which the contract does not set, is Unsupported (the caller may pick another path).
// ------------------------------------------------------------------------------------------------

#[test]
fn moehal_limits_are_unsupported_and_contract_rules_invalid() {
    use moehal_core::engram::{derive_primes, MAX_DERIVED_PRIMES};
    // Within the limit: fine (the toy primes).
    assert_eq!(derive_primes(11, 3, 2, 1).unwrap(), vec![vec![11, 13, 17, 19]]);
    // Beyond moehal's limit on derived primes (OPS.md §4 sets none): Unsupported, naming the field.
    let heads = MAX_DERIVED_PRIMES / 2 + 1;
    match derive_primes(11, 3, heads, 1) {
        Err(Error::Unsupported { op, msg, .. }) => {
            assert_eq!(op, "engram_derive_primes");
            assert!(
                msg.contains("`layers`") && msg.contains(&MAX_DERIVED_PRIMES.to_string()),
                "{msg}"
            );
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // OPS.md §4's own rules: InvalidArgument.
    assert_eq!(
        field_of(derive_primes(11, 1, 2, 1)),
        ("engram_derive_primes", "max_order")
    );
    assert_eq!(field_of(derive_primes(11, 3, 0, 1)), ("engram_derive_primes", "heads"));
}
