//! What a rollup is: a stream, intervals, group-by dimensions, an optional
//! filter and aggregates. Parsed from the config file and the admin API
//! (the same JSON/TOML shape), validated before anything is built.

use crate::filter::{Compiled, Condition};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Longest rollup name; names are also file names.
const MAX_NAME: usize = 64;
/// Most group-by dimensions and aggregates one rollup may have.
const MAX_GROUP_BY: usize = 8;
const MAX_AGGREGATES: usize = 32;
/// Conditions of one rollup's filter.
const MAX_FILTER: usize = 64;

/// A bucket width a rollup keeps. Buckets are UTC-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    pub fn micros(self) -> i64 {
        match self {
            Grain::Minute => 60_000_000,
            Grain::Hour => 3_600_000_000,
            Grain::Day => 86_400_000_000,
        }
    }

    /// The start of the bucket holding `ts` (µs since the epoch).
    pub fn start(self, ts: i64) -> i64 {
        let w = self.micros();
        ts.div_euclid(w) * w
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
            Grain::Day => "day",
        }
    }
}

/// One aggregate, written as in the time-series API: `count`, `count(f)`,
/// `sum(f)`, `min(f)`, `max(f)`, `avg(f)`, `uniq(f)`, `quantiles(f)` (one
/// DDSketch answers every `pXX(f)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aggregate {
    Count,
    CountOf(String),
    Sum(String),
    Min(String),
    Max(String),
    Avg(String),
    Uniq(String),
    Quantiles(String),
}

/// The quantile ranks a request may ask for, as `pNN(f)`; a rollup's
/// `quantiles(f)` sketch answers every one.
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p75", 0.75),
    ("p90", 0.9),
    ("p95", 0.95),
    ("p99", 0.99),
];

impl Aggregate {
    /// A rollup's aggregate: `count`, `count(f)`, `sum(f)`, `min(f)`,
    /// `max(f)`, `avg(f)`, `uniq(f)` or `quantiles(f)`.
    pub fn parse(s: &str) -> Result<Aggregate> {
        match Self::parse_with_rank(s)? {
            (a, None) => Ok(a),
            (_, Some(_)) => Err(Error::Invalid {
                message: format!(
                    "aggregate {:?}: a rollup keeps quantiles(f), which answers every pNN(f)",
                    s.trim()
                ),
            }),
        }
    }

    /// The one aggregate grammar, of rollups and requests alike: a
    /// rollup's aggregates, and `pNN(f)` (NN one of 50, 75, 90, 95, 99),
    /// read as `quantiles(f)` at that rank.
    pub fn parse_with_rank(s: &str) -> Result<(Aggregate, Option<f64>)> {
        let s = s.trim();
        if s == "count" || s == "count()" || s == "count(*)" {
            return Ok((Aggregate::Count, None));
        }
        let bad = || {
            Error::Invalid {
            message: format!(
                "aggregate {s:?}: use count, count(f), sum(f), min(f), max(f), avg(f), uniq(f) or quantiles(f)"
            ),
        }
        };
        let (func, rest) = s.split_once('(').ok_or_else(bad)?;
        let field = rest.strip_suffix(')').ok_or_else(bad)?.trim();
        if field.is_empty() || field.contains(['(', ')', ',']) {
            return Err(bad());
        }
        let f = field.to_string();
        let func = func.trim();
        if let Some((_, q)) = PERCENTILES.iter().find(|(name, _)| *name == func) {
            return Ok((Aggregate::Quantiles(f), Some(*q)));
        }
        let a = match func {
            "count" => Aggregate::CountOf(f),
            "sum" => Aggregate::Sum(f),
            "min" => Aggregate::Min(f),
            "max" => Aggregate::Max(f),
            "avg" => Aggregate::Avg(f),
            "uniq" => Aggregate::Uniq(f),
            "quantiles" => Aggregate::Quantiles(f),
            _ => return Err(bad()),
        };
        Ok((a, None))
    }

    /// The field it reads, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Aggregate::Count => None,
            Aggregate::CountOf(f)
            | Aggregate::Sum(f)
            | Aggregate::Min(f)
            | Aggregate::Max(f)
            | Aggregate::Avg(f)
            | Aggregate::Uniq(f)
            | Aggregate::Quantiles(f) => Some(f),
        }
    }

    /// Whether its value is a whole number (a count, exact or estimated).
    pub fn whole(&self) -> bool {
        matches!(
            self,
            Aggregate::Count | Aggregate::CountOf(_) | Aggregate::Uniq(_)
        )
    }

    /// Whether a rollup keeping `kept` can answer this aggregate: the same
    /// field, kept in a state of the same kind (`sum(f)` and `avg(f)` both
    /// keep a sum and its count, so either answers both).
    pub fn answered_by(&self, kept: &Aggregate) -> bool {
        self.field() == kept.field() && crate::State::new(self).same_kind(&crate::State::new(kept))
    }

    /// Whether it reads a number (the others read any field).
    pub fn numeric(&self) -> bool {
        matches!(
            self,
            Aggregate::Sum(_)
                | Aggregate::Min(_)
                | Aggregate::Max(_)
                | Aggregate::Avg(_)
                | Aggregate::Quantiles(_)
        )
    }
}

impl std::fmt::Display for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Aggregate::Count => f.write_str("count"),
            Aggregate::CountOf(x) => write!(f, "count({x})"),
            Aggregate::Sum(x) => write!(f, "sum({x})"),
            Aggregate::Min(x) => write!(f, "min({x})"),
            Aggregate::Max(x) => write!(f, "max({x})"),
            Aggregate::Avg(x) => write!(f, "avg({x})"),
            Aggregate::Uniq(x) => write!(f, "uniq({x})"),
            Aggregate::Quantiles(x) => write!(f, "quantiles({x})"),
        }
    }
}

