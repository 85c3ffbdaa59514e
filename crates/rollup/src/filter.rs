//! The filter model shared by rollups, the time-series API and the apps:
//! a [`Condition`] (`field op value`) is checked once into a [`Compiled`]
//! condition, which evaluates on batch rows (a rollup counting events) and
//! on group key values (a query answered from rollup cells). The third
//! evaluator, the DataFusion expression of a raw query, is built from the
//! same `Compiled` condition in `tally-query` (`timeseries/filter.rs`),
//! and a property test there checks that the three agree.
//!
//! Semantics: a condition on a field the event does not have is false,
//! except `!=`, `not_in` and `missing`, which hold for it (SQL's
//! `IS DISTINCT FROM`). A condition on a value of the other type (a number
//! against a text field) is false, as for a missing field.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_ingest::{Batch, ColumnData};

/// A condition on one field; a rollup counts only events meeting all of
/// its conditions, and a request reads only such events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub field: String,
    pub op: Op,
    /// A string, a number, or a list of them for `in` / `not_in`; absent
    /// for `exists` / `missing`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    In,
    NotIn,
    Prefix,
    Contains,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    Exists,
    Missing,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::Eq,
        Op::Ne,
        Op::In,
        Op::NotIn,
        Op::Prefix,
        Op::Contains,
        Op::Gt,
        Op::Ge,
        Op::Lt,
        Op::Le,
        Op::Exists,
        Op::Missing,
    ];

    /// The operator as the APIs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Prefix => "prefix",
            Op::Contains => "contains",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Exists => "exists",
            Op::Missing => "missing",
        }
    }

    /// Reads an operator, with the time-series API's other spellings
    /// (`==`, `eq`, `<>`, `ne`).
    pub fn parse(text: &str) -> Option<Op> {
        match text {
            "==" | "eq" => Some(Op::Eq),
            "<>" | "ne" => Some(Op::Ne),
            _ => Op::ALL.into_iter().find(|op| op.as_str() == text),
        }
    }
}

/// A condition's operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    None,
    Text(String),
    Number(f64),
    List(Vec<Scalar>),
}

/// One item of an `in` list.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Text(String),
    Number(f64),
}

/// A condition checked once: its operand fits its operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub field: String,
    pub op: Op,
    pub operand: Operand,
}

/// A value an event holds in a field: text or a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Datum<'a> {
    Text(&'a str),
    Number(f64),
}

impl Compiled {
    /// Checks that the operand fits the operator.
    pub fn check(c: &Condition) -> Result<(), String> {
        Self::new(c).map(|_| ())
    }

    pub fn new(c: &Condition) -> Result<Compiled, String> {
        let number = |n: &serde_json::Number| n.as_f64().ok_or("needs a finite number");
        let operand = match (c.op, &c.value) {
            (Op::Exists | Op::Missing, Value::Null) => Operand::None,
            (Op::Exists | Op::Missing, _) => return Err("takes no value".into()),
            (Op::In | Op::NotIn, Value::Array(items)) => Operand::List(
                items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(Scalar::Text(s.clone())),
                        Value::Number(n) => Ok(Scalar::Number(number(n)?)),
                        _ => Err("needs a list of strings or numbers"),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (Op::In | Op::NotIn, _) => return Err("needs a list of strings or numbers".into()),
            (Op::Prefix | Op::Contains, Value::String(s)) => Operand::Text(s.clone()),
            (Op::Prefix | Op::Contains, _) => return Err("needs a string".into()),
            (Op::Gt | Op::Ge | Op::Lt | Op::Le, Value::Number(n)) => Operand::Number(number(n)?),
            (Op::Gt | Op::Ge | Op::Lt | Op::Le, _) => return Err("needs a number".into()),
            (Op::Eq | Op::Ne, Value::String(s)) => Operand::Text(s.clone()),
            (Op::Eq | Op::Ne, Value::Number(n)) => Operand::Number(number(n)?),
            (Op::Eq | Op::Ne, _) => return Err("needs a string or a number".into()),
        };
        Ok(Compiled {
            field: c.field.clone(),
            op: c.op,
            operand,
        })
    }

    /// The row filter: whether row `r` of `batch` meets the condition.
    pub fn test(&self, batch: &Batch, r: usize) -> bool {
        let cell = batch.column(&self.field).and_then(|c| match &c.data {
            ColumnData::Dim(s) => s.get(r).map(Datum::Text),
            ColumnData::Value(n) => n.get(r).map(Datum::Number),
        });
        self.holds(cell)
    }

    /// The cell filter: whether a group key's value (`None`: the events
    /// of the group lack the field) meets the condition.
    pub fn test_key(&self, value: Option<&str>) -> bool {
        self.holds(value.map(Datum::Text))
    }

    /// Whether a value (`None`: missing) meets the condition.
    pub fn holds(&self, cell: Option<Datum<'_>>) -> bool {
        match self.op {
            // Negations hold where the field is missing.
            Op::Ne => !self.eval(Op::Eq, cell),
            Op::NotIn => !self.eval(Op::In, cell),
            op => self.eval(op, cell),
        }
    }

    fn eval(&self, op: Op, cell: Option<Datum<'_>>) -> bool {
        match (op, cell) {
            (Op::Exists, c) => c.is_some(),
            (Op::Missing, c) => c.is_none(),
            (_, None) => false,
            (Op::Eq | Op::Ne, Some(c)) => c.equals(&self.operand),
            (Op::In | Op::NotIn, Some(c)) => match &self.operand {
                Operand::List(items) => items.iter().any(|v| c.equals_scalar(v)),
                _ => false,
            },
            (Op::Prefix, Some(Datum::Text(s))) => {
                matches!(&self.operand, Operand::Text(p) if s.starts_with(p.as_str()))
            }
            (Op::Contains, Some(Datum::Text(s))) => {
                matches!(&self.operand, Operand::Text(p) if s.contains(p.as_str()))
            }
            (Op::Prefix | Op::Contains, Some(Datum::Number(_))) => false,
            (Op::Gt | Op::Ge | Op::Lt | Op::Le, Some(Datum::Number(x))) => match self.operand {
                Operand::Number(v) => match op {
                    Op::Gt => x > v,
                    Op::Ge => x >= v,
                    Op::Lt => x < v,
                    _ => x <= v,
                },
                _ => false,
            },
            (Op::Gt | Op::Ge | Op::Lt | Op::Le, Some(Datum::Text(_))) => false,
        }
    }
}

impl Datum<'_> {
    fn equals(&self, o: &Operand) -> bool {
        match (self, o) {
            (Datum::Text(s), Operand::Text(t)) => s == t,
            (Datum::Number(x), Operand::Number(v)) => x == v,
            _ => false,
        }
    }

