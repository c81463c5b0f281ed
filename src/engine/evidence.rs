//! Which events an incident keeps as evidence: the first and the last `EVIDENCE_KEEP`, however
//! long an attack goes on; `event_count` stays exact. The store trims with one statement; this
//! decides which of a batch's later hits are worth writing at all.

/// First and last this many events are kept as evidence per incident.
pub const EVIDENCE_KEEP: i64 = 10;

/// Of `later` hits added to an incident that already stores `stored` events, whether the hit at
/// `index` can be among the kept ones (the first `EVIDENCE_KEEP` overall, or the last
/// `EVIDENCE_KEEP` of the batch). The others would be trimmed at once: not writing them saves
/// the writes.
pub fn worth_storing(index: usize, later: usize, stored: i64) -> bool {
    let keep_first = (EVIDENCE_KEEP - stored).max(0) as usize;
    let keep_last = EVIDENCE_KEEP as usize;
    index < keep_first || index + keep_last >= later
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_head_and_the_tail_are_written() {
        let kept: Vec<usize> = (0..30).filter(|&i| worth_storing(i, 30, 7)).collect();
        assert_eq!(kept, [0, 1, 2, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]);
        // An incident that already holds its first ten only takes the tail.
        assert!(!worth_storing(0, 30, 10));
        assert!((0..5).all(|i| worth_storing(i, 5, 100)));
    }
}
