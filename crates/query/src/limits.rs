//! Limits on the shape of a SQL statement, checked after parsing and before
//! anything else looks at the tree (normalizing it for the cache, planning,
//! executing).
//!
//! Why: a statement becomes a tree, and most code that walks a tree
//! recurses, so a deep enough tree overflows a thread's stack and aborts the
//! whole process. The parser bounds nesting by brackets itself (its
//! recursion limit) but builds chains of binary operators (`1+1+1+...`,
//! `a=1 OR a=2 OR ...`) iteratively, one level per operator. The checks
//! here refuse, by name, a statement past any limit:
//!
//! - its text is at most `max_bytes` long (checked before parsing, which
//!   also bounds the depth of any tree the parser can build: one level
//!   takes at least two bytes);
//! - its expressions are nested at most `max_depth` deep (queries and
//!   subqueries count as levels too);
//! - it has at most `max_nodes` expressions and queries in all;
//! - an `IN (...)` list has at most `max_in_list` items.
//!
//! The walk stops at the first level past `max_depth`, so it recurses at
//! most that deep. Parsing, this walk, and dropping a refused tree run on
//! the query pool, whose threads have a stack sized for the deepest tree a
//! statement of `max_bytes` can make ([`stack_bytes`]).

use crate::{QueryError, Result};
use datafusion::sql::sqlparser::ast::{Expr, Query, Statement, Visit, Visitor};
use std::ops::ControlFlow;

/// The limits a SQL statement must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Bytes of SQL text.
    pub max_bytes: usize,
    /// Nesting of expressions and subqueries.
    pub max_depth: usize,
    /// Expressions and queries in the whole statement.
    pub max_nodes: usize,
    /// Items of one `IN (...)` list.
    pub max_in_list: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        crate::QuerySettings::default().sql_limits()
    }
}

/// The stack each query thread gets: enough to parse, walk and drop the
/// deepest tree a statement of `max_bytes` can make (a chain of one binary
/// operator per two bytes), with room to spare for planning `max_depth`
/// levels. Measured at under 1 KiB per level of a chain when dropping it
/// in a debug build; 4 KiB per level leaves a wide margin. The memory is
/// reserved, not used: a thread touches only the pages it reaches.
pub fn stack_bytes(limits: &SqlLimits) -> usize {
    const PER_LEVEL: usize = 4 << 10;
    const BASE: usize = 16 << 20;
    BASE + (limits.max_bytes / 2 + limits.max_depth) * PER_LEVEL
}

/// Parts of one dotted name (`catalog.schema.table.column.field`) at most.
/// The SQL parser takes time exponential in the length of such a chain
/// (every `.` re-parses the rest of the chain speculatively; fixed
/// upstream after the parser version DataFusion uses here): a 371-byte
/// statement with a chain of forty parts held a query thread for hours.
/// Past this many parts no real name goes, and the chains that are cheap
/// to parse stay so.
pub const MAX_NAME_PARTS: usize = 8;

/// Dotted names whose `[` subscripts nest inside one another
/// (`a.b.c.d[a.b.c.d[...`): the parts each name has beyond its second,
/// summed over the open subscripts, at most. The parser retries such a
/// name's subscript once per way it could split the name, and a nested one
/// inside each retry, so its time is about 2 to the power of this sum: a
/// 222-byte statement of names of four parts, unclosed subscripts seven
/// deep, held a query thread for minutes (found by fuzzing `sql`); an
/// 8-part name nested three deep took 10 s. At this limit a statement
/// parses in well under a second.
pub const MAX_SUBSCRIPTED_NAME_PARTS: usize = 10;

/// Refuses SQL text longer than the limit, or holding a dotted name of
/// more than [`MAX_NAME_PARTS`] parts (before it is parsed; the scan for
/// names is one linear pass of the tokenizer).
pub fn check_text(sql: &str, limits: &SqlLimits) -> Result<()> {
    if sql.len() > limits.max_bytes {
        return Err(past_limit(
            "sql_bytes",
            limits.max_bytes,
            format!("the SQL text is {} bytes", sql.len()),
        ));
    }
    let Names {
        longest: parts,
        subscripted,
    } = dotted_names(sql);
    if subscripted > MAX_SUBSCRIPTED_NAME_PARTS {
        return Err(past_limit(
            "subscripted_name_parts",
            MAX_SUBSCRIPTED_NAME_PARTS,
            format!("dotted names with nested [ ] subscripts have {subscripted} parts beyond their second"),
        ));
    }
    if parts > MAX_NAME_PARTS {
        return Err(past_limit(
            "name_parts",
            MAX_NAME_PARTS,
            format!("a dotted name has {parts} parts"),
        ));
    }
    Ok(())
}

