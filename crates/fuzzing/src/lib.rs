//! The entry points of tally's fuzz targets: each takes arbitrary bytes,
//! feeds them to one parser of outside input, and panics only on a bug (a
//! panic inside the parser, or an answer that breaks the parser's own
//! promise, such as an accepted body that does not survive the log codec).
//!
//! `fuzz/` (built by `cargo fuzz` on nightly) calls these; so does the
//! test below, on the stable toolchain in the normal suite, for every file
//! of every corpus and every crash input kept under `fuzz/`, so a
//! regression fails CI without nightly.

use tally_ingest::{codec, Format};

/// Every target: its name (the directory of its corpus) and entry point.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("parse_body", parse_body),
    ("line_protocol", line_protocol),
    ("line_protocol_vs_influxdb", line_protocol_vs_influxdb),
    ("inflate", inflate),
    ("decode_record", decode_record),
    ("tracker_payload", tracker_payload),
    ("query_request", query_request),
    ("rollup_def", rollup_def),
    ("sql", sql),
    ("stats_params", stats_params),
    ("job_def", job_def),
    ("dimension_table", dimension_table),
];

/// JSON, NDJSON and CSV bodies (the first byte picks the format): no
/// input panics, and an accepted body survives the log codec unchanged.
pub fn parse_body(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = match selector % 3 {
        0 => Format::Json,
        1 => Format::Ndjson,
        _ => Format::Csv,
    };
    if let Ok(batch) = tally_ingest::parse(body, format, 0, &|_| None) {
        assert!(!batch.is_empty(), "an accepted body holds events");
        let record = codec::encode("fuzz", &batch);
        let (stream, back) = codec::decode(&record).expect("a record we encoded must decode");
        assert_eq!(stream, "fuzz");
        assert_eq!(back, batch);
    }
}

