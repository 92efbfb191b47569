//! End-to-end tests of the `sluice` binary against real sockets on loopback.

mod backpressure;
mod breaker;
mod config;
mod crash_loop;
mod dedupe;
mod delay;
mod delivery;
mod elasticsearch;
mod first_hour;
mod full_disk;
mod harness;
mod hostile;
mod ingest;
mod kafka;
mod kafka_group;
mod kafka_sources;
mod ops;
mod postgres;
mod rabbitmq;
mod results;
mod rules;
mod s3;
mod s3_events;
mod s3_poll;
mod system_events;
mod timer;
