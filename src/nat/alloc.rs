//! Source port / ICMP echo id allocation for SNAT and masquerade.
//!
//! Follows Linux `nf_nat_l4proto_unique_tuple`: the original port is kept
//! when it lies in the allowed range and its tuple is free; otherwise the
//! search starts at an offset derived from a caller-provided random seed
//! (the core draws no randomness: sans-IO) and walks the range, trying at most
//! [`MAX_TRIES`] ports (the kernel gives up after 128 too, with a shrinking
//! stride; a linear walk from a random start is enough here because
//! the free check is one hash lookup). The port class is kept: a port below
//! 1024 maps into 1..=1023, any other into 1024..=65535 (the kernel splits
//! 1..511 / 600..1023 / 1024.. ; we keep only the privileged boundary, which
//! is what services check). A configured range is intersected with the class;
//! when the intersection is empty the whole configured range is used (the
//! class can't be kept). ICMP echo ids have no class: any id in range.
//!
//! Contract: never returns a port for which `free` said no; never panics;
//! returns `AllocError::Exhausted` after at most `MAX_TRIES + 1` calls of `free`.

/// The most candidate ports tried per new flow (as Linux `nf_nat_l4proto_unique_tuple`).
pub const MAX_TRIES: u32 = 128;

/// Why no external tuple could be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no free external port/id in the NAT range after {MAX_TRIES} tries")]
    Exhausted,
}

/// The inclusive range to allocate from for an original port `orig`.
pub fn range_for(orig: u16, configured: Option<(u16, u16)>, echo: bool) -> (u16, u16) {
    if echo {
        return configured.unwrap_or((0, u16::MAX));
    }
    let class = if orig < 1024 {
        (1, 1023)
    } else {
        (1024, u16::MAX)
    };
    match configured {
        None => class,
        Some((lo, hi)) => {
            let (l, h) = (lo.max(class.0), hi.min(class.1));
            if l <= h {
                (l, h)
            } else {
                (lo, hi)
            }
        }
    }
}

/// Picks a port for original port `orig`: the original one if in range and
/// `free`, else up to [`MAX_TRIES`] ports from a seeded offset.
pub fn allocate(
    orig: u16,
    configured: Option<(u16, u16)>,
    echo: bool,
    seed: u64,
    mut free: impl FnMut(u16) -> bool,
) -> Result<u16, AllocError> {
    let (lo, hi) = range_for(orig, configured, echo);
    if (lo..=hi).contains(&orig) && free(orig) {
        return Ok(orig);
    }
    let n = u32::from(hi - lo) + 1;
    let start = (seed % u64::from(n)) as u32;
    for i in 0..MAX_TRIES.min(n) {
        let p = lo as u32 + (start + i) % n;
        let p = p as u16;
        if p != orig && free(p) {
            return Ok(p);
        }
    }
    Err(AllocError::Exhausted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn keeps_the_original_port_when_free() {
        assert_eq!(allocate(40000, None, false, 7, |_| true), Ok(40000));
        assert_eq!(
            allocate(40000, Some((50000, 50010)), false, 7, |_| true)
                .map(|p| (50000..=50010).contains(&p)),
            Ok(true)
        );
    }

    #[test]
    fn keeps_the_class() {
        for seed in 0..200u64 {
            let p = allocate(80, None, false, seed, |p| p != 80).unwrap();
            assert!((1..1024).contains(&p), "{p}");
            let q = allocate(5000, None, false, seed, |p| p != 5000).unwrap();
            assert!(q >= 1024, "{q}");
        }
        assert_eq!(range_for(80, Some((1000, 2000)), false), (1000, 1023));
        assert_eq!(range_for(80, Some((2000, 3000)), false), (2000, 3000));
        assert_eq!(range_for(5, None, true), (0, u16::MAX));
    }

    #[test]
    fn gives_up_after_128_tries() {
        let mut calls = 0;
        let r = allocate(40000, None, false, 3, |_| {
            calls += 1;
            false
        });
        assert_eq!(r, Err(AllocError::Exhausted));
        assert_eq!(calls, MAX_TRIES + 1);
        // A tiny range is tried once per port, then exhausted.
        let mut seen = Vec::new();
        let r = allocate(40000, Some((2000, 2003)), false, 3, |p| {
            seen.push(p);
            false
        });
        assert_eq!(r, Err(AllocError::Exhausted));
        seen.sort();
        assert_eq!(seen, vec![2000, 2001, 2002, 2003]);
    }

    proptest! {
        #[test]
        fn never_returns_a_taken_port(taken in proptest::collection::hash_set(1024u16..1100, 0..70), seed in any::<u64>(), orig in 1024u16..1100) {
            let r = allocate(orig, Some((1024, 1099)), false, seed, |p| !taken.contains(&p));
            match r {
                Ok(p) => { prop_assert!(!taken.contains(&p)); prop_assert!((1024..1100).contains(&p)); }
                Err(_) => prop_assert_eq!(taken.len(), 76),
            }
        }

        #[test]
        fn seeds_spread_the_start(seeds in proptest::collection::vec(any::<u64>(), 50)) {
            let ports: HashSet<u16> = seeds.iter().map(|s| allocate(1, None, false, *s, |p| p != 1).unwrap()).collect();
            prop_assert!(ports.len() > 25);
        }
    }
}
