//! Log records: what one entry of the log holds, as one enum with one
//! codec. Every kind is told by the record's first byte:
//!
//! ```text
//! 1     one stream's events: tally_ingest::codec's batch encoding
//!       (version 1), as every release has written them
//! 2     the events of several streams, applied together:
//!       u16 parts | per part: u32 length | a version-1 batch encoding
//! 0xA1  a batch import's commit: its staged files, as JSON
//! 0xA2  a seal (cluster mode): every node writes the tail up to here as
//!       segments; u32 count | count u64 ids of segments retention removes
//! ```
//!
//! A request's events are one record whatever the number of streams they
//! go to (a line protocol body with several measurements), so the log
//! holds all of them or none. A single stream's events keep kind 1, byte
//! for byte what earlier releases wrote, and every kind an earlier release
//! wrote still decodes: a log written before this module replays.

use std::sync::{Arc, OnceLock};
use tally_ingest::{codec, Batch};
use tally_store::StagedImport;

/// The first byte of a single stream's events (the batch codec's version).
const EVENTS_ONE: u8 = codec::VERSION;
/// The first byte of several streams' events.
const EVENTS_MANY: u8 = 2;
/// The first byte of an import's commit.
const IMPORT: u8 = 0xA1;
/// The first byte of a seal.
const SEAL: u8 = 0xA2;

/// One log record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// One request's events, per stream (each stream once).
    Events(Vec<(String, Batch)>),
    /// A batch import's commit: its staged files join the stream.
    Import(StagedImport),
    /// Cluster mode: the tail up to this record becomes segments on every
    /// node, and the segments named leave by retention (the maintenance
    /// lease's holder writes these; docs/cluster.md, "The archive").
    Seal { retire: Vec<u64> },
}

impl Record {
    /// Its bytes in the log.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::Events(parts) => match parts.as_slice() {
                [(stream, batch)] => codec::encode(stream, batch),
                _ => {
                    let mut out = vec![EVENTS_MANY];
                    out.extend_from_slice(&(parts.len() as u16).to_le_bytes());
                    for (stream, batch) in parts {
                        let part = codec::encode(stream, batch);
                        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                        out.extend_from_slice(&part);
                    }
                    out
                }
            },
            Record::Import(staged) => {
                let mut out = vec![IMPORT];
                // Plain structs of strings and numbers always serialize.
                out.extend(serde_json::to_vec(staged).unwrap_or_default());
                out
            }
            Record::Seal { retire } => {
                let mut out = Vec::with_capacity(5 + 8 * retire.len());
                out.push(SEAL);
                out.extend_from_slice(&(retire.len() as u32).to_le_bytes());
                for id in retire {
                    out.extend_from_slice(&id.to_le_bytes());
                }
                out
            }
        }
    }

    /// Reads a record back; every length is checked, so no input can make
    /// it read out of bounds.
    pub fn decode(payload: &[u8]) -> Result<Record, String> {
        match payload.first() {
            Some(&EVENTS_ONE) => codec::decode(payload)
                .map(|part| Record::Events(vec![part]))
                .map_err(|e| e.to_string()),
            Some(&EVENTS_MANY) => {
                let mut rest = &payload[1..];
                let mut take = |n: usize| -> Result<&[u8], String> {
                    if rest.len() < n {
                        return Err("a multi-stream record is cut short".into());
                    }
                    let (head, tail) = rest.split_at(n);
                    rest = tail;
                    Ok(head)
                };
                let count = u16::from_le_bytes(take(2)?.try_into().unwrap_or_default());
                let mut parts: Vec<(String, Batch)> = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let len = u32::from_le_bytes(take(4)?.try_into().unwrap_or_default());
                    let part = codec::decode(take(len as usize)?).map_err(|e| e.to_string())?;
                    if parts.iter().any(|(s, _)| *s == part.0) {
                        return Err(format!("stream {} twice in one record", part.0));
                    }
                    parts.push(part);
                }
                if !rest.is_empty() {
                    return Err("trailing bytes after a multi-stream record".into());
                }
                Ok(Record::Events(parts))
            }
            Some(&IMPORT) => serde_json::from_slice(&payload[1..])
                .map(Record::Import)
                .map_err(|e| format!("an import commit record: {e}")),
            Some(&SEAL) => {
                let rest = &payload[1..];
                let count = rest
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or("a seal record is cut short")?;
                let ids = &rest[4..];
                if ids.len() != count.saturating_mul(8) {
                    return Err(format!(
                        "a seal record names {count} segments in {} bytes",
                        ids.len()
                    ));
                }
                let retire = ids
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect();
                Ok(Record::Seal { retire })
            }
            Some(k) => Err(format!("unknown record kind {k}")),
            None => Err("an empty record".into()),
        }
    }
}

/// What travels with a live record to the apply thread: the record as the
/// appender holds it (so it is not decoded again), and, for an import, the
/// slot its adoption's outcome is reported back in.
pub(crate) struct Live {
    pub(crate) record: Record,
    pub(crate) outcome: Option<ImportOutcome>,
}

/// Whether an import's files were adopted (false: the batch id already
/// was), or why not.
pub(crate) type ImportOutcome = Arc<OnceLock<Result<bool, String>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use tally_ingest::{parse, Format};

    fn batch(body: &str) -> Batch {
        parse(body.as_bytes(), Format::Ndjson, 0, &|_| None).unwrap()
    }

    #[test]
    fn records_round_trip_and_one_stream_keeps_the_batch_encoding() {
        let a = batch("{\"ts\":1,\"v\":1}\n{\"ts\":2,\"s\":\"x\"}\n");
        let b = batch("{\"ts\":3,\"w\":2.5}\n");
        let one = Record::Events(vec![("a".into(), a.clone())]);
        assert_eq!(one.encode(), codec::encode("a", &a));
        let many = Record::Events(vec![("a".into(), a), ("b".into(), b)]);
        let seal = Record::Seal {
            retire: vec![1, 5 << 24 | 3],
        };
        let empty_seal = Record::Seal { retire: vec![] };
        for r in [one, many, seal, empty_seal] {
            assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn damaged_records_are_refused() {
        let many = Record::Events(vec![
            ("a".into(), batch("{\"ts\":1,\"v\":1}\n")),
            ("b".into(), batch("{\"ts\":2,\"v\":2}\n")),
        ])
        .encode();
        for cut in 0..many.len() {
            assert!(Record::decode(&many[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = many.clone();
        trailing.push(0);
        assert!(Record::decode(&trailing).is_err());
        let twice = Record::Events(vec![
            ("a".into(), batch("{\"ts\":1,\"v\":1}\n")),
            ("a".into(), batch("{\"ts\":2,\"v\":2}\n")),
        ])
        .encode();
        assert!(Record::decode(&twice).unwrap_err().contains("twice"));
        assert!(Record::decode(&[7]).unwrap_err().contains("kind 7"));
        let seal = Record::Seal {
            retire: vec![9, 10],
        }
        .encode();
        for cut in 0..seal.len() {
            assert!(Record::decode(&seal[..cut]).is_err(), "seal cut at {cut}");
        }
    }
}
