//! The usage-event spool: an on-disk write-ahead log between the request path and Kafka.
//!
//! Every event is appended here first; the emitter sends from the spool and acknowledges a
//! position only once the broker has acknowledged everything before it. So events survive a
//! broker outage (they wait here, in order) and a restart (the unacknowledged tail is sent
//! again). After a crash, events acknowledged after the last persisted cursor are sent twice;
//! the processor counts each event id once, so that is harmless.
//!
//! Layout: `dir/<id>.seg` segment files of records `[len: u32 LE][crc32: u32 LE][payload]`, and
//! `dir/cursor` holding the acknowledged position (`<segment> <offset>`). A torn record at the
//! end of a segment (a crash mid-write) is cut off at open. Segments wholly before the cursor
//! are deleted. The spool is bounded: [`Spool::is_full`] tells the gateway to stop taking work.
//! A record the broker refuses for good is copied to `dir/refused/` ([`Spool::keep_refused`]).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A place in the spool: a segment id and a byte offset in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub start: Position,
    pub end: Position,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes written, buffered included.
    len: u64,
    /// Bytes on disk (readable).
    flushed: u64,
}

const HEADER: u64 = 8;
/// Largest record accepted (an event is well under a kilobyte).
pub const MAX_RECORD: usize = 1 << 20;

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    writer: BufWriter<File>,
    /// The open segment's file once more, for syncing on another thread ([`Spool::sync_handle`]).
    sync_file: Arc<File>,
    segment_bytes: u64,
    max_bytes: u64,
    acked: Position,
    /// The position last written to the cursor file.
    persisted: Option<Position>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Make the directory's entries (a new segment file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Read the record at the reader's position; `None` at a clean end or a torn/corrupt tail.
fn read_record(reader: &mut impl Read, available: u64) -> io::Result<Option<Vec<u8>>> {
    if available < HEADER {
        return Ok(None);
    }
    let mut header = [0u8; HEADER as usize];
    reader.read_exact(&mut header)?;
    let len = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as u64;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap_or_default());
    if len as usize > MAX_RECORD || HEADER + len > available {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(Some(payload))
}

