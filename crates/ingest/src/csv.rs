//! CSV bodies with a header row.
//!
//! CSV cells carry no type, so a column's type comes from the stream's schema
//! when the stream already has that field, and otherwise is inferred from the
//! batch: a column whose every non-empty cell is a number is a value column,
//! anything else is a dimension. An empty cell is a null. A `ts` column holds
//! the event timestamp (RFC 3339 or epoch milliseconds).

use crate::{
    validate_field_name, Batch, Column, ColumnData, ColumnType, Error, Location, NumColumn, Result,
    StrColumn, TimeField,
};

pub(crate) fn parse_csv(
    body: &[u8],
    now_us: i64,
    hint: &dyn Fn(&str) -> Option<ColumnType>,
    time: &TimeField,
) -> Result<Batch> {
    let mut rdr = CsvRows::new(body, b',', time)?;
    Ok(rdr
        .read(usize::MAX, now_us, hint)?
        .map_or_else(Batch::default, |(b, _)| b))
}

/// A CSV (or TSV) source read a number of rows at a time, after its header.
pub(crate) struct CsvRows<R: std::io::Read> {
    rdr: csv::Reader<R>,
    names: Vec<String>,
    ts_col: Option<usize>,
    time: TimeField,
    format: &'static str,
}

impl<R: std::io::Read> CsvRows<R> {
    /// Reads the header. `delimiter` `\t` reads TSV: tab-separated, no
    /// quoting (IANA `text/tab-separated-values`).
    pub(crate) fn new(source: R, delimiter: u8, time: &TimeField) -> Result<Self> {
        let tsv = delimiter == b'\t';
        let format = if tsv { "TSV" } else { "CSV" };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .delimiter(delimiter)
            .quoting(!tsv)
            .from_reader(source);
        let headers = rdr
            .byte_headers()
            .map_err(|e| csv_error(&e, 1, format))?
            .clone();
        let mut names = Vec::with_capacity(headers.len());
        let mut ts_col = None;
        for (i, h) in headers.iter().enumerate() {
            let name = std::str::from_utf8(h)
                .map_err(|_| Error::Syntax {
                    at: Location::Line(1),
                    format,
                    message: format!("header {} is not UTF-8", i + 1),
                })?
                .trim()
                .to_string();
            if name == time.field {
                ts_col = Some(i);
            } else {
                validate_field_name(&name).map_err(|message| Error::BadField {
                    at: Location::Line(1),
                    field: name.clone(),
                    message: format!("header column {}: {message}", i + 1),
                })?;
            }
            if names.contains(&name) {
                return Err(Error::BadField {
                    at: Location::Line(1),
                    field: name,
                    message: "column appears twice in the header".into(),
                });
            }
            names.push(name);
        }
        Ok(CsvRows {
            rdr,
            names,
            ts_col,
            time: time.clone(),
            format,
        })
    }

