//! Appending batches to the file, off the runtime's threads.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};

use super::config::FileTargetConfig;
use crate::{BuildSink, ConnectorError};

/// A file target: see the module docs.
pub struct FileSink {
    path: PathBuf,
    /// Opened on the first append (and again after a failed one).
    file: Arc<Mutex<Option<File>>>,
}

impl FileSink {
    pub fn new(config: &FileTargetConfig) -> Self {
        Self {
            path: PathBuf::from(&config.path),
            file: Arc::new(Mutex::new(None)),
        }
    }

    fn open(path: &PathBuf) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        let mut lines = Vec::new();
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            match serde_json::to_vec(event) {
                Ok(line) => {
                    lines.extend_from_slice(&line);
                    lines.push(b'\n');
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(SinkError::permanent(format!(
                    "the event cannot be written as JSON: {e}"
                )))),
            }
        }
        let (path, file) = (self.path.clone(), self.file.clone());
        let appended = tokio::task::spawn_blocking(move || {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            let open = match file.take() {
                Some(f) => f,
                None => Self::open(&path)?,
            };
            let written = (&open).write_all(&lines).and_then(|()| open.sync_data());
            // Kept only when the append went through; a failed one reopens.
            if written.is_ok() {
                *file = Some(open);
            }
            written
        })
        .await;
        let failed = match appended {
            Ok(Ok(())) => return results,
            Ok(Err(e)) => format!("appending to {}: {e}", self.path.display()),
            Err(e) => format!("appending to {}: {e}", self.path.display()),
        };
        results
            .into_iter()
            .map(|r| r.and(Err(SinkError::transient(failed.clone()))))
            .collect()
    }

    /// The file can be opened for appending (its folder exists and is writable).
    async fn check(&self) -> Result<(), SinkError> {
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || Self::open(&path)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SinkError::transient(format!(
                "cannot open {} for appending: {e}",
                self.path.display()
            ))),
            Err(e) => Err(SinkError::transient(e.to_string())),
        }
    }
}

impl BuildSink for FileTargetConfig {
    fn build(&self) -> Result<Arc<dyn Sink>, ConnectorError> {
        Ok(Arc::new(FileSink::new(self)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_router::event::{EventFields, RawData};

    use super::*;

    fn event(n: u64) -> Event {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", n.to_string())
            .attr("source", "/t")
            .attr("type", "t")
            .data(RawData::Json(json!({"n": n})));
        f.build().unwrap()
    }

    #[tokio::test]
    async fn batches_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let config = FileTargetConfig {
            name: "f".into(),
            path: path.display().to_string(),
            batch: Default::default(),
        };
        let sink = FileSink::new(&config);
        assert!(sink.check().await.is_ok());
        let first: Vec<Event> = (0..3).map(event).collect();
        assert!(sink.deliver(&first).await.iter().all(Result::is_ok));
        assert!(sink.deliver(&[event(3)]).await[0].is_ok());
        let text = std::fs::read_to_string(&path).unwrap();
        let ns: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ns, [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_missing_folder_is_not_ready_and_fails_the_batch_for_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileTargetConfig {
            name: "f".into(),
            path: dir
                .path()
                .join("no/such/folder.jsonl")
                .display()
                .to_string(),
            batch: Default::default(),
        };
        let sink = FileSink::new(&config);
        let why = sink.check().await.unwrap_err();
        assert!(why.message.contains("cannot open"), "{}", why.message);
        let results = sink.deliver(&[event(1)]).await;
        let e = results[0].as_ref().unwrap_err();
        assert_eq!(e.class, sluice_router::error::ErrorClass::Transient);
    }
}
