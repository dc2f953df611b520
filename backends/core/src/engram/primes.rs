//! Primality and the published prime-layout rule of the Engram tables.

use super::{Error, Result, MAX_DERIVED_PRIMES};

/// Op name in [`derive_primes`]'s errors.
const OP_PRIMES: &str = "engram_derive_primes";

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    ((a as u128 * b as u128) % m as u128) as u64
}

fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut acc = 1 % m;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul_mod(acc, base, m);
        }
        base = mul_mod(base, base, m);
        exp >>= 1;
    }
    acc
}

/// Deterministic primality test for every `u64` (Miller–Rabin with the first twelve primes as
/// bases, which is exact below 3.3·10^24).
pub fn is_prime(n: u64) -> bool {
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for &p in &BASES {
        if n % p == 0 {
            return n == p;
        }
    }
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'bases: for &a in &BASES {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

/// Smallest prime `>= from`, or `None` if there is none below `u64::MAX`.
fn prime_at_or_above(from: u64) -> Option<u64> {
    let mut c = from;
    loop {
        if is_prime(c) {
            return Some(c);
        }
        c = c.checked_add(1)?;
    }
}

/// Derives the Engram primes by the published rule (`OPS.md` §4, fact sheet §1.3).
///
/// Iterates layers (config order) → orders `n = 2..=max_order` → heads `j = 0..heads`. Each order
/// restarts its search at `vocab_n - 1` and takes, for each head, the next prime above the previous
/// one (the restart point for the order's first head) that has never been used before by any
/// layer or order (a global "seen" set). Hence all primes are distinct.
///
/// Returns one `Vec` per layer of length `(max_order - 1) * heads` in column order (n-major, then
/// head), ready for [`EngramLayer::new`](super::EngramLayer::new).
///
/// Checks: DeepSeek-V4.1-Flash (`vocab_n = 16_000_000`, `N = 4`, `K = 8`, 2 layers) sums to
/// 384,006,168 and 384,016,682 rows; the toy (`vocab_n = 11`, `N = 3`, `K = 2`, 1 layer) gives
/// `[11, 13, 17, 19]`.
///
/// Errors: `InvalidArgument` for `max_order < 2`, `heads == 0`, a count that overflows `usize`, or
/// no prime left below `u64::MAX`; `Unsupported` for more than
/// [`MAX_DERIVED_PRIMES`](super::MAX_DERIVED_PRIMES) primes in all (moehal's limit, not the
/// contract's).
pub fn derive_primes(vocab_n: u64, max_order: usize, heads: usize, layers: usize) -> Result<Vec<Vec<u64>>> {
    if max_order < 2 {
        return Err(Error::invalid(
            OP_PRIMES,
            "max_order",
            format!("must be >= 2, got {max_order}"),
        ));
    }
    if heads == 0 {
        return Err(Error::invalid(OP_PRIMES, "heads", "must be >= 1, got 0"));
    }
    let columns = (max_order - 1)
        .checked_mul(heads)
        .ok_or_else(|| Error::invalid(OP_PRIMES, "heads", "(max_order - 1) * heads overflows usize"))?;
    // A count that overflows usize names no real request: a bad argument, as for `columns`.
    let total = columns.checked_mul(layers).ok_or_else(|| {
        Error::invalid(
            OP_PRIMES,
            "layers",
            format!("{layers} layers x {columns} columns overflows usize"),
        )
    })?;
    if total > MAX_DERIVED_PRIMES {
        // The contract sets no limit: this is moehal's (a bounded search and allocation), so a
        // capability it lacks (`Unsupported`), not a bad argument (issue 16 item 5).
        return Err(Error::unsupported(
            OP_PRIMES,
            "any backend",
            format!(
                "`layers`: {layers} layers x {columns} columns exceeds the {MAX_DERIVED_PRIMES} primes moehal derives in one call"
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(layers);
    for _ in 0..layers {
        let mut layer = Vec::with_capacity(columns);
        for _n in 2..=max_order {
            // "Next prime above vocab_n - 1" == smallest prime >= vocab_n (no underflow at 0).
            let mut from = vocab_n;
            for _j in 0..heads {
                let p = loop {
                    let p = prime_at_or_above(from)
                        .ok_or_else(|| Error::invalid(OP_PRIMES, "vocab_n", "ran out of primes below 2^64"))?;
                    from = p
                        .checked_add(1)
                        .ok_or_else(|| Error::invalid(OP_PRIMES, "vocab_n", "ran out of primes below 2^64"))?;
                    if seen.insert(p) {
                        break p;
                    }
                };
                layer.push(p);
            }
        }
        out.push(layer);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miller_rabin_matches_trial_division() {
        let slow = |n: u64| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0);
        for n in 0..20_000u64 {
            assert_eq!(is_prime(n), slow(n), "n = {n}");
        }
        // Strong pseudoprimes to several small bases, and large known primes.
        assert!(!is_prime(3_215_031_751));
        assert!(!is_prime(3_825_123_056_546_413_051));
        assert!(is_prime(18_446_744_073_709_551_557)); // largest prime below 2^64
        assert!(!is_prime(u64::MAX));
    }

    #[test]
    fn derive_primes_toy_and_zero_base() {
        assert_eq!(derive_primes(11, 3, 2, 1).unwrap(), vec![vec![11, 13, 17, 19]]);
        // Two layers: every order of layer 2 skips all primes used so far.
        assert_eq!(
            derive_primes(11, 3, 2, 2).unwrap(),
            vec![vec![11, 13, 17, 19], vec![23, 29, 31, 37]]
        );
        assert_eq!(derive_primes(0, 2, 3, 1).unwrap(), vec![vec![2, 3, 5]]);
        assert!(derive_primes(u64::MAX - 10, 2, 1, 1).is_err());
    }
}
