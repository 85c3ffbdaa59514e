//! A tail partition as a segment's record batch: rows sorted by `ts`, built
//! from the partition's own columns in one pass each.
//!
//! Events arrive in any time order, so a flush sorts. Sorting a record
//! batch (`take`) copies every string to its new place, at random: on
//! 1 M page views with times spread over an hour that copy was a third
//! of the flush. Here a text column whose values repeat becomes a
//! dictionary first (each value hashed once, in the order the rows are
//! held), and sorting moves its 4-byte keys only. The Parquet file is the
//! same as before: the writer dictionary-encodes text either way, and
//! [`crate::segment::write_segment`] records the columns as plain text.

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::Int32Type;
use std::collections::HashMap;
use std::sync::Arc;
use tally_ingest::{ColumnData, NumColumn, StrColumn};

/// A text column stays plain when it holds more distinct values than
/// this share of its rows (an id per event: a dictionary would only add
/// a hash per row), and at least this many distinct values.
const DICT_MAX_DISTINCT_DIVISOR: usize = 2;
const DICT_MIN_DISTINCT_LIMIT: usize = 1024;

/// The order that sorts `ts` (ties keep their order), or `None` when it is
/// already sorted.
pub(crate) fn sort_order(ts: &[i64]) -> Option<Vec<u32>> {
    if ts.windows(2).all(|w| w[0] <= w[1]) {
        return None;
    }
    let (lo, hi) = ts
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    // A partition spans an hour (3.6e9 µs < 2^32): each row's time offset
    // and position pack into one u64, and sorting those is sorting by time,
    // ties in order. Wider spans sort (time, position) pairs.
    if (hi as i128 - lo as i128) < (1 << 32) && ts.len() <= u32::MAX as usize {
        let mut keys: Vec<u64> = ts
            .iter()
            .enumerate()
            .map(|(i, &t)| ((t - lo) as u64) << 32 | i as u64)
            .collect();
        keys.sort_unstable();
        return Some(keys.into_iter().map(|k| k as u32).collect());
    }
    let mut pairs: Vec<(i64, u32)> = ts.iter().enumerate().map(|(i, &t)| (t, i as u32)).collect();
    pairs.sort_unstable();
    Some(pairs.into_iter().map(|(_, i)| i).collect())
}

/// `ts` in `order` as the segment's time column.
pub(crate) fn ts_array(ts: &[i64], order: Option<&[u32]>) -> ArrayRef {
    let values = match order {
        Some(o) => o.iter().map(|&i| ts[i as usize]).collect(),
        None => ts.to_vec(),
    };
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

/// One column's rows in `order` (all rows as held when `None`).
pub(crate) fn column_array(data: &ColumnData, order: Option<&[u32]>) -> ArrayRef {
    match data {
        ColumnData::Value(v) => values(v, order),
        ColumnData::Dim(s) => match dictionary(s, order) {
            Some(d) => d,
            None => strings(s, order),
        },
    }
}

fn values(v: &NumColumn, order: Option<&[u32]>) -> ArrayRef {
    let (values, valid): (Vec<f64>, Vec<bool>) = match order {
        Some(o) => o
            .iter()
            .map(|&i| (v.values[i as usize], v.valid[i as usize]))
            .unzip(),
        None => (v.values.clone(), v.valid.clone()),
    };
    Arc::new(Float64Array::new(
        ScalarBuffer::from(values),
        null_buffer(valid),
    ))
}

/// The column as a dictionary in `order`, or `None` when its values
/// hardly repeat.
fn dictionary(s: &StrColumn, order: Option<&[u32]>) -> Option<ArrayRef> {
    let n = s.len();
    let limit = (n / DICT_MAX_DISTINCT_DIVISOR).max(DICT_MIN_DISTINCT_LIMIT);
    // Values are looked up as slices of the column's own bytes.
    let mut index: HashMap<&[u8], i32, foldhash::fast::FixedState> = HashMap::default();
    let mut distinct: Vec<&[u8]> = Vec::new();
    let mut keys: Vec<i32> = Vec::with_capacity(n);
    for i in 0..n {
        if !s.valid[i] {
            keys.push(0);
            continue;
        }
        let value = &s.bytes[s.offsets[i] as usize..s.offsets[i + 1] as usize];
        let key = *index.entry(value).or_insert_with(|| {
            distinct.push(value);
            distinct.len() as i32 - 1
        });
        if distinct.len() > limit {
            return None;
        }
        keys.push(key);
    }
    let (keys, valid): (Vec<i32>, Vec<bool>) = match order {
        Some(o) => o
            .iter()
            .map(|&i| (keys[i as usize], s.valid[i as usize]))
            .unzip(),
        None => (keys, s.valid.clone()),
    };
    let mut offsets: Vec<i32> = Vec::with_capacity(distinct.len() + 1);
    offsets.push(0);
    let mut bytes = Vec::new();
    for v in &distinct {
        bytes.extend_from_slice(v);
        offsets.push(bytes.len() as i32);
    }
    // Every value was pushed as a whole `&str`.
    let values = StringArray::try_new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        arrow::buffer::Buffer::from_vec(bytes),
        None,
    )
    .ok()?;
    let keys = Int32Array::new(ScalarBuffer::from(keys), null_buffer(valid));
    let dict = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).ok()?;
    Some(Arc::new(dict))
}

