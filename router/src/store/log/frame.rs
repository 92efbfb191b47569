//! How one record of an event log is laid out on disk.
//!
//! A segment file starts with a 16-byte header (`SLUICELG`, format version u32 LE,
//! 4 reserved bytes) and then holds frames back to back:
//!
//! ```text
//! len   u32 LE   bytes after this field and the crc (kind .. end of payload)
//! crc   u32 LE   CRC32C of those bytes
//! kind  u8       1 = event, 2 = commit (the end of one group-commit round)
//! seq   u64 LE   event: its sequence number; commit: the last seq of the round
//! time  u64 LE   ms since the Unix epoch the event was appended (commit: the round's)
//! key   16 bytes event: hash of (source, id) for de-duplication; commit: zero
//! data  len - 33 bytes; event: the stored record; commit: empty
//! ```
//!
//! Why commit frames: a round is durable only when its commit frame is. Recovery
//! keeps the log up to the last commit frame whose CRC holds and cuts the rest,
//! so the log after a crash is always a whole number of rounds: an event is
//! never delivered from a round that was not acknowledged, and a batch published
//! in one round is kept whole or not at all.
//!
//! The format is fixed once data directories exist: a new field goes in a new
//! kind or a new version, never by reinterpreting these bytes.

/// The first bytes of every segment file.
pub(crate) const MAGIC: &[u8; 8] = b"SLUICELG";
/// The segment format this version writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Bytes before the first frame of a segment.
pub(crate) const FILE_HEADER: usize = 16;
/// `len` + `crc`.
const PREFIX: usize = 8;
/// `kind` + `seq` + `time` + `key`.
const FIXED: usize = 1 + 8 + 8 + 16;
/// The largest frame body accepted; a larger `len` is damage, not a record.
pub(crate) const MAX_BODY: usize = 256 * 1024 * 1024;

pub(crate) const EVENT: u8 = 1;
pub(crate) const COMMIT: u8 = 2;

/// The segment file header.
pub(crate) fn file_header() -> [u8; FILE_HEADER] {
    let mut h = [0u8; FILE_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Why a file is not a segment this version can read, if it is not.
pub(crate) fn check_header(h: &[u8]) -> Result<(), String> {
    if h.len() < FILE_HEADER || &h[..8] != MAGIC {
        return Err("not a sluice log segment (bad magic)".into());
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&h[8..12]);
    match u32::from_le_bytes(v) {
        VERSION => Ok(()),
        other => Err(format!(
            "segment format {other} is not one this version of sluice reads ({VERSION})"
        )),
    }
}

/// One frame read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub kind: u8,
    pub seq: u64,
    pub time_ms: u64,
    pub key: [u8; 16],
    pub data: &'a [u8],
}

/// Append a frame to `buf`.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    kind: u8,
    seq: u64,
    time_ms: u64,
    key: &[u8; 16],
    data: &[u8],
) {
    let body_len = FIXED + data.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.push(kind);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&time_ms.to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(data);
    let crc = crc32c::crc32c(&buf[start + PREFIX..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The bytes a frame holding `data_len` bytes takes.
#[cfg(test)]
pub(crate) fn frame_len(data_len: usize) -> usize {
    PREFIX + FIXED + data_len
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A whole frame, and the bytes it took.
    Frame(Frame<'a>, usize),
    /// The buffer ends inside a frame of this many bytes (read more, or a torn tail).
    Short(usize),
    /// Not a frame: a bad length, checksum or kind.
    Damaged(&'static str),
}

/// Decode the frame at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < PREFIX {
        return Decoded::Short(PREFIX + FIXED);
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(FIXED..=MAX_BODY).contains(&body_len) {
        return Decoded::Damaged("bad frame length");
    }
    let total = PREFIX + body_len;
    if buf.len() < total {
        return Decoded::Short(total);
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[PREFIX..total];
    if crc32c::crc32c(body) != crc {
        return Decoded::Damaged("bad checksum");
    }
    let kind = body[0];
    if kind != EVENT && kind != COMMIT {
        return Decoded::Damaged("unknown frame kind");
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let mut key = [0u8; 16];
    key.copy_from_slice(&body[17..33]);
    Decoded::Frame(
        Frame {
            kind,
            seq: u64_at(1),
            time_ms: u64_at(9),
            key,
            data: &body[FIXED..],
        },
        total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_and_every_cut_or_flip_is_caught() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            EVENT,
            42,
            1_700_000_000_000,
            &[7; 16],
            b"{\"a\":1}",
        );
        let Decoded::Frame(f, n) = decode(&buf) else {
            panic!("not decoded")
        };
        assert_eq!(n, buf.len());
        assert_eq!(n, frame_len(7));
        assert_eq!(
            (f.kind, f.seq, f.time_ms, f.key, f.data),
            (EVENT, 42, 1_700_000_000_000, [7; 16], &b"{\"a\":1}"[..])
        );
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut]), Decoded::Short(_)),
                "cut at {cut}"
            );
        }
        for at in 4..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0x40;
            assert!(matches!(decode(&bad), Decoded::Damaged(_)), "flip at {at}");
        }
    }

    #[test]
    fn headers_of_other_files_and_versions_are_refused() {
        assert!(check_header(&file_header()).is_ok());
        assert!(check_header(b"not a segment at all")
            .unwrap_err()
            .contains("magic"));
        let mut newer = file_header();
        newer[8] = 9;
        assert!(check_header(&newer).unwrap_err().contains("format 9"));
    }
}
