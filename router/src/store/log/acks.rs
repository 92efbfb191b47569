//! Which of a bus log's events one subscription is done with.
//!
//! A subscription settles events (delivered, dead-lettered, moved to a retry
//! further down the log) mostly in order, but not exactly: deliveries run
//! concurrently and a slow one finishes after faster ones behind it. The state is
//! an ack floor (every sequence number below it is settled) and a bitmap of the
//! settled ones above it, 64 per word. The floor is what lets the log delete a
//! segment; the bitmap stays as small as the disorder: a word per 64 numbers
//! between the floor and the furthest settled one, dropped as the floor passes.

use std::collections::BTreeMap;

/// A subscription's settled sequence numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acks {
    floor: u64,
    /// word number (seq / 64) -> bit per seq; only words above the floor's.
    words: BTreeMap<u64, u64>,
}

impl Acks {
    /// Everything below `floor` settled, nothing above.
    pub fn new(floor: u64) -> Self {
        Self {
            floor,
            words: BTreeMap::new(),
        }
    }

    /// The first sequence number not settled.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn is_settled(&self, seq: u64) -> bool {
        seq < self.floor
            || self
                .words
                .get(&(seq / 64))
                .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Mark `seq` settled; false if it already was.
    pub fn settle(&mut self, seq: u64) -> bool {
        if self.is_settled(seq) {
            return false;
        }
        *self.words.entry(seq / 64).or_insert(0) |= 1 << (seq % 64);
        if seq == self.floor {
            self.advance();
        }
        true
    }

    /// Settle every number in `from..to`: events of the log this subscription
    /// does not take, skipped in one step when the range starts at the floor
    /// (one at a time above it).
    pub fn settle_range(&mut self, from: u64, to: u64) {
        if to <= self.floor {
            return;
        }
        if from <= self.floor {
            // The common case: the range starts at the floor.
            self.floor = to;
            self.advance();
            return;
        }
        for seq in from..to {
            self.settle(seq);
        }
    }

    /// Move the floor past the settled numbers at it, a word at a time.
    fn advance(&mut self) {
        loop {
            let word_no = self.floor / 64;
            // Words wholly below the floor are done.
            while let Some((&w, _)) = self.words.first_key_value() {
                if w >= word_no {
                    break;
                }
                self.words.pop_first();
            }
            let Some(&word) = self.words.get(&word_no) else {
                return;
            };
            let bit = self.floor % 64;
            // Settled bits from `bit` up, as a run of ones.
            let run = u64::from((word >> bit).trailing_ones()).min(64 - bit);
            if run == 0 {
                return;
            }
            self.floor += run;
            let below = self.floor % 64;
            if below == 0 {
                self.words.remove(&word_no);
                continue;
            }
            // Keep only the bits above the floor; none left, no word.
            let rest = word & !((1u64 << below) - 1);
            if rest == 0 {
                self.words.remove(&word_no);
            } else {
                self.words.insert(word_no, rest);
            }
            return;
        }
    }

    /// Settled numbers above the floor.
    pub fn settled_above(&self) -> u64 {
        let floor_word = self.floor / 64;
        self.words
            .iter()
            .map(|(&w, &bits)| {
                let bits = if w == floor_word {
                    bits & !((1u64 << (self.floor % 64)) - 1)
                } else {
                    bits
                };
                u64::from(bits.count_ones())
            })
            .sum()
    }

    /// Words of bitmap held (memory: about 40 bytes each in the tree).
    pub fn words(&self) -> usize {
        self.words.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_settles_move_the_floor_and_keep_no_bitmap() {
        let mut a = Acks::new(1);
        for seq in 1..10_000 {
            assert!(a.settle(seq));
        }
        assert_eq!(a.floor(), 10_000);
        assert_eq!(a.words(), 0);
        assert!(!a.settle(5));
    }

    #[test]
    fn out_of_order_settles_wait_for_the_gap_then_move_together() {
        let mut a = Acks::new(100);
        for seq in 101..300 {
            a.settle(seq);
        }
        assert_eq!((a.floor(), a.settled_above()), (100, 199));
        assert!(a.is_settled(250) && !a.is_settled(100) && !a.is_settled(300));
        a.settle(100);
        assert_eq!((a.floor(), a.settled_above(), a.words()), (300, 0, 0));
    }

    #[test]
    fn skipped_ranges_settle_in_one_step() {
        let mut a = Acks::new(1);
        a.settle_range(1, 1_000_000);
        assert_eq!(a.floor(), 1_000_000);
        a.settle(1_000_005);
        a.settle_range(1_000_001, 1_000_003);
        assert_eq!(a.floor(), 1_000_000);
        a.settle_range(1_000_000, 1_000_001);
        assert_eq!(a.floor(), 1_000_003);
        a.settle_range(1_000_003, 1_000_005);
        assert_eq!(a.floor(), 1_000_006);
    }

    /// Against a plain set, in random orders.
    #[test]
    fn any_order_agrees_with_a_set() {
        use rand::seq::SliceRandom;
        let mut rng = rand::thread_rng();
        for _ in 0..50 {
            let mut seqs: Vec<u64> = (7..1_500).collect();
            // Settle a shuffled window at a time, as concurrent deliveries do.
            for chunk in seqs.chunks_mut(200) {
                chunk.shuffle(&mut rng);
            }
            let mut a = Acks::new(7);
            let mut set = std::collections::HashSet::new();
            let mut floor = 7;
            for &seq in &seqs {
                a.settle(seq);
                set.insert(seq);
                while set.contains(&floor) {
                    floor += 1;
                }
                assert_eq!(a.floor(), floor);
                assert_eq!(a.settled_above(), set.len() as u64 - (floor - 7));
            }
            assert_eq!(a.words(), 0);
        }
    }
}
