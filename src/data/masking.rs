//! Masking rules (`[[database.masking]]`): what each rule names, how it is shown (table.column ->
//! function, never a value), the body Neon's anonymized-branch API takes, and the SQL that
//! applies the same rules to a local branch copy.
//!
//! Locally there is no PostgreSQL Anonymizer extension, so the functions Atlas documents are
//! emulated with built-in SQL ([`LOCAL_FUNCTIONS`]); any other function is refused with an error
//! that names the rule and the function, before anything is created. The emulations have the
//! documented shape (an email stays an email, `partial` keeps the given ends) but not Neon's exact
//! values: no emulation ever returns the original value of a faked column.

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::config::MaskingRule;

/// A rule after checking: where it applies and what replaces the values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mask {
    pub schema: String,
    pub table: String,
    pub column: String,
    pub with: MaskWith,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskWith {
    /// `anon.name(args)` as written; `call` is the parsed form.
    Function { text: String, call: Call },
    /// A literal value for every row.
    Value(String),
}

/// A parsed `anon.name(arg, ...)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub name: String,
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arg {
    Int(i64),
    Str(String),
    /// A column of the same table (`anon.partial(email, 2, '***', 2)`).
    Column(String),
}

/// The functions Atlas documents and emulates locally, with their arguments.
pub const LOCAL_FUNCTIONS: &[(&str, &str)] = &[
    ("fake_email", "anon.fake_email()"),
    ("fake_first_name", "anon.fake_first_name()"),
    ("fake_last_name", "anon.fake_last_name()"),
    ("fake_company", "anon.fake_company()"),
    ("fake_city", "anon.fake_city()"),
    ("fake_country", "anon.fake_country()"),
    ("random_string", "anon.random_string(n)"),
    ("random_int_between", "anon.random_int_between(low, high)"),
    ("random_phone", "anon.random_phone('prefix')"),
    ("partial", "anon.partial(column, prefix, 'padding', suffix)"),
    ("partial_email", "anon.partial_email(column)"),
    ("hash", "anon.hash(column)"),
    ("lorem_ipsum", "anon.lorem_ipsum()"),
];

impl Mask {
    /// `schema.table.column` (schema left out when it is `public`).
    pub fn target(&self) -> String {
        if self.schema == "public" {
            format!("{}.{}", self.table, self.column)
        } else {
            format!("{}.{}.{}", self.schema, self.table, self.column)
        }
    }

    /// `users.email -> anon.fake_email()`: what the data clause shows. A literal value is never
    /// shown (it may be what the rule hides from, e.g. a real domain).
    pub fn display(&self) -> String {
        match &self.with {
            MaskWith::Function { text, .. } => format!("{} -> {text}", self.target()),
            MaskWith::Value(_) => format!("{} -> a fixed value", self.target()),
        }
    }

