//! An append-only event log: numbered segment files in one directory, written
//! by group commit, read by sequence number, deleted from the front.
//!
//! This is the piece of the queue store that holds events: each event a bus
//! accepts is written here once, however many subscriptions it matches, and
//! subscriptions keep sequence numbers into it (see DESIGN.md, "The store").
//!
//! - `append` buffers frames in memory and hands out sequence numbers; nothing is
//!   readable yet.
//! - `sync` writes everything buffered with one `write` and one `fdatasync`,
//!   ending the round with a commit frame (see [`frame`]); only then do readers
//!   see it, and only then may a caller acknowledge it. Appends made while a
//!   sync runs go into the next round, so one fsync covers every concurrent
//!   publisher of a round.
//! - A segment file is `<first seq, 20 digits>.seg`. A new one starts when the
//!   active one has passed `segment_bytes` (at a round boundary, so a sealed
//!   segment always ends with a commit frame); the directory is fsynced when a
//!   segment is created or deleted.
//! - Opening scans the segments, rebuilds the in-memory sparse index (one entry
//!   per [`INDEX_EVERY`] bytes) and cuts the last segment after its last whole
//!   round: a torn write or a round whose commit frame never reached the disk.
//! - A write or fsync error fails the log for good (until it is opened again):
//!   after a failed fsync the kernel may have dropped the dirty pages, so
//!   nothing written since can be trusted to be on disk.

pub mod acks;
pub(crate) mod frame;
#[cfg(test)]
mod tests;
pub mod window;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use frame::{Decoded, COMMIT, EVENT, FILE_HEADER};

use super::StoreError;

/// Bytes between two sparse index entries of a segment.
pub const INDEX_EVERY: u64 = 16 * 1024;

/// How many bytes a reader asks the file for at a time.
const READ_CHUNK: usize = 256 * 1024;

/// An event to append: its de-duplication key, when it was accepted, and the
/// stored record.
pub struct Append<'a> {
    pub key: [u8; 16],
    pub time_ms: u64,
    pub data: &'a [u8],
}

/// An event read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub time_ms: u64,
    pub key: [u8; 16],
    pub data: Vec<u8>,
}

/// One bus's event log. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    segment_bytes: u64,
    /// Frames appended since the last sync, and the next sequence number.
    pending: Mutex<Pending>,
    /// The segment being written; the lock also makes syncs one at a time.
    writer: Mutex<Writer>,
    /// Every readable segment, by first sequence number.
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// Every sequence number below this one is on disk.
    durable: AtomicU64,
    /// Why the log cannot write any more, once it cannot.
    failed: Mutex<Option<String>>,
}

struct Pending {
    buf: Vec<u8>,
    next_seq: u64,
    /// (first seq, byte offset in `buf`) of each append call's frames, so a
    /// sync can stop at a boundary (see [`Log::sync_before`]).
    calls: Vec<(u64, usize)>,
}

struct Writer {
    segment: Arc<Segment>,
}

struct Segment {
    base: u64,
    path: PathBuf,
    file: File,
    /// Bytes of whole rounds: what readers may read.
    len: AtomicU64,
    /// (seq, offset of its frame), one every [`INDEX_EVERY`] bytes, ascending.
    index: RwLock<Vec<(u64, u64)>>,
}

impl Segment {
    /// The offset to start reading at for `seq`: the closest indexed frame at or
    /// before it.
    fn offset_for(&self, seq: u64) -> u64 {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        match index.partition_point(|&(s, _)| s <= seq) {
            0 => FILE_HEADER as u64,
            i => index[i - 1].1,
        }
    }

    /// Note the event frames (seq, offset) of a round just made durable in the
    /// index, one every [`INDEX_EVERY`] bytes.
    fn index_frames(&self, frames: impl IntoIterator<Item = (u64, u64)>) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let mut last = index.last().map(|&(_, o)| o);
        for (seq, offset) in frames {
            if last.is_none_or(|l| offset - l >= INDEX_EVERY) {
                index.push((seq, offset));
                last = Some(offset);
            }
        }
    }
}

/// (seq, offset) of each event frame in `buf`, which is written at `offset`.
fn event_frames(buf: &[u8], offset: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || loop {
        if at + 17 > buf.len() {
            return None;
        }
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let here = at;
        at += 8 + len;
        if buf[here + 8] == EVENT {
            let mut s = [0u8; 8];
            s.copy_from_slice(&buf[here + 9..here + 17]);
            return Some((u64::from_le_bytes(s), offset + here as u64));
        }
    })
}