/// The column as plain text in `order`: one copy of each value.
fn strings(s: &StrColumn, order: Option<&[u32]>) -> ArrayRef {
    let n = s.len();
    let rows: Box<dyn Iterator<Item = usize>> = match order {
        Some(o) => Box::new(o.iter().map(|&i| i as usize)),
        None => Box::new(0..n),
    };
    let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
    let mut bytes: Vec<u8> = Vec::with_capacity(s.bytes.len());
    let mut valid: Vec<bool> = Vec::with_capacity(n);
    offsets.push(0);
    for i in rows {
        let (a, b) = (s.offsets[i] as usize, s.offsets[i + 1] as usize);
        bytes.extend_from_slice(&s.bytes[a..b]);
        offsets.push(bytes.len() as i32);
        valid.push(s.valid[i]);
    }
    Arc::new(StringArray::new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        arrow::buffer::Buffer::from_vec(bytes),
        null_buffer(valid),
    ))
}

fn null_buffer(valid: Vec<bool>) -> Option<NullBuffer> {
    match valid.iter().all(|v| *v) {
        true => None,
        false => Some(NullBuffer::from(valid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;

    fn text(values: &[Option<&str>]) -> StrColumn {
        let mut c = StrColumn::new();
        for v in values {
            match v {
                Some(s) => c.push(s),
                None => c.push_null(),
            }
        }
        c
    }

    /// Reads a column back as `Option<String>` per row, whatever its
    /// encoding.
    fn read(a: &ArrayRef) -> Vec<Option<String>> {
        let plain = arrow::compute::cast(a, &DataType::Utf8).unwrap();
        let s = plain.as_string::<i32>();
        (0..s.len())
            .map(|i| s.is_valid(i).then(|| s.value(i).to_string()))
            .collect()
    }

    #[test]
    fn sort_order_is_stable_and_none_when_sorted() {
        assert_eq!(sort_order(&[1, 2, 2, 5]), None);
        assert_eq!(sort_order(&[3, 1, 3, 0, 1]), Some(vec![3, 1, 4, 0, 2]));
    }

    #[test]
    fn repeated_text_becomes_a_dictionary_and_unique_text_stays_plain() {
        let rows = 3000;
        let repeated: Vec<Option<String>> = (0..rows)
            .map(|i| (i % 7 != 0).then(|| format!("page-{}", i % 5)))
            .collect();
        let unique: Vec<Option<String>> = (0..rows).map(|i| Some(format!("id-{i}"))).collect();
        let ts: Vec<i64> = (0..rows as i64).map(|i| (i * 7919) % rows as i64).collect();
        let order = sort_order(&ts).unwrap();
        for (values, dictionary) in [(&repeated, true), (&unique, false)] {
            let col = text(&values.iter().map(Option::as_deref).collect::<Vec<_>>());
            let a = column_array(&ColumnData::Dim(col), Some(&order));
            assert_eq!(
                matches!(a.data_type(), DataType::Dictionary(..)),
                dictionary
            );
            let expected: Vec<Option<String>> =
                order.iter().map(|&i| values[i as usize].clone()).collect();
            assert_eq!(read(&a), expected);
        }
        let t = ts_array(&ts, Some(&order));
        let t = t.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert!(t.values().windows(2).all(|w| w[0] < w[1]));
    }
}
