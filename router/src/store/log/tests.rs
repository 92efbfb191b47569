use std::path::Path;

use super::*;

fn event(i: u64, size: usize) -> Vec<u8> {
    let mut data = format!("{{\"n\":{i},\"pad\":\"").into_bytes();
    data.resize(size.max(data.len() + 2) - 2, b'x');
    data.extend_from_slice(b"\"}");
    data
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k
}

/// Append events `from..to` as one round and sync it.
fn round(log: &Log, from: u64, to: u64, size: usize) {
    let data: Vec<Vec<u8>> = (from..to).map(|i| event(i, size)).collect();
    let appends: Vec<Append<'_>> = data
        .iter()
        .zip(from..to)
        .map(|(d, i)| Append {
            key: key(i),
            time_ms: 1000 + i,
            data: d,
        })
        .collect();
    assert_eq!(log.append(&appends).unwrap(), from..to);
    assert_eq!(log.sync().unwrap(), to);
}

/// Every event still held, read in pages of `page`.
fn read_all(log: &Log, page: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let batch = log.read(from, page, usize::MAX).unwrap();
        let Some(last) = batch.last() else {
            return out;
        };
        from = last.seq + 1;
        out.extend(batch);
    }
}

fn check(entries: &[Entry], seqs: std::ops::Range<u64>, size: usize) {
    let got: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(got, seqs.clone().collect::<Vec<_>>());
    for (e, i) in entries.iter().zip(seqs) {
        assert_eq!(e.data, event(i, size), "data of {i}");
        assert_eq!((e.key, e.time_ms), (key(i), 1000 + i));
    }
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn events_read_back_in_order_across_segments_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), 8 * 1024).unwrap();
    for r in 0..100 {
        round(&log, 1 + r * 10, 11 + r * 10, 100);
    }
    assert!(log.segment_count() > 10, "{} segments", log.segment_count());
    check(&read_all(&log, 64), 1..1001, 100);
    // Reading from the middle finds its place through the sparse index.
    check(&log.read(537, 5, usize::MAX).unwrap(), 537..542, 100);
    // One event past the byte budget, never fewer than one.
    assert_eq!(log.read(10, 100, 1).unwrap().len(), 1);
    drop(log);
    let log = Log::open(dir.path(), 8 * 1024).unwrap();
    check(&read_all(&log, 1000), 1..1001, 100);
    round(&log, 1001, 1003, 100);
    check(&log.read(999, 10, usize::MAX).unwrap(), 999..1003, 100);
}

#[test]
fn appends_are_invisible_until_synced_and_gone_if_never_synced() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), 1 << 20).unwrap();
    round(&log, 1, 3, 50);
    let data = event(3, 50);
    log.append(&[Append {
        key: key(3),
        time_ms: 1003,
        data: &data,
    }])
    .unwrap();
    assert_eq!(log.durable(), 3);
    check(&read_all(&log, 10), 1..3, 50);
    drop(log);
    let log = Log::open(dir.path(), 1 << 20).unwrap();
    check(&read_all(&log, 10), 1..3, 50);
    // Its number is handed out again: nobody was told about it.
    round(&log, 3, 4, 50);
}

/// A crash can leave any prefix of the last round's write on disk. Whatever
/// prefix, the log opens holding exactly the rounds before it, and goes on.
#[test]
fn a_torn_last_round_is_cut_at_every_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), 1 << 20).unwrap();
    round(&log, 1, 4, 40);
    round(&log, 4, 6, 40);
    let path = segments(dir.path()).pop().unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    round(&log, 6, 9, 40);
    drop(log);
    let after = std::fs::metadata(&path).unwrap().len();
    let whole = std::fs::read(&path).unwrap();
    let trial = tempfile::tempdir().unwrap();
    let copy = trial.path().join(path.file_name().unwrap());
    for cut in before..after {
        std::fs::write(&copy, &whole[..cut as usize]).unwrap();
        let log = Log::open(trial.path(), 1 << 20).unwrap();
        check(&read_all(&log, 100), 1..6, 40);
        assert_eq!(
            std::fs::metadata(&copy).unwrap().len(),
            before,
            "cut at {cut}"
        );
        round(&log, 6, 7, 40);
        drop(log);
        let log = Log::open(trial.path(), 1 << 20).unwrap();
        check(&read_all(&log, 100), 1..7, 40);
    }
    // A flipped bit anywhere in the last round cuts the round, not the log.
    for at in (before..after).step_by(7) {
        let mut bad = whole.clone();
        bad[at as usize] ^= 0x10;
        std::fs::write(&copy, &bad).unwrap();
        let log = Log::open(trial.path(), 1 << 20).unwrap();
        check(&read_all(&log, 100), 1..6, 40);
    }
    std::fs::write(&copy, &whole).unwrap();
    check(
        &read_all(&Log::open(trial.path(), 1 << 20).unwrap(), 100),
        1..9,
        40,
    );
}

