//! An incremental server-sent-events reader that watches a stream the gateway passes through
//! unchanged: feed it each chunk as it goes by, get back the complete events seen so far.
//!
//! It exists beside the SSE crates because the gateway must forward the provider's bytes
//! exactly and at once, chunk by chunk, while only observing them; the crates own the stream
//! instead. Only what usage extraction needs is kept: the `event` name and the joined `data`
//! lines; comments, `id` and `retry` are skipped. Lines end in `\n` or `\r\n` (what providers
//! send). A pending partial line is capped so a stream without newlines cannot grow memory.
//!
//! Events are lent to the callback, not handed over: the reader keeps one event's buffers and
//! reuses them, so a long stream of small events allocates nothing per event.

/// One complete event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Longest line kept; longer lines (never seen from providers) are dropped with a count.
const MAX_LINE: usize = 4 << 20;
/// Buffers grown past this by one large event are released after it, not kept for the stream.
const KEEP_CAPACITY: usize = 64 << 10;

#[derive(Debug, Default)]
pub struct SseReader {
    line: Vec<u8>,
    current: SseEvent,
    /// The name buffer, kept between events (`current.event` borrows it while one is named).
    name: String,
    has_data: bool,
    dropped_lines: u64,
}

impl SseReader {
    /// Feed one chunk; complete events are lent to `on_event` in order.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(&SseEvent)) {
        while let Some(newline) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = chunk.split_at(newline);
            chunk = &rest[1..];
            if self.line.is_empty() {
                self.line_done(head, &mut on_event);
            } else {
                self.push(head);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, &mut on_event);
                self.line = line;
                self.line.clear();
                if self.line.capacity() > KEEP_CAPACITY {
                    self.line = Vec::new();
                }
            }
        }
        self.push(chunk);
    }

    /// Lines dropped for being longer than the cap.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > MAX_LINE {
            self.line.clear();
            self.dropped_lines += 1;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(&SseEvent)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data || self.current.event.is_some() {
                on_event(&self.current);
                self.reset();
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                let mut name = self.current.event.take().unwrap_or_else(|| std::mem::take(&mut self.name));
                name.clear();
                name.push_str(&String::from_utf8_lossy(value));
                self.current.event = Some(name);
            }
            b"data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            _ => {}
        }
    }

    /// Empty the current event, keeping its buffers (unless one large event grew them).
    fn reset(&mut self) {
        if let Some(name) = self.current.event.take() {
            self.name = name;
        }
        self.current.data.clear();
        if self.current.data.capacity() > KEEP_CAPACITY {
            self.current.data = String::new();
        }
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = "event: message_start\ndata: {\"a\":1}\n\n: comment\n\nevent: ping\ndata: {}\r\n\r\ndata: one\ndata: two\n\ndata: [DONE]\n\n";

    fn events_of(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut reader = SseReader::default();
        let mut events = Vec::new();
        for chunk in chunks {
            reader.feed(chunk, |e| events.push(e.clone()));
        }
        events
    }

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent { event: Some("message_start".into()), data: "{\"a\":1}".into() },
            SseEvent { event: Some("ping".into()), data: "{}".into() },
            SseEvent { event: None, data: "one\ntwo".into() },
            SseEvent { event: None, data: "[DONE]".into() },
        ]
    }

    #[test]
    fn whole_stream() {
        assert_eq!(events_of(&[STREAM.as_bytes()]), expected());
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(cuts in proptest::collection::vec(0..STREAM.len(), 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let bytes = STREAM.as_bytes();
            let mut chunks = Vec::new();
            let mut last = 0;
            for cut in cuts {
                chunks.push(&bytes[last..cut]);
                last = cut;
            }
            chunks.push(&bytes[last..]);
            prop_assert_eq!(events_of(&chunks), expected());
        }
    }

    #[test]
    fn buffers_are_reused_without_leaking_one_event_into_the_next() {
        // A named event, then an unnamed one: the second must not inherit the first's name.
        let stream = b"event: first\ndata: aaaaaaaaaaaaaaaa\n\ndata: b\n\nevent: third\ndata: c\n\n";
        assert_eq!(
            events_of(&[stream]),
            vec![
                SseEvent { event: Some("first".into()), data: "aaaaaaaaaaaaaaaa".into() },
                SseEvent { event: None, data: "b".into() },
                SseEvent { event: Some("third".into()), data: "c".into() },
            ]
        );
    }

    #[test]
    fn a_large_event_does_not_keep_its_buffers() {
        let mut reader = SseReader::default();
        let big = format!("data: {}\n\n", "x".repeat(KEEP_CAPACITY * 2));
        let (head, tail) = big.as_bytes().split_at(10);
        let mut seen = 0;
        reader.feed(head, |_| seen += 1);
        reader.feed(tail, |e| seen += e.data.len());
        assert_eq!(seen, KEEP_CAPACITY * 2);
        assert!(reader.current.data.capacity() <= KEEP_CAPACITY && reader.line.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn an_unterminated_event_is_not_reported() {
        assert!(events_of(&[b"data: {\"partial\""]).is_empty());
    }
}
