//! The environment variables of the CPU backend, validated in one place.
//!
//! | variable | accepted values | effect |
//! |---|---|---|
//! | `MOEHAL_CPU_THREADS` | an integer from 0 to 16 × cores (0 or unset: all cores) | size of the process-wide pool |
//! | `MOEHAL_CPU_ISA` | `amx`, `avx512`, `avx2`, `neon`, `scalar` | lowers the kernel table |
//! | `MOEHAL_CPU_BF16` | `dot`, `fma` | forces the bf16 `grouped_gemm` kernel |
//! | `MOEHAL_CPU_INT8` | `sdot` | keeps an Arm CPU with FEAT_I8MM on the SDOT int8 kernel |
//!
//! Values are taken as they are: names ignore ASCII case (`AVX2` is `avx2`, as `Isa::name` prints
//! it lower-case), but surrounding spaces, signs (`+2`) and empty values are errors — a stray
//! space in a launch script is more likely a mistake than a request, and the error says which
//! variable and what it accepts.
//!
//! A library does not print: [`check`] returns the first invalid value as an error
//! ([`moehal_core::Error::InvalidArgument`] with op `env` and the variable as its field, the message
//! naming the value and the accepted ones), and the things that are valid but probably unintended
//! (more threads than cores, an instruction set this CPU lacks) as [`EnvReport::warnings`] for the
//! caller to show. [`crate::CpuBackend::open`] fails on an invalid value;
//! [`crate::CpuBackend::new`] (infallible) ignores one and uses the default, as before.

use moehal_core::{Error, Result};

use crate::pool::num_cores;
use crate::simd::Isa;

/// `MOEHAL_CPU_THREADS`.
pub const THREADS: &str = "MOEHAL_CPU_THREADS";
/// `MOEHAL_CPU_ISA`.
pub const ISA: &str = "MOEHAL_CPU_ISA";
/// `MOEHAL_CPU_BF16`.
pub const BF16: &str = "MOEHAL_CPU_BF16";

/// `MOEHAL_CPU_INT8`.
pub const INT8: &str = "MOEHAL_CPU_INT8";

/// The accepted values of [`ISA`], as in the error message.
pub const ISA_VALUES: &str = "amx, avx512, avx2, neon, scalar";
/// The accepted values of [`BF16`], as in the error message.
pub const BF16_VALUES: &str = "dot, fma";
/// The accepted values of [`INT8`], as in the error message.
pub const INT8_VALUES: &str = "sdot (Arm only: the SDOT int8 kernel even where FEAT_I8MM offers SMMLA)";

/// Valid settings of the CPU backend's environment, and what deserves a warning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvReport {
    /// `MOEHAL_CPU_THREADS` (None: unset or 0, all cores).
    pub threads: Option<usize>,
    /// `MOEHAL_CPU_ISA` (None: unset).
    pub isa: Option<Isa>,
    /// `MOEHAL_CPU_BF16` (None: unset).
    pub bf16: Option<&'static str>,
    /// `MOEHAL_CPU_INT8` (None: unset).
    pub int8: Option<&'static str>,
    /// Valid but probably unintended settings, one sentence each, naming the variable.
    pub warnings: Vec<String>,
}

fn invalid(var: &'static str, value: &str, accepted: &str) -> Error {
    let why = if value.is_empty() {
        format!("{var} is set but empty (unset it for the default)")
    } else if value.trim() != value {
        format!("{var}={value:?} is not valid (surrounding spaces are not stripped)")
    } else {
        format!("{var}={value:?} is not valid")
    };
    Error::invalid("env", var, format!("{why}; accepted values: {accepted}"))
}

/// Most workers `MOEHAL_CPU_THREADS` accepts per core: above the core count the pool
/// oversubscribes (a warning); far above it, starting the workers alone takes longer than any op
/// (100,000 threads never finished starting), so that is an error.
pub const MAX_THREADS_PER_CORE: usize = 16;

/// Parse `MOEHAL_CPU_THREADS` (`value` as read; `cores` the core count for the warning and the
/// limit of [`MAX_THREADS_PER_CORE`] per core).
///
/// # Errors
/// `InvalidArgument` naming the variable and the accepted values for anything but decimal digits
/// (`abc`, `-3`, `+3`, `1.5`, `" 2"`, empty) and for more than `MAX_THREADS_PER_CORE · cores`.
pub fn parse_threads(value: &str, cores: usize) -> Result<(Option<usize>, Option<String>)> {
    let max = MAX_THREADS_PER_CORE * cores.max(1);
    // The same rule as the README's table: 0 to 16 × cores, 0 = all cores.
    let accepted = format!(
        "an integer from 0 to {max} ({MAX_THREADS_PER_CORE} × the {cores} cores of this machine): 0 uses all cores (as when unset), more than {cores} oversubscribes them (a warning)"
    );
    // Digits only: `usize::from_str` would also take a leading `+`.
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let n: usize = digits
        .then(|| value.parse().ok())
        .flatten()
        .ok_or_else(|| invalid(THREADS, value, &accepted))?;
    if n == 0 {
        return Ok((None, None));
    }
    if n > max {
        return Err(invalid(THREADS, value, &accepted));
    }
    let warn = (n > cores).then(|| {
        format!(
            "{THREADS}={n} is more than the {cores} cores of this machine: the workers oversubscribe the cores and every op slows down (use at most {cores})"
        )
    });
    Ok((Some(n), warn))
}

