//! The readiness check: the table exists and its columns take what sluice writes.

use super::config::ColumnType;
use tokio_postgres::Client;

use super::columns::Column;
use super::{error_text, quote_ident, TableName};

/// Check `table` for `columns` and the key column; `Err` says what to fix, e.g.
/// `table analytics.orders does not exist` or `column total is text, the target
/// declares numeric`.
pub(super) async fn check(
    client: &Client,
    table: &TableName,
    columns: &[Column],
    key: &str,
) -> Result<(), String> {
    let failed =
        |e: tokio_postgres::Error| format!("cannot inspect table {table}: {}", error_text(&e));
    let found = client
        .query_opt(
            "SELECT c.oid, c.relkind::text FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&table.sql()],
        )
        .await
        .map_err(failed)?;
    let Some(found) = found else {
        return Err(format!("table {table} does not exist"));
    };
    let oid: u32 = found.get(0);
    let kind: String = found.get(1);
    if kind != "r" && kind != "p" {
        return Err(format!(
            "{table} is not a table (a view or another kind of relation)"
        ));
    }
    let rows = client
        .query(
            "SELECT a.attname::text, \
                    format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL), \
                    a.attnotnull, \
                    a.atthasdef OR a.attidentity <> '', \
                    a.attgenerated <> '' \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oid],
        )
        .await
        .map_err(failed)?;
    let table_columns: Vec<TableColumn> = rows
        .iter()
        .map(|r| TableColumn {
            name: r.get(0),
            ty: r.get(1),
            not_null: r.get(2),
            has_default: r.get(3),
            generated: r.get(4),
        })
        .collect();
    let find = |name: &str| table_columns.iter().find(|c| c.name == name);

    let Some(key_column) = find(key) else {
        return Err(format!(
            "column {key} does not exist in table {table}; add it: ALTER TABLE {} ADD COLUMN {} uuid UNIQUE",
            table.sql(),
            quote_ident(key)
        ));
    };
    if key_column.ty != "uuid" {
        return Err(format!(
            "column {key} is {}, the key column must be uuid",
            key_column.ty
        ));
    }
    for column in columns {
        let Some(found) = find(&column.name) else {
            return Err(format!(
                "column {} does not exist in table {table}",
                column.name
            ));
        };
        if found.generated {
            return Err(format!(
                "column {} is a generated column; sluice cannot write it",
                column.name
            ));
        }
        if !accepts(column.ty, &found.ty) {
            return Err(format!(
                "column {} is {}, the target declares {}",
                column.name,
                found.ty,
                column.ty.sql()
            ));
        }
    }
    if let Some(unfilled) = table_columns.iter().find(|c| {
        c.not_null
            && !c.has_default
            && !c.generated
            && c.name != key
            && !columns.iter().any(|col| col.name == c.name)
    }) {
        return Err(format!(
            "column {} is NOT NULL without a default, and the target does not fill it",
            unfilled.name
        ));
    }

    let unique: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i \
               WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indimmediate \
                 AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL \
                 AND i.indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid = $1 AND attname = $2))",
            &[&oid, &key],
        )
        .await
        .map_err(failed)?
        .get(0);
    if !unique {
        return Err(format!(
            "column {key} needs a unique constraint: sluice skips redelivered events with \
             ON CONFLICT ({key}); add it: ALTER TABLE {} ADD UNIQUE ({})",
            table.sql(),
            quote_ident(key)
        ));
    }
    Ok(())
}

struct TableColumn {
    name: String,
    /// `format_type` of the column (of a domain's base type).
    ty: String,
    not_null: bool,
    has_default: bool,
    generated: bool,
}

/// Whether a table column of PostgreSQL type `pg` (as `format_type` names it) takes
/// values of the declared type without loss or surprise.
fn accepts(declared: ColumnType, pg: &str) -> bool {
    let allowed: &[&str] = match declared {
        ColumnType::Text => &["text", "character varying", "character", "citext"],
        ColumnType::Numeric => &["numeric", "double precision", "real"],
        ColumnType::Bigint => &[
            "bigint",
            "integer",
            "smallint",
            "numeric",
            "double precision",
            "real",
        ],
        ColumnType::Boolean => &["boolean"],
        ColumnType::Jsonb => &["jsonb", "json"],
        // Sessions run in UTC, so a `timestamp` column holds the UTC time.
        ColumnType::Timestamptz => &["timestamp with time zone", "timestamp without time zone"],
    };
    allowed.contains(&pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatible_types() {
        assert!(accepts(ColumnType::Numeric, "numeric"));
        assert!(!accepts(ColumnType::Numeric, "text"));
        assert!(!accepts(ColumnType::Numeric, "integer"), "would round 1.5");
        assert!(accepts(ColumnType::Bigint, "integer"));
        assert!(accepts(ColumnType::Text, "character varying"));
        assert!(accepts(ColumnType::Jsonb, "json"));
        assert!(!accepts(ColumnType::Jsonb, "text"));
        assert!(accepts(ColumnType::Timestamptz, "timestamp with time zone"));
        assert!(!accepts(ColumnType::Boolean, "smallint"));
    }
}
