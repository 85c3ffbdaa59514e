//! The binary form of one stream's batch in the write-ahead log.
//!
//! A log record (`tally_engine::Record`) of one stream's events is exactly
//! this encoding; a record of several streams' events holds one per
//! stream. The layout is columnar and little-endian so that encoding and
//! decoding are mostly `memcpy`s:
//!
//! ```text
//! u8 version (1) | u16 stream len | stream | u32 rows | u16 columns
//! i64 ts[rows]
//! per column: u16 name len | name | u8 kind (0 string, 1 number)
//!             | validity bitmap ((rows+7)/8 bytes, LSB first)
//!             | number: f64[rows]
//!             | string: u32 offsets[rows+1] | bytes
//! ```
//!
//! The log frames each record with a length and CRC32C; decoding still checks
//! every length and offset so that a record can never index out of bounds.

use crate::{Batch, Column, ColumnData, Error, NumColumn, Result, StrColumn};

/// The first byte of every encoded batch.
pub const VERSION: u8 = 1;

/// Encodes `batch` of `stream` as one log record.
pub fn encode(stream: &str, batch: &Batch) -> Vec<u8> {
    let rows = batch.len();
    let mut out = Vec::with_capacity(
        16 + stream.len() + batch.heap_bytes() + batch.columns.len() * (rows / 8 + 16),
    );
    out.push(VERSION);
    out.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(batch.columns.len() as u16).to_le_bytes());
    for t in &batch.ts {
        out.extend_from_slice(&t.to_le_bytes());
    }
    for c in &batch.columns {
        out.extend_from_slice(&(c.name.len() as u16).to_le_bytes());
        out.extend_from_slice(c.name.as_bytes());
        match &c.data {
            ColumnData::Dim(s) => {
                out.push(0);
                put_bitmap(&mut out, &s.valid);
                for o in &s.offsets {
                    out.extend_from_slice(&o.to_le_bytes());
                }
                out.extend_from_slice(&s.bytes);
            }
            ColumnData::Value(v) => {
                out.push(1);
                put_bitmap(&mut out, &v.valid);
                for x in &v.values {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    out
}

/// Decodes a record into its stream name and batch.
pub fn decode(buf: &[u8]) -> Result<(String, Batch)> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(Error::Codec(format!("unknown record version {version}")));
    }
    let stream = r.str()?.to_string();
    let rows = r.u32()? as usize;
    let ncols = r.u16()? as usize;
    let ts_bytes = r.take(rows.checked_mul(8).ok_or_else(|| bad("row count"))?)?;
    let ts = ts_bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let mut columns = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        let name = r.str()?.to_string();
        let kind = r.u8()?;
        let valid = get_bitmap(r.take(rows.div_ceil(8))?, rows);
        let data = match kind {
            0 => {
                let off_bytes = r.take((rows + 1) * 4)?;
                let offsets: Vec<u32> = off_bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                    .collect();
                if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[0] > w[1]) {
                    return Err(bad("string offsets"));
                }
                let len = *offsets.last().unwrap_or(&0) as usize;
                let bytes = r.take(len)?.to_vec();
                if std::str::from_utf8(&bytes).is_err() {
                    return Err(bad("string bytes are not UTF-8"));
                }
                // Each value must also end on a character boundary.
                let text = std::str::from_utf8(&bytes).unwrap_or("");
                if offsets.iter().any(|&o| !text.is_char_boundary(o as usize)) {
                    return Err(bad("string offsets split a character"));
                }
                ColumnData::Dim(StrColumn {
                    offsets,
                    bytes,
                    valid,
                })
            }
            1 => {
                let vb = r.take(rows * 8)?;
                let values = vb
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect();
                ColumnData::Value(NumColumn { values, valid })
            }
            k => return Err(Error::Codec(format!("unknown column kind {k}"))),
        };
        columns.push(Column { name, data });
    }
    if r.pos != buf.len() {
        return Err(bad("trailing bytes"));
    }
    Ok((stream, Batch { ts, columns }))
}

/// Reads only the stream name of a record, without decoding the batch.
pub fn stream_of(buf: &[u8]) -> Result<&str> {
    let mut r = Reader { buf, pos: 1 };
    r.str()
}

fn bad(what: &str) -> Error {
    Error::Codec(format!("bad {what}"))
}

fn put_bitmap(out: &mut Vec<u8>, valid: &[bool]) {
    for chunk in valid.chunks(8) {
        let mut byte = 0u8;
        for (i, v) in chunk.iter().enumerate() {
            byte |= (*v as u8) << i;
        }
        out.push(byte);
    }
}

fn get_bitmap(bytes: &[u8], rows: usize) -> Vec<bool> {
    (0..rows)
        .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
        .collect()
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| bad("length (record truncated)"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn str(&mut self) -> Result<&'a str> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| bad("name (not UTF-8)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchBuilder;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Cell {
        S(String),
        N(f64),
        Null,
    }

    fn cell_strategy() -> impl Strategy<Value = Cell> {
        prop_oneof![
            ".{0,12}".prop_map(Cell::S),
            (-1e12f64..1e12).prop_map(Cell::N),
            Just(Cell::Null),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(rows in proptest::collection::vec((0i64..1i64<<50, proptest::collection::vec(cell_strategy(), 0..5)), 0..40)) {
            let mut b = BatchBuilder::new();
            for (i, (ts, cells)) in rows.iter().enumerate() {
                b.start_row(i + 1).unwrap();
                for (j, c) in cells.iter().enumerate() {
                    // Column j is a string column when j is even, a number column when odd.
                    match (c, j % 2) {
                        (Cell::S(s), 0) => b.push_str(&format!("c{j}"), s).unwrap(),
                        (Cell::N(v), 1) => b.push_num(&format!("c{j}"), *v).unwrap(),
                        _ => {}
                    }
                }
                b.finish_row(*ts);
            }
            let batch = b.finish();
            let rec = encode("s-1", &batch);
            let (stream, back) = decode(&rec).unwrap();
            prop_assert_eq!(stream, "s-1");
            prop_assert_eq!(stream_of(&rec).unwrap(), "s-1");
            prop_assert_eq!(back, batch);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn truncated_record_is_an_error() {
        let mut b = BatchBuilder::new();
        b.start_row(1).unwrap();
        b.push_str("a", "hello").unwrap();
        b.finish_row(5);
        let rec = encode("s", &b.finish());
        for cut in 0..rec.len() {
            assert!(decode(&rec[..cut]).is_err(), "cut at {cut}");
        }
    }
}
