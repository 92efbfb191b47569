//! Operations signals as sources (cargo feature `ops`):
//! - `probe` ([`probe`]): HTTP(S) GET or TCP connect to endpoints on an
//!   interval; `sluice.probe.down` / `sluice.probe.up` (and `.result`) events.
//! - `alertmanager` ([`alertmanager`]): Prometheus Alertmanager's webhook at
//!   `POST /sources/{name}/alerts`; an event per alert.
//! - `webhook` ([`webhook`]): any JSON at `POST /sources/{name}`, attributes
//!   from templates ([`template`]), signatures checked ([`signature`]: GitHub,
//!   Standard Webhooks).
//!
//! The two webhook sources go through HTTP ingest's door (`crate::http`'s
//! `Webhook`: token, body limits, backlog 503, error JSON); they only parse.

pub mod alertmanager;
pub mod config;
pub mod probe;
pub mod signature;
pub mod template;
pub mod webhook;