fn io_error(operation: &'static str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError {
        operation,
        message: format!("{}: {e}", path.display()),
        io: true,
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync directory", dir, e))
}

impl Log {
    /// Open the log in `dir` (created if missing), recovering it after a crash.
    /// A new segment starts once the active one holds `segment_bytes`.
    pub fn open(dir: impl AsRef<Path>, segment_bytes: u64) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create log", &dir, e))?;
        let mut bases = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(|e| io_error("open log", &dir, e))? {
            let item = item.map_err(|e| io_error("open log", &dir, e))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name
                .strip_suffix(".seg")
                .and_then(|b| b.parse::<u64>().ok())
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut next_seq = 1;
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let (segment, end) = recover(&dir, base, last)?;
            next_seq = end.unwrap_or(base).max(next_seq);
            segments.insert(base, Arc::new(segment));
        }
        let active = match segments.values().next_back() {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(create_segment(&dir, next_seq)?);
                segments.insert(next_seq, s.clone());
                s
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                segment_bytes: segment_bytes.max(FILE_HEADER as u64 + 1),
                pending: Mutex::new(Pending {
                    calls: Vec::new(),
                    buf: Vec::new(),
                    next_seq,
                }),
                writer: Mutex::new(Writer { segment: active }),
                segments: RwLock::new(segments),
                durable: AtomicU64::new(next_seq),
                failed: Mutex::new(None),
            }),
        })
    }

    /// The segments, for reading.
    fn segments(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Segment>>> {
        self.inner
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn failure(&self) -> Option<StoreError> {
        let failed = self.inner.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.as_ref().map(|m| StoreError {
            operation: "write log",
            message: m.clone(),
            io: true,
        })
    }

    fn fail(&self, e: StoreError) -> StoreError {
        let mut failed = self.inner.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get_or_insert_with(|| e.message.clone());
        e
    }

    /// Buffer `events` for the next sync; returns their sequence numbers.
    pub fn append(&self, events: &[Append<'_>]) -> Result<Range<u64>, StoreError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        let first = pending.next_seq;
        let at = pending.buf.len();
        pending.calls.push((first, at));
        for e in events {
            let seq = pending.next_seq;
            frame::encode(&mut pending.buf, EVENT, seq, e.time_ms, &e.key, e.data);
            pending.next_seq += 1;
        }
        Ok(first..pending.next_seq)
    }

    /// Write and fsync everything appended before this call; returns the first
    /// sequence number not yet durable. Blocking: call it from the committer
    /// thread, not from async code.
    pub fn sync(&self) -> Result<u64, StoreError> {
        self.sync_before(u64::MAX)
    }

    /// The sequence number the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_seq
    }

    /// [`Log::sync`], but only the frames appended before `limit` (a value of
    /// [`Log::next_seq`] taken earlier); later ones wait for the next sync. A
    /// store that must not make these durable before something else (the
    /// de-duplication keys after their events) takes the mark first.
    pub fn sync_before(&self, limit: u64) -> Result<u64, StoreError> {
        let mut writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let (mut buf, end) = {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            let split = pending
                .calls
                .iter()
                .position(|&(first, _)| first >= limit)
                .unwrap_or(pending.calls.len());
            if split == pending.calls.len() {
                pending.calls.clear();
                (std::mem::take(&mut pending.buf), pending.next_seq)
            } else {
                let (end, at) = pending.calls[split];
                let rest = pending.buf.split_off(at);
                let taken = std::mem::replace(&mut pending.buf, rest);
                pending.calls.drain(..split);
                for call in &mut pending.calls {
                    call.1 -= at;
                }
                (taken, end)
            }
        };
        if buf.is_empty() {
            return Ok(self.durable());
        }
        frame::encode(&mut buf, COMMIT, end - 1, crate::now_ms(), &[0; 16], &[]);
        let first = self.durable();
        if writer.segment.len.load(Ordering::Acquire) >= self.inner.segment_bytes {
            let segment =
                Arc::new(create_segment(&self.inner.dir, first).map_err(|e| self.fail(e))?);
            self.inner
                .segments
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(first, segment.clone());
            writer.segment = segment;
        }
        let segment = &writer.segment;
        let offset = segment.len.load(Ordering::Acquire);
        segment
            .file
            .write_all_at(&buf, offset)
            .and_then(|()| segment.file.sync_data())
            .map_err(|e| self.fail(io_error("write log", &segment.path, e)))?;
        segment.index_frames(event_frames(&buf, offset));
        segment
            .len
            .store(offset + buf.len() as u64, Ordering::Release);
        self.inner.durable.store(end, Ordering::Release);
        Ok(end)
    }

    /// The first sequence number not yet durable (the next one a sync makes readable).
    pub fn durable(&self) -> u64 {
        self.inner.durable.load(Ordering::Acquire)
    }

    /// The first sequence number still held (older segments were deleted).
    pub fn first(&self) -> u64 {
        let segments = self.segments();
        segments
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| self.durable())
    }

    /// Bytes of segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        let segments = self.segments();
        segments
            .values()
            .map(|s| s.len.load(Ordering::Acquire))
            .sum()
    }

    /// The first seq of each segment file, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.segments().keys().copied().collect()
    }

    /// How many segment files there are.
    pub fn segment_count(&self) -> usize {
        self.segments().len()
    }

    /// Durable events from `from` on (or from the first one still held), at most
    /// `max_events` of them and, past the first, about `max_bytes` of data.
    pub fn read(
        &self,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let durable = self.durable();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut seq = from;
        while seq < durable && out.len() < max_events && (out.is_empty() || bytes < max_bytes) {
            let segment = {
                let segments = self.segments();
                match segments
                    .range(..=seq)
                    .next_back()
                    .or_else(|| segments.iter().next())
                {
                    Some((_, s)) => s.clone(),
                    None => break,
                }
            };
            seq = seq.max(segment.base);
            let before = out.len();
            let next = read_segment(
                &segment, seq, durable, max_events, max_bytes, &mut out, &mut bytes,
            )?;
            if out.len() == before && next == seq {
                // Nothing more in this segment: the next one starts at the next seq
                // past it (or there is none yet).
                let segments = self.segments();
                match segments.range(seq + 1..).next() {
                    Some((&base, _)) => seq = base,
                    None => break,
                }
            } else {
                seq = next;
            }
        }
        Ok(out)
    }

    /// Delete the segments all of whose events are below `floor` (never the one
    /// being written). Returns how many went.
    pub fn delete_before(&self, floor: u64) -> Result<usize, StoreError> {
        let writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<Arc<Segment>> = {
            let mut segments = self
                .inner
                .segments
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let bases: Vec<u64> = segments.keys().copied().collect();
            let mut gone = Vec::new();
            for pair in bases.windows(2) {
                let (base, next) = (pair[0], pair[1]);
                if next <= floor && base != writer.segment.base {
                    if let Some(s) = segments.remove(&base) {
                        gone.push(s);
                    }
                }
            }
            gone
        };
        for s in &gone {
            std::fs::remove_file(&s.path).map_err(|e| io_error("delete segment", &s.path, e))?;
        }
        if !gone.is_empty() {
            sync_dir(&self.inner.dir)?;
        }
        Ok(gone.len())
    }
}

