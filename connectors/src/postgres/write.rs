//! The insert statement and the write of a batch of rows, isolating the rows that
//! PostgreSQL refuses.

use std::error::Error;

use super::config::ColumnType;
use bytes::BytesMut;
use sluice_router::error::ErrorClass;
use sluice_router::sink::SinkError;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, Json, ToSql, Type};

use super::columns::{Cell, Column, Row};
use super::pool::Pooled;
use super::{error_text, quote_ident, TableName};

/// SQLSTATE classes that blame the rows rather than the server or the schema:
/// data exceptions (22), integrity constraint violations (23: NOT NULL, CHECK,
/// foreign and unique keys), triggered data change (27), WITH CHECK OPTION (44) and
/// errors raised by triggers (P0). Every other failure is transient.
const ROW_CLASSES: [&str; 5] = ["22", "23", "27", "44", "P0"];

/// The statements of one target: a staging table for each connection, the binary
/// `COPY` into it and the insert from it, e.g.
///
/// ```sql
/// CREATE TEMPORARY TABLE sluice_stage (c0 text, c1 text, k uuid) ON COMMIT DELETE ROWS;
/// COPY pg_temp.sluice_stage FROM STDIN (FORMAT binary);
/// INSERT INTO "analytics"."orders" ("customer", "total", "event_key")
///   SELECT c0, c1::numeric, k FROM pg_temp.sluice_stage
///   ON CONFLICT ("event_key") DO NOTHING;
/// ```
///
/// Values travel in PostgreSQL's binary format (numerics as text, cast by the
/// insert). `upsert` turns `DO NOTHING` into `DO UPDATE SET col = EXCLUDED.col, ...`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Statements {
    pub stage: String,
    pub copy: String,
    pub insert: String,
    /// The wire type of each staged column, the key last.
    types: Vec<Type>,
}

impl Statements {
    pub fn new(table: &TableName, columns: &[Column], key: &str, upsert: bool) -> Self {
        let staged = |c: &Column| match c.ty {
            ColumnType::Numeric => "text",
            ty => ty.sql(),
        };
        let stage_columns: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("c{i} {}", staged(c)))
            .chain(std::iter::once("k uuid".to_owned()))
            .collect();
        let mut names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        names.push(quote_ident(key));
        let mut values: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c.ty {
                ColumnType::Numeric => format!("c{i}::numeric"),
                _ => format!("c{i}"),
            })
            .collect();
        values.push("k".to_owned());
        let conflict = if upsert {
            let sets: Vec<String> = columns
                .iter()
                .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
                .collect();
            format!("DO UPDATE SET {}", sets.join(", "))
        } else {
            "DO NOTHING".to_owned()
        };
        let wire = |ty: ColumnType| match ty {
            ColumnType::Text | ColumnType::Numeric => Type::TEXT,
            ColumnType::Bigint => Type::INT8,
            ColumnType::Boolean => Type::BOOL,
            ColumnType::Jsonb => Type::JSONB,
            ColumnType::Timestamptz => Type::TIMESTAMPTZ,
        };
        Self {
            stage: format!(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} ({}) ON COMMIT DELETE ROWS",
                stage_columns.join(", ")
            ),
            copy: format!("COPY pg_temp.{STAGE} FROM STDIN (FORMAT binary)"),
            insert: format!(
                "INSERT INTO {} ({}) SELECT {} FROM pg_temp.{STAGE} ON CONFLICT ({}) {conflict}",
                table.sql(),
                names.join(", "),
                values.join(", "),
                quote_ident(key)
            ),
            types: columns
                .iter()
                .map(|c| wire(c.ty))
                .chain(std::iter::once(Type::UUID))
                .collect(),
        }
    }
}

/// The staging table of each connection (temporary: private to its session).
const STAGE: &str = "sluice_stage";

/// How a statement failed.
enum Failure {
    /// Some row of the statement is at fault: PostgreSQL's message.
    Rows(String),
    /// The table is not what the target needs (gone, renamed, a column missing or
    /// of another type, no rights): hold deliveries until it is.
    Schema(String),
    /// The server or the connection: try again later.
    Transient(String),
}

/// SQLSTATEs that mean the table is not set up for the target (rather than a
/// row's fault or a passing failure): undefined table, column or schema, a type
/// mismatch, no unique constraint for ON CONFLICT, insufficient privilege.
const SCHEMA_CODES: [&str; 6] = ["42P01", "42703", "3F000", "42804", "42P10", "42501"];

