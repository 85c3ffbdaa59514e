//! The rates service (S1), read side: `GET /rates` answers the average
//! daily price between two ports or regions over a range of days.
//!
//! Prices are events of one stream (`prices` by default: dimensions
//! `orig_code` and `dest_code`, value `price`, the event time the day at
//! midnight UTC). Ports and regions are dimension tables: `ports` (columns
//! `code`, `parent_slug`) and `regions` (a tree, loaded with `key=slug` and
//! `parent=parent_slug`). A place is a port code or a region slug; a region
//! stands for every port in it or in any region below it.
//!
//! Each day of the range is answered in order: the average of every price
//! that day between the two port sets, rounded to an integer (halves away
//! from zero), or `null` when the day has fewer than three prices. The
//! answer is computed in SQL by the query engine and cached under the data
//! version of the days it covers (and the tables' generation): a warm answer
//! is a map lookup and two in-memory version reads; a batch that lands on
//! any of its days, or a reloaded table, makes it miss.

mod error;
mod http;

pub use error::RatesError;
pub use http::{routes, Slot};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::NaiveDate;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tally_query::QueryEngine;

/// The rates service's settings (`[rates]` in the config file).
#[derive(Debug, Clone)]
pub struct RatesConfig {
    /// The stream of prices.
    pub stream: String,
    /// The ports table (columns `code`, `parent_slug`).
    pub ports: String,
    /// The regions tree (`key=slug`, `parent=parent_slug`).
    pub regions: String,
    /// Longest range answered, in days (400 past it).
    pub max_days: u32,
    /// Answers kept in the cache.
    pub cache_entries: usize,
}

impl Default for RatesConfig {
    fn default() -> Self {
        RatesConfig {
            stream: "prices".into(),
            ports: "ports".into(),
            regions: "regions".into(),
            max_days: 731,
            cache_entries: 10_000,
        }
    }
}

/// One day of an answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Day {
    pub day: String,
    pub average_price: Option<i64>,
}

/// A question, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub origin: String,
    pub destination: String,
}

/// Fewer prices than this on a day answer `null`.
pub const MIN_PRICES: i64 = 3;

const DAY_US: i64 = 86_400_000_000;

fn day_us(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_micros())
}

/// What the cache holds for a question: the versions it was computed at.
struct Cached {
    data_version: u64,
    tables: u64,
    days: Arc<Vec<Day>>,
}

pub struct RatesApp {
    query: Arc<QueryEngine>,
    config: RatesConfig,
    cache: Mutex<HashMap<Question, Cached>>,
}