impl Serialize for Aggregate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Aggregate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Aggregate::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A rollup's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupDef {
    pub name: String,
    pub stream: String,
    pub intervals: Vec<Grain>,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<Condition>,
    pub aggregates: Vec<Aggregate>,
    /// How long each interval's buckets are kept (`"48h"`, `"90d"`, `"2w"`);
    /// an interval not named keeps its buckets for ever.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub retention: std::collections::BTreeMap<Grain, String>,
}

/// A retention period in µs: a whole positive number of hours, days or
/// weeks (`"36h"`, `"30d"`, `"2w"`).
pub fn parse_period(s: &str) -> Option<i64> {
    use crate::span::{Span, Unit};
    Span::parse(s.trim())
        .filter(|p| p.n > 0 && matches!(p.unit, Unit::Hour | Unit::Day | Unit::Week))?
        .micros()
}

impl RollupDef {
    /// Checks the definition on its own (the stream's schema is checked
    /// when events arrive: a field of the wrong type counts as missing).
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::Invalid { message });
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && self.name.as_bytes()[0].is_ascii_alphabetic();
        if !name_ok {
            return invalid(format!(
                "rollup name {:?}: 1 to {MAX_NAME} letters, digits, '_' or '-', starting with a letter",
                self.name
            ));
        }
        if self.stream.is_empty() {
            return invalid(format!("rollup {:?}: no stream", self.name));
        }
        if tally_ingest::is_internal_stream(&self.stream) {
            return invalid(format!(
                "rollup {:?}: stream {:?} belongs to tally's apps",
                self.name, self.stream
            ));
        }
        if self.intervals.is_empty() {
            return invalid(format!(
                "rollup {:?}: no intervals (minute, hour, day)",
                self.name
            ));
        }
        if self.aggregates.is_empty() || self.aggregates.len() > MAX_AGGREGATES {
            return invalid(format!(
                "rollup {:?}: 1 to {MAX_AGGREGATES} aggregates",
                self.name
            ));
        }
        if self.filter.len() > MAX_FILTER {
            return invalid(format!(
                "rollup {:?}: at most {MAX_FILTER} filter conditions",
                self.name
            ));
        }
        if self.group_by.len() > MAX_GROUP_BY {
            return invalid(format!(
                "rollup {:?}: at most {MAX_GROUP_BY} group_by dimensions",
                self.name
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for g in &self.group_by {
            if g == "ts" || !seen.insert(g) {
                return invalid(format!(
                    "rollup {:?}: group_by {g:?} is repeated or is the time",
                    self.name
                ));
            }
        }
        let mut aggs = std::collections::HashSet::new();
        for a in &self.aggregates {
            if !aggs.insert(a) || a.field() == Some("ts") {
                return invalid(format!(
                    "rollup {:?}: aggregate {a} is repeated or reads the time",
                    self.name
                ));
            }
        }
        for (g, period) in &self.retention {
            let ok = parse_period(period).is_some_and(|us| us >= g.micros());
            if !ok || !self.intervals.contains(g) {
                return invalid(format!(
                    "rollup {:?}: retention of {} {period:?}: an interval of the rollup and a period like 48h, 90d or 2w, at least one bucket long",
                    self.name,
                    g.as_str()
                ));
            }
        }
        for c in &self.filter {
            Compiled::check(c).map_err(|message| Error::Invalid {
                message: format!("rollup {:?}: filter on {:?}: {message}", self.name, c.field),
            })?;
        }
        Ok(())
    }

    /// How long buckets of `g` are kept, in µs (`None`: for ever).
    pub fn retention_us(&self, g: Grain) -> Option<i64> {
        self.retention.get(&g).and_then(|p| parse_period(p))
    }

    /// The intervals, finest first, without repeats.
    pub fn grains(&self) -> Vec<Grain> {
        let mut g = self.intervals.clone();
        g.sort();
        g.dedup();
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_parse_print_and_refuse() {
        for s in [
            "count",
            "count(user)",
            "sum(bytes)",
            "min(rtt)",
            "max(rtt)",
            "avg(rtt)",
            "uniq(user)",
            "quantiles(rtt)",
        ] {
            assert_eq!(Aggregate::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Aggregate::parse(" count(*) ").unwrap(), Aggregate::Count);
        for bad in ["", "p95(x)", "sum()", "sum(a,b)", "sum(x", "median(x)"] {
            assert!(Aggregate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn definitions_validate() {
        let json = r#"{"name":"by_country","stream":"pv","intervals":["hour","minute","hour"],
            "group_by":["country"],"filter":[{"field":"status","op":">=","value":500}],
            "aggregates":["count","uniq(user)","quantiles(ms)"]}"#;
        let d: RollupDef = serde_json::from_str(json).unwrap();
        d.validate().unwrap();
        assert_eq!(d.grains(), vec![Grain::Minute, Grain::Hour]);
        let back: RollupDef = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);

        let mut bad = d.clone();
        bad.name = "1x".into();
        assert!(bad.validate().is_err());
        let mut bad = d.clone();
        bad.group_by = vec!["a".into(), "a".into()];
        assert!(bad.validate().is_err());
        let mut bad = d.clone();
        bad.aggregates = vec![];
        assert!(bad.validate().is_err());
        let mut bad = d.clone();
        bad.filter[0].value = serde_json::json!("five hundred");
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<RollupDef>(
            r#"{"name":"a","stream":"s","intervals":["week"],"aggregates":["count"]}"#
        )
        .is_err());
    }
}