/// The error for a request past `limit`: `what`, then the limit's value and
/// name.
fn past_limit(limit: &'static str, max: usize, what: String) -> QueryError {
    QueryError::TooComplex {
        limit,
        max,
        message: format!("{what}, more than the limit of {max} ({limit})"),
    }
}

/// What the scan for dotted names found.
#[derive(Debug, Default)]
struct Names {
    /// The most parts of one chain `a . b . c ...`.
    longest: usize,
    /// The most parts beyond their second, summed over the names directly
    /// before each open `[` (see [`MAX_SUBSCRIPTED_NAME_PARTS`]).
    subscripted: usize,
}

/// Scans `sql`'s tokens for dotted names (whitespace and comments between
/// their parts allowed, as the parser allows them); nothing when the text
/// does not tokenize (the parser then refuses it at once).
fn dotted_names(sql: &str) -> Names {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Names::default();
    };
    let mut found = Names::default();
    let (mut parts, mut after_dot) = (0usize, false);
    // Per open `[`: the extra parts of the name just before it.
    let mut open: Vec<usize> = Vec::new();
    let mut open_sum = 0;
    for t in tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))) {
        match t {
            Token::Period => after_dot = true,
            Token::LBracket => {
                let extra = if after_dot {
                    0
                } else {
                    parts.saturating_sub(2)
                };
                open.push(extra);
                open_sum += extra;
                found.subscripted = found.subscripted.max(open_sum);
                (parts, after_dot) = (0, false);
                continue;
            }
            Token::RBracket => {
                open_sum -= open.pop().unwrap_or(0);
                (parts, after_dot) = (0, false);
                continue;
            }
            _ if after_dot => {
                // The part after a dot, whatever the token: a name, a
                // keyword, a quoted name, `*`.
                parts += 1;
                after_dot = false;
            }
            _ => parts = 1,
        }
        if !after_dot && !matches!(t, Token::Period) {
            found.longest = found.longest.max(parts);
        }
    }
    found
}

/// Refuses a parsed statement past a depth, size or list limit, looking
/// inside `EXPLAIN` and `COPY (query) TO`. Statements tally never runs
/// (`CREATE EXTERNAL TABLE`, `RESET`) are refused here before planning.
pub fn check(statement: &datafusion::sql::parser::Statement, limits: &SqlLimits) -> Result<()> {
    use datafusion::sql::parser::{CopyToSource, Statement as Df};
    match statement {
        Df::Statement(s) => check_statement(s, limits),
        Df::Explain(e) => check(&e.statement, limits),
        Df::CopyTo(c) => match &c.source {
            CopyToSource::Query(q) => check_query(q, limits),
            CopyToSource::Relation(_) => Ok(()),
        },
        Df::CreateExternalTable(_) | Df::Reset(_) => Err(QueryError::NotAllowed {
            message: "only read-only queries run here".into(),
        }),
    }
}

fn check_query(query: &Query, limits: &SqlLimits) -> Result<()> {
    walk(query, limits)
}

/// Refuses a parsed SQL statement past a depth, size or list limit.
pub fn check_statement(statement: &Statement, limits: &SqlLimits) -> Result<()> {
    walk(statement, limits)
}

fn walk(node: &impl Visit, limits: &SqlLimits) -> Result<()> {
    let mut walk = Walk {
        limits,
        depth: 0,
        nodes: 0,
    };
    match node.visit(&mut walk) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Walk<'a> {
    limits: &'a SqlLimits,
    depth: usize,
    nodes: usize,
}

impl Walk<'_> {
    fn enter(&mut self) -> ControlFlow<QueryError> {
        self.depth += 1;
        self.nodes += 1;
        let l = self.limits;
        if self.depth > l.max_depth {
            return ControlFlow::Break(QueryError::TooComplex {
                limit: "sql_depth",
                max: l.max_depth,
                message: format!(
                    "the statement nests expressions more than {} deep (sql_depth); \
                     a long chain of operators counts one level per operator: \
                     use IN (...) or a table instead",
                    l.max_depth
                ),
            });
        }
        if self.nodes > l.max_nodes {
            return ControlFlow::Break(QueryError::TooComplex {
                limit: "sql_nodes",
                max: l.max_nodes,
                message: format!(
                    "the statement has more than {} expressions (sql_nodes)",
                    l.max_nodes
                ),
            });
        }
        ControlFlow::Continue(())
    }

    fn leave(&mut self) -> ControlFlow<QueryError> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

