//! The PostgreSQL target against a real server (`SLUICE_TEST_POSTGRES`, default
//! postgres://postgres@127.0.0.1:5432/test). Each test works in its own schema and
//! drops it at the end.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::{Client, NoTls};

use crate::harness::{validate, Sluice};

mod chaos;
mod pipeline;

pub fn pg_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn connect() -> Client {
    let (client, connection) = tokio_postgres::connect(&pg_url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A schema of its own for one test, dropped (with its tables) when the test ends.
pub(crate) struct Db {
    pub(crate) client: Client,
    pub(crate) schema: String,
}

impl Db {
    pub(crate) async fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let schema = format!("sluice_{prefix}_{:x}{nanos:x}", std::process::id());
        let client = connect().await;
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Self { client, schema }
    }

    pub(crate) async fn exec(&self, sql: &str) {
        let sql = sql.replace("{s}", &self.schema);
        self.client.batch_execute(&sql).await.unwrap();
    }

    async fn count(&self, table: &str) -> i64 {
        self.client
            .query_one(
                &format!("SELECT count(*) FROM {}.{table}", self.schema),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Wait until `table` holds `n` rows (or panic after `timeout`).
    pub(crate) async fn wait_rows(&self, table: &str, n: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.count(table).await;
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {n} rows in {table}, got {got}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        // Async drop is not a thing: clean up on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                connect()
                    .await
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .unwrap();
            });
        })
        .join();
    }
}

/// A postgres target named `name` on `table` (in `db`'s schema) with `extra` lines
/// (indented four spaces), batching up to 100 events for 50 ms.
pub(crate) fn target(db: &Db, name: &str, table: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    type: postgres\n    url: {}\n    table: {}.{table}\n    batch: {{ max_events: 100, max_wait: 50ms }}\n{extra}",
        pg_url(),
        db.schema
    )
}

const ORDERS_COLUMNS: &str = "    columns:
      customer: { path: $.data.customer, type: text }
      total: { path: $.data.total, type: numeric }
      qty: { jq: '.data.items | length', type: bigint }
      paid: { path: $.data.paid, type: boolean }
      doc: { path: $.data, type: jsonb }
      at: { path: $.time, type: timestamptz }
      note: { path: $.data.note, type: text }
";

const ORDERS_TABLE: &str = "(customer text, total numeric, qty bigint, paid boolean, doc jsonb, \
     at timestamptz, note text, event_key uuid PRIMARY KEY)";

fn order(id: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "/shop", "type": "order.created",
        "time": "2024-05-06T07:08:09.123Z", "data": data,
    })
}

async fn post_batch(sluice: &Sluice, events: Value) {
    let r = sluice.post_batch(&events).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}