/// Line protocol: no input panics; the one-pass reading of plain lines and
/// the full scanner agree; every accepted measurement has a valid
/// stream that maps back to its name, and its batch survives the codec.
pub fn line_protocol(data: &[u8]) {
    let parsed = tally_ingest::parse_line_protocol(data, tally_ingest::Precision::Nanoseconds, 0);
    // The one-pass reading of plain lines gives what the full scanner
    // gives: the same points or the same error.
    let scanned = tally_ingest::parse_line_protocol_scanner_only(
        data,
        tally_ingest::Precision::Nanoseconds,
        0,
    );
    let show = |r: &tally_ingest::Result<Vec<tally_ingest::Measurement>>| match r {
        Ok(ms) => format!(
            "{:?}",
            ms.iter()
                .map(|m| (&m.stream, &m.measurement, &m.lines, &m.batch))
                .collect::<Vec<_>>()
        ),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(show(&parsed), show(&scanned));
    let Ok(ms) = parsed else {
        return;
    };
    for m in ms {
        assert!(
            tally_ingest::validate_public_stream_name(&m.stream).is_ok(),
            "{}",
            m.stream
        );
        assert_eq!(
            tally_ingest::measurement_of_stream(&m.stream),
            m.measurement
        );
        assert_eq!(m.lines.len(), m.batch.len());
        let record = codec::encode(&m.stream, &m.batch);
        let (_, back) = codec::decode(&record).expect("a record we encoded must decode");
        assert_eq!(back, m.batch);
    }
}

/// One point as the two parsers give it: measurement, every key with its
/// value as text (numbers as f64, booleans `true`/`false`), time in µs.
type Point = (String, Vec<(String, String)>, i64);

/// Line protocol through tally's parser and through
/// `influxdb-line-protocol` (InfluxData's own Rust parser) on the same
/// bytes. The two read backslashes differently (that crate takes `\\` as
/// an escaped backslash and refuses a key ending in one; InfluxDB 1.x and
/// tally do neither, see `lineproto.rs`), so bodies holding a backslash
/// are only fuzzed for panics. Otherwise:
/// - a body tally accepts, the crate accepts too, with the same points,
///   unless it holds what InfluxDB 1.x reads and the crate does not
///   (floats like `.5` and `5.`, control characters in names, text after
///   a string value's closing quote);
/// - a body the crate accepts and tally refuses is refused for one of the
///   reasons tally documents as its own (a field given twice or shared
///   with a tag, a reserved or too long name, too many fields, a time
///   outside 1970 to 2200, a measurement that cannot be a stream), or a
///   CR that the crate reads as part of a line.
pub fn line_protocol_vs_influxdb(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return line_protocol(data);
    };
    let ours = tally_ingest::parse_line_protocol(data, tally_ingest::Precision::Nanoseconds, 0);
    if text.contains('\\') {
        return;
    }
    // A line starting with '#' is a comment. InfluxDB 1.x first cuts the
    // body into lines the way it cuts points (a newline inside what its
    // scanner takes for a quoted value does not end the line), then skips
    // a whole such line that starts with '#', as tally does (the suite
    // checks it against InfluxDB itself); the crate cuts the same way but
    // skips a comment only up to the next newline and reads the rest.
    if has_comment(text) || quote_after_leading_space(text) || quote_not_opened(text) {
        return;
    }
    let theirs: Result<Vec<Point>, String> = influxdb_line_protocol::parse_lines(text)
        .map(|l| l.map(|p| crate_point(&p)).map_err(|e| e.to_string()))
        .collect();
    match (ours, theirs) {
        // InfluxDB 1.x skips a NUL as whitespace after a space or tab
        // (its `skipWhitespace`), as tally does (the suite checks it
        // against InfluxDB itself); the crate keeps it in the next key.
        (Ok(_), Ok(_)) if text.contains(" \0") || text.contains("\t\0") => {}
        (Ok(ms), Ok(points)) => assert_eq!(tally_points(&ms), points, "{text:?}"),
        (Ok(ms), Err(e)) => {
            // InfluxDB 1.x reads floats with no digit on one side of their
            // point (`.5`, `-.5`, `5.`, `1.e3`; the suite checks this
            // against InfluxDB itself); the crate does not.
            // InfluxDB also takes control characters (a NUL, say) in
            // measurements, keys and values, as tally does; the crate not.
            let ok = (text.contains('\r') && e.contains("trailing content"))
                || bare_point_float(text)
                || text.chars().any(|c| c.is_control() && c != '\n')
                || after_a_string(text, &e)
                || trailing_spaces(&e)
                || lines_run_on(text)
                || comma_in_a_field_key(text);
            assert!(
                ok,
                "tally accepts {text:?} ({} points), the crate refuses: {e}",
                ms.len()
            );
        }
        (Err(e), Ok(_)) => {
            let msg = e.to_string();
            let documented = [
                "twice",
                "reserved",
                "type conflict",
                "1970 to 2200",
                "stream name",
                "field name",
                "too many fields",
                "longer than",
                // An unescaped '=' in a tag value: InfluxDB 1.x refuses it
                // as tally does; the crate takes it as text.
                "invalid tag format",
                // A tag key ended by ',' before any '=' (`m,h,s=x`):
                // InfluxDB 1.x refuses it ("missing tag value") as tally
                // does; the crate reads on to the next '='.
                "has no '=value'",
                // An empty tag key between two commas (`m,,k=v`): InfluxDB
                // 1.x refuses it ("missing tag key") as tally does; the
                // crate skips it.
                "missing tag key",
                // A tag key given twice (`m,t=a,t=b`): InfluxDB 1.x refuses
                // it ("duplicate tags") as tally does; the crate keeps both.
                "duplicate tags",
                // A field key that is empty after a comma or space
                // (`m ,=1`): InfluxDB 1.x refuses it ("missing field key")
                // as tally does; the crate takes it.
                "missing field key",
                // A float past f64's range (`1e400`): InfluxDB 1.x refuses
                // it (Go's ParseFloat range error) as tally does; the crate
                // reads it as infinity.
                "out of range",
            ];
            assert!(
                documented.iter().any(|d| msg.contains(d)),
                "the crate accepts {text:?}, tally refuses: {msg}"
            );
        }
        (Err(_), Err(_)) => {}
    }
}

