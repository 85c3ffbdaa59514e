//! The Stats API's parameters as Plausible names them: metrics,
//! properties, filters and periods, parsed and checked.

use super::{invalid, Result, StatsError};
use crate::web::visits::ATTRS;
use chrono::{Datelike, Duration, NaiveDate};
use std::collections::HashMap;
use tally_query::QueryError;

/// Whether `name` is a visit property (`visit:<name>`): the entry and exit
/// pages and the attributes a visit takes from its first event.
pub(super) fn is_visit_prop(name: &str) -> bool {
    name == "entry_page" || name == "exit_page" || ATTRS.contains(&name)
}

/// A metric of Plausible's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Visitors,
    Visits,
    Pageviews,
    ViewsPerVisit,
    BounceRate,
    VisitDuration,
    Events,
}

impl Metric {
    pub(super) fn parse(s: &str) -> Result<Metric> {
        Ok(match s.trim() {
            "visitors" => Metric::Visitors,
            "visits" => Metric::Visits,
            "pageviews" => Metric::Pageviews,
            "views_per_visit" => Metric::ViewsPerVisit,
            "bounce_rate" => Metric::BounceRate,
            "visit_duration" => Metric::VisitDuration,
            "events" => Metric::Events,
            other => return invalid(format!(
                "The metric `{other}` is not recognized. Use visitors, visits, pageviews, views_per_visit, bounce_rate, visit_duration or events"
            )),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Visitors => "visitors",
            Metric::Visits => "visits",
            Metric::Pageviews => "pageviews",
            Metric::ViewsPerVisit => "views_per_visit",
            Metric::BounceRate => "bounce_rate",
            Metric::VisitDuration => "visit_duration",
            Metric::Events => "events",
        }
    }

    /// Computed from visits (the others from events).
    pub(super) fn of_visits(self) -> bool {
        matches!(
            self,
            Metric::Visits | Metric::ViewsPerVisit | Metric::BounceRate | Metric::VisitDuration
        )
    }
}

/// Where a property lives.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Prop {
    /// The stored field.
    pub(super) field: String,
    /// The key in breakdown results.
    pub(super) key: String,
    /// Stored on events.
    pub(super) on_events: bool,
    /// Stored on visits.
    pub(super) on_visits: bool,
    /// What an absent value is called.
    pub(super) none: &'static str,
    /// The property a value belongs to, grouped by too and named in each
    /// row (a browser's or OS's version: `Chrome 120.0` and `Edge 120.0`
    /// are two rows, as in Plausible).
    pub(super) parent: Option<&'static str>,
}

pub(super) fn prop(name: &str) -> Result<Prop> {
    let max = tally_query::limits::MAX_TEXT_BYTES;
    if name.len() > max {
        return over(
            "text_bytes",
            max,
            format!(
                "a property name of {} bytes, more than the limit of {max} (text_bytes)",
                name.len()
            ),
        );
    }
    let p = |field: &str, key: &str, on_events: bool, on_visits: bool| Prop {
        field: field.into(),
        key: key.into(),
        on_events,
        on_visits,
        none: if field == "source" {
            "Direct / None"
        } else {
            "(none)"
        },
        parent: match field {
            "browser_version" => Some("browser"),
            "os_version" => Some("os"),
            _ => None,
        },
    };
    if let Some(k) = name.strip_prefix("event:props:") {
        if k.is_empty() {
            return invalid("event:props: needs a property name");
        }
        return Ok(p(&format!("prop.{k}"), k, true, false));
    }
    Ok(match name {
        "event:page" => p("pathname", "page", true, false),
        "event:name" | "event:goal" => p("name", "name", true, false),
        "event:hostname" => p("hostname", "hostname", true, false),
        "visit:exit_page" => p("exit_page", "exit_page", false, true),
        other => match other.strip_prefix("visit:") {
            Some(v) if is_visit_prop(v) => p(v, v, true, true),
            _ => {
                return invalid(format!(
                    "Invalid property '{other}'. Use event:page, event:name, event:goal, event:hostname, event:props:<name>, or visit: followed by entry_page, exit_page or one of {}",
                    ATTRS.join(", ")
                ))
            }
        },
    })
}

