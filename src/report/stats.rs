//! Medians and 90th percentiles of response times. Pure.
//!
//! Percentiles interpolate linearly between the two nearest ranks (the method of numpy's
//! default and Excel's PERCENTILE.INC), so the median of an even count is the mean of the middle
//! two, as a reader expects, and a secretariat member can check a figure in Excel.

use serde::Serialize;

/// The `p`-th percentile (0 to 100) of `sorted` (ascending); None when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p / 100.0).clamp(0.0, 1.0) * last as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    let (lo, hi) = (*sorted.get(below)?, *sorted.get(above)?);
    Some(lo + (hi - lo) * (rank - below as f64))
}

/// `percentile` of `values` in any order, without sorting them all: only the value at the
/// lower rank is put in place (`select_nth_unstable_by`, linear), and the one above it is the
/// least of those after it. The same figure as `percentile` of the sorted values (the same
/// order, `f64::total_cmp`); sorting them was 4% of a report's instructions (callgrind, a
/// store of 100,000 incidents). Leaves `values` reordered.
pub fn percentile_unsorted(values: &mut [f64], p: f64) -> Option<f64> {
    let last = values.len().checked_sub(1)?;
    let rank = (p / 100.0).clamp(0.0, 1.0) * last as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    let (_, lo, after) = values.select_nth_unstable_by(below, f64::total_cmp);
    let lo = *lo;
    let hi = if above > below {
        after.iter().copied().min_by(f64::total_cmp)?
    } else {
        lo
    };
    Some(lo + (hi - lo) * (rank - below as f64))
}

/// How long something took, over a set of incidents: count, median and 90th percentile in
/// whole seconds (None when nothing was measured: an empty period is not a zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Times {
    pub count: usize,
    pub median_seconds: Option<i64>,
    pub p90_seconds: Option<i64>,
}

impl Times {
    /// The figures of `seconds` (in any order).
    pub fn of(mut seconds: Vec<f64>) -> Times {
        let round = |v: Option<f64>| v.map(|v| v.round() as i64);
        Times {
            count: seconds.len(),
            median_seconds: round(percentile_unsorted(&mut seconds, 50.0)),
            p90_seconds: round(percentile_unsorted(&mut seconds, 90.0)),
        }
    }
}

/// `part` of `whole` as a fraction (None for an empty whole, never a division by zero).
pub fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 90.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 50.0), Some(3.0));
        // rank 0.9 * 9 = 8.1 between the 9th (90) and 10th (100) values.
        let tens: Vec<f64> = (1..=10).map(|i| f64::from(i) * 10.0).collect();
        let p90 = percentile(&tens, 90.0).expect("p90");
        assert!((p90 - 91.0).abs() < 1e-9, "{p90}");
        assert_eq!(percentile(&tens, 0.0), Some(10.0));
        assert_eq!(percentile(&tens, 100.0), Some(100.0));
    }

    #[test]
    fn percentiles_of_unsorted_values_are_those_of_the_sorted() {
        // Ties, one value, two, odd and even counts, the ends, a rank between two values.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f64 / 16.0
        };
        for n in [1usize, 2, 3, 10, 11, 101, 1000] {
            let values: Vec<f64> = (0..n).map(|_| next()).collect();
            let mut sorted = values.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            for p in [0.0, 10.0, 50.0, 90.0, 99.0, 100.0] {
                let mut shuffled = values.clone();
                assert_eq!(
                    percentile_unsorted(&mut shuffled, p),
                    percentile(&sorted, p),
                    "n={n} p={p}"
                );
            }
        }
        assert_eq!(percentile_unsorted(&mut [], 50.0), None);
        assert_eq!(percentile_unsorted(&mut [3.0, 3.0, 1.0], 90.0), Some(3.0));
    }

    #[test]
    fn times_sort_their_input_and_round_to_seconds() {
        let t = Times::of(vec![600.0, 60.0, 3600.0, 120.0]);
        assert_eq!(t.count, 4);
        assert_eq!(t.median_seconds, Some(360));
        // rank 2.7: 600 + 0.7 * 3000 = 2700.
        assert_eq!(t.p90_seconds, Some(2700));
        assert_eq!(
            Times::of(Vec::new()),
            Times {
                count: 0,
                median_seconds: None,
                p90_seconds: None
            }
        );
        assert_eq!(ratio(1, 4), Some(0.25));
        assert_eq!(ratio(0, 0), None);
    }
}
