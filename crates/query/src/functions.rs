//! SQL functions tally registers over DataFusion's own.
//!
//! `date_trunc` keeps DataFusion's semantics and implementation; it only
//! routes UTC timestamps (every stream's `ts`) through the arithmetic path
//! DataFusion takes for timestamps without a zone. In UTC the two are the
//! same instant-for-instant, but DataFusion's zoned path converts every
//! value through chrono-tz and was the bulk of an hourly GROUP BY's time.

use arrow::array::{make_array, Array};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use std::sync::Arc;

/// The functions to register on every session.
pub(crate) fn all() -> Vec<ScalarUDF> {
    vec![ScalarUDF::new_from_impl(DateTrunc {
        inner: datafusion::functions::datetime::date_trunc(),
    })]
}

/// `date_trunc` with a fast path for UTC timestamps.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateTrunc {
    inner: Arc<ScalarUDF>,
}

/// Whether `tz` names UTC itself (not merely a zone at offset 0 today).
fn is_utc(tz: &str) -> bool {
    matches!(
        tz,
        "UTC" | "utc" | "Z" | "+00:00" | "+00" | "+0000" | "Etc/UTC" | "Etc/UCT" | "UCT"
    )
}

/// The zone of a UTC timestamp type, or `None` for any other type.
fn utc_zone(t: &DataType) -> Option<Arc<str>> {
    match t {
        DataType::Timestamp(_, Some(tz)) if is_utc(tz) => Some(tz.clone()),
        _ => None,
    }
}

fn with_zone(t: &DataType, tz: Option<Arc<str>>) -> DataType {
    match t {
        DataType::Timestamp(unit, _) => DataType::Timestamp(*unit, tz),
        other => other.clone(),
    }
}

/// `v` with its timestamp type re-labelled to zone `tz`, values unchanged
/// (a cast would convert tz-less values to local wall-clock time).
fn relabel(v: ColumnarValue, tz: Option<Arc<str>>) -> Result<ColumnarValue> {
    use ScalarValue as S;
    Ok(match v {
        ColumnarValue::Array(a) => {
            let to = with_zone(a.data_type(), tz);
            let data = a.to_data().into_builder().data_type(to).build()?;
            ColumnarValue::Array(make_array(data))
        }
        ColumnarValue::Scalar(s) => ColumnarValue::Scalar(match s {
            S::TimestampSecond(v, _) => S::TimestampSecond(v, tz),
            S::TimestampMillisecond(v, _) => S::TimestampMillisecond(v, tz),
            S::TimestampMicrosecond(v, _) => S::TimestampMicrosecond(v, tz),
            S::TimestampNanosecond(v, _) => S::TimestampNanosecond(v, tz),
            other => other,
        }),
    })
}

impl ScalarUDFImpl for DateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(tz) = args.args.get(1).and_then(|v| utc_zone(&v.data_type())) else {
            return self.inner.invoke_with_args(args);
        };
        // A cast between zones of one unit only relabels the type.
        let ts = args.args.remove(1);
        args.args.insert(1, relabel(ts, None)?);
        let f = &args.arg_fields[1];
        args.arg_fields[1] = Arc::new(Field::new(
            f.name(),
            with_zone(f.data_type(), None),
            f.is_nullable(),
        ));
        args.return_field = Arc::new(Field::new(
            args.return_field.name(),
            with_zone(args.return_field.data_type(), None),
            args.return_field.is_nullable(),
        ));
        relabel(self.inner.invoke_with_args(args)?, Some(tz))
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, TimestampMicrosecondArray};
    use datafusion::config::ConfigOptions;

    fn trunc(f: &ScalarUDF, unit: &str, tz: &str, values: &[Option<i64>]) -> ArrayRef {
        let a: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(values.to_vec()).with_timezone(tz));
        let fields = vec![
            Arc::new(Field::new("g", DataType::Utf8, false)),
            Arc::new(Field::new("ts", a.data_type().clone(), true)),
        ];
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(unit.into()))),
                ColumnarValue::Array(a.clone()),
            ],
            arg_fields: fields.clone(),
            number_rows: values.len(),
            return_field: Arc::new(Field::new("r", a.data_type().clone(), true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        match f.invoke_with_args(args).unwrap() {
            ColumnarValue::Array(a) => a,
            ColumnarValue::Scalar(s) => s.to_array().unwrap(),
        }
    }

    /// The fast path answers exactly what DataFusion's own function does.
    #[test]
    fn same_answers_as_datafusion() {
        let ours = all().remove(0);
        let theirs = datafusion::functions::datetime::date_trunc();
        // Around epoch, leap days, DST dates elsewhere, year ends, negatives.
        let mut values: Vec<Option<i64>> = vec![None, Some(0), Some(-1), Some(-86_400_000_001)];
        let mut x: i64 = 0x2545F4914F6CDD1D;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Within about ±150 years of 1970.
            values.push(Some(x % 4_700_000_000_000_000));
        }
        for unit in [
            "microsecond",
            "millisecond",
            "second",
            "minute",
            "hour",
            "day",
            "week",
            "month",
            "quarter",
            "year",
        ] {
            for tz in ["UTC", "+00:00", "Europe/Oslo", "America/New_York"] {
                let a = trunc(&ours, unit, tz, &values);
                let b = trunc(&theirs, unit, tz, &values);
                assert_eq!(a.data_type(), b.data_type(), "{unit} {tz}");
                assert_eq!(&a, &b, "{unit} {tz}");
            }
        }
    }
}