/// Parse `MOEHAL_CPU_ISA` (ASCII case ignored: `AVX2` is `avx2`; see [`Isa::parse`]); a valid
/// name this CPU cannot run gives a warning (the best available table is used instead).
///
/// # Errors
/// `InvalidArgument` naming the variable and [`ISA_VALUES`].
pub fn parse_isa(value: &str) -> Result<(Isa, Option<String>)> {
    let isa = Isa::parse(value).ok_or_else(|| invalid(ISA, value, ISA_VALUES))?;
    let warn = (!isa.available()).then(|| {
        format!(
            "{ISA}={} is not available on this CPU (available: {}): the best available instruction set is used",
            isa.name(),
            Isa::all_available()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    Ok((isa, warn))
}

/// Parse `MOEHAL_CPU_BF16` (ASCII case ignored, as [`parse_isa`]).
///
/// # Errors
/// `InvalidArgument` naming the variable and [`BF16_VALUES`] (surrounding spaces included).
pub fn parse_bf16(value: &str) -> Result<&'static str> {
    match value.to_ascii_lowercase().as_str() {
        "dot" => Ok("dot"),
        "fma" => Ok("fma"),
        _ => Err(invalid(BF16, value, BF16_VALUES)),
    }
}

/// Parse `MOEHAL_CPU_INT8` (ASCII case ignored, as [`parse_isa`]). Its one value, `sdot`, only
/// means something on Arm; elsewhere it is valid and has no effect, which is a warning.
///
/// # Errors
/// `InvalidArgument` naming the variable and [`INT8_VALUES`] for any other value (it was read as
/// "is it `sdot`?", so a typo such as `smdot` silently kept SMMLA).
pub fn parse_int8(value: &str) -> Result<(&'static str, Option<String>)> {
    if !value.eq_ignore_ascii_case("sdot") {
        return Err(invalid(INT8, value, INT8_VALUES));
    }
    let warn = (!cfg!(target_arch = "aarch64")).then(|| {
        format!("{INT8}=sdot has no effect on this CPU: it chooses between the Arm int8 kernels (SDOT, SMMLA)")
    });
    Ok(("sdot", warn))
}

/// Whether `MOEHAL_CPU_INT8=sdot` is set (any ASCII case): the int8 kernel choice reads this; an
/// invalid value counts as unset there and is reported by [`check`].
pub fn int8_sdot_forced() -> bool {
    std::env::var(INT8).is_ok_and(|v| parse_int8(&v).is_ok())
}

/// Whether this CPU has the bf16 dot-product instruction `MOEHAL_CPU_BF16=dot` asks for.
fn bf16_dot_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("bf16")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    false
}

/// Read and validate every variable of this crate from the process environment.
///
/// # Errors
/// The first invalid value (see [`parse_threads`], [`parse_isa`], [`parse_bf16`],
/// [`parse_int8`]); a value that is
/// not Unicode is invalid too.
pub fn check() -> Result<EnvReport> {
    check_with(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
}

/// [`check`] over any lookup (tests pass a map instead of the process environment).
///
/// # Errors
/// As [`check`].
pub fn check_with(get: impl Fn(&str) -> Option<String>) -> Result<EnvReport> {
    let mut r = EnvReport::default();
    if let Some(v) = get(THREADS) {
        let (n, w) = parse_threads(&v, num_cores())?;
        r.threads = n;
        r.warnings.extend(w);
    }
    if let Some(v) = get(ISA) {
        let (isa, w) = parse_isa(&v)?;
        r.isa = Some(isa);
        r.warnings.extend(w);
    }
    if let Some(v) = get(BF16) {
        let b = parse_bf16(&v)?;
        if b == "dot" && !bf16_dot_available() {
            r.warnings.push(format!(
                "{BF16}=dot: this CPU has no bf16 dot-product instruction (AVX512-BF16 vdpbf16ps, Arm BFDOT): the bf16-fma kernel is used"
            ));
        }
        r.bf16 = Some(b);
    }
    if let Some(v) = get(INT8) {
        let (i, w) = parse_int8(&v)?;
        r.int8 = Some(i);
        r.warnings.extend(w);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: &Error) -> &'static str {
        match e {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn threads_rejects_non_integers_and_warns_above_cores() {
        for bad in ["abc", "-3", "+3", "1.5", "", " ", " 2", "2 ", "0x2"] {
            let e = parse_threads(bad, 8).unwrap_err();
            assert_eq!(field(&e), THREADS, "{bad:?}");
            let msg = e.to_string();
            assert!(msg.contains(THREADS) && msg.contains("from 0 to 128"), "{msg}");
            assert!(msg.contains("0 uses all cores"), "{msg}");
        }
        assert_eq!(parse_threads("4", 8).unwrap(), (Some(4), None));
        assert_eq!(parse_threads("0", 8).unwrap(), (None, None));
        // The empty value and the stray space each say what is wrong.
        let msg = parse_threads("", 8).unwrap_err().to_string();
        assert!(
            msg.contains("MOEHAL_CPU_THREADS is set but empty (unset it for the default)"),
            "{msg}"
        );
        let msg = parse_threads(" 2", 8).unwrap_err().to_string();
        assert!(msg.contains("surrounding spaces are not stripped"), "{msg}");
        let (n, w) = parse_threads("100", 8).unwrap();
        assert_eq!(n, Some(100));
        let w = w.expect("100 threads on 8 cores must warn");
        assert!(w.contains(THREADS) && w.contains("8 cores"), "{w}");
        // 100,000 workers never finished starting: far above the cores is an error, not a hang.
        for big in ["129", "1000", "100000"] {
            let e = parse_threads(big, 8).unwrap_err();
            assert!(e.to_string().contains("from 0 to 128"), "{e}");
        }
        assert_eq!(parse_threads("128", 8).unwrap().0, Some(128));
    }

    /// The error message and the README's table state one rule (they once disagreed: "from 1
    /// to 32 ... 0 means all cores" against the README's "0 to 16 × cores").
    #[test]
    fn the_readme_states_the_rule_the_parser_applies() {
        let readme = include_str!("../../../README.md");
        let row = format!("| `{THREADS}` | integer 0 to {MAX_THREADS_PER_CORE} × cores (0 or unset: all cores) |");
        assert!(readme.contains(&row), "README lacks {row}");
        let msg = parse_threads("x", 2).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("from 0 to {}", 2 * MAX_THREADS_PER_CORE)) && msg.contains("0 uses all cores"),
            "{msg}"
        );
        // What the message says is accepted, is: both ends, and nothing past them.
        assert_eq!(parse_threads("0", 2).unwrap().0, None);
        assert_eq!(parse_threads("32", 2).unwrap().0, Some(32));
        assert!(parse_threads("33", 2).is_err());
    }

    /// Issue 16 item 4: `MOEHAL_CPU_INT8` was compared with "sdot" after a trim, anything else
    /// silently ignored; now it follows the other variables' rule.
    #[test]
    fn int8_accepts_sdot_only() {
        for ok in ["sdot", "SDOT", "SDot"] {
            let (v, w) = parse_int8(ok).unwrap();
            assert_eq!(v, "sdot");
            assert_eq!(w.is_some(), !cfg!(target_arch = "aarch64"), "{ok}: {w:?}");
        }
        for bad in ["", " sdot", "sdot ", "smmla", "smdot", "1", "on"] {
            let e = parse_int8(bad).unwrap_err();
            assert_eq!(field(&e), INT8, "{bad:?}");
            assert!(e.to_string().contains(INT8_VALUES), "{bad:?}: {e}");
        }
        let r = check_with(|k| (k == INT8).then(|| "sdot".to_string())).unwrap();
        assert_eq!(r.int8, Some("sdot"));
        assert!(check_with(|k| (k == INT8).then(|| "bogus".to_string())).is_err());
    }

    #[test]
    fn isa_and_bf16_reject_unknown_names() {
        let e = parse_isa("bogus").unwrap_err();
        assert_eq!(field(&e), ISA);
        assert!(e.to_string().contains(ISA_VALUES), "{e}");
        assert_eq!(parse_isa("Scalar").unwrap(), (Isa::Scalar, None));
        assert_eq!(parse_isa("AVX2").unwrap().0, Isa::Avx2);
        // Case is ignored (documented); spaces and numbers are not names.
        for bad in [" avx2", "avx2 ", " 2", "2", "512", "", "avx-2"] {
            let e = parse_isa(bad).unwrap_err();
            assert_eq!(field(&e), ISA, "{bad:?}");
            assert!(e.to_string().contains(ISA_VALUES), "{bad:?}: {e}");
        }
        assert!(parse_isa("").unwrap_err().to_string().contains("set but empty"));
        assert_eq!(parse_bf16("FMA").unwrap(), "fma");
        assert!(parse_bf16(" dot").is_err());
        let e = parse_bf16("fast").unwrap_err();
        assert_eq!(field(&e), BF16);
        assert!(e.to_string().contains(BF16_VALUES), "{e}");
        assert_eq!(parse_bf16("dot").unwrap(), "dot");
    }

    #[test]
    fn check_with_reads_every_variable() {
        let env = |k: &str| match k {
            THREADS => Some("2".to_string()),
            ISA => Some("scalar".to_string()),
            BF16 => Some("fma".to_string()),
            _ => None,
        };
        let r = check_with(env).unwrap();
        assert_eq!((r.threads, r.isa, r.bf16), (Some(2), Some(Isa::Scalar), Some("fma")));
        let e = check_with(|k| (k == ISA).then(|| "bogus".to_string())).unwrap_err();
        assert_eq!(field(&e), ISA);
        assert_eq!(check_with(|_| None).unwrap(), EnvReport::default());
    }
}
