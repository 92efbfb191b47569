//! `sluice serve`: open the engine, start delivery and the sources, serve HTTP,
//! and shut all of it down in order on SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sluice_connectors::{build_sink, build_source, Validated};
use sluice_router::config::{SourceEntry, TargetEntry};
use sluice_router::engine::Engine;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;

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
    pub validated: Arc<Validated>,
    pub ready: Arc<AtomicBool>,
}

/// Log "sluice is ready." once `/readyz` would say so; if that takes more than a
/// few seconds, say first what sluice is waiting for.
async fn say_when_ready(engine: Arc<Engine>, started: std::time::Instant, what: String) {
    let mut waited_said = false;
    loop {
        let not_ready = engine.not_ready();
        if not_ready.is_empty() {
            let startup_ms = started.elapsed().as_millis() as u64;
            tracing::info!(startup_ms, "sluice is ready. {what}");
            return;
        }
        if !waited_said && started.elapsed() > std::time::Duration::from_secs(3) {
            waited_said = true;
            let mut waiting: Vec<String> = not_ready
                .targets
                .iter()
                .map(|(target, _, reason)| format!("target {target}: {reason}"))
                .collect();
            waiting.extend(
                not_ready
                    .sources
                    .iter()
                    .map(|(s, r)| format!("source {s}: {r}")),
            );
            waiting.extend(not_ready.store.iter().map(|r| format!("store: {r}")));
            waiting.extend(
                not_ready
                    .checking
                    .iter()
                    .map(|s| format!("subscription {s}: checking its target")),
            );
            tracing::warn!(
                "sluice started; waiting for: {}. {what}",
                waiting.join("; ")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How `serve` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on a signal.
    Stopped,
    /// The store failed (a full disk) and the disk has room again: run anew, so
    /// the store is opened again (see `main`).
    Restart,
}

/// How often a failed store's disk is checked for room.
const ROOM_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Room a failed store's disk must have before sluice reopens the store: twice
/// the store's log segment, so the reopened store can write at once.
const ROOM_NEEDED: usize = 16 * 1024 * 1024;

/// Whether `dir` can take `ROOM_NEEDED` bytes now (written, synced, removed).
fn has_room(dir: &std::path::Path) -> bool {
    use std::io::Write;
    let probe = dir.join(".sluice-room-check");
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&vec![0u8; ROOM_NEEDED])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.is_ok()
}

/// While the store cannot write, check every few seconds whether its disk has
/// room again; then stop everything so that `main` runs sluice anew.
async fn watch_store(
    engine: Arc<Engine>,
    dir: String,
    restart: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ROOM_CHECK) => {}
        }
        if engine.store_failure().is_none() {
            continue;
        }
        let path = std::path::PathBuf::from(&dir);
        if tokio::task::spawn_blocking(move || has_room(&path))
            .await
            .unwrap_or(false)
        {
            tracing::warn!(data_dir = %dir, "The data directory can take writes again; sluice restarts to open its store anew.");
            restart.store(true, Ordering::SeqCst);
            stop.cancel();
            return;
        }
    }
}

