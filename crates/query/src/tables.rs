//! Dimension tables: small lookup tables (ports, regions, plans, ...) that
//! queries join with streams.
//!
//! A table is replaced as a whole: the new rows are parsed completely, written
//! as a Parquet file and fsync'd, and only then does the manifest
//! (`tables/tables.json`, replaced atomically) name the new file. A reader
//! sees the old table or the new one, never a mix; a crash leaves the old one.
//!
//! A table may declare a tree: a `key` column and a `parent` column holding
//! another row's key. Then "this node or anything below it, at any depth" is
//! [`DimTable::descendants`], exposed to SQL as the table function
//! `tree_descendants('table', 'node')` and to the time-series API as the
//! `under` filter.

use crate::{QueryError, Result};
use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use parking_lot::{Mutex, RwLock};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{BufReader, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const MANIFEST: &str = "tables.json";

/// Body formats a table can be loaded from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TableFormat {
    Csv,
    Tsv,
    Ndjson,
}

/// How to load a table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableSpec {
    /// Column naming each row (a tree node).
    pub key: Option<String>,
    /// Column naming the row's parent node.
    pub parent: Option<String>,
    /// Keep every CSV column as text instead of inferring numbers.
    pub all_text: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestEntry {
    name: String,
    file: String,
    version: u64,
    rows: u64,
    key: Option<String>,
    parent: Option<String>,
    loaded_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    tables: Vec<ManifestEntry>,
}

/// One loaded table.
#[derive(Debug)]
pub struct DimTable {
    pub name: String,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
    /// Grows with every replacement (part of cache keys).
    pub version: u64,
    pub key: Option<String>,
    pub parent: Option<String>,
    pub loaded_at: String,
    /// Children of each node, when the table is a tree.
    children: HashMap<String, Vec<String>>,
    nodes: HashSet<String>,
}

impl DimTable {
    pub(crate) fn provider(&self) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        Ok(Arc::new(MemTable::try_new(
            self.schema.clone(),
            vec![self.batches.clone()],
        )?))
    }

    pub fn is_tree(&self) -> bool {
        self.key.is_some() && self.parent.is_some()
    }

    /// `node` and every node below it, each with its depth below `node`,
    /// breadth first. A cycle in the parent links is walked once.
    pub fn descendants(&self, node: &str) -> Result<Vec<(String, i64)>> {
        if !self.is_tree() {
            return Err(QueryError::Invalid {
                message: format!(
                    "table '{}' is not a tree: load it with key= and parent= columns",
                    self.name
                ),
            });
        }
        if !self.nodes.contains(node) {
            return Err(QueryError::NotFound {
                what: "tree node",
                name: format!("{node} (in table '{}')", self.name),
            });
        }
        let mut out = vec![(node.to_string(), 0)];
        let mut seen: HashSet<&str> = HashSet::from([node]);
        let mut queue = VecDeque::from([(node, 0i64)]);
        while let Some((n, depth)) = queue.pop_front() {
            for c in self.children.get(n).into_iter().flatten() {
                if seen.insert(c.as_str()) {
                    out.push((c.clone(), depth + 1));
                    queue.push_back((c.as_str(), depth + 1));
                }
            }
        }
        Ok(out)
    }
}

/// All dimension tables of a data directory.
#[derive(Debug)]
pub struct DimTables {
    dir: PathBuf,
    tables: RwLock<BTreeMap<String, Arc<DimTable>>>,
    /// One replacement at a time (the manifest is rewritten whole).
    writer: Mutex<()>,
    next_version: AtomicU64,
}

