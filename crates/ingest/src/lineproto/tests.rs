//! Tests of the line protocol parser: InfluxDB's escapes and edge
//! cases, errors naming line and field, precision, and a round trip of
//! what InfluxDB's clients escape.
use super::*;
use crate::ColumnData;

const NOW: i64 = 1_700_000_000_000_000;

fn parse(body: &str) -> Result<Vec<Measurement>> {
    parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, NOW)
}

fn dim(m: &Measurement, field: &str, row: usize) -> Option<String> {
    match &m.batch.column(field)?.data {
        ColumnData::Dim(c) => c.get(row).map(str::to_string),
        ColumnData::Value(_) => panic!("{field} is a value"),
    }
}

fn num(m: &Measurement, field: &str, row: usize) -> Option<f64> {
    match &m.batch.column(field)?.data {
        ColumnData::Value(c) => c.get(row),
        ColumnData::Dim(_) => panic!("{field} is a dimension"),
    }
}

#[test]
fn a_point_with_every_kind_of_field() {
    let ms = parse(
        "cpu,host=a,region=eu-west usage=0.5,count=3i,big=18446744073709551615u,ok=t,bad=FALSE,note=\"hi there\" 1700000000123456789\n",
    )
    .unwrap();
    assert_eq!(ms.len(), 1);
    let m = &ms[0];
    assert_eq!(m.stream, "cpu");
    assert_eq!(m.batch.ts, vec![1_700_000_000_123_456]);
    assert_eq!(dim(m, "host", 0).as_deref(), Some("a"));
    assert_eq!(dim(m, "region", 0).as_deref(), Some("eu-west"));
    assert_eq!(num(m, "usage", 0), Some(0.5));
    assert_eq!(num(m, "count", 0), Some(3.0));
    assert_eq!(num(m, "big", 0), Some(u64::MAX as f64));
    assert_eq!(dim(m, "ok", 0).as_deref(), Some("true"));
    assert_eq!(dim(m, "bad", 0).as_deref(), Some("false"));
    assert_eq!(dim(m, "note", 0).as_deref(), Some("hi there"));
    assert_eq!(m.lines, vec![1]);
}

