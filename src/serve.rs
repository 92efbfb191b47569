//! `sluice serve`: open the store, build the engine and targets, start the
//! dispatchers and the HTTP server, and shut all of it down in order on SIGTERM.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sluice_connectors::http::{self as http_connector, IngestState};
use sluice_connectors::Config;
use sluice_router::config::{SourceEntry, TargetEntry};
use sluice_router::delivery::dispatch::Dispatcher;
use sluice_router::delivery::retry::RetryPolicy;
use sluice_router::engine::Engine;
use sluice_router::metrics::Metrics;
use sluice_router::source::{SourceContext, SourceStatuses};
use sluice_router::store::Store;
use sluice_router::transform::Transform;
use tokio_util::sync::CancellationToken;

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("SLUICE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Shared by the operations and admin handlers.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<Config>,
    pub ready: Arc<AtomicBool>,
    /// What each running source reports about itself.
    pub sources: SourceStatuses,
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.server.data_dir))?;
    let store = Store::open(&config.server.data_dir)
        .with_context(|| format!("cannot open the store in {}", config.server.data_dir))?;
    let engine = Arc::new(Engine::build(&config, store.clone(), Metrics::new())?);

    // One compiled transform per rule, shared by the rule's subscriptions.
    let mut transforms = std::collections::HashMap::new();
    for rule in &config.rules {
        if let Some(t) = &rule.transform {
            let compiled = Transform::compile(t)
                .map_err(|e| anyhow::anyhow!("rule {}: transform: {e:?}", rule.name))?;
            transforms.insert(rule.name.clone(), Arc::new(compiled));
        }
    }
    let shutdown = CancellationToken::new();
    let mut dispatchers = tokio::task::JoinSet::new();
    for sub in engine.subscriptions() {
        let rule = config
            .rules
            .iter()
            .find(|r| r.name == sub.rule)
            .context("subscription without rule")?;
        let target = config
            .targets
            .iter()
            .find(|t| t.spec().name() == sub.target)
            .context("subscription without target")?;
        let sink = sluice_connectors::build_sink(target)?;
        // Dead-letter subscriptions deliver the original events.
        let transform = if sub.is_dead_letter {
            None
        } else {
            transforms.get(&sub.rule).cloned()
        };
        let mut dispatcher = Dispatcher::new(
            sub.clone(),
            sink,
            transform,
            RetryPolicy::from(&rule.retry),
            target.spec().concurrency(),
        );
        if let Some(batch) = target.spec().batch() {
            dispatcher = dispatcher.with_batches(&batch);
        }
        dispatchers.spawn(dispatcher.run(shutdown.clone(), config.server.shutdown_grace));
    }

    let mut sources = tokio::task::JoinSet::new();
    let statuses = SourceStatuses::default();
    for source in &config.sources {
        if let Some(running) = sluice_connectors::build_source(source, &engine)? {
            let cx = SourceContext {
                name: source.spec().name().to_owned(),
                bus: source.spec().bus().to_owned(),
                engine: engine.clone(),
                shutdown: shutdown.clone(),
                statuses: statuses.clone(),
            };
            sources.spawn(running.run(cx));
        }
    }

    let mut buses: HashSet<String> = config.rules.iter().map(|r| r.bus.clone()).collect();
    buses.extend(config.sources.iter().map(|s| s.spec().bus().to_owned()));
    buses.insert("default".into());
    let ingest = IngestState {
        engine: engine.clone(),
        buses: Arc::new(buses),
        max_event_bytes: config.server.max_event_bytes as usize,
        max_batch_bytes: config.server.max_batch_bytes as usize,
        token: config.server.auth.ingest_token.as_deref().map(Arc::from),
    };
    let config = Arc::new(config);
    let state = AppState {
        engine: engine.clone(),
        config: config.clone(),
        ready: Arc::new(AtomicBool::new(false)),
        sources: statuses,
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(http_connector::routes(ingest))
        .nest("/api", crate::admin::routes(state.clone()))
        .fallback(|| async { http_connector::ApiError::not_found("no such endpoint") });

    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    state.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        listen = %config.server.listen,
        data_dir = %config.server.data_dir,
        rules = config.rules.len(),
        subscriptions = engine.subscriptions().len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "sluice is ready."
    );

    let stop = shutdown.clone();
    let ready = state.ready.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down: no new events; finishing deliveries in flight.");
        ready.store(false, Ordering::SeqCst);
        stop.cancel();
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("HTTP server failed")?;
    while let Some(done) = sources.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::error!(error = %e, "A source stopped with an error.");
        }
    }
    while dispatchers.join_next().await.is_some() {}
    tokio::task::spawn_blocking(move || store.flush())
        .await
        .context("flush task failed")?
        .context("final flush failed")?;
    tracing::info!("sluice stopped.");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Alive, unless the store has been stuck in one flush for longer than
/// `STORE_STALL`: then 503, so a supervisor's liveness check restarts sluice.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.engine.store().flush_stalled_for() {
        Some(stalled) if stalled > STORE_STALL => {
            tracing::error!(
                stalled_secs = stalled.as_secs(),
                "The store is stuck in a flush."
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "store stalled", "stalled_secs": stalled.as_secs()})),
            )
        }
        _ => (StatusCode::OK, Json(json!({"status": "ok"}))),
    }
}

const STORE_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// 200 once sluice listens and every target can take events; 503 otherwise, naming
/// each target that cannot and why (a missing table, say).
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready"})),
        );
    }
    let targets: Vec<_> = state
        .engine
        .subscriptions()
        .iter()
        .filter_map(|sub| {
            sub.not_ready().map(
                |reason| json!({"target": sub.target, "subscription": sub.name, "reason": reason}),
            )
        })
        .collect();
    let sources: Vec<_> = state
        .config
        .sources
        .iter()
        .filter_map(|s| {
            let reason = state.sources.get(s.spec().name())?.not_ready()?;
            Some(json!({"source": s.spec().name(), "reason": reason}))
        })
        .collect();
    if targets.is_empty() && sources.is_empty() {
        return (StatusCode::OK, Json(json!({"status": "ready"})));
    }
    let mut body = json!({"status": "not ready"});
    if !targets.is_empty() {
        body["targets"] = json!(targets);
    }
    if !sources.is_empty() {
        body["sources"] = json!(sources);
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.engine.metrics.render(),
    )
}
