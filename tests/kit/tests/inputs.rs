//! The kit's one input recipe, [`Spec::fill_inputs`]: it writes every byte of caller buffers of
//! [`Spec::input_layout`]'s sizes (whatever they held, aligned or not), the same values for the
//! same seed, and rejects buffers that do not match the layout.

use moehal_testkit::{default_cases, Logits, Spec};

/// Buffers of `spec`'s layout, each starting `skew` bytes into an allocation pre-filled with
/// `fill`, filled with `seed`; returns their bytes.
fn filled(spec: &Spec, seed: u64, fill: u8, skew: usize) -> Vec<Vec<u8>> {
    let sizes: Vec<usize> = spec
        .input_layout()
        .iter()
        .map(|(d, s)| s.iter().product::<usize>() * d.size())
        .collect();
    let mut raw: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![fill; n + skew]).collect();
    let mut slices: Vec<&mut [u8]> = raw.iter_mut().map(|r| &mut r[skew..]).collect();
    spec.fill_inputs(seed, &mut slices).expect("fill");
    raw.into_iter().map(|r| r[skew..].to_vec()).collect()
}

#[test]
fn every_byte_is_written_and_the_seed_decides_the_values() {
    let cases = default_cases();
    assert!(cases.len() > 100, "{} cases", cases.len());
    for c in cases.iter().step_by(3) {
        let a = filled(&c.spec, 5, 0x00, 0);
        // Other initial contents and a misaligned start: the same bytes (nothing left unwritten,
        // integers written without alignment).
        assert_eq!(filled(&c.spec, 5, 0xFF, 3), a, "{} {}", c.name(), c.dtype());
        // Another seed changes some input, unless every input is written out by the case.
        let fixed = matches!(
            c.spec,
            Spec::RouterKnown { .. }
                | Spec::RouterTopk {
                    logits: Logits::TieClasses | Logits::BiasRounding | Logits::GroupSumRounding,
                    ..
                }
                | Spec::EngramHash { ids: Some(_), .. }
        );
        if !fixed && a.iter().map(Vec::len).sum::<usize>() > 64 {
            assert_ne!(filled(&c.spec, 6, 0x00, 0), a, "{} {}", c.name(), c.dtype());
        }
    }
}

#[test]
fn buffers_that_do_not_match_the_layout_are_an_error_naming_the_inputs() {
    let c = &default_cases()[0];
    let n = c.spec.input_layout().len();
    assert!(n >= 1);
    let mut short = [0u8; 3];
    for mut bufs in [Vec::new(), vec![&mut short[..]]] {
        let e = c.spec.fill_inputs(1, &mut bufs).unwrap_err();
        assert!(e.to_string().contains("inputs"), "{e}");
    }
}