    /// One element of Neon's `masking_rules` (schema `MaskingRule`).
    pub fn neon_rule(&self, database: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "database_name": database,
            "schema_name": self.schema,
            "table_name": self.table,
            "column_name": self.column,
        });
        match &self.with {
            MaskWith::Function { text, .. } => v["masking_function"] = text.clone().into(),
            MaskWith::Value(x) => v["masking_value"] = x.clone().into(),
        }
        v
    }

    /// The local SQL expression that replaces a value of the column, or an error naming the
    /// function when it has no local equivalent.
    pub fn local_expr(&self) -> anyhow::Result<String> {
        let call = match &self.with {
            MaskWith::Value(v) => return Ok(literal(v)),
            MaskWith::Function { call, .. } => call,
        };
        let col = ident(&self.column);
        let arity = |n: usize| -> anyhow::Result<()> {
            if call.args.len() != n {
                bail!(
                    "anon.{} takes {n} argument(s), the rule gives {}",
                    call.name,
                    call.args.len()
                );
            }
            Ok(())
        };
        let int = |i: usize| -> anyhow::Result<i64> {
            match call.args.get(i) {
                Some(Arg::Int(n)) => Ok(*n),
                _ => bail!(
                    "argument {} of anon.{} must be an integer",
                    i + 1,
                    call.name
                ),
            }
        };
        let string = |i: usize| -> anyhow::Result<String> {
            match call.args.get(i) {
                Some(Arg::Str(s)) => Ok(s.clone()),
                _ => bail!(
                    "argument {} of anon.{} must be a quoted string",
                    i + 1,
                    call.name
                ),
            }
        };
        let column = |i: usize| -> anyhow::Result<String> {
            match call.args.get(i) {
                Some(Arg::Column(c)) => Ok(ident(c)),
                _ => bail!(
                    "argument {} of anon.{} must be a column name",
                    i + 1,
                    call.name
                ),
            }
        };
        // A fresh random hex string per row (md5 of random(): 32 hex digits).
        let hex = |n: i64| format!("substr(md5(random()::text) || md5(random()::text), 1, {n})");
        let pick = |words: &[&str]| {
            let list: Vec<String> = words.iter().map(|w| literal(w)).collect();
            format!(
                "(ARRAY[{}])[1 + floor(random() * {})::int]",
                list.join(", "),
                words.len()
            )
        };
        let expr = match call.name.as_str() {
            "fake_email" => {
                arity(0)?;
                format!("'user-' || {} || '@example.com'", hex(12))
            }
            "fake_first_name" => {
                arity(0)?;
                pick(&[
                    "Alex", "Sam", "Robin", "Charlie", "Jordan", "Morgan", "Casey", "Taylor",
                ])
            }
            "fake_last_name" => {
                arity(0)?;
                pick(&[
                    "Smith", "Garcia", "Müller", "Rossi", "Dubois", "Novak", "Silva", "Tanaka",
                ])
            }
            "fake_company" => {
                arity(0)?;
                pick(&[
                    "Acme Corp",
                    "Globex",
                    "Initech",
                    "Umbrella",
                    "Hooli",
                    "Vandelay",
                ])
            }
            "fake_city" => {
                arity(0)?;
                pick(&["Lyon", "Porto", "Leeds", "Graz", "Turku", "Ghent"])
            }
            "fake_country" => {
                arity(0)?;
                pick(&[
                    "France", "Portugal", "Austria", "Finland", "Belgium", "Chile",
                ])
            }
            "random_string" => {
                arity(1)?;
                let n = int(0)?;
                if !(1..=64).contains(&n) {
                    bail!("anon.random_string(n): n must be 1 to 64 locally, the rule gives {n}");
                }
                hex(n)
            }
            "random_int_between" => {
                arity(2)?;
                let (lo, hi) = (int(0)?, int(1)?);
                if lo > hi {
                    bail!("anon.random_int_between({lo}, {hi}): the low bound is above the high");
                }
                format!("({lo} + floor(random() * ({hi} - {lo} + 1)))::bigint")
            }
            "random_phone" => {
                arity(1)?;
                format!(
                    "{} || lpad((floor(random() * 1000000000))::bigint::text, 9, '0')",
                    literal(&string(0)?)
                )
            }
            "partial" => {
                arity(4)?;
                let (c, pre, pad, suf) = (column(0)?, int(1)?, string(2)?, int(3)?);
                if pre < 0 || suf < 0 {
                    bail!("anon.partial: the kept prefix and suffix cannot be negative");
                }
                // Like the extension: the kept ends and the padding, whatever the length.
                format!(
                    "substr({c}::text, 1, {pre}) || {} || CASE WHEN {suf} = 0 THEN '' ELSE right({c}::text, {suf}) END",
                    literal(&pad)
                )
            }
            "partial_email" => {
                arity(1)?;
                let c = column(0)?;
                format!(
                    "substr({c}::text, 1, 2) || '******@' || substr(split_part({c}::text, '@', 2), 1, 2) || '******.' || reverse(split_part(reverse({c}::text), '.', 1))"
                )
            }
            "hash" => {
                arity(1)?;
                let c = column(0)?;
                // Unsalted locally (the extension salts it): still no way back to the value
                // for a reviewer, and equal inputs stay equal (joins keep working).
                format!("encode(sha256(convert_to({c}::text, 'UTF8')), 'hex')")
            }
            "lorem_ipsum" => {
                arity(0)?;
                literal("Lorem ipsum dolor sit amet, consectetur adipiscing elit.")
            }
            other => {
                let known: Vec<&str> = LOCAL_FUNCTIONS.iter().map(|(_, s)| *s).collect();
                bail!(
                    "anon.{other} has no local equivalent (Neon may run it, atlas cannot emulate it here); the local provider knows: {}",
                    known.join(", ")
                )
            }
        };
        // Keep NULLs NULL: a masking rule hides values, it does not invent them.
        Ok(format!("CASE WHEN {col} IS NULL THEN NULL ELSE {expr} END"))
    }
}

