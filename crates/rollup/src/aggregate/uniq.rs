//! Unique counts: HyperLogLog sketches and their union, kept exact while
//! sets are small and folded into plain registers once they are not.

use super::*;
use datasketches::hll::{HllSketch, HllType, HllUnion};

/// Registers of an HLL sketch of [`HLL_LG_K`].
const HLL_REGISTERS: usize = 1 << HLL_LG_K;
/// The DataSketches image of an array-mode HLL8 sketch: a 40-byte preamble,
/// then one byte per register.
const HLL_PREAMBLE: usize = 40;
/// Its mode byte: current mode HLL (2), target type HLL8 (2).
const HLL8_ARRAY_MODE: u8 = 2 | (2 << 2);
/// Its flag "out of order": the estimate comes from the registers alone
/// (the in-order HIP estimate does not survive a merge).
const HLL_OUT_OF_ORDER: u8 = 16;

/// A union of HLL sketches for a query. The library's union recomputes its
/// estimator over all 4,096 registers at every dense merge and keeps it
/// current at every hash merged; a query merges thousands of sketches (a
/// breakdown: groups × days). So the union takes sparse sketches only while
/// they are few and small (small sets stay exact counts), and a dense
/// sketch alone is kept as it came; past [`UNION_WORK`] hashes, or once a
/// dense sketch has company, everything is folded into plain registers
/// (the register-wise maximum, as the union's own) and the estimator runs
/// once, when the value is read.
#[derive(Clone)]
pub struct UniqAcc {
    union: HllUnion,
    /// Hashes handed to the union so far.
    work: usize,
    /// A lone dense sketch, as it came (its in-order estimate kept).
    first: Option<HllSketch>,
    /// The registers of everything added, once past the union (empty
    /// before).
    registers: Vec<u8>,
}

/// Sparse sketches of up to this many hashes in all go to the library's
/// union (it turns dense past 384 distinct hashes; below, a count is
/// exact); anything beside a dense sketch sends everything to the
/// registers.
const UNION_WORK: usize = HLL_REGISTERS / 4;

impl Default for UniqAcc {
    fn default() -> UniqAcc {
        UniqAcc {
            union: HllUnion::new(HLL_LG_K).expect("valid lg_k"),
            work: 0,
            first: None,
            registers: Vec::new(),
        }
    }
}

impl UniqAcc {
    fn is_empty(&self) -> bool {
        self.work == 0 && self.first.is_none() && self.registers.is_empty()
    }

    pub fn add(&mut self, h: &HllSketch) {
        if h.is_empty() {
            return;
        }
        let image = h.serialize();
        if self.registers.is_empty() {
            let dense = dense_registers(&image).is_some();
            if dense && self.is_empty() {
                self.first = Some(h.clone());
                return;
            }
            if !dense && self.first.is_none() && self.work + image.len() / 4 < UNION_WORK {
                self.union.update(h);
                self.work += image.len() / 4;
                return;
            }
            self.leave_union();
        }
        if !fold_image(&mut self.registers, &image) {
            self.union.update(h);
        }
    }

    /// Moves the union's and the lone sketch's registers into `registers`,
    /// where the rest goes.
    fn leave_union(&mut self) {
        let mut registers = std::mem::take(&mut self.registers);
        registers.resize(HLL_REGISTERS, 0);
        if self.work > 0 {
            let image = self.union.to_sketch(HllType::Hll8).serialize();
            if fold_image(&mut registers, &image) {
                self.union = HllUnion::new(HLL_LG_K).expect("valid lg_k");
            }
            // (A union the registers cannot take stays, merged when read.)
        }
        if let Some(first) = self.first.take() {
            fold_image(&mut registers, &first.serialize());
        }
        self.registers = registers;
        self.work = 0;
    }