/// Posted events become typed rows; the same event again leaves one row, which
/// keeps its values, or takes the new ones with `upsert: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_typed_rows_once_and_upsert_updates_them() {
    let db = Db::new("cols").await;
    db.exec(&format!(
        "CREATE TABLE {{s}}.orders {ORDERS_TABLE}; CREATE TABLE {{s}}.orders_up {ORDERS_TABLE}"
    ))
    .await;
    let config = format!(
        "targets:\n{}{}rules:\n  - name: orders\n    filter: {{ pattern: {{ type: [order.created] }} }}\n    targets: [pg, pgup]\n",
        target(&db, "pg", "orders", ORDERS_COLUMNS),
        target(&db, "pgup", "orders_up", &format!("    upsert: true\n{ORDERS_COLUMNS}")),
    );
    // Without ingest's duplicate window, so that the same event reaches the table twice.
    let sluice = Sluice::start_with_server(&config, "  dedupe_window: 0s\n").await;
    let ada = order(
        "o-1",
        json!({"customer": "ada", "total": "12.50", "items": [1, 2, 3], "paid": true}),
    );
    let bob = order(
        "o-2",
        json!({"customer": "bob", "total": 7, "items": [], "paid": false, "note": {"gift": true}}),
    );
    post_batch(&sluice, json!([ada, bob])).await;
    db.wait_rows("orders", 2, Duration::from_secs(10)).await;
    db.wait_rows("orders_up", 2, Duration::from_secs(10)).await;

    let rows = db
        .client
        .query(
            &format!(
                "SELECT customer, total::text, qty, paid, doc, at, note, event_key::text \
                 FROM {}.orders ORDER BY customer",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let r = &rows[0];
    assert_eq!(r.get::<_, &str>(0), "ada");
    assert_eq!(
        r.get::<_, &str>(1),
        "12.50",
        "numeric keeps the digits given"
    );
    assert_eq!(r.get::<_, i64>(2), 3);
    assert!(r.get::<_, bool>(3));
    assert_eq!(
        r.get::<_, Value>(4),
        json!({"customer": "ada", "total": "12.50", "items": [1, 2, 3], "paid": true})
    );
    let at: chrono::DateTime<chrono::Utc> = r.get(5);
    assert_eq!(at.to_rfc3339(), "2024-05-06T07:08:09.123+00:00");
    assert_eq!(r.get::<_, Option<&str>>(6), None, "a missing value is NULL");
    let r = &rows[1];
    assert_eq!((r.get::<_, &str>(0), r.get::<_, &str>(1)), ("bob", "7"));
    assert_eq!((r.get::<_, i64>(2), r.get::<_, bool>(3)), (0, false));
    assert_eq!(
        r.get::<_, Option<&str>>(6),
        Some(r#"{"gift":true}"#),
        "JSON that is not a string is stored as its text"
    );

    // The same event (same source + id) again, with other values.
    let again = order(
        "o-1",
        json!({"customer": "ada", "total": 99, "items": [1], "paid": false}),
    );
    assert_eq!(sluice.post_structured(&again).await.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    for sub in ["orders.pg", "orders.pgup"] {
        while sluice.stats(sub).await["delivered_total"] != 3 {
            assert!(
                Instant::now() < deadline,
                "{sub}: {}",
                sluice.stats(sub).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let values = |table: &'static str| {
        let db = &db;
        async move {
            let row = db
                .client
                .query_one(
                    &format!(
                        "SELECT count(*), min(total)::text, min(qty) FROM {}.{table} WHERE customer = 'ada'",
                        db.schema
                    ),
                    &[],
                )
                .await
                .unwrap();
            (
                row.get::<_, i64>(0),
                row.get::<_, String>(1),
                row.get::<_, i64>(2),
            )
        }
    };
    assert_eq!(values("orders").await, (1, "12.50".into(), 3), "skipped");
    assert_eq!(values("orders_up").await, (1, "99".into(), 1), "updated");
    assert_eq!(db.count("orders").await, 2);
    assert_eq!(db.count("orders_up").await, 2);
}

/// Mode `event`: the standard table, with text and bytes as JSON strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_event_fills_the_standard_table() {
    let db = Db::new("event").await;
    db.exec(
        "CREATE TABLE {s}.events (event_key uuid PRIMARY KEY, id text, source text, type text, \
         subject text, time timestamptz, data jsonb)",
    )
    .await;
    let config = format!(
        "targets:\n{}rules:\n  - name: all\n    targets: [pg]\n",
        target(&db, "pg", "events", "    mode: event\n")
    );
    let sluice = Sluice::start(&config).await;
    let events = json!([
        {"specversion": "1.0", "id": "1", "source": "/a", "type": "t.json", "subject": "s-1",
         "time": "2024-01-02T03:04:05Z", "data": {"x": [1, 2]}},
        {"specversion": "1.0", "id": "2", "source": "/a", "type": "t.text",
         "datacontenttype": "text/plain", "data": "plain words"},
        {"specversion": "1.0", "id": "3", "source": "/a", "type": "t.bytes", "data_base64": "aGVsbG8="},
        {"specversion": "1.0", "id": "4", "source": "/a", "type": "t.none"},
    ]);
    post_batch(&sluice, events).await;
    db.wait_rows("events", 4, Duration::from_secs(10)).await;
    let rows = db
        .client
        .query(
            &format!(
                "SELECT id, source, type, subject, time, data FROM {}.events ORDER BY id",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let data: Vec<Option<Value>> = rows.iter().map(|r| r.get(5)).collect();
    assert_eq!(
        data,
        vec![
            Some(json!({"x": [1, 2]})),
            Some(json!("plain words")),
            Some(json!("aGVsbG8=")),
            None
        ]
    );
    let first = &rows[0];
    assert_eq!(
        (
            first.get::<_, &str>(0),
            first.get::<_, &str>(1),
            first.get::<_, &str>(2)
        ),
        ("1", "/a", "t.json")
    );
    assert_eq!(first.get::<_, Option<&str>>(3), Some("s-1"));
    let time: chrono::DateTime<chrono::Utc> = first.get(4);
    assert_eq!(time.to_rfc3339(), "2024-01-02T03:04:05+00:00");
    assert_eq!(rows[1].get::<_, Option<&str>>(3), None);
}

/// A row PostgreSQL refuses (CHECK) and a value that is not a number are
/// dead-lettered with their reasons; the rest of the batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_rows_are_dead_lettered_and_the_rest_is_stored() {
    let db = Db::new("refuse").await;
    db.exec(
        "CREATE TABLE {s}.orders (n bigint NOT NULL, total numeric CHECK (total >= 0), \
         event_key uuid UNIQUE)",
    )
    .await;
    let columns = "    batch: { max_events: 100, max_wait: 500ms }\n    columns:\n      \
                   n: { path: $.data.n, type: bigint }\n      total: { path: $.data.total, type: numeric }\n";
    let config = format!(
        "targets:\n  - name: pg\n    type: postgres\n    url: {}\n    table: {}.orders\n{columns}\
         rules:\n  - name: r\n    targets: [pg]\n",
        pg_url(),
        db.schema
    );
    let sluice = Sluice::start(&config).await;
    let events: Vec<Value> = (0..20)
        .map(|n| {
            let total = match n {
                7 => json!(-5),
                13 => json!("abc"),
                _ => json!(n),
            };
            order(&format!("o-{n}"), json!({"n": n, "total": total}))
        })
        .collect();
    post_batch(&sluice, Value::Array(events)).await;
    db.wait_rows("orders", 18, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let listing = sluice
            .get_json("/api/subscriptions/r.pg/dead-letters")
            .await;
        let letters = listing["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if letters.len() >= 2 {
            break letters;
        }
        assert!(Instant::now() < deadline, "{listing}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut reasons: Vec<(String, String)> = letters
        .iter()
        .map(|l| {
            (
                l["event"]["id"].as_str().unwrap().to_owned(),
                l["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "o-13");
    assert!(
        reasons[0]
            .1
            .ends_with("column total: \"abc\" is not a numeric"),
        "{}",
        reasons[0].1
    );
    assert_eq!(reasons[1].0, "o-7");
    assert!(
        reasons[1].1.contains(
            "new row for relation \"orders\" violates check constraint \"orders_total_check\""
        ),
        "{}",
        reasons[1].1
    );
    let ns: Vec<i64> = db
        .client
        .query(
            &format!("SELECT n FROM {}.orders ORDER BY n", db.schema),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i64> = (0..20).filter(|n| *n != 7 && *n != 13).collect();
    assert_eq!(ns, expected);
}

/// The reason `/readyz` gives for target `name`, if it names it.
fn reason_for(body: &Value, name: &str) -> Option<String> {
    body["targets"]
        .as_array()?
        .iter()
        .find(|t| t["target"] == name)
        .map(|t| t["reason"].as_str().unwrap_or_default().to_owned())
}

/// A missing table holds deliveries (readyz 503 says why); once the table exists,
/// readyz turns 200 and the waiting events arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_holds_events_until_it_exists() {
    let db = Db::new("missing").await;
    let config = format!(
        "targets:\n{}rules:\n  - name: r\n    targets: [pg]\n",
        target(
            &db,
            "pg",
            "orders",
            "    columns:\n      n: { path: $.data.n, type: bigint }\n"
        )
    );
    let sluice = Sluice::start_unready(&config).await;
    let (_, body) = sluice
        .wait_readyz(Duration::from_secs(20), |status, body| {
            status == 503 && reason_for(body, "pg").is_some()
        })
        .await;
    let reason = reason_for(&body, "pg").unwrap();
    assert_eq!(reason, format!("table {}.orders does not exist", db.schema));
    // The log tells the same truth: not "ready", but what sluice waits for.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let log = sluice.log();
    assert!(!log.contains("sluice is ready."), "{log}");
    assert!(
        log.contains("sluice started; waiting for: target pg: table")
            && log.contains("does not exist"),
        "{log}"
    );
    let events: Vec<Value> = (0..50)
        .map(|n| order(&format!("o-{n}"), json!({"n": n})))
        .collect();
    post_batch(&sluice, Value::Array(events)).await;

    db.exec("CREATE TABLE {s}.orders (n bigint, event_key uuid PRIMARY KEY)")
        .await;
    let created = Instant::now();
    sluice
        .wait_readyz(Duration::from_secs(12), |status, _| status == 200)
        .await;
    println!(
        "readyz 200 {:?} after the table was created",
        created.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sluice.log().contains("sluice is ready."),
        "{}",
        sluice.log()
    );
    db.wait_rows("orders", 50, Duration::from_secs(10)).await;
    let row = db
        .client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT n), sum(n) FROM {}.orders",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 50);
    assert_eq!(row.get::<_, i64>(1), 50);
}

/// A table dropped while sluice runs fails deliveries transiently: they are
/// retried, not dead-lettered, and arrive once the table is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_while_running_is_retried_until_it_is_back() {
    let db = Db::new("dropped").await;
    let create = "CREATE TABLE {s}.orders (n bigint, event_key uuid PRIMARY KEY)";
    db.exec(create).await;
    let config = format!(
        "targets:\n{}rules:\n  - name: r\n    targets: [pg]\n    retry: {{ max_attempts: 100, backoff: {{ initial: 50ms, max: 300ms }} }}\n",
        target(&db, "pg", "orders", "    columns:\n      n: { path: $.data.n, type: bigint }\n")
    );
    let sluice = Sluice::start(&config).await;
    assert_eq!(
        sluice
            .post_structured(&order("o-0", json!({"n": 0})))
            .await
            .status(),
        202
    );
    db.wait_rows("orders", 1, Duration::from_secs(10)).await;
    db.exec("DROP TABLE {s}.orders").await;
    let events: Vec<Value> = (1..11)
        .map(|n| order(&format!("o-{n}"), json!({"n": n})))
        .collect();
    post_batch(&sluice, Value::Array(events)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sluice.stats("r.pg").await["retried_total"] == 0 {
        assert!(Instant::now() < deadline, "{}", sluice.stats("r.pg").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.exec(create).await;
    db.wait_rows("orders", 10, Duration::from_secs(10)).await;
    let stats = sluice.stats("r.pg").await;
    assert_eq!(stats["dead_letters"], 0, "{stats}");
}

/// A table renamed while sluice runs: the next deliveries find it gone, `/readyz`
/// and `/api/subscriptions` say why (warned once, not per event), nothing is
/// dead-lettered, and once the table is back everything waiting arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_goes_missing_while_running_holds_events_until_it_is_back() {
    let db = Db::new("renamed").await;
    db.exec("CREATE TABLE {s}.orders (n bigint, event_key uuid PRIMARY KEY)")
        .await;
    let config = format!(
        "targets:\n{}rules:\n  - name: r\n    targets: [pg]\n",
        target(
            &db,
            "pg",
            "orders",
            "    columns:\n      n: { path: $.data.n, type: bigint }\n"
        )
    );
    let sluice = Sluice::start(&config).await;
    post_batch(&sluice, json!([order("a-1", json!({"n": 1}))])).await;
    db.wait_rows("orders", 1, Duration::from_secs(10)).await;

    db.exec("ALTER TABLE {s}.orders RENAME TO orders_old").await;
    let events: Vec<Value> = (2..22)
        .map(|n| order(&format!("a-{n}"), json!({"n": n})))
        .collect();
    post_batch(&sluice, Value::Array(events)).await;
    let (_, body) = sluice
        .wait_readyz(Duration::from_secs(20), |status, body| {
            status == 503 && reason_for(body, "pg").is_some()
        })
        .await;
    let reason = reason_for(&body, "pg").unwrap();
    assert!(reason.contains("does not exist"), "{reason}");
    let sub = sluice.get_json("/api/subscriptions/r.pg").await;
    assert!(
        sub["not_ready"]
            .as_str()
            .is_some_and(|r| r.contains("does not exist")),
        "{sub}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warnings = sluice
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("subscription=r.pg"))
        .count();
    assert!(warnings <= 2, "{warnings} warnings:\n{}", sluice.log());

    db.exec("ALTER TABLE {s}.orders_old RENAME TO orders").await;
    sluice
        .wait_readyz(Duration::from_secs(20), |status, _| status == 200)
        .await;
    db.wait_rows("orders", 21, Duration::from_secs(20)).await;
    let stats = sluice.stats("r.pg").await;
    assert_eq!(stats["dead_letters"], 0, "{stats}");
    assert!(sluice.get_json("/api/subscriptions/r.pg").await["not_ready"].is_null());
}

/// A key column without a unique constraint, a column of the wrong type, and an
/// unreachable server: readyz names each problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_what_is_wrong_with_the_table_or_server() {
    let db = Db::new("wrong").await;
    db.exec(
        "CREATE TABLE {s}.nokey (n bigint, event_key uuid); \
         CREATE TABLE {s}.texty (total text, event_key uuid PRIMARY KEY)",
    )
    .await;
    let numeric = "    columns:\n      total: { path: $.data.total, type: numeric }\n";
    // The test server, with a database and a role it does not have.
    let mut url = reqwest::Url::parse(&pg_url()).unwrap();
    url.set_path("/sluice_no_such_db");
    let nodb =
        format!("  - name: nodb\n    type: postgres\n    url: {url}\n    table: t\n{numeric}");
    let mut url = reqwest::Url::parse(&pg_url()).unwrap();
    url.set_username("nobody_here").unwrap();
    let norole =
        format!("  - name: norole\n    type: postgres\n    url: {url}\n    table: t\n{numeric}");
    let config = format!(
        "targets:\n{}{}  - name: down\n    type: postgres\n    url: postgres://postgres:secret@127.0.0.1:1/test\n    table: t\n    timeout: 2s\n{numeric}\
{nodb}{norole}\
         rules:\n  - name: r\n    targets: [nokey, texty, down, nodb, norole]\n",
        target(&db, "nokey", "nokey", "    columns:\n      n: { path: $.data.n, type: bigint }\n"),
        target(&db, "texty", "texty", numeric),
    );
    let sluice = Sluice::start_unready(&config).await;
    let (_, body) = sluice
        .wait_readyz(Duration::from_secs(20), |status, body| {
            status == 503
                && ["nokey", "texty", "down", "nodb", "norole"]
                    .iter()
                    .all(|t| reason_for(body, t).is_some())
        })
        .await;
    let nokey = reason_for(&body, "nokey").unwrap();
    assert!(
        nokey.starts_with("column event_key needs a unique constraint")
            && nokey.ends_with(&format!(
                "ALTER TABLE \"{}\".\"nokey\" ADD UNIQUE (\"event_key\")",
                db.schema
            )),
        "{nokey}"
    );
    assert_eq!(
        reason_for(&body, "texty").unwrap(),
        "column total is text, the target declares numeric"
    );
    let down = reason_for(&body, "down").unwrap();
    assert!(
        down.starts_with("cannot connect to postgres://127.0.0.1:1/test: "),
        "{down}"
    );
    assert!(!down.contains("secret"), "{down}");
    // The server's own words and SQLSTATE, not "db error".
    let nodb = reason_for(&body, "nodb").unwrap();
    assert!(
        nodb.contains("database \"sluice_no_such_db\" does not exist (SQLSTATE 3D000)"),
        "{nodb}"
    );
    let norole = reason_for(&body, "norole").unwrap();
    assert!(
        norole.contains("role \"nobody_here\" does not exist (SQLSTATE 28000)"),
        "{norole}"
    );
}

/// Bad postgres targets are `sluice validate` errors with their YAML paths.
#[test]
fn validate_reports_bad_postgres_targets() {
    let cases = [
        (
            "    columns:\n      total: { path: $.data.total, type: money }\n",
            "targets[0].columns.total.type: unknown variant `money`",
        ),
        (
            "    columns:\n      total: { path: $.data.total, jq: .data.total, type: numeric }\n",
            "targets[0].columns.total: needs exactly one of `path` or `jq` (line 7, column 7)",
        ),
        (
            "    table: \"orders; drop table x\"\n    mode: event\n",
            "targets[0].table: \"orders; drop table x\" is not a table name",
        ),
        (
            "    columns:\n      n: { path: data.n, type: bigint }\n",
            "targets[0].columns.n.path: ",
        ),
        (
            "    mode: event\n    timeout: 0s\n",
            "targets[0].timeout: must be more than 0",
        ),
    ];
    for (target, expect) in cases {
        let table = if target.contains("table:") {
            ""
        } else {
            "    table: orders\n"
        };
        let text = format!(
            "targets:\n  - name: pg\n    type: postgres\n    url: postgres://127.0.0.1/test\n{table}{target}\
             rules:\n  - name: r\n    targets: [pg]\n"
        );
        let (code, _, stderr) = validate(&text);
        assert_eq!(code, 1, "{text}\n{stderr}");
        assert!(stderr.contains(expect), "missing {expect:?} in:\n{stderr}");
    }
}
