//! Files of any size read a chunk of rows at a time: the batch import's
//! parser.
//!
//! A [`ChunkReader`] holds one chunk in memory at once, so a file of a
//! hundred million rows is parsed in the same memory as one of a thousand.
//! Each chunk says which line every row starts on, so a check made after
//! parsing (a type that conflicts with an earlier chunk) can still name the
//! line.

use crate::csv::CsvRows;
use crate::{json, Batch, ColumnType, Error, Location, Result, TimeField};
use std::io::{BufRead, BufReader, Read};

/// The file formats the batch import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated with a header row, RFC 4180 quoting.
    Csv,
    /// Tab-separated with a header row, no quoting.
    Tsv,
    /// One JSON object per line.
    Ndjson,
}

impl FileFormat {
    /// From a name (`csv`, `tsv`, `ndjson`, or a file extension).
    pub fn from_name(name: &str) -> Option<FileFormat> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(FileFormat::Csv),
            "tsv" | "tab" => Some(FileFormat::Tsv),
            "ndjson" | "jsonl" | "json" => Some(FileFormat::Ndjson),
            _ => None,
        }
    }

    /// From a `Content-Type` header; `None` when it names no import format.
    pub fn from_content_type(content_type: &str) -> Option<FileFormat> {
        match crate::mime(content_type).as_str() {
            "text/csv" | "application/csv" => Some(FileFormat::Csv),
            "text/tab-separated-values" | "text/tsv" => Some(FileFormat::Tsv),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/json-lines"
            | "application/jsonlines"
            | "application/x-jsonlines" => Some(FileFormat::Ndjson),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            FileFormat::Csv => "text/csv",
            FileFormat::Tsv => "text/tab-separated-values",
            FileFormat::Ndjson => "application/x-ndjson",
        }
    }
}

/// One chunk of a file: its rows as a batch, and the line each row starts on.
#[derive(Debug)]
pub struct Chunk {
    pub batch: Batch,
    pub lines: Vec<usize>,
}

/// Longest NDJSON line accepted (a line is held whole while it is parsed).
pub const MAX_LINE_BYTES: usize = 16 << 20;

enum Source<R: Read> {
    Csv(Box<CsvRows<R>>),
    Ndjson {
        reader: BufReader<R>,
        lineno: usize,
        line: Vec<u8>,
    },
}

/// Reads a file a chunk of rows at a time.
pub struct ChunkReader<R: Read> {
    source: Source<R>,
    now_us: i64,
    time: TimeField,
}

impl<R: Read> ChunkReader<R> {
    /// Starts reading `source` (for CSV and TSV, reads the header).
    /// `now_us` stamps rows without a `ts`.
    pub fn new(source: R, format: FileFormat, now_us: i64) -> Result<Self> {
        Self::with_time(source, format, now_us, &TimeField::default())
    }

    /// [`Self::new`], with the event time read from `time` rather than `ts`.
    pub fn with_time(source: R, format: FileFormat, now_us: i64, time: &TimeField) -> Result<Self> {
        let source = match format {
            FileFormat::Csv => Source::Csv(Box::new(CsvRows::new(source, b',', time)?)),
            FileFormat::Tsv => Source::Csv(Box::new(CsvRows::new(source, b'\t', time)?)),
            FileFormat::Ndjson => Source::Ndjson {
                reader: BufReader::with_capacity(1 << 20, source),
                lineno: 0,
                line: Vec::new(),
            },
        };
        Ok(ChunkReader {
            source,
            now_us,
            time: time.clone(),
        })
    }

    /// The next chunk of at most `max_rows` rows, or `None` at the end.
    /// `hint` gives a CSV column the type it already has (in the stream, or
    /// in earlier chunks), since CSV cells carry none.
    pub fn next_chunk(
        &mut self,
        max_rows: usize,
        hint: &dyn Fn(&str) -> Option<ColumnType>,
    ) -> Result<Option<Chunk>> {
        let now_us = self.now_us;
        match &mut self.source {
            Source::Csv(rows) => Ok(rows
                .read(max_rows.max(1), now_us, hint)?
                .map(|(batch, lines)| Chunk { batch, lines })),
            Source::Ndjson {
                reader,
                lineno,
                line,
            } => {
                let mut body = Vec::new();
                let mut lines = Vec::new();
                let first = *lineno + 1;
                while lines.len() < max_rows.max(1) {
                    line.clear();
                    let n = (&mut *reader)
                        .take(MAX_LINE_BYTES as u64 + 1)
                        .read_until(b'\n', line)
                        .map_err(|e| read_error(*lineno + 1, e))?;
                    if n == 0 {
                        break;
                    }
                    *lineno += 1;
                    if line.len() > MAX_LINE_BYTES {
                        return Err(Error::Syntax {
                            at: Location::Line(*lineno),
                            format: "NDJSON",
                            message: format!("line longer than {MAX_LINE_BYTES} bytes"),
                        });
                    }
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    body.extend_from_slice(line);
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        lines.push(*lineno);
                    }
                }
                if lines.is_empty() {
                    return Ok(None);
                }
                let batch = json::parse_ndjson_from(&body, now_us, first, &self.time)?;
                Ok(Some(Chunk { batch, lines }))
            }
        }
    }
}

fn read_error(line: usize, e: std::io::Error) -> Error {
    Error::Syntax {
        at: Location::Line(line),
        format: "input",
        message: format!("reading failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str, format: FileFormat, rows: usize) -> Result<Vec<Chunk>> {
        let mut r = ChunkReader::new(text.as_bytes(), format, 7)?;
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk(rows, &|_| None)? {
            out.push(c);
        }
        Ok(out)
    }

    #[test]
    fn csv_chunks_keep_file_lines() {
        let text = "ts,port,price\n1000,A,1\n2000,\"B\nC\",2\n3000,D,3\n";
        let chunks = all(text, FileFormat::Csv, 2).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].lines, vec![2, 3]);
        assert_eq!(chunks[1].lines, vec![5]);
        assert_eq!(chunks[1].batch.ts, vec![3_000_000]);
    }

    #[test]
    fn tsv_has_no_quoting() {
        let text = "port\tprice\n\"A\"\t1\nB\t2\n";
        let chunks = all(text, FileFormat::Tsv, 10).unwrap();
        let port = chunks[0].batch.column("port").unwrap();
        match &port.data {
            crate::ColumnData::Dim(s) => assert_eq!(s.get(0), Some("\"A\"")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ndjson_errors_name_the_file_line() {
        let text = "{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}\n{\"a\":\n";
        let mut r = ChunkReader::new(text.as_bytes(), FileFormat::Ndjson, 7).unwrap();
        let c = r.next_chunk(2, &|_| None).unwrap().unwrap();
        assert_eq!(c.lines, vec![1, 3]);
        let c = r.next_chunk(1, &|_| None).unwrap().unwrap();
        assert_eq!(c.lines, vec![4]);
        let e = r.next_chunk(2, &|_| None).unwrap_err();
        assert_eq!(e.location(), Some(Location::Line(5)));
    }

    #[test]
    fn csv_errors_name_the_file_line() {
        let text = "a,v\n1,2\n3,4\n5\n";
        let mut r = ChunkReader::new(text.as_bytes(), FileFormat::Csv, 7).unwrap();
        r.next_chunk(2, &|_| None).unwrap().unwrap();
        let e = r.next_chunk(2, &|_| None).unwrap_err();
        assert_eq!(e.location(), Some(Location::Line(4)));
    }
}