pub async fn run(validated: Validated) -> anyhow::Result<Outcome> {
    let started = std::time::Instant::now();
    let validated = Arc::new(validated);
    let config = &validated.config;
    // Listen first: a taken address fails before anything is created on disk.
    let listen = config.server.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let engine = Engine::open(&validated)?;
    let shutdown = CancellationToken::new();
    let delivery = engine.start_delivery(
        |target| {
            let config = config
                .targets
                .iter()
                .find(|t| t.spec().name() == target)
                .context("a subscription names a target the config lacks")?;
            anyhow::Ok(build_sink(config)?)
        },
        &shutdown,
    )?;

    let mut sources = tokio::task::JoinSet::new();
    #[cfg_attr(not(feature = "http"), allow(unused_mut))]
    let mut source_routes = Router::new();
    for source in &config.sources {
        let spec = source.spec();
        let cx = engine.source(spec.name(), spec.bus(), shutdown.clone())?;
        let built = build_source(source, &cx)?;
        if let Some(task) = built.task {
            sources.spawn(task.run(cx));
        }
        #[cfg(feature = "http")]
        if let Some(routes) = built.routes {
            source_routes = source_routes.nest(&format!("/sources/{}", spec.name()), routes);
        }
    }

    let state = AppState {
        engine: engine.clone(),
        validated: validated.clone(),
        ready: Arc::new(AtomicBool::new(false)),
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .nest("/api", crate::admin::routes(state.clone()))
        .merge(source_routes);
    #[cfg(feature = "http")]
    let app = app.merge(sluice_connectors::http::routes(
        engine.ingest(),
        &config.server,
    ));
    let app = app
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        });

    if config.server.auth.admin_token.is_none() {
        tracing::warn!(listen = %listen, "The admin API (/api/) needs no token: whoever reaches this address can read event payloads and redrive them; set server.auth.admin_token.");
    }
    state.ready.store(true, Ordering::SeqCst);
    tokio::spawn(say_when_ready(
        engine.clone(),
        started,
        format!(
            "listen={listen} data_dir={} rules={} subscriptions={}",
            config.server.data_dir,
            config.rules.len(),
            engine.subscriptions().len()
        ),
    ));

    let restart = Arc::new(AtomicBool::new(false));
    tokio::spawn(watch_store(
        engine.clone(),
        config.server.data_dir.clone(),
        restart.clone(),
        shutdown.clone(),
    ));
    // sluice's own events on bus `system`: started now, transitions every second,
    // stopping before the stop (so a dispatcher may still deliver it).
    let system = engine.system_events();
    if let Some(system) = &system {
        system.started().await;
        tokio::spawn(system.clone().watch(shutdown.clone()));
    }
    let stop = shutdown.clone();
    let ready = state.ready.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down: no new events; finishing deliveries in flight.");
        ready.store(false, Ordering::SeqCst);
        if let Some(system) = &system {
            // Bounded: a stuck store must not hold up the stop.
            let said = tokio::time::timeout(std::time::Duration::from_secs(2), system.stopping());
            if said.await.is_err() {
                tracing::warn!("sluice.stopping was not published within 2s.");
            }
        }
        stop.cancel();
    });
    crate::server::serve(listener, app, &config.server, shutdown.clone()).await;
    while let Some(done) = sources.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::error!(error = %e, "A source stopped with an error.");
        }
    }
    delivery.stopped().await;
    if let Some(why) = engine.store_failure() {
        // Nothing more can be written; what was acknowledged is already on disk.
        tracing::warn!(reason = %why, "Final flush skipped: the store cannot write.");
    } else {
        engine.close().await.context("final flush failed")?;
    }
    if restart.load(Ordering::SeqCst) {
        tracing::info!("sluice stopped; starting again.");
        return Ok(Outcome::Restart);
    }
    tracing::info!("sluice stopped.");
    Ok(Outcome::Stopped)
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
    match state.engine.flush_stalled_for() {
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

/// 200 once sluice listens, every target can take events and every source can
/// bring them in; 503 otherwise, naming each that cannot and why.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready"})),
        );
    }
    let not_ready = state.engine.not_ready();
    if not_ready.is_empty() {
        return (StatusCode::OK, Json(json!({"status": "ready"})));
    }
    let mut body = json!({"status": "not ready"});
    if !not_ready.targets.is_empty() {
        let targets: Vec<_> = not_ready
            .targets
            .iter()
            .map(|(target, sub, reason)| {
                json!({"target": target, "subscription": sub, "reason": reason})
            })
            .collect();
        body["targets"] = json!(targets);
    }
    if let Some(store) = &not_ready.store {
        body["store"] = json!(store);
    }
    if !not_ready.checking.is_empty() {
        body["checking"] = json!(not_ready.checking);
    }
    if !not_ready.sources.is_empty() {
        let sources: Vec<_> = not_ready
            .sources
            .iter()
            .map(|(source, reason)| json!({"source": source, "reason": reason}))
            .collect();
        body["sources"] = json!(sources);
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.engine.metrics().render(),
    )
}
