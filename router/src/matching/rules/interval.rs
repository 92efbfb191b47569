//! A static centered interval tree: which numeric ranges contain a number, in
//! O(log n + hits), for the `numeric` matchers of a bus's rules.

/// A numeric range with inclusive or exclusive ends; infinite ends for one-sided ranges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub lo: f64,
    pub lo_incl: bool,
    pub hi: f64,
    pub hi_incl: bool,
}

impl Range {
    pub fn contains(&self, x: f64) -> bool {
        let above = if self.lo_incl {
            x >= self.lo
        } else {
            x > self.lo
        };
        let below = if self.hi_incl {
            x <= self.hi
        } else {
            x < self.hi
        };
        above && below
    }
}

struct Node {
    center: f64,
    /// Ranges containing `center`, sorted by `lo` ascending.
    by_lo: Vec<(Range, u32)>,
    /// The same ranges, sorted by `hi` descending.
    by_hi: Vec<(Range, u32)>,
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

/// Ranges tagged with a value (a branch id), queried by point.
#[derive(Default)]
pub struct IntervalIndex {
    pending: Vec<(Range, u32)>,
    root: Option<Box<Node>>,
}

impl IntervalIndex {
    pub fn insert(&mut self, range: Range, tag: u32) {
        self.pending.push((range, tag));
    }

    /// Build the tree from everything inserted; call once after the inserts.
    pub fn build(&mut self) {
        let items = std::mem::take(&mut self.pending);
        self.root = build(items);
    }

    /// Push the tag of every range containing `x`.
    pub fn stab(&self, x: f64, out: &mut Vec<u32>) {
        if x.is_nan() {
            return;
        }
        let mut node = self.root.as_deref();
        while let Some(n) = node {
            if x < n.center {
                for (r, tag) in &n.by_lo {
                    if r.lo > x {
                        break;
                    }
                    if r.contains(x) {
                        out.push(*tag);
                    }
                }
                node = n.left.as_deref();
            } else {
                for (r, tag) in &n.by_hi {
                    if r.hi < x {
                        break;
                    }
                    if r.contains(x) {
                        out.push(*tag);
                    }
                }
                node = n.right.as_deref();
            }
        }
    }
}

/// Build iteratively balanced: the center is the median of the finite endpoints,
/// so depth stays logarithmic. Recursion depth is bounded by that depth.
fn build(items: Vec<(Range, u32)>) -> Option<Box<Node>> {
    if items.is_empty() {
        return None;
    }
    let mut points: Vec<f64> = items
        .iter()
        .flat_map(|(r, _)| [r.lo, r.hi])
        .filter(|p| p.is_finite())
        .collect();
    points.sort_by(f64::total_cmp);
    let center = points.get(points.len() / 2).copied().unwrap_or(0.0);
    let (mut here, mut left, mut right) = (Vec::new(), Vec::new(), Vec::new());
    for item in items {
        let r = item.0;
        if r.hi < center || (r.hi == center && !r.hi_incl) {
            left.push(item);
        } else if r.lo > center || (r.lo == center && !r.lo_incl) {
            right.push(item);
        } else {
            here.push(item);
        }
    }
    // Every range lies left of, right of, or across the center; when nothing
    // crosses it and one side holds everything, split that side at its own median
    // next round — it has strictly fewer distinct endpoints on one side.
    let mut by_lo = here.clone();
    by_lo.sort_by(|a, b| a.0.lo.total_cmp(&b.0.lo));
    let mut by_hi = here;
    by_hi.sort_by(|a, b| b.0.hi.total_cmp(&a.0.hi));
    let stuck = by_lo.is_empty() && (left.is_empty() || right.is_empty());
    if stuck {
        // Degenerate: all ranges on one side of a center equal to their endpoint
        // (e.g. all `> c`). Put them here; queries still check `contains`.
        let all: Vec<_> = left.into_iter().chain(right).collect();
        let mut by_lo = all.clone();
        by_lo.sort_by(|a, b| a.0.lo.total_cmp(&b.0.lo));
        let mut by_hi = all;
        by_hi.sort_by(|a, b| b.0.hi.total_cmp(&a.0.hi));
        return Some(Box::new(Node {
            center: f64::NAN,
            by_lo,
            by_hi,
            left: None,
            right: None,
        }));
    }
    Some(Box::new(Node {
        center,
        by_lo,
        by_hi,
        left: build(left),
        right: build(right),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(lo: f64, lo_incl: bool, hi: f64, hi_incl: bool) -> Range {
        Range {
            lo,
            lo_incl,
            hi,
            hi_incl,
        }
    }

    proptest! {
        #[test]
        fn stabbing_agrees_with_a_scan(
            ranges in proptest::collection::vec((-50i32..50, 0i32..30, any::<bool>(), any::<bool>(), 0u8..4), 0..80),
            points in proptest::collection::vec(-60i32..90, 1..20),
        ) {
            let mut index = IntervalIndex::default();
            let mut all = Vec::new();
            for (i, (lo, width, li, hi_incl, kind)) in ranges.into_iter().enumerate() {
                let r = match kind {
                    0 => range(lo as f64, li, f64::INFINITY, false),
                    1 => range(f64::NEG_INFINITY, false, lo as f64, hi_incl),
                    2 => range(lo as f64, true, lo as f64, true),
                    _ => range(lo as f64, li, (lo + width) as f64, hi_incl),
                };
                index.insert(r, i as u32);
                all.push(r);
            }
            index.build();
            for p in points {
                let x = p as f64 / 2.0;
                let mut got = Vec::new();
                index.stab(x, &mut got);
                got.sort_unstable();
                let want: Vec<u32> = all.iter().enumerate().filter(|(_, r)| r.contains(x)).map(|(i, _)| i as u32).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