impl Spool {
    /// Open (or create) the spool in `dir`, repairing a torn tail.
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".seg").and_then(|s| s.parse::<u64>().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let acked = read_cursor(dir)?;
        let mut segments = VecDeque::new();
        for id in ids {
            let path = segment_path(dir, id);
            if id < acked.segment {
                fs::remove_file(&path)?;
                continue;
            }
            let valid = valid_length(&path)?;
            let file = OpenOptions::new().write(true).open(&path)?;
            if file.metadata()?.len() != valid {
                tracing::warn!(path = %path.display(), valid, "spool: cutting a torn record off the end of a segment");
                file.set_len(valid)?;
            }
            segments.push_back(Segment { id, len: valid, flushed: valid });
        }
        if segments.is_empty() {
            let id = acked.segment.max(1);
            File::create(segment_path(dir, id))?;
            sync_dir(dir)?;
            segments.push_back(Segment { id, len: 0, flushed: 0 });
        }
        let last = segments.back().map(|s| s.id).unwrap_or(1);
        let file = OpenOptions::new().append(true).open(segment_path(dir, last))?;
        let acked = if acked.segment < segments[0].id {
            Position { segment: segments[0].id, offset: 0 }
        } else {
            acked
        };
        Ok(Spool {
            dir: dir.to_path_buf(),
            segments,
            sync_file: Arc::new(file.try_clone()?),
            writer: BufWriter::with_capacity(256 << 10, file),
            segment_bytes: segment_bytes.max(HEADER + 1),
            max_bytes,
            acked,
            persisted: None,
        })
    }

    /// Append one record; returns where it starts and ends. Buffered until [`Spool::flush`].
    pub fn append(&mut self, payload: &[u8]) -> io::Result<(Position, Position)> {
        if payload.len() > MAX_RECORD {
            return Err(invalid(format!("spool record of {} bytes exceeds {MAX_RECORD}", payload.len())));
        }
        if self.segments.back().is_some_and(|s| s.len >= self.segment_bytes) {
            self.rotate()?;
        }
        let segment = self.segments.back_mut().ok_or_else(|| invalid("spool has no segment".into()))?;
        let start = Position { segment: segment.id, offset: segment.len };
        self.writer.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.writer.write_all(&crc32fast::hash(payload).to_le_bytes())?;
        self.writer.write_all(payload)?;
        segment.len += HEADER + payload.len() as u64;
        Ok((start, Position { segment: segment.id, offset: segment.len }))
    }

    /// Start the next segment. The full one is synced first, so a later [`Spool::sync`] (which
    /// syncs the open segment) covers every record appended before it, and the new file's
    /// directory entry is synced, so the file itself survives a power loss.
    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let id = self.segments.back().map_or(1, |s| s.id + 1);
        let file = OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, id))?;
        sync_dir(&self.dir)?;
        self.sync_file = Arc::new(file.try_clone()?);
        self.writer = BufWriter::with_capacity(256 << 10, file);
        self.segments.push_back(Segment { id, len: 0, flushed: 0 });
        Ok(())
    }

    /// Hand buffered records to the operating system, making them readable.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        if let Some(segment) = self.segments.back_mut() {
            segment.flushed = segment.len;
        }
        Ok(())
    }

    /// Force every record appended so far to stable storage (the collector's acknowledgement
    /// waits for this; earlier segments were synced when they were closed).
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.writer.get_ref().sync_data()
    }

    /// The open segment's file, to sync on another thread: once [`Spool::flush`] returned,
    /// `sync_data` on it makes every record appended so far durable (earlier segments were
    /// synced when they were closed).
    pub fn sync_handle(&self) -> Arc<File> {
        self.sync_file.clone()
    }

    /// Up to `max` flushed records from `from` on.
    pub fn read_from(&self, from: Position, max: usize) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut position = from;
        for segment in self.segments.iter().filter(|s| s.id >= from.segment) {
            if segment.id > position.segment {
                position = Position { segment: segment.id, offset: 0 };
            }
            if position.offset >= segment.flushed {
                continue;
            }
            let mut reader =
                BufReader::with_capacity(64 << 10, File::open(segment_path(&self.dir, segment.id))?);
            reader.seek(SeekFrom::Start(position.offset))?;
            while entries.len() < max {
                let available = segment.flushed - position.offset;
                let Some(payload) = read_record(&mut reader, available)? else { break };
                let start = position;
                position.offset += HEADER + payload.len() as u64;
                entries.push(Entry { start, end: position, payload });
            }
            if entries.len() >= max {
                break;
            }
        }
        Ok(entries)
    }

    /// Everything before `upto` reached the broker: drop whole segments before it.
    pub fn ack(&mut self, upto: Position) -> io::Result<()> {
        if upto <= self.acked {
            return Ok(());
        }
        self.acked = upto;
        while self.segments.len() > 1 && self.segments[0].id < upto.segment {
            if let Some(segment) = self.segments.pop_front() {
                fs::remove_file(segment_path(&self.dir, segment.id))?;
            }
        }
        Ok(())
    }

    /// Persist the acknowledged position (atomically, by rename); nothing to do when it has not
    /// moved since the last time.
    pub fn persist_cursor(&mut self) -> io::Result<()> {
        if self.persisted == Some(self.acked) {
            return Ok(());
        }
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{} {}\n", self.acked.segment, self.acked.offset))?;
        fs::rename(tmp, self.dir.join("cursor"))?;
        self.persisted = Some(self.acked);
        Ok(())
    }

    /// Keep a record the broker refused for good (too large, invalid) out of the way: a copy
    /// in `dir/refused/<segment>-<offset>.record` (the spool record: key and Avro value), so the
    /// records after it can go on and nothing is dropped unseen. Returns the file.
    pub fn keep_refused(&self, at: Position, payload: &[u8]) -> io::Result<PathBuf> {
        let dir = self.dir.join("refused");
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}-{}.record", at.segment, at.offset));
        let mut file = File::create(&path)?;
        file.write_all(payload)?;
        file.sync_all()?;
        Ok(path)
    }

    pub fn acked(&self) -> Position {
        self.acked
    }

    /// Where the next record will start (in the last segment).
    pub fn end(&self) -> Position {
        self.segments.back().map_or(Position::default(), |s| Position { segment: s.id, offset: s.len })
    }

    /// Bytes not yet acknowledged by the broker.
    pub fn pending_bytes(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.len).sum();
        let before_ack = if self.segments.front().is_some_and(|s| s.id == self.acked.segment) {
            self.acked.offset
        } else {
            0
        };
        total.saturating_sub(before_ack)
    }

    /// The spool holds as much as it may.
    pub fn is_full(&self) -> bool {
        self.pending_bytes() >= self.max_bytes
    }
}

