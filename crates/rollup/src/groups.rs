//! Group numbering. A rollup's cells name their group by number: applying
//! a batch hashes each row's dimension values once, into numbers, and only
//! a group's first event copies its text.

use crate::aggregate::GroupKey;
use tally_ingest::{Column, ColumnData};

/// Hash maps with a fast hasher (keys are the rollup's own data; ingest
/// is authenticated).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The values one group-by dimension has taken, numbered.
#[derive(Clone, Default)]
struct Dim {
    /// Text of up to 15 bytes, packed with its length -> value number
    /// (one integer compare instead of a byte compare).
    short: HashMap<u128, u32>,
    /// Longer text -> value number. A number is entered by its text (as
    /// group keys show it), so a number and the same text are one value.
    text: HashMap<Box<[u8]>, u32>,
    /// A number's bits -> value number (saves formatting it per row).
    nums: HashMap<u64, u32>,
    /// The number of "no such field".
    none: Option<u32>,
    values: Vec<Option<String>>,
}

/// Text of up to 15 bytes as one integer: the bytes, then the length.
fn pack(b: &[u8]) -> Option<u128> {
    (b.len() < 16).then(|| {
        let mut w = [0u8; 16];
        w[..b.len()].copy_from_slice(b);
        w[15] = b.len() as u8;
        u128::from_le_bytes(w)
    })
}

/// [`pack`] for `buf[from..to]`, reading 16 bytes at once where `buf`
/// has them (no copy of a variable length).
fn pack_in(buf: &[u8], from: usize, to: usize) -> Option<u128> {
    let len = to - from;
    if len >= 16 {
        return None;
    }
    match buf.get(from..from + 16) {
        Some(w) => {
            let w = u128::from_le_bytes(w.try_into().expect("16 bytes"));
            let mask = (1u128 << (8 * len)) - 1;
            Some((w & mask) | ((len as u128) << 120))
        }
        None => pack(&buf[from..to]),
    }
}

impl Dim {
    fn of_text(&mut self, b: &[u8]) -> u32 {
        self.of_packed(b, pack(b))
    }

    /// The number of text `b`, [`pack`]ed as `packed`.
    fn of_packed(&mut self, b: &[u8], packed: Option<u128>) -> u32 {
        let found = match packed {
            Some(p) => self.short.get(&p),
            None => self.text.get(b),
        };
        if let Some(&id) = found {
            return id;
        }
        let id = self.values.len() as u32;
        self.values
            .push(Some(String::from_utf8_lossy(b).into_owned()));
        match packed {
            Some(p) => self.short.insert(p, id),
            None => self.text.insert(b.into(), id),
        };
        id
    }

    fn of_number(&mut self, x: f64) -> u32 {
        if let Some(&id) = self.nums.get(&x.to_bits()) {
            return id;
        }
        let id = self.of_text(x.to_string().as_bytes());
        self.nums.insert(x.to_bits(), id);
        id
    }

    fn of_none(&mut self) -> u32 {
        *self.none.get_or_insert_with(|| {
            self.values.push(None);
            self.values.len() as u32 - 1
        })
    }

    /// The number of row `r`'s value in `col` (`None`: the batch has no
    /// such column).
    fn of_row(&mut self, col: Option<&Column>, r: usize) -> u32 {
        match col.map(|c| &c.data) {
            Some(ColumnData::Dim(s)) if s.valid[r] => {
                let (from, to) = (s.offsets[r] as usize, s.offsets[r + 1] as usize);
                let packed = pack_in(&s.bytes, from, to);
                if let Some(&id) = packed.and_then(|p| self.short.get(&p)) {
                    return id;
                }
                self.of_packed(&s.bytes[from..to], packed)
            }
            Some(ColumnData::Value(n)) if n.valid[r] => self.of_number(n.values[r]),
            _ => self.of_none(),
        }
    }