impl Visitor for Walk<'_> {
    type Break = QueryError;

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<QueryError> {
        self.enter()
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<QueryError> {
        self.leave()
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<QueryError> {
        if let Expr::InList { list, .. } = expr {
            let max = self.limits.max_in_list;
            if list.len() > max {
                return ControlFlow::Break(past_limit(
                    "sql_in_list",
                    max,
                    format!("an IN list has {} items", list.len()),
                ));
            }
        }
        self.enter()
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<QueryError> {
        self.leave()
    }
}

/// Checks SQL text as a `/v1/sql` statement is checked before planning
/// (its size, that it is one statement, its shape), on a thread with the
/// query pool's stack: a deep tree is parsed, walked and dropped there.
pub fn check_sql(sql: &str, limits: &SqlLimits) -> Result<()> {
    check_text(sql, limits)?;
    let (sql, limits) = (sql.to_string(), *limits);
    std::thread::Builder::new()
        .name("tally-sql-check".into())
        .stack_size(stack_bytes(&limits))
        .spawn(move || check(&crate::parse_one(&sql)?, &limits))
        .map_err(|e| QueryError::Internal(format!("starting a thread: {e}")))?
        .join()
        .map_err(|_| QueryError::Internal("checking SQL panicked".into()))?
}

/// Filters one time-series request may have.
pub const MAX_FILTERS: usize = 64;
/// Fields one time-series request may group by.
pub const MAX_GROUP_BY: usize = 8;
/// Aggregates one time-series request may ask for.
pub const MAX_AGGREGATES: usize = 32;
/// Bytes of one name or value in a time-series request.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Refuses a time-series request past its limits: filters, group-by
/// fields, aggregates, the values of one filter (`sql_in_list`, as the
/// list becomes one), and the length of any text in it.
pub fn check_request(req: &crate::timeseries::Request, limits: &SqlLimits) -> Result<()> {
    let over = |limit: &'static str, max: usize, n: usize, what: &str| {
        Err(past_limit(limit, max, format!("{n} {what}")))
    };
    if req.filters.len() > MAX_FILTERS {
        return over("filters", MAX_FILTERS, req.filters.len(), "filters");
    }
    if req.group_by.len() > MAX_GROUP_BY {
        return over(
            "group_by",
            MAX_GROUP_BY,
            req.group_by.len(),
            "group_by fields",
        );
    }
    if req.aggregates.len() > MAX_AGGREGATES {
        return over(
            "aggregates",
            MAX_AGGREGATES,
            req.aggregates.len(),
            "aggregates",
        );
    }
    for f in &req.filters {
        if let serde_json::Value::Array(items) = &f.value {
            if items.len() > limits.max_in_list {
                return over(
                    "sql_in_list",
                    limits.max_in_list,
                    items.len(),
                    &format!("values in the filter on '{}'", f.field),
                );
            }
        }
    }
    let texts = req
        .filters
        .iter()
        .map(|f| f.field.as_str())
        .chain(req.group_by.iter().map(String::as_str))
        .chain(req.aggregates.iter().map(String::as_str));
    for t in texts {
        if t.len() > MAX_TEXT_BYTES {
            return over("text_bytes", MAX_TEXT_BYTES, t.len(), "bytes in one name");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        let mut s = datafusion::sql::parser::DFParser::parse_sql(sql).unwrap();
        match s.pop_front().unwrap() {
            datafusion::sql::parser::Statement::Statement(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn limit_of(r: Result<()>) -> Option<&'static str> {
        match r {
            Ok(()) => None,
            Err(QueryError::TooComplex { limit, .. }) => Some(limit),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn each_limit_is_named_at_its_value_and_one_past() {
        let l = SqlLimits {
            max_bytes: 1000,
            max_depth: 10,
            max_nodes: 30,
            max_in_list: 5,
        };
        // A chain of n additions is n+1 levels deep under the SELECT's
        // query level: SELECT 1+1 is query > (+) > 1.
        let chain = |n: usize| format!("SELECT {}", vec!["1"; n + 1].join("+"));
        assert_eq!(limit_of(check_statement(&parse(&chain(8)), &l)), None);
        assert_eq!(
            limit_of(check_statement(&parse(&chain(9)), &l)),
            Some("sql_depth")
        );
        let list = |n: usize| format!("SELECT 1 WHERE 1 IN ({})", vec!["1"; n].join(","));
        assert_eq!(limit_of(check_statement(&parse(&list(5)), &l)), None);
        assert_eq!(
            limit_of(check_statement(&parse(&list(6)), &l)),
            Some("sql_in_list")
        );
        let wide = |n: usize| format!("SELECT {}", vec!["1"; n].join(", "));
        assert_eq!(limit_of(check_statement(&parse(&wide(29)), &l)), None);
        assert_eq!(
            limit_of(check_statement(&parse(&wide(30)), &l)),
            Some("sql_nodes")
        );
        assert_eq!(limit_of(check_text(&"x".repeat(1000), &l)), None);
        assert_eq!(
            limit_of(check_text(&"x".repeat(1001), &l)),
            Some("sql_bytes")
        );
    }

    #[test]
    fn dotted_names_are_held_to_their_parts() {
        let l = SqlLimits::default();
        let name = |n: usize| {
            (0..n)
                .map(|i| format!("p{i}"))
                .collect::<Vec<_>>()
                .join(" . ")
        };
        let at = format!("SELECT {} FROM t", name(MAX_NAME_PARTS));
        assert_eq!(limit_of(check_text(&at, &l)), None);
        let past = format!("SELECT {} FROM t", name(MAX_NAME_PARTS + 1));
        assert_eq!(limit_of(check_text(&past, &l)), Some("name_parts"));
        // Dots between numbers, and many short names, are not chains.
        let short = format!("SELECT {} FROM s.t", vec!["a.b.c + 1.5"; 50].join(", "));
        assert_eq!(limit_of(check_text(&short, &l)), None);
        // The fuzzing input that held a thread for hours (a job's SQL):
        // refused before parsing, at once.
        let hang = "SELECT counndow_stlayn.Tno.waaa =++++++laynstaelayn.Tno.waaa =+++++++rt .TՍt .Tno.waa.Tno.Tno.w.wenn.Tno.waao.we.Tno.wenn.Tno.Tno.w.wenn.Tno.waao.we.Tno.wenn.Tno.o.wa.Tno.To.we.Tno.wen.Tno..waynstaelayn.Tno.waaa";
        let t = std::time::Instant::now();
        assert_eq!(limit_of(check_sql(hang, &l)), Some("name_parts"));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn dotted_names_in_nested_subscripts_are_held_to_their_sum() {
        let l = SqlLimits::default();
        let nested = |parts: usize, depth: usize| {
            let name = (0..parts)
                .map(|i| format!("p{i}"))
                .collect::<Vec<_>>()
                .join(".");
            format!(
                "SELECT {}1{} FROM t",
                format!("{name}[").repeat(depth),
                "]".repeat(depth)
            )
        };
        // Four parts (two beyond the second) nested five deep: 10, at the
        // limit; six deep is past it, and so is an 8-part name two deep.
        assert_eq!(limit_of(check_text(&nested(4, 5), &l)), None);
        assert_eq!(
            limit_of(check_text(&nested(4, 6), &l)),
            Some("subscripted_name_parts")
        );
        assert_eq!(
            limit_of(check_text(&nested(8, 2), &l)),
            Some("subscripted_name_parts")
        );
        // Subscripts one after another, and short names, do not add up.
        let flat = format!("SELECT {} FROM t", vec!["s.t.c.d[1]"; 40].join(" + "));
        assert_eq!(limit_of(check_text(&flat, &l)), None);
        let short = format!("SELECT {}1{} FROM t", "a.b[".repeat(30), "]".repeat(30));
        assert_eq!(limit_of(check_text(&short, &l)), None);
        // The fuzzing input that held a thread for minutes (unclosed
        // subscripts): refused before parsing, at once.
        let hang = "SELECT cou.u.t.``[ILE++cou.u.t.``[ILE++cTC+ oucou.t.``[ILE++CT ++XcTC+ oucou.t.``[ILE++CT +t.CT ++XP1ou.t.``[ILE++Ccou.t.``[ILE++CT ++XP0ou-t.``[IL.u.t.``[ILE++-t.``[IL.u.t.``[ILE++CT ++XPYYYY(1ROM eventsYYYYYYYETLuS(.A(SE";
        let t = std::time::Instant::now();
        assert_eq!(
            limit_of(check_sql(hang, &l)),
            Some("subscripted_name_parts")
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // At the limit, the parser's time stays small.
        let t = std::time::Instant::now();
        let _ = check_sql(&nested(4, 5).replace(']', ""), &l);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn subqueries_count_as_levels() {
        let l = SqlLimits {
            max_depth: 6,
            ..SqlLimits::default()
        };
        let nest = |n: usize| {
            let mut s = "SELECT 1".to_string();
            for _ in 0..n {
                s = format!("SELECT * FROM ({s}) t");
            }
            s
        };
        assert_eq!(limit_of(check_statement(&parse(&nest(2)), &l)), None);
        assert_eq!(
            limit_of(check_statement(&parse(&nest(7)), &l)),
            Some("sql_depth")
        );
    }
}