#[test]
fn escapes_as_influxdb_reads_them() {
    // Each case was written to InfluxDB 1.6 and read back there.
    let body = concat!(
        r#"cpu,regions=\\ east value=1.0 1000"#,
        "\n",
        r#"u,s=\\,\,\t e=1 1000"#,
        "\n",
        r#"m,tag\ key\,\=k=tag\ value\,\=v field\ key\,\=f="a \"quoted\" \\ string",eq=1 1000"#,
        "\n",
        r#"m,t=c\d f=1,g\\h="a\\b\"c" 2000"#,
        "\n",
        r#"m\\ x v=1 1"#,
        "\n",
        r#"n3\\\ x v=1 1"#,
        "\n",
        r#"n6\= v=1 1"#,
        "\n",
        r#"cpu\ load,a=b v=1 1"#,
    );
    let ms = parse(body).unwrap();
    let by = |name: &str| ms.iter().find(|m| m.measurement == name).unwrap();
    assert_eq!(dim(by("cpu"), "regions", 0).as_deref(), Some(r"\ east"));
    assert_eq!(dim(by("u"), "s", 0).as_deref(), Some(r"\,,\t"));
    let m = by("m");
    assert_eq!(dim(m, "tag key,=k", 0).as_deref(), Some("tag value,=v"));
    assert_eq!(
        dim(m, "field key,=f", 0).as_deref(),
        Some(r#"a "quoted" \ string"#)
    );
    assert_eq!(dim(m, "t", 1).as_deref(), Some(r"c\d"));
    assert_eq!(dim(m, r"g\\h", 1).as_deref(), Some(r#"a\b"c"#));
    assert_eq!(m.batch.ts, vec![1, 2]);
    for name in ["m x", r"n3\ x", "n6=", "cpu load"] {
        by(name);
    }
    assert_eq!(by("cpu load").stream, "cpu+20load");
    // An unescaped '=' in a tag value, after a comma a backslash
    // escaped: InfluxDB refuses the point ("invalid tag format").
    let e = parse(r"n7,t\\k=v\\,t2=a\=b v=1 1").unwrap_err();
    assert!(e.to_string().contains("invalid tag format"), "{e}");
    // A field key ends at the first '=' a backslash does not skip.
    let e = parse(r"n12 k\\=x=1 1").unwrap_err();
    assert!(e.to_string().contains("invalid boolean"), "{e}");
}

#[test]
fn a_string_value_may_span_lines_and_hold_separators() {
    let ms = parse("log msg=\"one, two=2\nthree\" 5000\nlog msg=\"x\" 6000\n").unwrap();
    let m = &ms[0];
    assert_eq!(dim(m, "msg", 0).as_deref(), Some("one, two=2\nthree"));
    // The second point starts on body line 3.
    assert_eq!(m.lines, vec![1, 3]);
    let e = parse("log msg=\"a\nb\" 1\nlog msg=oops 2\n").unwrap_err();
    assert_eq!(e.location(), Some(Location::Line(3)));
}

#[test]
fn precision_scales_timestamps() {
    let cases = [
        (
            Precision::Nanoseconds,
            1_700_000_000_000_000_999i64,
            1_700_000_000_000_000i64,
        ),
        (
            Precision::Microseconds,
            1_700_000_000_000_001,
            1_700_000_000_000_001,
        ),
        (
            Precision::Milliseconds,
            1_700_000_000_001,
            1_700_000_000_001_000,
        ),
        (Precision::Seconds, 1_700_000_000, 1_700_000_000_000_000),
        (Precision::Minutes, 28_333_333, 1_699_999_980_000_000),
        (Precision::Hours, 472_222, 1_699_999_200_000_000),
    ];
    for (p, t, us) in cases {
        let body = format!("m v=1 {t}");
        let ms = parse_line_protocol(body.as_bytes(), p, NOW).unwrap();
        assert_eq!(ms[0].batch.ts, vec![us], "{p:?}");
    }
    for (name, p) in [
        ("n", Precision::Nanoseconds),
        ("ns", Precision::Nanoseconds),
        ("u", Precision::Microseconds),
        ("us", Precision::Microseconds),
        ("ms", Precision::Milliseconds),
        ("s", Precision::Seconds),
        ("m", Precision::Minutes),
        ("h", Precision::Hours),
    ] {
        assert_eq!(Precision::parse(name), Some(p));
    }
    assert_eq!(Precision::parse("d"), None);
    // Out of tally's range, or of i64 once scaled.
    for (p, t) in [
        (Precision::Seconds, -1i64),
        (Precision::Hours, i64::MAX / 2),
        (Precision::Seconds, 9_999_999_999),
    ] {
        let body = format!("m v=1 {t}");
        let e = parse_line_protocol(body.as_bytes(), p, NOW).unwrap_err();
        assert_eq!(e.field(), Some("timestamp"), "{e}");
    }
}

#[test]
fn no_timestamp_means_now_and_comments_and_blank_lines_are_skipped() {
    let ms = parse("# a comment\n\n  cpu v=1\r\n\ncpu v=2   \n# end").unwrap();
    assert_eq!(ms[0].batch.ts, vec![NOW, NOW]);
    assert_eq!(ms[0].lines, vec![3, 5]);
}

#[test]
fn measurements_go_to_their_own_batches_in_order() {
    let ms = parse("mem used=1 1000\ncpu v=1 2000\nmem used=2 3000\n").unwrap();
    let names: Vec<_> = ms.iter().map(|m| m.stream.as_str()).collect();
    assert_eq!(names, ["mem", "cpu"]);
    assert_eq!(ms[0].batch.ts, vec![1, 3]);
    assert_eq!(ms[0].lines, vec![1, 3]);
    assert_eq!(ms[1].lines, vec![2]);
}

#[test]
fn errors_name_the_line_and_field() {
    let cases: &[(&str, usize, Option<&str>, &str)] = &[
        ("m v=1\nm\n", 2, None, "missing fields"),
        ("m v=1\nm \n", 2, None, "missing fields"),
        ("m,t v=1", 1, None, "no '=value'"),
        ("m,t= v=1", 1, Some("t"), "missing tag value"),
        ("m,=x v=1", 1, None, "missing tag key"),
        ("m v", 1, None, "no '=value'"),
        ("m v=", 1, Some("v"), "missing field value"),
        ("m =1", 1, None, "missing field key"),
        ("m v=1x", 1, Some("v"), "not a number"),
        ("m v=inf", 1, Some("v"), "not a number"),
        ("m v=NaN", 1, Some("v"), "not a number"),
        ("m v=+1", 1, Some("v"), "not a number"),
        ("m v=1.5i", 1, Some("v"), "integer"),
        ("m v=-1u", 1, Some("v"), "unsigned"),
        ("m v=\"open", 1, None, "closing quote"),
        ("m v=1 12x", 1, Some("timestamp"), "integer timestamp"),
        ("m v=1 1 extra", 1, None, "unexpected text"),
        ("m v=1,v=2", 1, Some("v"), "twice"),
        ("m,v=a v=\"b\"", 1, Some("v"), "twice"),
        ("m,v=a v=2", 1, Some("v"), "type conflict"),
        ("m ts=2", 1, Some("ts"), "reserved"),
        ("m v=1\nm v=\"s\"", 2, Some("v"), "type conflict"),
        ("_tally_m v=1", 1, Some("measurement"), "stream name"),
        (",t=1 v=1", 1, None, "missing measurement"),
    ];
    for (body, line, field, msg) in cases {
        let e = parse(body).unwrap_err();
        assert_eq!(e.location(), Some(Location::Line(*line)), "{body:?}: {e}");
        assert_eq!(e.field(), *field, "{body:?}: {e}");
        assert!(e.to_string().contains(msg), "{body:?}: {e}");
    }
}

#[test]
fn a_body_that_is_not_utf8_is_refused_at_its_line_and_part() {
    let good = "m,city=Tromsø v=1 1\n".as_bytes();
    let body = [good, b"m,city=T\xffr v=1 2\n"].concat();
    let e = parse_line_protocol(&body, Precision::Seconds, NOW).unwrap_err();
    assert_eq!(e.location(), Some(Location::Line(2)), "{e}");
    assert!(e.to_string().contains("tag value is not UTF-8"), "{e}");
    // Non-ASCII text in a UTF-8 body is read as it is.
    let ok = parse_line_protocol(good, Precision::Seconds, NOW).unwrap();
    assert_eq!(dim(&ok[0], "city", 0).as_deref(), Some("Tromsø"));
}

#[test]
fn a_line_of_only_a_carriage_return_is_blank() {
    // Found by fuzzing: the CR was stripped after the blank-line check,
    // leaving an empty point to scan.
    let ms = parse("# c\n\r\n\n} v=1\r\n").unwrap();
    assert_eq!(ms[0].lines, vec![4]);
}

#[test]
fn an_empty_body_has_no_points() {
    assert!(parse("").unwrap().is_empty());
    assert!(parse("\n# only a comment\n").unwrap().is_empty());
}

/// A key or tag value escaped as InfluxDB's own clients escape them.
fn escape_key(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn escape_string(s: &str) -> String {
    s.replace('\\', r"\\").replace('"', "\\\"")
}

proptest::proptest! {
    /// Whatever a client escapes, as InfluxDB's clients escape it,
    /// parses back to what it wrote.
    #[test]
    fn escaped_values_parse_back(
        // InfluxDB cannot carry a backslash before an escaped byte
        // in a key (it reads `\\,` as an escaped comma): none here.
        tag_key in "tag[a-z ,=\"]{0,8}",
        tag_value in "[a-zé ,=\"#]{1,12}",
        field_key in "[A-Z ,=]{1,8}",
        text in "[a-z ,=\\\\\"\n#]{0,16}",
        x in -1e12f64..1e12,
        n in proptest::num::i64::ANY,
        t in 0i64..4_000_000_000_000_000_000,
    ) {
        let body = format!(
            "m,{}={} {}=\"{}\",x={x:?},n={n}i {t}\n",
            escape_key(&tag_key),
            escape_key(&tag_value),
            escape_key(&field_key),
            escape_string(&text),
        );
        let ms = parse(&body).unwrap();
        let m = &ms[0];
        proptest::prop_assert_eq!(dim(m, &tag_key, 0), Some(tag_value));
        proptest::prop_assert_eq!(dim(m, &field_key, 0), Some(text));
        proptest::prop_assert_eq!(num(m, "x", 0), Some(x));
        proptest::prop_assert_eq!(num(m, "n", 0), Some(n as f64));
        proptest::prop_assert_eq!(m.batch.ts.clone(), vec![t / 1000]);
    }
}

proptest::proptest! {
    /// The timestamp and whole-number shortcuts read what the standard
    /// parsers read, on any digits (signs, leading zeros, overflow).
    #[test]
    fn number_shortcuts_agree_with_the_standard_parsers(
        digits in "-?[0-9]{1,22}",
        n in proptest::num::u64::ANY,
    ) {
        proptest::prop_assert_eq!(parse_int(digits.as_bytes()), digits.parse::<i64>().ok());
        for t in [digits.clone(), n.to_string(), format!("{:015}", n % 1_000_000_000_000_000)] {
            if let Some(v) = small_whole_number(t.as_bytes()) {
                proptest::prop_assert_eq!(v.to_bits(), t.parse::<f64>().unwrap().to_bits());
            }
        }
    }
}

/// The body through both paths: the same measurements, rows and lines, or
/// the same error.
fn same_with_and_without_shortcut(body: &[u8]) -> std::result::Result<(), String> {
    let fast = parse_line_protocol(body, Precision::Nanoseconds, 5);
    let full = parse_line_protocol_scanner_only(body, Precision::Nanoseconds, 5);
    let show = |r: &Result<Vec<Measurement>>| match r {
        Ok(ms) => ms
            .iter()
            .map(|m| {
                format!(
                    "{} {:?} {:?} {:?}",
                    m.stream, m.measurement, m.lines, m.batch
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("error: {e}"),
    };
    let (a, b) = (show(&fast), show(&full));
    if a == b {
        Ok(())
    } else {
        Err(format!(
            "{:?}\nwith the shortcut: {a}\nscanner only: {b}",
            String::from_utf8_lossy(body)
        ))
    }
}

#[test]
fn plain_lines_read_the_same_in_one_pass() {
    for body in [
        "cpu,host=a,region=eu usage=1.5,n=3i,u=7u,ok=t,bad=FALSE 1700000000000000000\n",
        "m f=1\nm f=2 -5\n\nm,t=x f=3 12 \n",
        "m,a=1,a=2 f=1\n",
        "m,a==1 f=1\n",
        "m f=1,f=2\n",
        "m,f=1 f=2\n",
        "m f=NaN\n",
        "m f=1e400\n",
        "m f=9223372036854775808i\n",
        "m f=-1u\n",
        "m f=1 2 3\n",
        "m f=1\t5\n",
        "m\tf=1\n",
        "m f=1,\n",
        "m f= 1\n",
        "m f=1 99999999999999999999\n",
        ",m f=1\n",
        "m, f=1\n",
        "m,t f=1\n",
        "m,t= f=1\n",
        "m  f=1  5  \n",
        "m f=.\n",
        "m f=-\n",
        "m f=tru\n",
        "m f=1.5e3,g=-0.25,h=007\n",
    ] {
        same_with_and_without_shortcut(body.as_bytes()).unwrap();
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
    /// On any body of near-valid plain lines (and some that are not
    /// plain), the one-pass reading and the full scanner agree.
    #[test]
    fn the_shortcut_reads_what_the_scanner_reads(
        lines in proptest::collection::vec(
            (
                "[a-c]{0,2}[ ,=\t.]?[a-c]{0,2}",
                proptest::collection::vec("[a-c]{0,2}[=,]?[a-c 1=]{0,2}", 0..3),
                proptest::collection::vec(
                    (
                        "[a-c]{0,2}[ =,]?",
                        proptest::sample::select(vec![
                            "1", "-2.5", "1e3", "1E-2", "12i", "-3i", "7u", "-7u", "t", "T", "f",
                            "F", "true", "True", "TRUE", "false", "False", "FALSE", "tRue", "NaN", "nan", "1.2.3", "", "-", ".", "1e",
                            "9223372036854775808i", "18446744073709551616u", "1e400", "0x1",
                            "\"s\"", "a\\,b", "123456789012345678", "00", "1i2",
                        ]),
                    ),
                    0..3,
                ),
                proptest::sample::select(vec![
                    "", " ", " 1700000000000000000", " -1", " 1 ", " 12x", " 1 2", "\t5",
                    " 99999999999999999999", " -", "\r",
                ]),
            ),
            1..4,
        ),
    ) {
        let mut body = String::new();
        for (m, tags, fields, ts) in lines {
            body.push_str(&m);
            for t in tags {
                body.push(',');
                body.push_str(&t);
            }
            body.push(' ');
            let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            body.push_str(&fields.join(","));
            body.push_str(ts);
            body.push('\n');
        }
        if let Err(e) = same_with_and_without_shortcut(body.as_bytes()) {
            return Err(proptest::test_runner::TestCaseError::fail(e));
        }
    }
}