impl RatesApp {
    pub fn new(query: Arc<QueryEngine>, config: RatesConfig) -> RatesApp {
        metrics::init();
        RatesApp {
            query,
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &RatesConfig {
        &self.config
    }

    /// Checks the parameters of a request, naming the one at fault.
    pub fn question(
        &self,
        date_from: Option<&str>,
        date_to: Option<&str>,
        origin: Option<&str>,
        destination: Option<&str>,
    ) -> Result<Question, RatesError> {
        let date = |name: &'static str, v: Option<&str>| {
            let v = v.ok_or(RatesError::Missing(name))?;
            // Exactly YYYY-MM-DD, a real day.
            let ok = v.len() == 10 && v.as_bytes()[4] == b'-' && v.as_bytes()[7] == b'-';
            ok.then(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .flatten()
                .ok_or_else(|| RatesError::BadParameter {
                    parameter: name,
                    message: format!("{name} must be a date written YYYY-MM-DD, got {v:?}"),
                })
        };
        let from = date("date_from", date_from)?;
        let to = date("date_to", date_to)?;
        if from > to {
            return Err(RatesError::BadParameter {
                parameter: "date_from",
                message: format!("date_from ({from}) is after date_to ({to})"),
            });
        }
        let days = (to - from).num_days() + 1;
        if days > i64::from(self.config.max_days) {
            return Err(RatesError::BadParameter {
                parameter: "date_to",
                message: format!(
                    "the range holds {days} days; at most {} are answered at once",
                    self.config.max_days
                ),
            });
        }
        let place = |name: &'static str, v: Option<&str>| {
            let v = v.ok_or(RatesError::Missing(name))?.trim();
            if v.is_empty() {
                return Err(RatesError::Missing(name));
            }
            Ok(v.to_string())
        };
        Ok(Question {
            from,
            to,
            origin: place("origin", origin)?,
            destination: place("destination", destination)?,
        })
    }

    /// Every day of the question's range, in order.
    pub async fn answer(&self, q: &Question) -> Result<Arc<Vec<Day>>, RatesError> {
        let engine = self.query.engine();
        let (lo, hi) = (day_us(q.from), day_us(q.to) + DAY_US);
        let data_version = engine.data_version(&self.config.stream, Some(lo), Some(hi - 1));
        let tables = self.query.tables().generation();
        if let Some(c) = self.cache.lock().get(q) {
            if c.data_version == data_version && c.tables == tables {
                metrics::CACHE.with_label_values(&["hit"]).inc();
                return Ok(c.days.clone());
            }
        }
        metrics::CACHE.with_label_values(&["miss"]).inc();
        let origins = self.ports_of("origin", &q.origin)?;
        let destinations = self.ports_of("destination", &q.destination)?;
        let sums = self.sums(&origins, &destinations, lo, hi).await?;
        let days: Vec<Day> = q
            .from
            .iter_days()
            .take_while(|d| *d <= q.to)
            .map(|d| {
                let key = day_us(d) / DAY_US;
                let average_price = sums
                    .get(&key)
                    .filter(|(_, n)| *n >= MIN_PRICES)
                    .map(|(s, n)| (s / *n as f64).round() as i64);
                Day {
                    day: d.format("%Y-%m-%d").to_string(),
                    average_price,
                }
            })
            .collect();
        let days = Arc::new(days);
        let mut cache = self.cache.lock();
        if cache.len() >= self.config.cache_entries && !cache.contains_key(q) {
            cache.clear();
        }
        cache.insert(
            q.clone(),
            Cached {
                data_version,
                tables,
                days: days.clone(),
            },
        );
        Ok(days)
    }

    /// The ports a place stands for: a port code, or every port of a
    /// region and of the regions below it.
    fn ports_of(&self, parameter: &'static str, place: &str) -> Result<Vec<String>, RatesError> {
        let tables = self.query.tables();
        let missing = |name: &str| {
            RatesError::Unavailable(format!(
                "the {name} table is not loaded (PUT /v1/tables/{name}; see docs/rates.md)"
            ))
        };
        let ports = tables
            .get(&self.config.ports)
            .ok_or_else(|| missing(&self.config.ports))?;
        let regions = tables
            .get(&self.config.regions)
            .ok_or_else(|| missing(&self.config.regions))?;
        let (codes, parents) = (
            text_column(&ports, "code")?,
            text_column(&ports, "parent_slug")?,
        );
        if codes.iter().any(|c| c == place) {
            return Ok(vec![place.to_string()]);
        }
        let below: HashSet<String> = match regions.descendants(place) {
            Ok(nodes) => nodes.into_iter().map(|(k, _)| k).collect(),
            Err(tally_query::QueryError::NotFound { .. }) => {
                return Err(RatesError::BadParameter {
                    parameter,
                    message: format!(
                        "{parameter} {place:?} is neither a port code nor a region slug"
                    ),
                })
            }
            Err(e) => return Err(RatesError::Unavailable(e.to_string())),
        };
        Ok(codes
            .into_iter()
            .zip(parents)
            .filter(|(_, p)| below.contains(p))
            .map(|(c, _)| c)
            .collect())
    }

    /// Per day number (days since the epoch): the sum and count of prices
    /// between the two port sets in [lo, hi).
    async fn sums(
        &self,
        origins: &[String],
        destinations: &[String],
        lo: i64,
        hi: i64,
    ) -> Result<HashMap<i64, (f64, i64)>, RatesError> {
        let stream = &self.config.stream;
        if origins.is_empty()
            || destinations.is_empty()
            || self.query.engine().schema(stream).is_none()
        {
            return Ok(HashMap::new());
        }
        let list = |codes: &[String]| {
            codes
                .iter()
                .map(|c| format!("'{}'", c.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sql = format!(
            "SELECT CAST(floor(date_part('epoch', ts) / 86400) AS BIGINT) AS day, \
                    CAST(sum(price) AS DOUBLE) AS s, count(price) AS n \
             FROM streams.\"{stream}\" \
             WHERE ts >= to_timestamp_micros({lo}) AND ts < to_timestamp_micros({hi}) \
               AND orig_code IN ({}) AND dest_code IN ({}) \
             GROUP BY 1",
            list(origins),
            list(destinations)
        );
        let answer = self.query.sql(&sql).await.map_err(|e| match e {
            tally_query::QueryError::Busy { retry_after, .. } => RatesError::Busy {
                message: e.to_string(),
                retry_after,
            },
            e => RatesError::Query(e.to_string()),
        })?;
        let mut out = HashMap::new();
        for b in &answer.batches {
            let day = arrow::compute::cast(b.column(0), &DataType::Int64)
                .map_err(|e| RatesError::Query(e.to_string()))?;
            let sum = arrow::compute::cast(b.column(1), &DataType::Float64)
                .map_err(|e| RatesError::Query(e.to_string()))?;
            let n = arrow::compute::cast(b.column(2), &DataType::Int64)
                .map_err(|e| RatesError::Query(e.to_string()))?;
            let (day, sum, n) = (
                day.as_primitive::<Int64Type>(),
                sum.as_primitive::<Float64Type>(),
                n.as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                if !day.is_null(i) && !sum.is_null(i) {
                    out.insert(day.value(i), (sum.value(i), n.value(i)));
                }
            }
        }
        Ok(out)
    }
}

/// A text column of a dimension table, as strings (nulls empty).
fn text_column(t: &tally_query::DimTable, name: &str) -> Result<Vec<String>, RatesError> {
    let idx = t.schema.index_of(name).map_err(|_| {
        RatesError::Unavailable(format!("table '{}' has no column '{name}'", t.name))
    })?;
    let mut out = Vec::with_capacity(t.rows as usize);
    for b in &t.batches {
        let col = arrow::compute::cast(b.column(idx), &DataType::Utf8)
            .map_err(|e| RatesError::Unavailable(e.to_string()))?;
        let col = col.as_string::<i32>();
        out.extend((0..col.len()).map(|i| {
            if col.is_null(i) {
                String::new()
            } else {
                col.value(i).to_string()
            }
        }));
    }
    Ok(out)
}

mod metrics {
    use prometheus::{register_int_counter_vec, IntCounterVec};
    use std::sync::LazyLock;

    pub(crate) static CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "tally_rates_cache_lookups_total",
            "GET /rates answers by cache result: hit (no storage read), miss",
            &["result"]
        )
        .unwrap()
    });

    pub(crate) fn init() {
        LazyLock::force(&CACHE);
    }
}