    /// Folds `other` into this union.
    pub fn absorb(&mut self, other: &UniqAcc) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other.clone();
            return;
        }
        let unions_only = self.first.is_none() && other.first.is_none();
        if unions_only && self.registers.is_empty() && other.registers.is_empty() {
            self.union.update(&other.union.to_sketch(HllType::Hll8));
            self.work += other.work;
            if self.work >= UNION_WORK {
                self.leave_union();
            }
            return;
        }
        if self.registers.is_empty() {
            self.leave_union();
        }
        max_into(&mut self.registers, &other.registers);
        if let Some(first) = &other.first {
            fold_image(&mut self.registers, &first.serialize());
        }
        let theirs = other.union.to_sketch(HllType::Hll8);
        if !theirs.is_empty() && !fold_image(&mut self.registers, &theirs.serialize()) {
            self.union.update(&theirs);
        }
    }

    /// The union of every sketch added.
    pub fn to_sketch(&self) -> HllSketch {
        if let Some(first) = &self.first {
            return first.clone(); // alone: anything more leaves the union
        }
        if self.registers.is_empty() {
            return self.union.to_sketch(HllType::Hll8);
        }
        let dense = HllSketch::deserialize(&dense_image(&self.registers))
            .expect("a dense HLL8 image decodes");
        if self.union.estimate() == 0.0 {
            return dense;
        }
        let mut union = self.union.clone();
        union.update(&dense);
        union.to_sketch(HllType::Hll8)
    }
}

/// Folds a serialized sketch of [`HLL_LG_K`] into `registers`: a dense
/// HLL8 sketch's registers, or a sparse one's hashes. False (nothing
/// folded) for another kind of image.
fn fold_image(registers: &mut [u8], image: &[u8]) -> bool {
    match dense_registers(image) {
        Some(regs) => {
            max_into(registers, regs);
            true
        }
        None => add_coupons(registers, image),
    }
}

/// The registers of a serialized sketch when it is a dense HLL8 sketch of
/// [`HLL_LG_K`].
pub(super) fn dense_registers(image: &[u8]) -> Option<&[u8]> {
    let dense = image.len() == HLL_PREAMBLE + HLL_REGISTERS
        && image[3] == HLL_LG_K
        && image[7] == HLL8_ARRAY_MODE;
    dense.then(|| &image[HLL_PREAMBLE..])
}

/// Folds the hashes of a serialized sparse sketch of [`HLL_LG_K`] (a list
/// or set of coupons) into `registers`, as the library's dense sketch takes
/// a coupon: its register is the low bits of the coupon's 26-bit address,
/// its value the top six bits. False (nothing folded) for another image.
fn add_coupons(registers: &mut [u8], image: &[u8]) -> bool {
    let start = match image.get(7).map(|m| m & 3) {
        _ if image.len() < 8 || image[3] != HLL_LG_K => return false,
        Some(0) => 8,  // list: an 8-byte preamble
        Some(1) => 12, // set: the preamble and a count
        _ => return false,
    };
    let Some(coupons) = image.get(start..) else {
        return false;
    };
    for c in coupons.chunks_exact(4) {
        let c = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let (slot, value) = (c as usize & (HLL_REGISTERS - 1), (c >> 26) as u8);
        if value > registers[slot] {
            registers[slot] = value;
        }
    }
    true
}

fn max_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = (*d).max(*s);
    }
}