fn read_cursor(dir: &Path) -> io::Result<Position> {
    match fs::read_to_string(dir.join("cursor")) {
        Ok(text) => {
            let mut parts = text.split_whitespace().map(str::parse::<u64>);
            match (parts.next(), parts.next()) {
                (Some(Ok(segment)), Some(Ok(offset))) => Ok(Position { segment, offset }),
                _ => Err(invalid(format!("spool cursor in {} is unreadable: {text:?}", dir.display()))),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Position::default()),
        Err(e) => Err(e),
    }
}

/// The length of the valid prefix of a segment file.
fn valid_length(path: &Path) -> io::Result<u64> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut offset = 0;
    while let Some(payload) = read_record(&mut reader, size - offset)? {
        offset += HEADER + payload.len() as u64;
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(entries: &[Entry]) -> Vec<Vec<u8>> {
        entries.iter().map(|e| e.payload.clone()).collect()
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..50u32).map(|i| format!("event-{i}").into_bytes()).collect();
        {
            let mut spool = Spool::open(dir.path(), 1 << 20, 64).unwrap();
            for r in &records {
                spool.append(r).unwrap();
            }
            // Unflushed records are not readable yet.
            spool.flush().unwrap();
            let all = spool.read_from(spool.acked(), 1000).unwrap();
            assert_eq!(payloads(&all), records);
            spool.ack(all[19].end).unwrap();
            spool.persist_cursor().unwrap();
        }
        let spool = Spool::open(dir.path(), 1 << 20, 64).unwrap();
        let rest = spool.read_from(spool.acked(), 1000).unwrap();
        assert_eq!(payloads(&rest), records[20..].to_vec());
        // Segments before the cursor are gone.
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert!(files < 25, "{files} files");
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
            spool.append(b"first").unwrap();
            spool.append(b"second").unwrap();
            spool.flush().unwrap();
        }
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        fs::write(&path, bytes).unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        spool.append(b"third").unwrap();
        spool.flush().unwrap();
        let all = spool.read_from(spool.acked(), 10).unwrap();
        assert_eq!(payloads(&all), vec![b"first".to_vec(), b"third".to_vec()]);
    }

    #[test]
    fn a_corrupt_record_is_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
            spool.append(b"good").unwrap();
            spool.append(b"flipped").unwrap();
            spool.flush().unwrap();
        }
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let spool = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(payloads(&spool.read_from(spool.acked(), 10).unwrap()), vec![b"good".to_vec()]);
    }

    #[test]
    fn the_bound_counts_only_unacknowledged_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 100, 1 << 20).unwrap();
        let mut last = None;
        while !spool.is_full() {
            spool.append(&[7u8; 12]).unwrap();
            last = Some(());
        }
        assert!(last.is_some());
        spool.flush().unwrap();
        let all = spool.read_from(spool.acked(), 100).unwrap();
        spool.ack(all.last().unwrap().end).unwrap();
        assert!(!spool.is_full());
        assert_eq!(spool.pending_bytes(), 0);
    }

    #[test]
    fn an_unreadable_cursor_is_an_error_that_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cursor"), "garbage").unwrap();
        let err = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