impl DimTables {
    /// Loads the tables named by `dir/tables.json`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DimTables> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let manifest = read_manifest(&dir)?;
        let mut tables = BTreeMap::new();
        let mut max_version = 0;
        let mut keep = HashSet::new();
        for e in manifest.tables {
            let path = dir.join(&e.file);
            let file = File::open(&path).map_err(|err| io_err(&path, err))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .map_err(|err| QueryError::Internal(format!("{}: {err}", path.display())))?;
            let batches = reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|err| QueryError::Internal(format!("{}: {err}", path.display())))?;
            let schema = batches
                .first()
                .map(|b| b.schema())
                .unwrap_or_else(|| Arc::new(Schema::empty()));
            max_version = max_version.max(e.version);
            keep.insert(e.file.clone());
            let t = build(
                &e.name,
                schema,
                batches,
                e.version,
                e.key,
                e.parent,
                e.loaded_at,
            )?;
            tables.insert(e.name, Arc::new(t));
        }
        // Files of replacements that crashed before the manifest named them.
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.ends_with(".parquet") && !keep.contains(&name) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(DimTables {
            dir,
            tables: RwLock::new(tables),
            writer: Mutex::new(()),
            next_version: AtomicU64::new(max_version + 1),
        })
    }

    /// Grows with every change to any table.
    pub fn generation(&self) -> u64 {
        self.next_version.load(Ordering::Relaxed)
    }

    pub fn names(&self) -> Vec<String> {
        self.tables.read().keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<DimTable>> {
        self.tables.read().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<DimTable>> {
        self.tables.read().values().cloned().collect()
    }

    /// Parses `body` and replaces table `name` with it, atomically.
    pub fn put(
        &self,
        name: &str,
        body: &[u8],
        format: TableFormat,
        spec: &TableSpec,
    ) -> Result<Arc<DimTable>> {
        let mut table = parse_table(name, body, format, spec)?;
        let schema = table.schema.clone();
        let _w = self.writer.lock();
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        table.version = version;
        // The new file, durable before the manifest names it.
        let file = format!("{name}.{version}.parquet");
        let path = self.dir.join(&file);
        let result = (|| {
            let f = File::create(&path).map_err(|e| io_err(&path, e))?;
            let mut w = ArrowWriter::try_new(f, schema.clone(), None)
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            for b in &table.batches {
                w.write(b)
                    .map_err(|e| QueryError::Internal(e.to_string()))?;
            }
            let f = w
                .into_inner()
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            f.sync_all().map_err(|e| io_err(&path, e))?;
            let mut manifest = read_manifest(&self.dir)?;
            let old = manifest
                .tables
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.file.clone());
            manifest.tables.retain(|e| e.name != name);
            manifest.tables.push(ManifestEntry {
                name: name.to_string(),
                file: file.clone(),
                version,
                rows: table.rows,
                key: table.key.clone(),
                parent: table.parent.clone(),
                loaded_at: table.loaded_at.clone(),
            });
            write_manifest(&self.dir, &manifest)?;
            Ok(old)
        })();
        let old = match result {
            Ok(old) => old,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        let table = Arc::new(table);
        self.tables.write().insert(name.to_string(), table.clone());
        if let Some(old) = old {
            let _ = fs::remove_file(self.dir.join(old));
        }
        Ok(table)
    }

    /// Drops table `name`; false if there was none.
    pub fn delete(&self, name: &str) -> Result<bool> {
        let _w = self.writer.lock();
        let mut manifest = read_manifest(&self.dir)?;
        let Some(pos) = manifest.tables.iter().position(|e| e.name == name) else {
            return Ok(false);
        };
        let entry = manifest.tables.remove(pos);
        self.next_version.fetch_add(1, Ordering::Relaxed);
        write_manifest(&self.dir, &manifest)?;
        self.tables.write().remove(name);
        let _ = fs::remove_file(self.dir.join(entry.file));
        Ok(true)
    }
}

/// A table as `DimTables::put` would store it, parsed and checked
/// completely (its name, the body, the tree columns) without touching
/// any file (its `version` is 0 until it is stored).
pub fn parse_table(
    name: &str,
    body: &[u8],
    format: TableFormat,
    spec: &TableSpec,
) -> Result<DimTable> {
    tally_ingest::validate_stream_name(name).map_err(|m| QueryError::Invalid {
        message: format!("table name: {m}"),
    })?;
    let batches = parse(body, format, spec.all_text)?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| QueryError::Invalid {
            message: "the body has no rows".into(),
        })?;
    let loaded_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    build(
        name,
        schema,
        batches,
        0,
        spec.key.clone(),
        spec.parent.clone(),
        loaded_at,
    )
}

fn build(
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    version: u64,
    key: Option<String>,
    parent: Option<String>,
    loaded_at: String,
) -> Result<DimTable> {
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    let mut nodes = HashSet::new();
    match (&key, &parent) {
        (Some(k), Some(p)) => {
            for b in &batches {
                let keys = text_column(b, k)?;
                let parents = text_column(b, p)?;
                for i in 0..b.num_rows() {
                    if keys.is_null(i) {
                        continue;
                    }
                    let node = keys.value(i).to_string();
                    if !parents.is_null(i) && !parents.value(i).is_empty() {
                        children
                            .entry(parents.value(i).to_string())
                            .or_default()
                            .push(node.clone());
                    }
                    nodes.insert(node);
                }
            }
        }
        (None, None) => {}
        _ => {
            return Err(QueryError::Invalid {
                message: "a tree needs both key= and parent= columns".into(),
            })
        }
    }
    Ok(DimTable {
        name: name.to_string(),
        schema,
        batches,
        rows,
        version,
        key,
        parent,
        loaded_at,
        children,
        nodes,
    })
}

/// Column `name` of `batch` as text.
fn text_column(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| QueryError::NotFound {
            what: "column",
            name: name.to_string(),
        })?;
    let text = cast(col, &DataType::Utf8).map_err(|e| QueryError::Invalid {
        message: format!("column '{name}': {e}"),
    })?;
    Ok(text
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::from(Vec::<Option<&str>>::new())))
}