/// One condition of `filters` (`visit:source==Google|Bing`).
#[derive(Debug, Clone)]
pub(super) struct Cond {
    pub(super) prop: Prop,
    pub(super) negated: bool,
    /// Exact values, or one prefix (`/blog/**`), or "absent".
    pub(super) values: Vec<Value_>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value_ {
    Exact(String),
    Prefix(String),
    Contains(String),
    Absent,
}

/// Conditions one `filters` parameter may hold (as `/v1/query`'s filters).
pub const MAX_CONDITIONS: usize = tally_query::limits::MAX_FILTERS;
/// Values one condition may list (`a|b|c`).
pub const MAX_VALUES: usize = 1_000;

/// A request past one of the Stats API's limits: 400 (413 for a size)
/// naming the limit.
fn over<T>(limit: &'static str, max: usize, message: String) -> Result<T> {
    Err(StatsError::Query(QueryError::TooComplex {
        limit,
        max,
        message,
    }))
}

pub(super) fn parse_filters(s: &str) -> Result<Vec<Cond>> {
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if out.len() == MAX_CONDITIONS {
            return over(
                "filters",
                MAX_CONDITIONS,
                format!("more than {MAX_CONDITIONS} filter conditions (filters)"),
            );
        }
        let (name, negated, rest) = if let Some((n, v)) = part.split_once("!=") {
            (n, true, v)
        } else if let Some((n, v)) = part.split_once("==") {
            (n, false, v)
        } else if let Some((n, v)) = part.split_once("~") {
            (n, false, v)
        } else {
            return invalid(format!(
                "filter '{part}': use property==value, property!=value or property~value"
            ));
        };
        let contains = !negated && !part.contains("==") && part.contains('~');
        let prop = prop(name.trim())?;
        let mut values = Vec::new();
        for v in rest.split('|').map(str::trim) {
            if values.len() == MAX_VALUES {
                return over(
                    "filter_values",
                    MAX_VALUES,
                    format!(
                        "filter '{}': more than {MAX_VALUES} values (filter_values)",
                        name.trim()
                    ),
                );
            }
            values.push(if contains {
                Value_::Contains(v.to_string())
            } else if v == prop.none || (prop.field == "source" && v == "(none)") {
                Value_::Absent
            } else if let Some(head) = v.strip_suffix("**").or_else(|| v.strip_suffix('*')) {
                if head.contains('*') {
                    return invalid(format!(
                        "filter '{part}': a wildcard is supported only at the end of a value"
                    ));
                }
                Value_::Prefix(head.to_string())
            } else if v.contains('*') {
                return invalid(format!(
                    "filter '{part}': a wildcard is supported only at the end of a value"
                ));
            } else {
                Value_::Exact(v.to_string())
            });
        }
        out.push(Cond {
            prop,
            negated,
            values,
        });
    }
    Ok(out)
}

/// The request's parameters, as Plausible names them.
#[derive(Debug, Clone, Default)]
pub struct Params(pub HashMap<String, String>);

impl Params {
    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// A resolved period: `[from, to)` dates (UTC) and the default interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Period {
    pub(super) from: NaiveDate,
    pub(super) to: NaiveDate,
    pub(super) default_interval: &'static str,
}

pub(super) fn parse_date(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").or_else(|_| {
        invalid(format!(
            "Failed to parse date '{s}': use the format YYYY-MM-DD"
        ))
    })
}

pub(super) fn month_start(d: NaiveDate, back: i32) -> NaiveDate {
    let months = d.year() * 12 + d.month0() as i32 - back;
    NaiveDate::from_ymd_opt(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1).unwrap_or(d)
}

pub(super) fn period(p: &Params, today: NaiveDate) -> Result<Period> {
    let date = match p.get("date") {
        Some(d) if p.get("period") != Some("custom") => parse_date(d)?,
        _ => today,
    };
    let day = Duration::days(1);
    let (from, to, iv) = match p.get("period").unwrap_or("30d") {
        "day" => (date, date + day, "hour"),
        "7d" => (date - Duration::days(6), date + day, "date"),
        "30d" => (date - Duration::days(29), date + day, "date"),
        "month" => (month_start(date, 0), month_start(date, -1), "date"),
        "6mo" => (month_start(date, 5), month_start(date, -1), "month"),
        "12mo" => (month_start(date, 11), month_start(date, -1), "month"),
        "custom" => {
            let Some((a, b)) = p.get("date").and_then(|d| d.split_once(',')) else {
                return invalid(
                    "The `date` parameter is required when using a custom period: date=YYYY-MM-DD,YYYY-MM-DD",
                );
            };
            let (a, b) = (parse_date(a)?, parse_date(b)?);
            if b < a {
                return invalid("In a custom period the first date must not be after the second");
            }
            if (b - a).num_days() > 3 * 366 {
                return invalid("A custom period may span at most 3 years");
            }
            (a, b + day, "date")
        }
        other => {
            return invalid(format!(
                "Error parsing `period` parameter: invalid period `{other}`. Use day, 7d, 30d, month, 6mo, 12mo or custom"
            ))
        }
    };
    Ok(Period {
        from,
        to,
        default_interval: iv,
    })
}

