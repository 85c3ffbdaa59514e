//! A rollup's filter: the condition model (`Condition`, `Op`), checked once
//! and evaluated row by row on batches.
//!
//! Semantics match the time-series API's filters: a condition on a field
//! the event does not have is false, except `!=`, `not_in` and `missing`,
//! which hold for it (SQL's `IS DISTINCT FROM`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_ingest::{Batch, ColumnData};

/// A condition on one field; a rollup counts only events meeting all of
/// its conditions.
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

/// A condition's operand.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    None,
    Text(String),
    Number(f64),
    List(Vec<Value>),
}

#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    field: String,
    op: Op,
    operand: Operand,
}

impl Compiled {
    /// Checks that the operand fits the operator.
    pub(crate) fn check(c: &Condition) -> Result<(), String> {
        Self::new(c).map(|_| ())
    }

    pub(crate) fn new(c: &Condition) -> Result<Compiled, String> {
        let operand = match (c.op, &c.value) {
            (Op::Exists | Op::Missing, Value::Null) => Operand::None,
            (Op::Exists | Op::Missing, _) => return Err("takes no value".into()),
            (Op::In | Op::NotIn, Value::Array(items))
                if items.iter().all(|v| v.is_string() || v.is_number()) =>
            {
                Operand::List(items.clone())
            }
            (Op::In | Op::NotIn, _) => return Err("needs a list of strings or numbers".into()),
            (Op::Prefix | Op::Contains, Value::String(s)) => Operand::Text(s.clone()),
            (Op::Prefix | Op::Contains, _) => return Err("needs a string".into()),
            (Op::Gt | Op::Ge | Op::Lt | Op::Le, Value::Number(n)) => {
                Operand::Number(n.as_f64().ok_or("needs a finite number")?)
            }
            (Op::Gt | Op::Ge | Op::Lt | Op::Le, _) => return Err("needs a number".into()),
            (Op::Eq | Op::Ne, Value::String(s)) => Operand::Text(s.clone()),
            (Op::Eq | Op::Ne, Value::Number(n)) => {
                Operand::Number(n.as_f64().ok_or("needs a finite number")?)
            }
            (Op::Eq | Op::Ne, _) => return Err("needs a string or a number".into()),
        };
        Ok(Compiled {
            field: c.field.clone(),
            op: c.op,
            operand,
        })
    }

    /// Whether row `r` of `batch` meets the condition.
    pub(crate) fn test(&self, batch: &Batch, r: usize) -> bool {
        match self.op {
            // Negations hold where the field is missing.
            Op::Ne => !self.eval(Op::Eq, batch, r),
            Op::NotIn => !self.eval(Op::In, batch, r),
            op => self.eval(op, batch, r),
        }
    }

    fn eval(&self, op: Op, batch: &Batch, r: usize) -> bool {
        let value = batch.column(&self.field).map(|c| match &c.data {
            ColumnData::Dim(s) => s.get(r).map(Cell::Text),
            ColumnData::Value(n) => n.get(r).map(Cell::Number),
        });
        let cell = value.flatten();
        match (op, cell) {
            (Op::Exists, c) => c.is_some(),
            (Op::Missing, c) => c.is_none(),
            (_, None) => false,
            (Op::Eq | Op::Ne, Some(c)) => c.equals(&self.operand),
            (Op::In | Op::NotIn, Some(c)) => match &self.operand {
                Operand::List(items) => items.iter().any(|v| c.equals_json(v)),
                _ => false,
            },
            (Op::Prefix, Some(Cell::Text(s))) => {
                matches!(&self.operand, Operand::Text(p) if s.starts_with(p.as_str()))
            }
            (Op::Contains, Some(Cell::Text(s))) => {
                matches!(&self.operand, Operand::Text(p) if s.contains(p.as_str()))
            }
            (Op::Prefix | Op::Contains, Some(Cell::Number(_))) => false,
            (Op::Gt | Op::Ge | Op::Lt | Op::Le, Some(Cell::Number(x))) => match self.operand {
                Operand::Number(v) => match op {
                    Op::Gt => x > v,
                    Op::Ge => x >= v,
                    Op::Lt => x < v,
                    _ => x <= v,
                },
                _ => false,
            },
            (Op::Gt | Op::Ge | Op::Lt | Op::Le, Some(Cell::Text(_))) => false,
        }
    }
}

enum Cell<'a> {
    Text(&'a str),
    Number(f64),
}

impl Cell<'_> {
    fn equals(&self, o: &Operand) -> bool {
        match (self, o) {
            (Cell::Text(s), Operand::Text(t)) => s == t,
            (Cell::Number(x), Operand::Number(v)) => x == v,
            _ => false,
        }
    }

    fn equals_json(&self, v: &Value) -> bool {
        match (self, v) {
            (Cell::Text(s), Value::String(t)) => s == t,
            (Cell::Number(x), Value::Number(n)) => n.as_f64() == Some(*x),
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