fn classify(e: &tokio_postgres::Error) -> Failure {
    match e.code() {
        Some(code) if SCHEMA_CODES.contains(&code.code()) => Failure::Schema(error_text(e)),
        Some(code) if ROW_CLASSES.iter().any(|c| code.code().starts_with(c)) => {
            Failure::Rows(error_text(e))
        }
        _ => Failure::Transient(error_text(e)),
    }
}

/// What happened to a batch: one result per row, and how many rows were new (or
/// updated, with `upsert`).
pub(super) struct Written {
    pub results: Vec<Result<(), SinkError>>,
    pub affected: u64,
    /// False when the connection should not be reused (it failed mid-way).
    pub reusable: bool,
}

/// Write `rows` (distinct keys) in one transaction. When PostgreSQL refuses it for a
/// row's sake (a CHECK or NOT NULL violation, a value out of range), the rows are
/// split in halves and written again, down to single rows: the refused rows fail
/// permanently with PostgreSQL's message, the others are committed. A transient
/// failure fails every row not yet committed.
pub(super) async fn write(conn: &mut Pooled, statements: &Statements, rows: &[&Row]) -> Written {
    let mut results: Vec<Option<Result<(), SinkError>>> = vec![None; rows.len()];
    let mut affected = 0;
    let mut reusable = true;
    // Ranges of `rows` still to write; the whole batch first.
    let mut pending = Vec::with_capacity(16);
    pending.push(0..rows.len());
    while let Some(range) = pending.pop() {
        match insert(conn, statements, &rows[range.clone()]).await {
            Ok(n) => {
                affected += n;
                results[range].fill(Some(Ok(())));
            }
            Err(Failure::Rows(message)) if range.len() == 1 => {
                results[range.start] = Some(Err(SinkError::permanent(message)));
            }
            Err(Failure::Rows(_)) => {
                let mid = range.start + range.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
            Err(failure @ (Failure::Transient(_) | Failure::Schema(_))) => {
                let error = match failure {
                    Failure::Schema(message) => SinkError::new(ErrorClass::Config, message),
                    Failure::Transient(message) | Failure::Rows(message) => {
                        SinkError::transient(message)
                    }
                };
                for i in std::iter::once(range).chain(pending.drain(..)).flatten() {
                    results[i] = Some(Err(error.clone()));
                }
                reusable = false;
            }
        }
    }
    Written {
        results: results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(SinkError::transient("the row was not written"))))
            .collect(),
        affected,
        reusable,
    }
}

/// One attempt at `rows`, in one transaction: stage them with binary `COPY`, then
/// insert them from the staging table.
async fn insert(conn: &mut Pooled, statements: &Statements, rows: &[&Row]) -> Result<u64, Failure> {
    let fail = |e: tokio_postgres::Error| classify(&e);
    let (copy, insert) = match &conn.prepared {
        Some(p) => p.clone(),
        None => {
            conn.client
                .batch_execute(&statements.stage)
                .await
                .map_err(fail)?;
            let copy = conn.client.prepare(&statements.copy).await.map_err(fail)?;
            let insert = conn
                .client
                .prepare(&statements.insert)
                .await
                .map_err(fail)?;
            conn.prepared = Some((copy.clone(), insert.clone()));
            (copy, insert)
        }
    };
    let tx = conn.client.transaction().await.map_err(fail)?;
    let sink = tx.copy_in(&copy).await.map_err(fail)?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &statements.types));
    let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(statements.types.len());
    for row in rows {
        values.clear();
        values.extend(row.cells.iter().map(|c| c as &(dyn ToSql + Sync)));
        values.push(&row.key);
        writer.as_mut().write(&values).await.map_err(fail)?;
    }
    writer.finish().await.map_err(fail)?;
    let affected = tx.execute(&insert, &[]).await.map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    Ok(affected)
}

/// A cell goes to the staging column of its column's type (see [`Statements`]).
impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Text(s) => s.as_str().to_sql(ty, out),
            Cell::Bigint(n) => n.to_sql(ty, out),
            Cell::Boolean(b) => b.to_sql(ty, out),
            Cell::Json(v) => Json(v).to_sql(ty, out),
            Cell::Time(t) => t.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::TEXT,
            Type::INT8,
            Type::BOOL,
            Type::JSONB,
            Type::TIMESTAMPTZ,
        ]
        .contains(ty)
    }

    to_sql_checked!();
}
