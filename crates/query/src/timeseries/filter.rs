//! Filters of a time-series request: the wire [`Filter`] read into the
//! shared model (`tally_rollup::Compiled`, a checked condition) once, and
//! that condition's DataFusion expression. The model's two other
//! evaluators, on batch rows and on rollup cells' group values, live beside
//! the model in `tally-rollup` (`filter.rs`); the property test below runs
//! all three on random conditions and rows and requires one answer.

use super::{column, Filter};
use crate::{QueryError, Result};
use datafusion::logical_expr::{lit, Expr};
use serde_json::Value;
use tally_ingest::ColumnType;
use tally_rollup::{Compiled, Condition, Op, Operand, Scalar};

/// Reads request filter `i` on a field of type `ty` (the `under` operator,
/// which needs a dimension table, is the caller's), naming the filter and
/// the field in any error.
pub(super) fn compile(i: usize, f: &Filter, ty: ColumnType) -> Result<Compiled> {
    let bad = |what: &str| QueryError::Invalid {
        message: format!("filters[{i}] on '{}': {what}", f.field),
    };
    let op = Op::parse(&f.op).ok_or_else(|| bad(&format!("unknown operator {:?}", f.op)))?;
    let scalar = |v: &Value| match (ty, v) {
        (ColumnType::Dim, Value::String(_)) | (ColumnType::Value, Value::Number(_)) => Ok(()),
        (ColumnType::Dim, _) => Err(bad("the field is text; give a string value")),
        (ColumnType::Value, _) => Err(bad("the field is a number; give a numeric value")),
    };
    let value = match op {
        Op::Eq | Op::Ne => scalar(&f.value).map(|_| f.value.clone())?,
        Op::In | Op::NotIn => match &f.value {
            Value::Array(items) if !items.is_empty() => {
                items.iter().try_for_each(scalar)?;
                f.value.clone()
            }
            _ => return Err(bad("give a non-empty array of values")),
        },
        Op::Prefix | Op::Contains => match (ty, &f.value) {
            (ColumnType::Dim, Value::String(_)) => f.value.clone(),
            _ => return Err(bad("this operator takes a text field and a string value")),
        },
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            if ty != ColumnType::Value {
                return Err(bad("numeric comparisons need a numeric field"));
            }
            scalar(&f.value).map(|_| f.value.clone())?
        }
        // Any value given is ignored, as it always was.
        Op::Exists | Op::Missing => Value::Null,
    };
    Compiled::new(&Condition {
        field: f.field.clone(),
        op,
        value,
    })
    .map_err(|e| bad(&e))
}

