//! `subscriptions.json` in a bus log's folder: each subscription's id (what its
//! records name) and the seq it started at. Ids are never reused: a
//! subscription no longer configured keeps its entry, so its old records are
//! never taken for a new subscription's.

use std::collections::HashMap;
use std::path::Path;

use super::state::Sub;
use super::{bad, to_json};
use crate::store::StoreError;

/// The file naming each subscription's id.
const SUBS_FILE: &str = "subscriptions.json";

/// What the subscriptions file holds per subscription.
#[derive(serde::Serialize, serde::Deserialize)]
struct SubEntry {
    id: u16,
    /// The first seq it takes.
    start: u64,
}

fn read_file(dir: &Path) -> Result<HashMap<String, SubEntry>, StoreError> {
    let path = dir.join(SUBS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| bad("open bus log", format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(bad("open bus log", format!("{}: {e}", path.display()))),
    }
}

/// Ids for `names`: kept from the file, new ones after the highest.
pub(super) fn assign_ids(dir: &Path, names: &[&str]) -> Result<HashMap<String, u16>, StoreError> {
    let file = read_file(dir)?;
    let mut next = file.values().map(|e| e.id + 1).max().unwrap_or(0);
    let mut ids: HashMap<String, u16> = file.iter().map(|(n, e)| (n.clone(), e.id)).collect();
    for name in names {
        if !ids.contains_key(*name) {
            ids.insert((*name).to_owned(), next);
            next = next
                .checked_add(1)
                .ok_or_else(|| bad("open bus log", "more than 65,535 subscriptions"))?;
        }
    }
    ids.retain(|n, _| names.contains(&n.as_str()) || file.contains_key(n));
    Ok(ids)
}

pub(super) fn read_starts(dir: &Path) -> Result<HashMap<String, u64>, StoreError> {
    Ok(read_file(dir)?
        .into_iter()
        .map(|(n, e)| (n, e.start))
        .collect())
}

/// Write the subscriptions file (atomically: a new file renamed over it).
pub(super) fn write_subs(
    dir: &Path,
    ids: &HashMap<String, u16>,
    starts: &HashMap<String, u64>,
    subs: &HashMap<u16, Sub>,
) -> Result<(), StoreError> {
    let entries: HashMap<&str, SubEntry> = ids
        .iter()
        .map(|(n, &id)| {
            let start = starts
                .get(n)
                .copied()
                .or_else(|| subs.get(&id).map(|s| s.acks.floor()))
                .unwrap_or(0);
            (n.as_str(), SubEntry { id, start })
        })
        .collect();
    let path = dir.join(SUBS_FILE);
    let tmp = dir.join(format!("{SUBS_FILE}.new"));
    let io = |e: std::io::Error| bad("write bus log", format!("{}: {e}", path.display()));
    std::fs::write(&tmp, to_json(&entries)).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}