    /// Up to `max_rows` rows as a batch, with the line each row starts on;
    /// `None` at the end of the source.
    pub(crate) fn read(
        &mut self,
        max_rows: usize,
        now_us: i64,
        hint: &dyn Fn(&str) -> Option<ColumnType>,
    ) -> Result<Option<(Batch, Vec<usize>)>> {
        let (names, ts_col) = (&self.names, self.ts_col);
        let mut cols: Vec<StrColumn> = (0..names.len()).map(|_| StrColumn::new()).collect();
        let mut lines: Vec<usize> = Vec::new();
        let mut ts = Vec::new();
        let mut rec = csv::ByteRecord::new();
        while lines.len() < max_rows {
            let line_hint = self.rdr.position().line() as usize;
            match self.rdr.read_byte_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(csv_error(&e, line_hint, self.format)),
            }
            let line = rec.position().map_or(line_hint, |p| p.line() as usize);
            for (i, cell) in rec.iter().enumerate() {
                let cell = std::str::from_utf8(cell).map_err(|_| Error::BadField {
                    at: Location::Line(line),
                    field: names[i].clone(),
                    message: "cell is not UTF-8".into(),
                })?;
                if Some(i) == ts_col {
                    let t = if cell.trim().is_empty() {
                        now_us
                    } else {
                        self.time
                            .from_text(cell)
                            .ok_or_else(|| Error::BadTimestamp {
                                at: Location::Line(line),
                                field: self.time.field.clone(),
                                value: cell.into(),
                                expected: self.time.format.expected(),
                            })?
                    };
                    ts.push(t);
                } else if cell.is_empty() {
                    cols[i].push_null();
                } else {
                    cols[i].push(cell);
                }
            }
            if ts_col.is_none() {
                ts.push(now_us);
            }
            lines.push(line);
        }
        if lines.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(names.len());
        for (i, (name, col)) in names.iter().zip(cols).enumerate() {
            if Some(i) == ts_col || col.valid.iter().all(|v| !v) {
                continue;
            }
            let ty = hint(name).unwrap_or_else(|| infer(&col));
            let data = match ty {
                ColumnType::Dim => ColumnData::Dim(col),
                ColumnType::Value => {
                    let mut num = NumColumn {
                        values: Vec::with_capacity(col.len()),
                        valid: Vec::with_capacity(col.len()),
                    };
                    for (r, &line) in lines.iter().enumerate().take(col.len()) {
                        match col.get(r) {
                            None => num.push_null(),
                            Some(s) => match parse_number(s) {
                                Some(v) => num.push(v),
                                None => {
                                    return Err(Error::TypeConflict {
                                        at: Location::Line(line),
                                        field: name.clone(),
                                        existing: ColumnType::Value,
                                        found: format!("string {s:?}"),
                                    })
                                }
                            },
                        }
                    }
                    ColumnData::Value(num)
                }
            };
            columns.push(Column {
                name: name.clone(),
                data,
            });
        }
        Ok(Some((Batch { ts, columns }, lines)))
    }
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn infer(col: &StrColumn) -> ColumnType {
    let numeric = (0..col.len()).all(|r| col.get(r).is_none_or(|s| parse_number(s).is_some()));
    if numeric {
        ColumnType::Value
    } else {
        ColumnType::Dim
    }
}

fn csv_error(e: &csv::Error, fallback_line: usize, format: &'static str) -> Error {
    let line = e
        .position()
        .map_or(fallback_line, |p| p.line() as usize)
        .max(1);
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("row has {len} fields, the header has {expected_len}")
        }
        _ => e.to_string(),
    };
    Error::Syntax {
        at: Location::Line(line),
        format,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_types_and_reads_ts() {
        let body = "ts,port,price,code\n1000,NOOSL,12.5,01\n2000,CNSGH,,x\n";
        let b = parse_csv(body.as_bytes(), 7, &|_| None, &TimeField::default()).unwrap();
        assert_eq!(b.ts, vec![1_000_000, 2_000_000]);
        assert_eq!(
            b.column("price").unwrap().data.column_type(),
            ColumnType::Value
        );
        assert_eq!(
            b.column("port").unwrap().data.column_type(),
            ColumnType::Dim
        );
        assert_eq!(
            b.column("code").unwrap().data.column_type(),
            ColumnType::Dim
        );
    }

    #[test]
    fn schema_hint_wins_and_bad_cell_names_line() {
        let body = "a,v\n1,2\n3,x\n";
        let b = parse_csv(
            body.as_bytes(),
            7,
            &|n| (n == "v").then_some(ColumnType::Value),
            &TimeField::default(),
        );
        let e = b.unwrap_err();
        assert_eq!(e.location(), Some(Location::Line(3)));
        assert_eq!(e.field(), Some("v"));
        let b = parse_csv(
            "a\n1\n".as_bytes(),
            7,
            &|_| Some(ColumnType::Dim),
            &TimeField::default(),
        )
        .unwrap();
        assert_eq!(b.columns[0].data.column_type(), ColumnType::Dim);
    }

    #[test]
    fn ragged_rows_are_syntax_errors_on_their_line() {
        let e = parse_csv(
            "a,b\n1,2\n3\n".as_bytes(),
            7,
            &|_| None,
            &TimeField::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Syntax {
                    at: Location::Line(3),
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
