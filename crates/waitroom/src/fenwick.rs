//! An appendable Fenwick (binary indexed) tree of 0/1 counts: who is still waiting at each
//! place in queue order. Appending, removing and "how many are waiting up to here" are all
//! O(log n), which is what makes a position lookup O(log n) in a million-fan queue. No crate
//! offers the append (a queue only ever grows at the back), and it is a dozen lines.

#[derive(Debug, Default)]
pub(crate) struct Fenwick {
    /// 1-based: `tree[i]` sums the counts of places `(i - lowbit(i), i]`; `tree[0]` is unused.
    tree: Vec<u32>,
}

fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

impl Fenwick {
    pub(crate) fn new() -> Self {
        Fenwick { tree: vec![0] }
    }

    pub(crate) fn len(&self) -> usize {
        self.tree.len() - 1
    }

    /// Appends a place holding `count` (0 or 1); returns its 0-based index.
    pub(crate) fn push(&mut self, count: u32) -> usize {
        let i = self.tree.len();
        let covered = self.prefix(i - 1) - self.prefix(i - lowbit(i));
        self.tree.push(covered + count);
        i - 1
    }

    /// Sets the place at 0-based `index` from 1 to 0.
    pub(crate) fn remove(&mut self, index: usize) {
        let mut i = index + 1;
        while i < self.tree.len() {
            self.tree[i] -= 1;
            i += lowbit(i);
        }
    }

    /// The sum of the first `n` places.
    pub(crate) fn prefix(&self, n: usize) -> u32 {
        let mut i = n.min(self.len());
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= lowbit(i);
        }
        sum
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.tree.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prefix_sums_match_a_plain_vector(
            ops in proptest::collection::vec((any::<bool>(), any::<u16>()), 1..400)
        ) {
            let mut tree = Fenwick::new();
            let mut plain: Vec<u32> = Vec::new();
            for (append, at) in ops {
                if append || plain.is_empty() {
                    tree.push(1);
                    plain.push(1);
                } else {
                    let index = usize::from(at) % plain.len();
                    if plain[index] == 1 {
                        tree.remove(index);
                        plain[index] = 0;
                    }
                }
                for n in 0..=plain.len() {
                    prop_assert_eq!(tree.prefix(n), plain[..n].iter().sum::<u32>());
                }
            }
        }
    }
}