/// Whether the crate refused only spaces at the end of a line: InfluxDB
/// 1.x takes them, as tally does (the suite checks it against InfluxDB
/// itself).
fn trailing_spaces(error: &str) -> bool {
    error
        .split("trailing content: '")
        .nth(1)
        .map(|rest| rest.strip_suffix('\'').unwrap_or(rest))
        .is_some_and(|t| !t.is_empty() && t.trim().is_empty())
}

/// Whether the crate refused text right after a string value's closing
/// quote (`s="a"b`): InfluxDB 1.x keeps such a value, up to the byte
/// before its end (`a"`), as tally does (the suite checks it against
/// InfluxDB itself).
fn after_a_string(text: &str, error: &str) -> bool {
    let Some(rest) = error.split("trailing content: '").nth(1) else {
        return false;
    };
    let trailing = rest.strip_suffix('\'').unwrap_or(rest);
    // Every place it starts, overlapping ones too (`"a"""` leaves `""`).
    !trailing.is_empty()
        && (1..text.len()).any(|i| {
            text.as_bytes()[i - 1] == b'"'
                && text.is_char_boundary(i)
                && text[i..].starts_with(trailing)
        })
}

/// Whether a line of `text` starts with '#', after spaces or tabs.
fn has_comment(text: &str) -> bool {
    text.split('\n')
        .any(|l| l.trim_start_matches([' ', '\t']).starts_with('#'))
}

/// Whether a line that starts with a space holds a '"'. InfluxDB 1.x's
/// scanner takes everything after a line's first space as fields, so from
/// a leading space on it counts '=' and ',' and opens strings even in the
/// measurement (` m="a b" v=1`), and its parser then reads the line
/// differently from the crate, which skips leading spaces first. Tally
/// reads these lines as InfluxDB does (the suite checks it against
/// InfluxDB itself).
fn quote_after_leading_space(text: &str) -> bool {
    text.split('\n')
        .any(|l| l.starts_with(' ') && l.contains('"'))
}

/// How InfluxDB 1.x's line scanner reads `text`: after a line's first
/// space it counts '=' and ',' outside strings, and a '"' opens or closes a
/// string only while there are more '=' than ','; a newline inside a
/// string does not end the line.
#[derive(Default)]
struct Scan {
    /// A line went on past a newline.
    runs_on: bool,
    /// The body ends inside a string.
    ends_open: bool,
    /// A '"' in the fields that opened no string (in `m a,b="x" 1` it is
    /// plain text, and InfluxDB refuses the line).
    unopened_quote: bool,
}

fn scan_lines(text: &str) -> Scan {
    let (mut fields, mut quoted, mut equals, mut commas) = (false, false, 0, 0);
    let mut scan = Scan::default();
    for c in text.chars() {
        if c == ' ' {
            fields = true;
        }
        if fields {
            match c {
                '=' if !quoted => equals += 1,
                ',' if !quoted => commas += 1,
                '"' if equals > commas => quoted = !quoted,
                '"' => scan.unopened_quote = true,
                _ => {}
            }
        }
        if c == '\n' {
            match quoted {
                true => scan.runs_on = true,
                false => (fields, equals, commas) = (false, 0, 0),
            }
        }
    }
    scan.ends_open = quoted;
    scan
}

/// Whether a line has a '"' InfluxDB's scanner does not take as opening a
/// string ([`Scan::unopened_quote`]). InfluxDB then reads the line its own
/// way: it refuses `m a,b="x" 1`, and stores `m a=1,b,c="x` with the field
/// key `b,c` and the value `x` less its last byte. Tally reads such lines
/// as InfluxDB does (the suite checks both against InfluxDB itself); the
/// crate has no such rule and reads them otherwise.
fn quote_not_opened(text: &str) -> bool {
    scan_lines(text).unopened_quote
}