/// Read events `from..durable` of `segment` into `out` within the limits;
/// returns the seq after the last one read (or `from` when none).
fn read_segment(
    segment: &Segment,
    from: u64,
    durable: u64,
    max_events: usize,
    max_bytes: usize,
    out: &mut Vec<Entry>,
    bytes: &mut usize,
) -> Result<u64, StoreError> {
    let len = segment.len.load(Ordering::Acquire);
    let mut offset = segment.offset_for(from);
    let mut next = from;
    let mut chunk = READ_CHUNK;
    let mut buf = Vec::new();
    let damaged = |at: u64, why: &str| {
        StoreError::new(
            "read log",
            format!("{} at byte {at}: {why}", segment.path.display()),
        )
    };
    while offset < len {
        let want = (len - offset).min(chunk as u64) as usize;
        buf.resize(want, 0);
        segment
            .file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| io_error("read log", &segment.path, e))?;
        let mut at = 0;
        loop {
            match frame::decode(&buf[at..]) {
                Decoded::Frame(f, n) => {
                    at += n;
                    if f.kind != EVENT || f.seq < from {
                        continue;
                    }
                    if f.seq >= durable
                        || out.len() >= max_events
                        || (!out.is_empty() && *bytes >= max_bytes)
                    {
                        return Ok(next);
                    }
                    *bytes += f.data.len();
                    out.push(Entry {
                        seq: f.seq,
                        time_ms: f.time_ms,
                        key: f.key,
                        data: f.data.to_vec(),
                    });
                    next = f.seq + 1;
                }
                Decoded::Short(_) if at > 0 => break,
                // A frame larger than a chunk: read it whole.
                Decoded::Short(n) if offset + n as u64 <= len => {
                    chunk = n;
                    break;
                }
                Decoded::Short(_) => return Err(damaged(offset, "frame runs past the end")),
                Decoded::Damaged(why) => return Err(damaged(offset + at as u64, why)),
            }
        }
        offset += at as u64;
    }
    Ok(next)
}

