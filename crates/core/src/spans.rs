//! Counted spans: disjoint half-open index ranges, each with a holder count and a value
//! that advances linearly along the range (`value(i) = base + (i − start) · stride`).
//!
//! Page stores use it for their pinned pages (index → physical address, stride PAGE_SIZE)
//! and the machine for its pin table (page frame → pin count). Both are dominated by long
//! runs with equal counts — a 1 GiB mapping is one span — so every operation costs
//! O(log n + spans touched) instead of O(pages), and memory is per run, not per page.

use std::collections::BTreeMap;

/// One span: `[start, end)` (start is the map key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub end: u64,
    pub count: u32,
    pub base: u64,
}

/// A set of disjoint counted spans.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpanMap {
    spans: BTreeMap<u64, Span>,
    /// Value advance per index.
    stride: u64,
}

impl SpanMap {
    pub fn new(stride: u64) -> SpanMap {
        SpanMap { spans: BTreeMap::new(), stride }
    }

    /// The span containing `i`: `(start, span)`.
    pub fn get(&self, i: u64) -> Option<(u64, Span)> {
        let (&s, &sp) = self.spans.range(..=i).next_back()?;
        (i < sp.end).then_some((s, sp))
    }

    /// Count and value at `i` (count 0 = not covered).
    pub fn at(&self, i: u64) -> (u32, u64) {
        match self.get(i) {
            Some((s, sp)) => (sp.count, sp.base + (i - s) * self.stride),
            None => (0, 0),
        }
    }

    /// Spans intersecting `[start, end)`, clipped to it: `(start, end, count, value at start)`.
    pub fn iter_range(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64, u32, u64)> + '_ {
        let first = self.get(start).map_or(start, |(s, _)| s);
        let stride = self.stride;
        self.spans.range(first..end).filter(move |(_, sp)| sp.end > start).map(move |(&s, sp)| {
            let lo = s.max(start);
            (lo, sp.end.min(end), sp.count, sp.base + (lo - s) * stride)
        })
    }

    /// Sub-ranges of `[start, end)` covered by no span.
    pub fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        for (s, e, _, _) in self.iter_range(start, end) {
            if s > at {
                out.push((at, s));
            }
            at = e;
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// Make `i` a span boundary (no span straddles it).
    fn split(&mut self, i: u64) {
        if let Some((s, sp)) = self.get(i) {
            if s < i {
                self.spans.insert(s, Span { end: i, ..sp });
                self.spans.insert(i, Span { end: sp.end, count: sp.count, base: sp.base + (i - s) * self.stride });
            }
        }
    }

    /// Insert an uncovered range with `count` and `base`.
    pub fn insert(&mut self, start: u64, end: u64, count: u32, base: u64) {
        debug_assert!(self.gaps(start, end) == vec![(start, end)], "insert over a span");
        self.spans.insert(start, Span { end, count, base });
    }

    /// Add `delta` to the count of every span in `[start, end)` (which must be fully
    /// covered); spans whose count drops to zero are removed and reported to `freed` as
    /// `(start, end, value at start)`.
    pub fn add(&mut self, start: u64, end: u64, delta: i32, freed: &mut dyn FnMut(u64, u64, u64)) {
        self.split(start);
        self.split(end);
        let keys: Vec<u64> = self.spans.range(start..end).map(|(&k, _)| k).collect();
        for k in keys {
            let sp = self.spans.get_mut(&k).expect("span");
            let c = sp.count as i64 + delta as i64;
            debug_assert!(c >= 0, "span count underflow");
            if c <= 0 {
                let sp = self.spans.remove(&k).expect("span");
                freed(k, sp.end, sp.base);
            } else {
                sp.count = c as u32;
            }
        }
        self.merge_around(start, end);
    }

    /// Merge neighbours with equal counts and continuing values around `[start, end]`.
    fn merge_around(&mut self, start: u64, end: u64) {
        let from = self.spans.range(..start).next_back().map_or(start, |(&k, _)| k);
        let keys: Vec<u64> = self.spans.range(from..=end).map(|(&k, _)| k).collect();
        let mut prev: Option<u64> = None;
        for k in keys {
            if let Some(p) = prev {
                let a = self.spans[&p];
                let b = self.spans[&k];
                if a.end == k && a.count == b.count && b.base == a.base + (k - p) * self.stride {
                    self.spans.remove(&k);
                    self.spans.get_mut(&p).expect("span").end = b.end;
                    continue;
                }
            }
            prev = Some(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a per-index model: counts, values and freed ranges agree.
        #[test]
        fn matches_per_index_model(ops in proptest::collection::vec((0u64..64, 1u64..16, any::<bool>()), 1..60)) {
            let mut m = SpanMap::new(4096);
            let mut model: Vec<(u32, u64)> = vec![(0, 0); 80];
            for (s, len, inc) in ops {
                let e = s + len;
                if inc {
                    for (gs, ge) in m.gaps(s, e) {
                        m.insert(gs, ge, 0, gs * 4096 + 7);
                        for i in gs..ge { model[i as usize].1 = i * 4096 + 7; }
                    }
                    m.add(s, e, 1, &mut |_, _, _| {});
                    for i in s..e { model[i as usize].0 += 1; }
                } else if (s..e).all(|i| model[i as usize].0 > 0) {
                    let mut freed = Vec::new();
                    m.add(s, e, -1, &mut |a, b, v| freed.push((a, b, v)));
                    for i in s..e { model[i as usize].0 -= 1; }
                    for (a, b, v) in freed {
                        prop_assert_eq!(v, a * 4096 + 7);
                        for i in a..b { prop_assert_eq!(model[i as usize].0, 0); }
                    }
                }
                for (i, &(c, v)) in model.iter().enumerate() {
                    let (mc, mv) = m.at(i as u64);
                    prop_assert_eq!(mc, c);
                    if c > 0 { prop_assert_eq!(mv, v); }
                }
                // Fully merged: no two adjacent spans could be one.
                let all: Vec<_> = m.iter_range(0, 100).collect();
                for w in all.windows(2) {
                    prop_assert!(!(w[0].1 == w[1].0 && w[0].2 == w[1].2 && w[1].3 == w[0].3 + (w[0].1 - w[0].0) * 4096));
                }
            }
        }
    }
}