pub(super) fn metrics(p: &Params) -> Result<Vec<Metric>> {
    let list = p.get("metrics").unwrap_or("visitors");
    let mut out = Vec::new();
    for m in list.split(',') {
        let m = Metric::parse(m)?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

pub(super) fn rfc3339(d: NaiveDate) -> String {
    format!("{}T00:00:00Z", d.format("%Y-%m-%d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> Params {
        Params(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn periods_as_plausible_defines_them() {
        let today = NaiveDate::from_ymd_opt(2024, 3, 15).unwrap();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let cases = [
            (vec![("period", "day")], "2024-03-15", "2024-03-16"),
            (
                vec![("period", "day"), ("date", "2024-02-29")],
                "2024-02-29",
                "2024-03-01",
            ),
            (vec![("period", "7d")], "2024-03-09", "2024-03-16"),
            (vec![("period", "30d")], "2024-02-15", "2024-03-16"),
            (vec![("period", "month")], "2024-03-01", "2024-04-01"),
            (vec![("period", "6mo")], "2023-10-01", "2024-04-01"),
            (vec![("period", "12mo")], "2023-04-01", "2024-04-01"),
            (
                vec![("period", "custom"), ("date", "2024-01-01,2024-01-31")],
                "2024-01-01",
                "2024-02-01",
            ),
        ];
        for (kv, from, to) in cases {
            let p = period(&params(&kv), today).unwrap();
            assert_eq!((p.from, p.to), (d(from), d(to)), "{kv:?}");
        }
        for bad in [
            vec![("period", "week")],
            vec![("period", "custom")],
            vec![("period", "custom"), ("date", "2024-02-01,2024-01-01")],
            vec![("period", "day"), ("date", "2024-13-01")],
        ] {
            assert!(period(&params(&bad), today).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_parse_into_conditions() {
        let c = parse_filters("visit:source==Google|Direct / None;event:page==/blog/**").unwrap();
        assert_eq!(c[0].prop.field, "source");
        assert_eq!(
            c[0].values,
            vec![Value_::Exact("Google".into()), Value_::Absent]
        );
        assert_eq!(c[1].values, vec![Value_::Prefix("/blog/".into())]);
        let n = parse_filters("event:props:plan!=free").unwrap();
        assert!(n[0].negated);
        assert_eq!(n[0].prop.field, "prop.plan");
        for bad in [
            "visit:city==Oslo",
            "event:page==/a*b",
            "visit:source=Google",
        ] {
            assert!(parse_filters(bad).is_err(), "{bad}");
        }
    }

    /// The limit named by a refusal past it.
    fn limit_of<T>(r: Result<T>) -> Option<(&'static str, usize)> {
        match r {
            Err(StatsError::Query(QueryError::TooComplex { limit, max, .. })) => Some((limit, max)),
            _ => None,
        }
    }

    #[test]
    fn filters_and_properties_are_refused_one_past_their_limits() {
        let conds = |n: usize| vec!["event:page==/a"; n].join(";");
        assert_eq!(
            parse_filters(&conds(MAX_CONDITIONS)).unwrap().len(),
            MAX_CONDITIONS
        );
        assert_eq!(
            limit_of(parse_filters(&conds(MAX_CONDITIONS + 1))),
            Some(("filters", MAX_CONDITIONS))
        );
        let values = |n: usize| format!("visit:source=={}", vec!["x"; n].join("|"));
        assert_eq!(
            parse_filters(&values(MAX_VALUES)).unwrap()[0].values.len(),
            MAX_VALUES
        );
        assert_eq!(
            limit_of(parse_filters(&values(MAX_VALUES + 1))),
            Some(("filter_values", MAX_VALUES))
        );
        let max = tally_query::limits::MAX_TEXT_BYTES;
        let name = |n: usize| format!("event:props:{}", "p".repeat(n - "event:props:".len()));
        assert!(prop(&name(max)).is_ok());
        assert_eq!(limit_of(prop(&name(max + 1))), Some(("text_bytes", max)));
    }
}
