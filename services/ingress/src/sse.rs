//! An incremental server-sent-events reader that watches a stream the gateway passes through
//! unchanged: feed it each chunk as it goes by, get back the complete events seen so far.
//!
//! It exists beside the SSE crates because the gateway must forward the provider's bytes
//! exactly and at once, chunk by chunk, while only observing them; the crates own the stream
//! instead. Only what usage extraction needs is kept: the `event` name and the joined `data`
//! lines; comments, `id` and `retry` are skipped. Lines end in `\n` or `\r\n` (what providers
//! send). A pending partial line is capped so a stream without newlines cannot grow memory.

/// One complete event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Longest line kept; longer lines (never seen from providers) are dropped with a count.
const MAX_LINE: usize = 4 << 20;

#[derive(Debug, Default)]
pub struct SseReader {
    line: Vec<u8>,
    current: SseEvent,
    has_data: bool,
    dropped_lines: u64,
}

impl SseReader {
    /// Feed one chunk; complete events are passed to `on_event` in order.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(SseEvent)) {
        while let Some(newline) = chunk.iter().position(|b| *b == b'\n') {
            let (head, rest) = chunk.split_at(newline);
            chunk = &rest[1..];
            if self.line.is_empty() {
                self.line_done(head, &mut on_event);
            } else {
                self.push(head);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, &mut on_event);
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

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data || self.current.event.is_some() {
                on_event(std::mem::take(&mut self.current));
                self.has_data = false;
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => self.current.event = Some(value.into_owned()),
            b"data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(&value);
                self.has_data = true;
            }
            _ => {}
        }
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
            reader.feed(chunk, |e| events.push(e));
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
    fn an_unterminated_event_is_not_reported() {
        assert!(events_of(&[b"data: {\"partial\""]).is_empty());
    }
}