/// Whether InfluxDB 1.x reads a line of `text` on past a newline (a quote
/// it opened, even in the measurement of a line that starts with a space:
/// ` m="a\nb" v=1` is the measurement `m="a\nb"`) or ends the body inside
/// a string (whose value it keeps up to the byte before the end). InfluxDB
/// stores such lines, as tally does (the suite checks it against InfluxDB
/// itself); the crate ends every name at a newline and refuses an open
/// string.
fn lines_run_on(text: &str) -> bool {
    let scan = scan_lines(text);
    scan.runs_on || scan.ends_open
}

/// Whether a line's first field key holds a ',' (`m a,b=1`): InfluxDB 1.x
/// reads the key up to its '=' (`a,b`), as tally does (the suite checks it
/// against InfluxDB itself), which also throws its quote count off; the
/// crate refuses such lines or reads them otherwise.
fn comma_in_a_field_key(text: &str) -> bool {
    text.split('\n').any(|line| {
        let fields = line.trim_start_matches([' ', '\t']);
        let Some((_, fields)) = fields.split_once(' ') else {
            return false;
        };
        let key = fields.trim_start_matches(' ').split('=').next();
        key.is_some_and(|k| k.contains(','))
    })
}

/// Whether `text` may hold a float with no digit before or after its point.
fn bare_point_float(text: &str) -> bool {
    let b = text.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b'.'
            && ((i > 0 && matches!(b[i - 1], b'=' | b'-'))
                || (i > 0
                    && b[i - 1].is_ascii_digit()
                    && !b.get(i + 1).is_some_and(u8::is_ascii_digit)))
    })
}

fn crate_point(p: &influxdb_line_protocol::ParsedLine<'_>) -> Point {
    use influxdb_line_protocol::FieldValue;
    let mut keys: Vec<(String, String)> = p
        .series
        .tag_set
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
        .collect();
    for (k, v) in &p.field_set {
        let v = match v {
            FieldValue::I64(n) => format!("{:?}", *n as f64),
            FieldValue::U64(n) => format!("{:?}", *n as f64),
            FieldValue::F64(n) => format!("{n:?}"),
            FieldValue::String(s) => s.as_str().to_string(),
            FieldValue::Boolean(b) => b.to_string(),
        };
        keys.push((k.as_str().to_string(), v));
    }
    keys.sort();
    let ts = p.timestamp.map_or(0, |ns| ns.div_euclid(1000));
    (p.series.measurement.as_str().to_string(), keys, ts)
}

fn tally_points(ms: &[tally_ingest::Measurement]) -> Vec<Point> {
    use tally_ingest::ColumnData;
    let mut points: Vec<(usize, Point)> = Vec::new();
    for m in ms {
        for (row, &line) in m.lines.iter().enumerate() {
            let mut keys: Vec<(String, String)> = m
                .batch
                .columns
                .iter()
                .filter_map(|c| {
                    let v = match &c.data {
                        ColumnData::Dim(d) => d.get(row).map(str::to_string),
                        ColumnData::Value(v) => v.get(row).map(|n| format!("{n:?}")),
                    }?;
                    Some((c.name.clone(), v))
                })
                .collect();
            keys.sort();
            points.push((line, (m.measurement.clone(), keys, m.batch.ts[row])));
        }
    }
    points.sort_by_key(|(line, _)| *line);
    points.into_iter().map(|(_, p)| p).collect()
}