fn parse(body: &[u8], format: TableFormat, all_text: bool) -> Result<Vec<RecordBatch>> {
    let bad = |e: arrow::error::ArrowError| QueryError::Invalid {
        message: e.to_string(),
    };
    match format {
        TableFormat::Csv | TableFormat::Tsv => {
            let delimiter = if format == TableFormat::Tsv {
                b'\t'
            } else {
                b','
            };
            let fmt = arrow::csv::reader::Format::default()
                .with_header(true)
                .with_delimiter(delimiter);
            let (mut schema, _) = fmt.infer_schema(Cursor::new(body), None).map_err(bad)?;
            if all_text {
                schema = Schema::new(
                    schema
                        .fields()
                        .iter()
                        .map(|f| Field::new(f.name(), DataType::Utf8, true))
                        .collect::<Vec<_>>(),
                );
            }
            let reader = arrow::csv::ReaderBuilder::new(Arc::new(schema))
                .with_format(fmt)
                .build(Cursor::new(body))
                .map_err(bad)?;
            reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(bad)
        }
        TableFormat::Ndjson => {
            let (schema, _) =
                arrow::json::reader::infer_json_schema(BufReader::new(Cursor::new(body)), None)
                    .map_err(bad)?;
            let reader = arrow::json::ReaderBuilder::new(Arc::new(schema))
                .build(BufReader::new(Cursor::new(body)))
                .map_err(bad)?;
            reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(bad)
        }
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| QueryError::Internal(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(io_err(&path, e)),
    }
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST);
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let text = serde_json::to_vec_pretty(m).map_err(|e| QueryError::Internal(e.to_string()))?;
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(&text).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

fn io_err(path: &Path, e: std::io::Error) -> QueryError {
    QueryError::Internal(format!("{}: {e}", path.display()))
}

/// `tree_descendants('table', 'node')`: the node and every node below it,
/// as rows `(key, depth)`.
#[derive(Debug)]
pub(crate) struct TreeDescendants {
    pub tables: Arc<DimTables>,
}

impl TableFunctionImpl for TreeDescendants {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let usage = || {
            datafusion::error::DataFusionError::Plan(
                "tree_descendants takes two text literals: tree_descendants('table', 'node')"
                    .into(),
            )
        };
        let text = |e: &Expr| match e {
            Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Some(s.clone()),
            _ => None,
        };
        let [t, n] = args.exprs() else {
            return Err(usage());
        };
        let (Some(table), Some(node)) = (text(t), text(n)) else {
            return Err(usage());
        };
        let dim = self.tables.get(&table).ok_or_else(|| {
            datafusion::error::DataFusionError::Plan(format!("table '{table}' not found"))
        })?;
        let nodes = dim
            .descendants(&node)
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("depth", DataType::Int64, false),
        ]));
        let keys: ArrayRef = Arc::new(StringArray::from_iter_values(nodes.iter().map(|n| &n.0)));
        let depths: ArrayRef = Arc::new(Int64Array::from_iter_values(nodes.iter().map(|n| n.1)));
        let batch = RecordBatch::try_new(schema.clone(), vec![keys, depths])?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_atomically_and_walks_trees_of_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let t = DimTables::open(dir.path()).unwrap();
        let spec = TableSpec {
            key: Some("slug".into()),
            parent: Some("parent".into()),
            all_text: false,
        };
        let body = "slug,parent\nworld,\neurope,world\nnorth,europe\nnorway,north\nasia,world\nloop_a,loop_b\nloop_b,loop_a\n";
        t.put("regions", body.as_bytes(), TableFormat::Csv, &spec)
            .unwrap();
        let d = t.get("regions").unwrap().descendants("europe").unwrap();
        assert_eq!(
            d,
            vec![
                ("europe".into(), 0),
                ("north".into(), 1),
                ("norway".into(), 2)
            ]
        );
        assert_eq!(
            t.get("regions")
                .unwrap()
                .descendants("world")
                .unwrap()
                .len(),
            5
        );
        assert_eq!(
            t.get("regions")
                .unwrap()
                .descendants("loop_a")
                .unwrap()
                .len(),
            2
        );
        assert!(t.get("regions").unwrap().descendants("mars").is_err());
        // A bad body leaves the old table in place.
        assert!(t
            .put(
                "regions",
                b"slug,parent\n\"unterminated\n",
                TableFormat::Csv,
                &spec
            )
            .is_err());
        assert_eq!(t.get("regions").unwrap().rows, 7);
        // Reopening finds the same table.
        drop(t);
        let t = DimTables::open(dir.path()).unwrap();
        assert_eq!(t.get("regions").unwrap().rows, 7);
        assert_eq!(
            t.get("regions")
                .unwrap()
                .descendants("north")
                .unwrap()
                .len(),
            2
        );
    }
}