    fn of_key_value(&mut self, v: &Option<String>) -> u32 {
        match v {
            Some(s) => self.of_text(s.as_bytes()),
            None => self.of_none(),
        }
    }
}

fn pair(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// The groups of one rollup: group number <-> key.
#[derive(Clone)]
pub(crate) struct Groups {
    dims: Vec<Dim>,
    /// With two dimensions: both value numbers as one integer -> group
    /// number.
    pairs: HashMap<u64, u32>,
    /// With more: value numbers (one per dimension) -> group number.
    ids: HashMap<Box<[u32]>, u32>,
    /// With one dimension: value number -> group number (`u32::MAX`: none
    /// yet), saving the lookup in `ids`.
    single: Vec<u32>,
    keys: Vec<GroupKey>,
}

impl Groups {
    pub(crate) fn new(dimensions: usize) -> Groups {
        Groups {
            dims: vec![Dim::default(); dimensions],
            pairs: HashMap::default(),
            ids: HashMap::default(),
            single: Vec::new(),
            keys: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn key(&self, group: u32) -> &GroupKey {
        &self.keys[group as usize]
    }

    /// The group number of each of `rows` (`cols`: the batch's group-by
    /// columns, in the definition's order).
    pub(crate) fn of_rows(&mut self, cols: &[Option<&Column>], rows: &[u32]) -> Vec<u32> {
        let mut vids = vec![0u32; self.dims.len()];
        rows.iter()
            .map(|&r| {
                for ((v, dim), col) in vids.iter_mut().zip(&mut self.dims).zip(cols) {
                    *v = dim.of_row(*col, r as usize);
                }
                self.of_ids(&vids)
            })
            .collect()
    }

    /// The number of the group `key` (entered if new).
    pub(crate) fn of_key(&mut self, key: &GroupKey) -> u32 {
        let vids: Vec<u32> = key
            .iter()
            .zip(&mut self.dims)
            .map(|(v, dim)| dim.of_key_value(v))
            .collect();
        self.of_ids(&vids)
    }

    fn of_ids(&mut self, vids: &[u32]) -> u32 {
        let found = match vids {
            [v] => self.single.get(*v as usize).filter(|g| **g != u32::MAX),
            [a, b] => self.pairs.get(&pair(*a, *b)),
            _ => self.ids.get(vids),
        };
        if let Some(&g) = found {
            return g;
        }
        let g = self.keys.len() as u32;
        let key = vids
            .iter()
            .zip(&self.dims)
            .map(|(v, dim)| dim.values[*v as usize].clone())
            .collect();
        self.keys.push(key);
        match vids {
            [v] => {
                let v = *v as usize;
                if self.single.len() <= v {
                    self.single.resize(v + 1, u32::MAX);
                }
                self.single[v] = g;
            }
            [a, b] => {
                self.pairs.insert(pair(*a, *b), g);
            }
            _ => {
                self.ids.insert(vids.into(), g);
            }
        }
        g
    }

    /// Keeps only the groups in `live` (ascending), renumbered in that
    /// order: returns old number -> new number (`u32::MAX`: gone).
    pub(crate) fn keep(&mut self, live: &[u32]) -> Vec<u32> {
        let mut kept = Groups::new(self.dims.len());
        let mut renumber = vec![u32::MAX; self.keys.len()];
        for &g in live {
            renumber[g as usize] = kept.of_key(&self.keys[g as usize]);
        }
        *self = kept;
        renumber
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_in_place_equals_packing_a_copy() {
        let buf: Vec<u8> = (0..40u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(1))
            .collect();
        for from in 0..buf.len() {
            for to in from..buf.len().min(from + 20) {
                assert_eq!(
                    pack_in(&buf, from, to),
                    pack(&buf[from..to]),
                    "{from}..{to}"
                );
            }
        }
        // Texts that differ only by trailing zero bytes or length differ.
        assert_ne!(pack(b"a"), pack(b"a\0"));
        assert_eq!(pack(&[7u8; 16]), None);
    }
}