/// gzip and zstd bodies (the first byte picks): inflating never panics
/// and never yields more than the limit. The limit is 64 KiB here (the
/// server's is `--max-body-bytes`): the check is the same at any size, and
/// a small one lets a bomb reach it in far fewer cycles.
pub fn inflate(data: &[u8]) {
    use tally_ingest::compression::{inflate, Encoding};
    let Some((&selector, packed)) = data.split_first() else {
        return;
    };
    let encoding = if selector % 2 == 0 {
        Encoding::Gzip
    } else {
        Encoding::Zstd
    };
    const LIMIT: usize = 64 << 10;
    if let Ok(out) = inflate(encoding, packed, LIMIT, |_| true) {
        assert!(out.len() <= LIMIT, "{} bytes past the limit", out.len());
    }
}

/// The log record codec: arbitrary bytes decode to an error, never a
/// panic, and a record that decodes encodes back to bytes that decode to
/// the same record.
pub fn decode_record(data: &[u8]) {
    let _ = codec::decode(data);
    if let Ok(record) = tally_engine::Record::decode(data) {
        // Compared as bytes: a NaN value is never equal to itself.
        let bytes = record.encode();
        let again = tally_engine::Record::decode(&bytes).expect("a record we encoded must decode");
        assert!(
            again.encode() == bytes,
            "a record changed on its way through the codec"
        );
    }
}

/// Plausible tracker payloads (`POST /api/event` bodies).
pub fn tracker_payload(data: &[u8]) {
    let _ = tally_apps::web::enrich::parse_payload(data);
}

/// `/v1/query` requests: decoding and the limits checked before planning.
pub fn query_request(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<tally_query::timeseries::Request>(data) {
        let _ = tally_query::limits::check_request(&req, &tally_query::SqlLimits::default());
    }
}

/// Rollup definitions, as `POST /v1/rollups` and the config file take
/// them: decoding and validation.
pub fn rollup_def(data: &[u8]) {
    if let Ok(def) = serde_json::from_slice::<tally_rollup::RollupDef>(data) {
        let _ = def.validate();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tally_rollup::Aggregate::parse(text);
        let _ = tally_rollup::parse_period(text);
    }
}

/// SQL text through the size check, parsing, the shape limits and
/// planning against a small table (not execution). Runs on a thread whose
/// stack is the query pool's, as the server's statements do; the thread
/// and its session live across inputs (a new session per input costs more
/// than the planning).
pub fn sql(data: &[u8]) {
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::{Mutex, OnceLock};
    type Planner = (Sender<String>, Receiver<bool>);
    static PLANNER: OnceLock<Mutex<Planner>> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = tally_query::SqlLimits::default();
    if tally_query::limits::check_text(text, &limits).is_err() {
        return;
    }
    let planner = PLANNER.get_or_init(|| {
        let (to_planner, inputs) = channel::<String>();
        let (to_caller, outcomes) = channel();
        std::thread::Builder::new()
            .name("fuzz-sql".into())
            .stack_size(tally_query::limits::stack_bytes(&limits))
            .spawn(move || {
                let ctx = session();
                for text in inputs {
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        plan(&ctx, &text, &limits)
                    }))
                    .is_ok();
                    if to_caller.send(ok).is_err() {
                        return;
                    }
                }
            })
            .expect("a thread");
        Mutex::new((to_planner, outcomes))
    });
    let planner = planner.lock().unwrap_or_else(|e| e.into_inner());
    planner
        .0
        .send(text.to_string())
        .expect("the planner thread");
    let ok = planner.1.recv().expect("the planner thread");
    assert!(ok, "parsing, checking and planning SQL must not panic");
}

/// A session with one small table, `events`.
fn session() -> datafusion::prelude::SessionContext {
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::record_batch::RecordBatch;
    let ctx = datafusion::prelude::SessionContext::new();
    let batch = RecordBatch::try_from_iter([
        (
            "country",
            std::sync::Arc::new(StringArray::from(vec!["NO", "SE"])) as _,
        ),
        (
            "rtt_ms",
            std::sync::Arc::new(Float64Array::from(vec![1.0, 2.0])) as _,
        ),
    ])
    .expect("a batch");
    ctx.register_batch("events", batch).expect("a table");
    ctx
}