/// Create segment `base` with its header, durable, directory entry included.
fn create_segment(dir: &Path, base: u64) -> Result<Segment, StoreError> {
    let path = segment_path(dir, base);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| io_error("create segment", &path, e))?;
    file.write_all(&frame::file_header())
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error("create segment", &path, e))?;
    sync_dir(dir)?;
    Ok(Segment {
        base,
        path,
        file,
        len: AtomicU64::new(FILE_HEADER as u64),
        index: RwLock::new(Vec::new()),
    })
}

/// Open segment `base`, index it and find where its last whole round ends; the
/// last segment is cut there (a torn or unacknowledged tail). Returns the
/// segment and the seq after its last committed event, if it holds any.
fn recover(dir: &Path, base: u64, last: bool) -> Result<(Segment, Option<u64>), StoreError> {
    let path = segment_path(dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("open segment", &path, e))?;
    let size = file
        .metadata()
        .map_err(|e| io_error("open segment", &path, e))?
        .len();
    let mut header = [0u8; FILE_HEADER];
    if size < FILE_HEADER as u64 {
        // Created, header not yet on disk: nothing was ever written after it.
        file.write_all_at(&frame::file_header(), 0)
            .and_then(|()| file.set_len(FILE_HEADER as u64))
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error("repair segment", &path, e))?;
    } else {
        file.read_exact_at(&mut header, 0)
            .map_err(|e| io_error("open segment", &path, e))?;
        frame::check_header(&header)
            .map_err(|why| StoreError::new("open segment", format!("{}: {why}", path.display())))?;
    }
    let segment = Segment {
        base,
        path,
        file,
        len: AtomicU64::new(FILE_HEADER as u64),
        index: RwLock::new(Vec::new()),
    };
    // Scan whole rounds: index them as they are confirmed by their commit frame.
    let mut offset = FILE_HEADER as u64;
    let mut committed = FILE_HEADER as u64;
    let mut end_seq = None;
    let mut round: Vec<(u64, u64)> = Vec::new();
    let mut expect = base;
    let mut damage = None;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut filled = 0usize;
    let mut at = 0usize;
    loop {
        match frame::decode(&buf[at..filled]) {
            Decoded::Frame(f, n) => {
                let expected = if f.kind == EVENT {
                    expect
                } else {
                    expect.wrapping_sub(1)
                };
                if f.seq != expected {
                    damage = Some("sequence number out of order");
                    break;
                }
                if f.kind == EVENT {
                    round.push((f.seq, offset));
                    expect += 1;
                }
                at += n;
                offset += n as u64;
                if f.kind == COMMIT {
                    segment.index_frames(round.drain(..));
                    committed = offset;
                    end_seq = Some(f.seq + 1);
                }
            }
            Decoded::Short(n) => {
                // Move what is left to the front and read more.
                buf.copy_within(at..filled, 0);
                filled -= at;
                at = 0;
                if buf.len() < n {
                    buf.resize(n, 0);
                }
                let pos = offset + filled as u64;
                if pos >= size {
                    if filled > 0 {
                        damage = Some("torn frame");
                    }
                    break;
                }
                let want = ((size - pos) as usize).min(buf.len() - filled);
                segment
                    .file
                    .read_exact_at(&mut buf[filled..filled + want], pos)
                    .map_err(|e| io_error("open segment", &segment.path, e))?;
                filled += want;
            }
            Decoded::Damaged(why) => {
                damage = Some(why);
                break;
            }
        }
    }
    segment.len.store(committed, Ordering::Release);
    if committed < size {
        let cut = size - committed;
        if last {
            tracing::warn!(
                segment = %segment.path.display(),
                bytes = cut,
                reason = damage.unwrap_or("a round without its commit frame"),
                "Cut the end of the event log that no commit covered (nothing in it was acknowledged)."
            );
            segment
                .file
                .set_len(committed)
                .and_then(|()| segment.file.sync_data())
                .map_err(|e| io_error("repair segment", &segment.path, e))?;
        } else {
            tracing::error!(
                segment = %segment.path.display(),
                bytes = cut,
                reason = damage.unwrap_or("a round without its commit frame"),
                "A sealed segment of the event log is damaged; events after the damage in it are skipped."
            );
        }
    }
    Ok((segment, end_seq))
}
