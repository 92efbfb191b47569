//! The `file` target: each delivered batch appended to a local file as JSON lines
//! (one structured CloudEvent per line), on disk (fdatasync) before it counts as
//! delivered. For audit trails, local debugging and simple pipelines without a
//! database. At least once: a batch retried after a crash may be appended again.

pub mod config;
mod sink;

pub use sink::FileSink;