fn plan(ctx: &datafusion::prelude::SessionContext, text: &str, limits: &tally_query::SqlLimits) {
    use datafusion::sql::parser::DFParser;
    let Ok(mut statements) = DFParser::parse_sql(text) else {
        return;
    };
    if statements.len() != 1 {
        return;
    }
    let Some(statement) = statements.pop_front() else {
        return;
    };
    if tally_query::limits::check(&statement, limits).is_err() {
        return;
    }
    let _ = futures::executor::block_on(ctx.state().statement_to_plan(statement));
}

/// Stats API parameters (a query string, as `/api/v1/stats/*` takes it):
/// every check the endpoints make before reading data.
pub fn stats_params(data: &[u8]) {
    let Ok(params) =
        serde_urlencoded::from_bytes::<std::collections::HashMap<String, String>>(data)
    else {
        return;
    };
    let today = chrono::NaiveDate::from_ymd_opt(2024, 3, 15).expect("a date");
    let _ = tally_apps::web::stats::check_params(&tally_apps::web::stats::Params(params), today);
}

/// Job definitions, as the config file's `[[job]]` tables: decoding, the
/// checks of names, windows and start, and the SQL limits.
pub fn job_def(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = toml::from_str::<tally_query::jobs::JobSpec>(text) {
        let _ = spec.into_def(&tally_query::SqlLimits::default());
    }
}

/// Dimension table loads (`PUT /v1/tables/{name}`): the first byte picks
/// the format and whether the table is a tree (columns `key`, `parent`)
/// and all text. A loaded table's row count is its batches' and every
/// node's descendants start with the node itself.
pub fn dimension_table(data: &[u8]) {
    use tally_query::{tables, TableFormat, TableSpec};
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = match selector % 3 {
        0 => TableFormat::Csv,
        1 => TableFormat::Tsv,
        _ => TableFormat::Ndjson,
    };
    let tree = selector & 4 != 0;
    let spec = TableSpec {
        key: tree.then(|| "key".to_string()),
        parent: tree.then(|| "parent".to_string()),
        all_text: selector & 8 != 0,
    };
    let Ok(table) = tables::parse_table("t", body, format, &spec) else {
        return;
    };
    let rows: usize = table.batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(table.rows, rows as u64, "the row count");
    if let Some(node) = first_key(&table) {
        if let Ok(found) = table.descendants(&node) {
            assert_eq!(
                found.first().map(|(n, d)| (n.as_str(), *d)),
                Some((node.as_str(), 0))
            );
        }
    }
}

/// The first non-null value of a tree table's `key` column, as text.
fn first_key(table: &tally_query::DimTable) -> Option<String> {
    use datafusion::arrow::array::Array;
    let batch = table.batches.first()?;
    let col = datafusion::arrow::compute::cast(
        batch.column_by_name("key")?,
        &datafusion::arrow::datatypes::DataType::Utf8,
    )
    .ok()?;
    let text = col
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()?;
    (0..text.len())
        .find(|&i| !text.is_null(i))
        .map(|i| text.value(i).to_string())
}

#[cfg(test)]
mod tests {
    use super::TARGETS;
    use std::path::Path;

    /// Every corpus file and every crash input kept for a target, through
    /// its entry point.
    #[test]
    fn every_corpus_and_crash_file_replays() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let mut files = 0;
            for dir in [
                fuzz.join("corpus").join(name),
                fuzz.join("artifacts").join(name),
            ] {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries {
                    let path = e.expect("a corpus entry").path();
                    let data = std::fs::read(&path).expect("a corpus file");
                    let outcome = std::panic::catch_unwind(|| target(&data));
                    assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                    files += 1;
                }
            }
            assert!(files > 0, "no corpus for {name} under {}", fuzz.display());
            replayed += files;
        }
        eprintln!("replayed {replayed} corpus and crash files");
    }
}