/// The condition as a DataFusion expression over the stream's table.
pub(super) fn expr(c: &Compiled) -> Expr {
    let col = column(&c.field);
    let one = |o: &Operand| match o {
        Operand::Text(t) => lit(t.clone()),
        Operand::Number(n) => lit(*n),
        // A checked condition has a scalar here.
        Operand::None | Operand::List(_) => lit(datafusion::common::ScalarValue::Null),
    };
    let list = |o: &Operand| match o {
        Operand::List(items) => items
            .iter()
            .map(|s| match s {
                Scalar::Text(t) => lit(t.clone()),
                Scalar::Number(n) => lit(*n),
            })
            .collect(),
        _ => Vec::new(),
    };
    let text = |o: &Operand| match o {
        Operand::Text(t) => t.clone(),
        _ => String::new(),
    };
    match c.op {
        Op::Eq => col.eq(one(&c.operand)),
        Op::Ne => col.clone().not_eq(one(&c.operand)).or(col.is_null()),
        Op::In => col.in_list(list(&c.operand), false),
        Op::NotIn => col
            .clone()
            .in_list(list(&c.operand), true)
            .or(col.is_null()),
        Op::Prefix => datafusion::functions::expr_fn::starts_with(col, lit(text(&c.operand))),
        Op::Contains => {
            datafusion::functions::expr_fn::strpos(col, lit(text(&c.operand))).gt(lit(0i64))
        }
        Op::Gt => col.gt(one(&c.operand)),
        Op::Ge => col.gt_eq(one(&c.operand)),
        Op::Lt => col.lt(one(&c.operand)),
        Op::Le => col.lt_eq(one(&c.operand)),
        Op::Exists => col.is_not_null(),
        Op::Missing => col.is_null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;
    use std::sync::Arc;
    use tally_ingest::{Batch, Column, ColumnData, NumColumn, StrColumn};

    /// Texts and numbers chosen to meet at the edges: empty text, prefixes
    /// of each other, case, zero of both signs, fractions, huge values.
    const TEXTS: [&str; 7] = ["", "a", "ab", "b", "ba", "A", "a b"];
    const NUMBERS: [f64; 8] = [0.0, -0.0, 1.0, -1.5, 2.5, 1e300, -1e300, 0.1];

    fn text() -> impl Strategy<Value = String> {
        prop::sample::select(TEXTS.to_vec()).prop_map(str::to_string)
    }

    fn number() -> impl Strategy<Value = f64> {
        prop::sample::select(NUMBERS.to_vec())
    }

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            text().prop_map(Value::String),
            number().prop_map(|n| serde_json::json!(n)),
            Just(Value::Null),
            prop::collection::vec(
                prop_oneof![
                    text().prop_map(Value::String),
                    number().prop_map(|n| serde_json::json!(n))
                ],
                0..4
            )
            .prop_map(Value::Array),
        ]
    }

    fn filter() -> impl Strategy<Value = Filter> {
        let op = prop::sample::select(
            Op::ALL
                .iter()
                .map(|o| o.as_str().to_string())
                .chain(["==", "<>", "eq", "ne"].map(String::from))
                .collect::<Vec<_>>(),
        );
        (prop::sample::select(vec!["d", "n"]), op, json_value()).prop_map(|(field, op, value)| {
            Filter {
                field: field.into(),
                op,
                value,
                table: None,
            }
        })
    }

    type Rows = Vec<(Option<String>, Option<f64>)>;

    fn rows() -> impl Strategy<Value = Rows> {
        prop::collection::vec(
            (prop::option::of(text()), prop::option::of(number())),
            1..12,
        )
    }

    fn tally_batch(rows: &Rows) -> Batch {
        let (mut d, mut n) = (StrColumn::new(), NumColumn::default());
        for (s, x) in rows {
            match s {
                Some(s) => d.push(s),
                None => d.push_null(),
            }
            match x {
                Some(x) => n.push(*x),
                None => n.push_null(),
            }
        }
        Batch {
            ts: (0..rows.len() as i64).collect(),
            columns: vec![
                Column {
                    name: "d".into(),
                    data: ColumnData::Dim(d),
                },
                Column {
                    name: "n".into(),
                    data: ColumnData::Value(n),
                },
            ],
        }
    }

    /// The rows DataFusion keeps for `expr`, by position.
    fn datafusion_rows(rt: &tokio::runtime::Runtime, rows: &Rows, expr: Expr) -> Vec<bool> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, false),
            Field::new("d", DataType::Utf8, true),
            Field::new("n", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0.clone()))),
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        let kept = rt.block_on(async {
            let ctx = SessionContext::new();
            let df = ctx.read_batch(batch).unwrap();
            df.filter(expr)
                .unwrap()
                .select_columns(&["i"])
                .unwrap()
                .collect()
                .await
                .unwrap()
        });
        let mut out = vec![false; rows.len()];
        for b in kept {
            let i = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            for k in 0..i.len() {
                out[i.value(k) as usize] = true;
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// The three evaluators of one condition (the DataFusion expression
        /// of a raw query, the row filter of a rollup, the cell filter of a
        /// query answered from rollup cells) keep the same rows.
        #[test]
        fn the_three_evaluators_agree(f in filter(), rows in rows()) {
            let ty = if f.field == "d" { ColumnType::Dim } else { ColumnType::Value };
            let Ok(c) = compile(0, &f, ty) else {
                // Refused with a message naming the filter; nothing to run.
                return Ok(());
            };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let by_datafusion = datafusion_rows(&rt, &rows, expr(&c));
            let batch = tally_batch(&rows);
            let by_rows: Vec<bool> = (0..rows.len()).map(|r| c.test(&batch, r)).collect();
            prop_assert_eq!(&by_rows, &by_datafusion, "{:?} on {:?}", c, rows);
            if ty == ColumnType::Dim {
                let by_cells: Vec<bool> = rows.iter().map(|r| c.test_key(r.0.as_deref())).collect();
                prop_assert_eq!(&by_cells, &by_datafusion, "{:?} on {:?}", c, rows);
            }
        }
    }
}