/// Checks and parses the rules of atlas.toml. Errors name the rule (its number and target).
pub fn parse_rules(rules: &[MaskingRule]) -> anyhow::Result<Vec<Mask>> {
    let mut out: Vec<Mask> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let name = format!(
            "[[database.masking]] rule {} ({}.{})",
            i + 1,
            r.table,
            r.column
        );
        for (what, v) in [
            ("schema", &r.schema),
            ("table", &r.table),
            ("column", &r.column),
        ] {
            if v.trim().is_empty() {
                bail!("{name}: `{what}` is empty");
            }
        }
        let with = match (&r.function, &r.value) {
            (Some(_), Some(_)) => bail!("{name}: give `function` or `value`, not both"),
            (None, None) => {
                bail!("{name}: give `function` (e.g. \"anon.fake_email()\") or `value` (a literal)")
            }
            (None, Some(v)) => MaskWith::Value(v.clone()),
            (Some(f), None) => MaskWith::Function {
                text: f.trim().to_string(),
                call: parse_call(f).with_context(|| format!("{name}: function `{f}`"))?,
            },
        };
        let m = Mask {
            schema: r.schema.clone(),
            table: r.table.clone(),
            column: r.column.clone(),
            with,
        };
        if out.iter().any(|o| o.target() == m.target()) {
            bail!("{name}: {} is masked by two rules", m.target());
        }
        out.push(m);
    }
    Ok(out)
}

/// Parses `anon.name(args)`: integers, single-quoted strings (`''` escapes a quote), column
/// names.
pub fn parse_call(text: &str) -> anyhow::Result<Call> {
    let t = text.trim();
    let rest = t
        .strip_prefix("anon.")
        .context("a masking function is a PostgreSQL Anonymizer call: anon.name(...)")?;
    let open = rest.find('(').context("missing `(`")?;
    let name = &rest[..open];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("`{name}` is not a function name");
    }
    let inner = rest[open + 1..]
        .strip_suffix(')')
        .context("missing the closing `)`")?;
    let mut args = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let arg = if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => s.push(c),
                    None => bail!("an unterminated string"),
                }
            }
            Arg::Str(s)
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
            if let Ok(n) = w.parse::<i64>() {
                Arg::Int(n)
            } else if !w.is_empty()
                && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !w.starts_with(|c: char| c.is_ascii_digit())
            {
                Arg::Column(w)
            } else {
                bail!("`{w}` is not an integer, a 'string' or a column name");
            }
        };
        args.push(arg);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(c) => bail!("unexpected `{c}` between arguments"),
        }
    }
    Ok(Call {
        name: name.to_string(),
        args,
    })
}