    fn equals_scalar(&self, v: &Scalar) -> bool {
        match (self, v) {
            (Datum::Text(s), Scalar::Text(t)) => s == t,
            (Datum::Number(x), Scalar::Number(n)) => x == n,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tally_ingest::{Column, NumColumn, StrColumn};

    fn batch() -> Batch {
        let mut s = StrColumn::new();
        s.push("/docs/a");
        s.push_null();
        s.push("/blog");
        let mut n = NumColumn::default();
        n.push(5.0);
        n.push(500.0);
        n.push_null();
        Batch {
            ts: vec![0, 1, 2],
            columns: vec![
                Column {
                    name: "path".into(),
                    data: ColumnData::Dim(s),
                },
                Column {
                    name: "status".into(),
                    data: ColumnData::Value(n),
                },
            ],
        }
    }

    fn rows(field: &str, op: Op, value: Value) -> Vec<bool> {
        let c = Compiled::new(&Condition {
            field: field.into(),
            op,
            value,
        })
        .unwrap();
        let b = batch();
        (0..3).map(|r| c.test(&b, r)).collect()
    }

    #[test]
    fn conditions_follow_the_api_semantics() {
        assert_eq!(rows("path", Op::Eq, json!("/blog")), [false, false, true]);
        assert_eq!(rows("path", Op::Ne, json!("/blog")), [true, true, false]);
        assert_eq!(rows("path", Op::Prefix, json!("/d")), [true, false, false]);
        assert_eq!(
            rows("path", Op::Contains, json!("lo")),
            [false, false, true]
        );
        assert_eq!(rows("status", Op::Ge, json!(500)), [false, true, false]);
        assert_eq!(rows("status", Op::Lt, json!(500)), [true, false, false]);
        assert_eq!(rows("status", Op::In, json!([5, 7])), [true, false, false]);
        assert_eq!(
            rows("status", Op::NotIn, json!([5, 7])),
            [false, true, true]
        );
        assert_eq!(rows("status", Op::Exists, Value::Null), [true, true, false]);
        assert_eq!(rows("path", Op::Missing, Value::Null), [false, true, false]);
        assert_eq!(rows("nope", Op::Eq, json!("x")), [false, false, false]);
        assert_eq!(rows("nope", Op::Ne, json!("x")), [true, true, true]);
    }

    #[test]
    fn operands_must_fit_operators() {
        for (op, v) in [
            (Op::Gt, json!("a")),
            (Op::In, json!("a")),
            (Op::Prefix, json!(3)),
            (Op::Exists, json!(1)),
            (Op::Eq, json!([1])),
        ] {
            let c = Condition {
                field: "f".into(),
                op,
                value: v,
            };
            assert!(Compiled::check(&c).is_err(), "{op:?}");
        }
    }
}