#[test]
fn drained_segments_are_deleted_down_to_the_one_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), 4 * 1024).unwrap();
    for r in 0..50 {
        round(&log, 1 + r * 20, 21 + r * 20, 100);
    }
    let many = log.segment_count();
    assert!(many > 20, "{many} segments");
    // Half read: only segments wholly below the floor go.
    log.delete_before(500).unwrap();
    assert!(
        log.first() <= 500 && log.first() > 400,
        "first {}",
        log.first()
    );
    let rest = read_all(&log, 100);
    assert_eq!(rest.first().unwrap().seq, log.first());
    assert_eq!(rest.last().unwrap().seq, 1000);
    log.delete_before(log.durable()).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(segments(dir.path()).len(), 1);
    assert!(log.disk_bytes() < 8 * 1024, "{} bytes", log.disk_bytes());
    // Reopened after the drain, numbering goes on where it was.
    drop(log);
    let log = Log::open(dir.path(), 4 * 1024).unwrap();
    round(&log, 1001, 1002, 100);
    assert_eq!(read_all(&log, 100).last().unwrap().seq, 1001);
}

#[test]
fn an_event_larger_than_a_read_chunk_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), 1 << 20).unwrap();
    round(&log, 1, 2, 40);
    round(&log, 2, 3, 3 * READ_CHUNK);
    round(&log, 3, 4, 40);
    let all = read_all(&log, 10);
    assert_eq!(
        all.iter().map(|e| e.data.len()).collect::<Vec<_>>(),
        [40, 3 * READ_CHUNK, 40]
    );
    drop(log);
    assert_eq!(
        read_all(&Log::open(dir.path(), 1 << 20).unwrap(), 10).len(),
        3
    );
}

#[test]
fn a_file_that_is_not_a_segment_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("00000000000000000001.seg"),
        b"hello, this is not a log",
    )
    .unwrap();
    let err = Log::open(dir.path(), 1 << 20).err().unwrap();
    assert!(
        err.message.contains("00000000000000000001.seg") && err.message.contains("magic"),
        "{err}"
    );
}

#[test]
fn concurrent_appenders_get_distinct_numbers_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), 64 * 1024).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let syncer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || loop {
            let done = stop.load(Ordering::Relaxed);
            log.sync().unwrap();
            if done {
                return;
            }
        })
    };
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..500u64 {
                    let data = format!("{{\"w\":{w},\"i\":{i}}}");
                    let seqs = log
                        .append(&[Append {
                            key: key(w * 1000 + i),
                            time_ms: i,
                            data: data.as_bytes(),
                        }])
                        .unwrap();
                    mine.push((seqs.start, data));
                }
                mine
            })
        })
        .collect();
    let mut expected: Vec<(u64, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    stop.store(true, Ordering::Relaxed);
    syncer.join().unwrap();
    expected.sort();
    let got: Vec<(u64, String)> = read_all(&log, 333)
        .into_iter()
        .map(|e| (e.seq, String::from_utf8(e.data).unwrap()))
        .collect();
    assert_eq!(got, expected);
}

/// `sync_before(mark)` writes what was appended before the mark and leaves the
/// rest for the next sync; a crash in between keeps only the former.
#[test]
fn a_sync_before_a_mark_leaves_later_appends_for_the_next_round() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let log = Log::open(dir.path(), 1 << 20).unwrap();
        let first = log.next_seq();
        let d = event(0, 40);
        let one = |i: u64| Append {
            key: key(i),
            time_ms: 1,
            data: &d,
        };
        log.append(&[one(0), one(1)]).unwrap();
        let mark = log.next_seq();
        log.append(&[one(2)]).unwrap();
        assert_eq!(log.sync_before(mark).unwrap(), first + 2);
        assert_eq!(read_all(&log, 10).len(), 2);
        // A crash now: the third was never written.
        first
    };
    let log = Log::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.durable(), first + 2);
    let d = event(0, 40);
    log.append(&[Append {
        key: key(9),
        time_ms: 1,
        data: &d,
    }])
    .unwrap();
    assert_eq!(log.sync().unwrap(), first + 3);
    let seqs: Vec<u64> = read_all(&log, 10).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [first, first + 1, first + 2]);
}
