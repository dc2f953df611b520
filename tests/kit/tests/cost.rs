//! The kit's cost model on cases whose FLOPs and bytes are worked out by hand.

use moehal_core::ops::{TableFormat, WeightFormat, WeightLayout};
use moehal_core::DType;
use moehal_testkit::{cost, edge_cases, Case, Spec};

#[test]
fn grouped_gemm_counts_routed_rows_and_touched_experts() {
    // Groups [3, 0, 17, 0, 1, 9] (30 rows, 4 experts with rows), 5 tail rows, N 48, K 40, bf16.
    let c = edge_cases()
        .into_iter()
        .find(|c| c.name() == "gemm NK empty groups + tail" && c.dtype() == "bf16 NK")
        .expect("edge case");
    assert_eq!(c.flops(), Some(2.0 * 30.0 * 48.0 * 40.0));
    assert_eq!(c.bytes(), 4.0 * 48.0 * 40.0 * 2.0);
    let m0 = Case::new(
        "m0",
        Spec::GroupedGemm {
            dtype: DType::F32,
            layout: WeightLayout::KN,
            groups: vec![0, 0],
            tail: 3,
            n: 8,
            k: 8,
            bias: false,
            row_scale: false,
            bad_group_end: false,
        },
    );
    assert_eq!((m0.flops(), m0.bytes()), (Some(0.0), 0.0));
}

#[test]
fn memory_bound_ops_have_bytes_and_no_flops() {
    let gather = Case::new(
        "g",
        Spec::GatherRows {
            format: TableFormat::BF16,
            out: DType::BF16,
            table_rows: 10,
            dim: 64,
            tokens: 7,
            cols: 3,
            bad_row: false,
            host_table: false,
        },
    );
    assert_eq!(gather.flops(), None);
    assert_eq!(gather.bytes(), (7 * 3 * 64 * 2) as f64);
    assert_eq!(cost::combine_bytes(4, 2, 8, 2), ((4 * 2 + 4) * 8 * 2) as f64);
    assert_eq!(cost::hash_bytes(5, 6), (5 * 8 * 7) as f64);
    for c in edge_cases() {
        assert!(c.bytes().is_finite() && c.bytes() >= 0.0, "{}", c.name());
    }
}

#[test]
fn quantized_gemm_bytes_are_the_packed_weights_of_touched_experts() {
    let c = moehal_testkit::quant::edge_cases()
        .into_iter()
        .find(|c| c.name() == "q mxfp4 w4a16 decode")
        .expect("quant edge case");
    // Groups [1, 0, 3, 6]: 10 rows, 3 experts with rows; N 192, K 256.
    assert_eq!(c.flops(), Some(2.0 * 10.0 * 192.0 * 256.0));
    assert_eq!(c.bytes(), WeightFormat::Mxfp4.bytes(3, 192, 256) as f64);
}