/// The serialized dense HLL8 sketch of `registers`, flagged out of order,
/// with the register sums its estimator reads (as the library computes
/// them).
fn dense_image(registers: &[u8]) -> Vec<u8> {
    let (mut kxq0, mut kxq1, mut zeros) = (0.0f64, 0.0f64, 0u32);
    for &v in registers {
        match v {
            0 => {
                zeros += 1;
                kxq0 += 1.0;
            }
            1..=31 => kxq0 += 1.0 / (1u64 << v) as f64,
            _ => kxq1 += 1.0 / (1u64 << v.min(63)) as f64,
        }
    }
    let mut out = Vec::with_capacity(HLL_PREAMBLE + registers.len());
    // Preamble ints, serial version, family (HLL), lg_k, lg_arr (unused),
    // flags, current minimum (0 for HLL8), mode.
    out.extend_from_slice(&[10, 1, 7, HLL_LG_K, 0, HLL_OUT_OF_ORDER, 0, HLL8_ARRAY_MODE]);
    out.extend_from_slice(&0f64.to_le_bytes()); // HIP accumulator
    out.extend_from_slice(&kxq0.to_le_bytes());
    out.extend_from_slice(&kxq1.to_le_bytes());
    out.extend_from_slice(&zeros.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // auxiliary entries
    out.extend_from_slice(registers);
    out
}

pub(super) fn new_hll() -> HllSketch {
    HllSketch::new(HLL_LG_K, HllType::Hll8).expect("valid lg_k")
}

#[cfg(test)]
mod tests {
    use super::*;
    use datasketches::hll::{HllSketch, HllType, HllUnion};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// A sketch of `n` random values: sparse (a list or set of hashes) for
    /// small `n`, dense beyond.
    fn sketch(rng: &mut StdRng, n: usize) -> HllSketch {
        let mut h = new_hll();
        for _ in 0..n {
            h.update(rng.random::<u64>());
        }
        h
    }

    fn registers(h: &HllSketch) -> Option<Vec<u8>> {
        dense_registers(&h.serialize()).map(<[u8]>::to_vec)
    }

    /// Folding sketches through `UniqAcc` (in one accumulator, or split
    /// over two and absorbed) gives the union the library computes from
    /// the same sketches: the same registers, and the same estimate.
    #[test]
    fn uniq_acc_equals_the_librarys_union() {
        let mut rng = StdRng::seed_from_u64(7);
        let sizes: &[&[usize]] = &[
            &[],
            &[3],
            &[5, 40, 0],
            &[20_000],
            &[20_000, 7],
            &[9, 20_000],
            &[20_000, 30_000],
            &[3_000, 20_000, 12, 500, 50_000, 1],
            &[200, 300, 400, 100, 250],
            // Many sparse sketches: past the union's share of the work.
            &[350; 30],
            &[
                350, 350, 20_000, 350, 350, 350, 350, 350, 350, 350, 350, 350, 350, 350, 350,
            ],
        ];
        for (case, sizes) in sizes.iter().enumerate() {
            for _ in 0..5 {
                let sketches: Vec<HllSketch> = sizes.iter().map(|n| sketch(&mut rng, *n)).collect();
                let mut lib = HllUnion::new(HLL_LG_K).unwrap();
                let mut one = UniqAcc::default();
                let (mut left, mut right) = (UniqAcc::default(), UniqAcc::default());
                for (i, h) in sketches.iter().enumerate() {
                    lib.update(h);
                    one.add(h);
                    if i % 2 == 0 {
                        left.add(h)
                    } else {
                        right.add(h)
                    }
                }
                left.absorb(&right);
                let want = lib.to_sketch(HllType::Hll8);
                let dense = sketches.iter().filter(|h| registers(h).is_some()).count();
                // Random 64-bit values: all distinct.
                let exact: usize = sizes.iter().sum();
                for got in [one.to_sketch(), left.to_sketch()] {
                    assert_eq!(registers(&got), registers(&want), "case {case}: registers");
                    let (g, w) = (got.estimate(), want.estimate());
                    if dense >= 2 || exact < 300 || sizes.len() == 1 {
                        // Both estimate from the registers alone (two or
                        // more dense sketches), or both hold the exact
                        // hashes, or one sketch as it came.
                        assert!(
                            (g - w).abs() <= 1e-9 * w.max(1.0),
                            "case {case}: {g} vs {w}"
                        );
                    } else {
                        // The library keeps its in-order estimate (HIP)
                        // where the registers' may differ a little: both
                        // within the sketch's error of the exact count.
                        let e = exact as f64;
                        assert!((g - e).abs() <= 0.05 * e, "case {case}: {g} vs {exact}");
                    }
                }
            }
        }
    }

    /// An accumulator merged from many dense sketches of overlapping sets
    /// estimates their union within the sketch's error.
    #[test]
    fn uniq_acc_estimates_a_union_of_overlapping_sets() {
        let mut acc = UniqAcc::default();
        for day in 0..30u64 {
            let mut h = new_hll();
            // 30 days of 20,000 values each, half of them shared by all.
            for v in 0..10_000u64 {
                h.update(v);
                h.update(1_000_000 * (day + 1) + v);
            }
            acc.add(&h);
        }
        let est = acc.to_sketch().estimate();
        let exact = 10_000.0 + 30.0 * 10_000.0;
        assert!((est - exact).abs() < 0.05 * exact, "{est} vs {exact}");
    }
}
