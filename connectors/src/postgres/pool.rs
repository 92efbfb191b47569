//! A small pool of connections: opened on first use, at most `concurrency` of them,
//! each with its staging table and prepared statements. A connection that broke, or whose work was
//! interrupted (a timeout), is dropped rather than returned; the next use opens a
//! new one.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls, Statement};

/// One open connection and, once its staging table exists, its prepared `COPY`
/// and insert statements.
pub(super) struct Pooled {
    pub client: Client,
    pub prepared: Option<(Statement, Statement)>,
}

pub(super) struct Pool {
    config: Config,
    /// `postgres://host:port/db`, without credentials, for messages.
    pub display: String,
    /// Session settings run on each new connection.
    setup: String,
    idle: Mutex<Vec<Pooled>>,
    permits: Semaphore,
}

/// A connection on loan; [`Conn::give_back`] returns it to the pool, dropping it
/// closes it.
pub(super) struct Conn<'a> {
    pub pooled: Pooled,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Pool {
    /// `timeout` bounds connecting and, on the server, every statement.
    pub fn new(url: &str, size: usize, timeout: Duration) -> Result<Self, String> {
        let mut config: Config = url
            .parse()
            .map_err(|e| format!("url: not a PostgreSQL connection URL: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("url: names no host".into());
        }
        if matches!(config.get_ssl_mode(), SslMode::Require) {
            return Err(
                "url: sslmode=require needs TLS, which sluice's PostgreSQL target does not \
                 support yet; use sslmode=disable or prefer (e.g. on a private network)"
                    .into(),
            );
        }
        config.connect_timeout(timeout);
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        let display = display(&config);
        Ok(Self {
            config,
            display,
            setup: format!(
                "SET statement_timeout = {}; SET TimeZone = 'UTC'",
                timeout.as_millis().max(1)
            ),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        })
    }

    /// An idle connection, or a new one; waits while `size` are on loan. The error
    /// reads `cannot connect to postgres://host:port/db: <reason>`.
    pub async fn get(&self) -> Result<Conn<'_>, String> {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "the connection pool is closed".to_owned())?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match idle.pop() {
                    Some(p) if p.client.is_closed() => continue,
                    other => break other,
                }
            }
        };
        let pooled = match reused {
            Some(p) => p,
            None => self.connect().await?,
        };
        Ok(Conn {
            pooled,
            pool: self,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Pooled, String> {
        let failed = |e: &dyn std::fmt::Display| format!("cannot connect to {}: {e}", self.display);
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| failed(&super::error_text(&e)))?;
        let server = self.display.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(server = %server, error = %e, "PostgreSQL connection closed.");
            }
        });
        client
            .batch_execute(&self.setup)
            .await
            .map_err(|e| failed(&super::error_text(&e)))?;
        Ok(Pooled {
            client,
            prepared: None,
        })
    }
}

impl Conn<'_> {
    /// Return the connection for reuse (when it is still open).
    pub fn give_back(self) {
        if !self.pooled.client.is_closed() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push(self.pooled);
        }
    }
}

/// `postgres://host:port/db` of a parsed config, without user or password.
fn display(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) if h.contains(':') => format!("[{h}]"),
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default();
    format!("postgres://{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_never_shows_the_password() {
        let pool = Pool::new(
            "postgres://app:s3cret@db.internal:6432/shop?sslmode=prefer",
            2,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(pool.display, "postgres://db.internal:6432/shop");
        let pool = Pool::new("postgresql://app@10.0.0.1/shop", 2, Duration::from_secs(1)).unwrap();
        assert_eq!(pool.display, "postgres://10.0.0.1:5432/shop");
    }

    #[test]
    fn a_bad_url_is_an_error() {
        let e = Pool::new("postgres://h:notaport/db", 1, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.starts_with("url: not a PostgreSQL connection URL"), "{e}");
        let e = Pool::new("postgres://h/db?sslmode=bogus", 1, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.starts_with("url: "), "{e}");
    }
}