/// A short fingerprint of the rules (FNV-1a over their JSON): a local branch records the one it
/// was masked with, so that changed rules are applied on the next push.
pub fn fingerprint(masks: &[Mask]) -> String {
    let json = serde_json::to_string(masks).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Whether Neon's rules (`MaskingRulesResponse.masking_rules`) are the ones of atlas.toml, in
/// any order.
pub fn same_neon_rules(have: &[serde_json::Value], want: &[serde_json::Value]) -> bool {
    let key = |v: &serde_json::Value| {
        let f = |k: &str| v[k].as_str().unwrap_or("").to_string();
        [
            f("database_name"),
            f("schema_name"),
            f("table_name"),
            f("column_name"),
            f("masking_function"),
            f("masking_value"),
        ]
    };
    let mut a: Vec<_> = have.iter().map(key).collect();
    let mut b: Vec<_> = want.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// A quoted identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A quoted string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The query that lists which rule targets do not exist: one row per missing
/// `schema.table.column`, empty when every rule names a real column.
pub fn missing_columns_sql(masks: &[Mask]) -> String {
    let rows: Vec<String> = masks
        .iter()
        .map(|m| {
            format!(
                "({}, {}, {})",
                literal(&m.schema),
                literal(&m.table),
                literal(&m.column)
            )
        })
        .collect();
    format!(
        "select r.s || '.' || r.t || '.' || r.c || CASE WHEN NOT EXISTS (select 1 from information_schema.tables x where x.table_schema = r.s and x.table_name = r.t) THEN ' (no such table)' ELSE ' (no such column)' END \
         from (values {}) as r(s, t, c) \
         where not exists (select 1 from information_schema.columns k where k.table_schema = r.s and k.table_name = r.t and k.column_name = r.c)",
        rows.join(", ")
    )
}

/// One transaction that applies every rule: one UPDATE per table. Fails (and changes nothing)
/// when any rule has no local equivalent.
pub fn local_sql(masks: &[Mask]) -> anyhow::Result<String> {
    sql_where(masks, None)
}

/// [`local_sql`] for only the rows written after transaction `xid` (32-bit, as `txid_current()
/// % 2^32` read it): what the migrations wrote, masked again while the rows masked before keep
/// their values. `age()` counts back from now, so this holds across xid wraparound; frozen rows
/// are the oldest of all.
pub fn local_sql_since(masks: &[Mask], xid: u32) -> anyhow::Result<String> {
    sql_where(masks, Some(xid))
}

fn sql_where(masks: &[Mask], since: Option<u32>) -> anyhow::Result<String> {
    let mut tables: Vec<(String, String, Vec<String>)> = Vec::new();
    for m in masks {
        let expr = m
            .local_expr()
            .with_context(|| format!("masking rule {}", m.display()))?;
        let set = format!("{} = {expr}", ident(&m.column));
        match tables
            .iter_mut()
            .find(|(s, t, _)| *s == m.schema && *t == m.table)
        {
            Some((_, _, sets)) => sets.push(set),
            None => tables.push((m.schema.clone(), m.table.clone(), vec![set])),
        }
    }
    let mut sql = String::from("BEGIN;\n");
    for (s, t, sets) in tables {
        let filter = since
            .map(|x| format!(" WHERE age(xmin) < age('{x}'::xid)"))
            .unwrap_or_default();
        sql.push_str(&format!(
            "UPDATE {}.{} SET {}{filter};\n",
            ident(&s),
            ident(&t),
            sets.join(", ")
        ));
    }
    sql.push_str("COMMIT;\n");
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(table: &str, column: &str, f: Option<&str>, v: Option<&str>) -> MaskingRule {
        MaskingRule {
            schema: "public".into(),
            table: table.into(),
            column: column.into(),
            function: f.map(str::to_string),
            value: v.map(str::to_string),
        }
    }

    #[test]
    fn calls_parse_with_every_kind_of_argument() {
        let c = parse_call("anon.partial(email, 2, '*''*', 3)").unwrap();
        assert_eq!(c.name, "partial");
        assert_eq!(
            c.args,
            vec![
                Arg::Column("email".into()),
                Arg::Int(2),
                Arg::Str("*'*".into()),
                Arg::Int(3)
            ]
        );
        assert!(parse_call("anon.fake_email()").unwrap().args.is_empty());
        for bad in [
            "fake_email()",
            "anon.x(",
            "anon.(1)",
            "anon.f(1 2)",
            "anon.f('x)",
            "anon.f(1x)",
        ] {
            assert!(parse_call(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_are_checked_and_named() {
        let e = parse_rules(&[rule("users", "email", None, None)]).unwrap_err();
        assert!(format!("{e:#}").contains("rule 1 (users.email)"), "{e:#}");
        let e = parse_rules(&[rule("users", "email", Some("x"), Some("y"))]).unwrap_err();
        assert!(format!("{e:#}").contains("not both"), "{e:#}");
        let e = parse_rules(&[
            rule("users", "email", Some("anon.fake_email()"), None),
            rule("users", "email", None, Some("x")),
        ])
        .unwrap_err();
        assert!(format!("{e:#}").contains("two rules"), "{e:#}");
    }

    #[test]
    fn an_unknown_function_is_named_locally_but_passed_to_neon() {
        let m = parse_rules(&[rule("users", "iban", Some("anon.fake_iban()"), None)]).unwrap();
        let e = local_sql(&m).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("anon.fake_iban") && msg.contains("users.iban"),
            "{msg}"
        );
        assert_eq!(
            m[0].neon_rule("neondb")["masking_function"],
            "anon.fake_iban()"
        );
    }

    #[test]
    fn display_never_shows_a_literal_value() {
        let m = parse_rules(&[rule("users", "phone", None, Some("+33 6 12 34 56 78"))]).unwrap();
        assert_eq!(m[0].display(), "users.phone -> a fixed value");
        assert_eq!(m[0].neon_rule("db")["masking_value"], "+33 6 12 34 56 78");
    }

    #[test]
    fn every_documented_function_has_local_sql() {
        let samples = [
            "anon.fake_email()",
            "anon.fake_first_name()",
            "anon.fake_last_name()",
            "anon.fake_company()",
            "anon.fake_city()",
            "anon.fake_country()",
            "anon.random_string(10)",
            "anon.random_int_between(1, 9)",
            "anon.random_phone('+33')",
            "anon.partial(c, 2, '***', 2)",
            "anon.partial_email(c)",
            "anon.hash(c)",
            "anon.lorem_ipsum()",
        ];
        assert_eq!(samples.len(), LOCAL_FUNCTIONS.len());
        for s in samples {
            let m = parse_rules(&[rule("t", "c", Some(s), None)]).unwrap();
            let sql = local_sql(&m).unwrap_or_else(|e| panic!("{s}: {e:#}"));
            assert!(
                sql.starts_with("BEGIN;") && sql.contains("UPDATE \"public\".\"t\""),
                "{sql}"
            );
        }
        let m = parse_rules(&[rule("t", "c", Some("anon.random_string()"), None)]).unwrap();
        assert!(local_sql(&m).is_err());
    }
}
