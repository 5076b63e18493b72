//! Framing: newline-delimited messages read with a hard memory bound.
//!
//! MCP's stdio framing (and the tunnel, which reuses it) is one JSON message
//! per line. A peer controls how long a line is, so [`LineReader`] never
//! holds more than the configured limit of one line (plus its read buffer):
//! a longer line is skipped up to its newline and reported as
//! [`Frame::Oversized`], with what could be [`sniff`]ed from its first bytes
//! so the relay can still address an error to the request it was.

use mcpgate_shared::jsonrpc::Id;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The read buffer under the line buffer: the "slack" over the limit.
const READ_BUFFER: usize = 64 * 1024;
/// How much of an oversized line is kept to find its id and kind.
pub const HEAD_BYTES: usize = 4096;

/// One unit read from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A non-blank line, without its newline.
    Line(Vec<u8>),
    /// A line longer than the limit, already skipped. `bytes` is its length
    /// without the newline.
    Oversized { bytes: usize, head: Head },
}

/// What the first bytes of an oversized line say about it. Only top-level
/// members of the outer object count; nothing here is trusted beyond
/// addressing an error response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// The top-level `id`, if exactly one readable one was seen.
    pub id: Option<Id>,
    /// A top-level `id` member was seen, whatever its value (`null`, a
    /// fraction, cut off): the sender expects an answer.
    pub has_id: bool,
    /// A top-level `method` member was seen: a request or notification.
    pub method: bool,
    /// A top-level `result` or `error` member was seen: a response.
    pub outcome: bool,
}

/// Reads newline-delimited lines of at most `limit` bytes each.
///
/// [`LineReader::next`] is cancel safe: its only await is on the buffered
/// reader's `fill_buf`, and all state lives in `self`, so it can sit in a
/// `select!` without losing bytes.
pub struct LineReader<R> {
    inner: BufReader<R>,
    limit: usize,
    line: Vec<u8>,
    /// Set while skipping an oversized line: its head and length so far.
    skipping: Option<(Vec<u8>, usize)>,
    /// The last [`TAIL_BYTES`] of the line being skipped: the TypeScript SDK
    /// writes `id` after `result`, so the head alone often has no id.
    tail: Vec<u8>,
}

/// How much of the end of an oversized line is kept to find a trailing id.
pub const TAIL_BYTES: usize = 256;

fn keep_tail(tail: &mut Vec<u8>, part: &[u8]) {
    tail.extend_from_slice(&part[part.len().saturating_sub(TAIL_BYTES)..]);
    let extra = tail.len().saturating_sub(TAIL_BYTES);
    tail.drain(..extra);
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(reader: R, limit: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(READ_BUFFER, reader),
            limit,
            line: Vec::new(),
            skipping: None,
            tail: Vec::new(),
        }
    }

    /// The next line or oversized-line report; `None` at end of input.
    /// Blank lines are skipped. An unterminated last line is returned as a
    /// line (the parser decides whether it is whole).
    pub async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                if let Some((head, bytes)) = self.skipping.take() {
                    return Ok(Some(oversized(
                        &head,
                        &std::mem::take(&mut self.tail),
                        bytes,
                    )));
                }
                let line = std::mem::take(&mut self.line);
                if is_blank(&line) {
                    return Ok(None);
                }
                return Ok(Some(Frame::Line(line)));
            }
            let newline = chunk.iter().position(|&b| b == b'\n');
            let (part, used) = match newline {
                Some(i) => (&chunk[..i], i + 1),
                None => (chunk, chunk.len()),
            };
            let frame = if let Some((head, bytes)) = &mut self.skipping {
                *bytes += part.len();
                keep_tail(&mut self.tail, part);
                if newline.is_some() {
                    let frame = oversized(head, &std::mem::take(&mut self.tail), *bytes);
                    self.skipping = None;
                    Some(frame)
                } else {
                    None
                }
            } else if self.line.len() + part.len() > self.limit {
                let bytes = self.line.len() + part.len();
                self.tail.clear();
                keep_tail(&mut self.tail, &self.line);
                keep_tail(&mut self.tail, part);
                let mut head = std::mem::take(&mut self.line);
                head.truncate(HEAD_BYTES);
                let room = HEAD_BYTES - head.len();
                head.extend_from_slice(&part[..part.len().min(room)]);
                // The line buffer may have grown to the limit; do not keep
                // that much memory for the rest of a long skip.
                head.shrink_to_fit();
                if newline.is_some() {
                    Some(oversized(&head, &std::mem::take(&mut self.tail), bytes))
                } else {
                    self.skipping = Some((head, bytes));
                    None
                }
            } else {
                self.line.extend_from_slice(part);
                if newline.is_some() && !is_blank(&self.line) {
                    Some(Frame::Line(std::mem::take(&mut self.line)))
                } else {
                    if newline.is_some() {
                        self.line.clear();
                    }
                    None
                }
            };
            self.inner.consume(used);
            if let Some(frame) = frame {
                return Ok(Some(frame));
            }
        }
    }
}

fn oversized(head: &[u8], tail: &[u8], bytes: usize) -> Frame {
    let mut found = sniff(head);
    if let Some(id) = sniff_tail(tail).filter(|_| !found.has_id) {
        found.id = Some(id);
        found.has_id = true;
    }
    Frame::Oversized { bytes, head: found }
}

/// Reads a top-level `id` that closes the object: the end of the line must
/// be `"id": VALUE }` or `"id": VALUE, "jsonrpc": "2.0" }` (JSON-RPC members
/// in either order). A nested `id` is always followed by more closing
/// brackets, so it cannot match. Only string ids without escapes and
/// integer ids are read.
pub fn sniff_tail(tail: &[u8]) -> Option<Id> {
    fn trim_end(t: &[u8]) -> &[u8] {
        let n = t
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        &t[..n]
    }
    fn strip<'a>(t: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
        t.strip_suffix(suffix).map(trim_end)
    }
    let t = strip(trim_end(tail), b"}")?;
    // An optional `, "jsonrpc": "2.0"` after the id.
    let t = match strip(t, b"\"2.0\"")
        .and_then(|t| strip(t, b":"))
        .and_then(|t| strip(t, b"\"jsonrpc\""))
        .and_then(|t| strip(t, b","))
    {
        Some(rest) => rest,
        None => t,
    };
    let (id, before) = if let Some(inner) = t.strip_suffix(b"\"") {
        let start = inner.iter().rposition(|&b| b == b'"')?;
        let text = &inner[start + 1..];
        if text.contains(&b'\\') {
            return None;
        }
        (
            Id::String(std::str::from_utf8(text).ok()?.to_owned()),
            &inner[..start],
        )
    } else {
        let start = t
            .iter()
            .rposition(|b| !(b.is_ascii_digit() || *b == b'-'))
            .map_or(0, |i| i + 1);
        let n: i64 = std::str::from_utf8(&t[start..]).ok()?.parse().ok()?;
        (Id::Number(n), &t[..start])
    };
    let before = strip(trim_end(before), b":")?;
    let before = strip(before, b"\"id\"")?;
    matches!(before.last(), Some(b',') | Some(b'{')).then_some(id)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Scans the start of a JSON object for its top-level `id`, `method`,
/// `result` and `error` members, without parsing (the text is cut off).
/// Keys written with escapes are not recognised, and two `id` members give
/// no id: when in doubt, the error goes out with a null id.
pub fn sniff(text: &[u8]) -> Head {
    let mut head = Head::default();
    let mut ids = 0;
    let mut i = skip_ws(text, 0);
    if text.get(i) != Some(&b'{') {
        return head;
    }
    i += 1;
    let mut depth = 1usize;
    while i < text.len() {
        match text[i] {
            b'"' => {
                let Some(end) = string_end(text, i) else {
                    break;
                };
                if depth == 1 {
                    let colon = skip_ws(text, end + 1);
                    if text.get(colon) == Some(&b':') {
                        let value = skip_ws(text, colon + 1);
                        match &text[i + 1..end] {
                            b"id" => {
                                ids += 1;
                                head.has_id = true;
                                head.id = id_at(text, value);
                            }
                            b"method" => head.method = true,
                            b"result" | b"error" => head.outcome = true,
                            _ => {}
                        }
                        i = value;
                        continue;
                    }
                }
                i = end + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    if ids > 1 {
        head.id = None;
    }
    head
}

fn skip_ws(text: &[u8], mut i: usize) -> usize {
    while text.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The index of the quote closing the string that opens at `start`.
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// An id value starting at `i`: a whole string or a whole integer.
fn id_at(text: &[u8], i: usize) -> Option<Id> {
    match text.get(i)? {
        b'"' => {
            let end = string_end(text, i)?;
            serde_json::from_slice::<String>(&text[i..=end])
                .ok()
                .map(Id::String)
        }
        b'-' | b'0'..=b'9' => {
            let len = text[i..]
                .iter()
                .position(|b| !matches!(b, b'-' | b'0'..=b'9'))?;
            // A number cut off by the end of the head, or one with a
            // fraction or exponent, is no id we can answer.
            let after = skip_ws(text, i + len);
            if !matches!(text.get(after), Some(b',' | b'}')) {
                return None;
            }
            std::str::from_utf8(&text[i..i + len])
                .ok()?
                .parse()
                .ok()
                .map(Id::Number)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;

    #[test]
    fn trailing_top_level_ids_are_found_and_nested_ones_are_not() {
        assert_eq!(
            sniff_tail(br#"xx"}]},"jsonrpc":"2.0","id":5}"#),
            Some(Id::Number(5))
        );
        assert_eq!(
            sniff_tail(br#"xx"}]}, "id" : "a-1" }  "#),
            Some(Id::String("a-1".into()))
        );
        assert_eq!(
            sniff_tail(br#"xx"}]},"id":0,"jsonrpc":"2.0"}"#),
            Some(Id::Number(0))
        );
        assert_eq!(sniff_tail(br#"{"x":{"id":3}}}"#), None);
        assert_eq!(sniff_tail(br#"{"x":[{"id":3}]}"#), None);
        assert_eq!(sniff_tail(br#""text":"id":4}"#), None);
        assert_eq!(sniff_tail(b""), None);
    }

    #[tokio::test]
    async fn an_oversized_response_with_its_id_at_the_end_is_addressed() {
        let big = "a".repeat(10_000);
        let line = format!("{{\"result\":{{\"text\":\"{big}\"}},\"jsonrpc\":\"2.0\",\"id\":77}}\n");
        let mut r = LineReader::new(line.as_bytes(), 1024);
        match r.next().await.unwrap() {
            Some(Frame::Oversized { head, .. }) => {
                assert_eq!(head.id, Some(Id::Number(77)));
                assert!(head.outcome);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn frames(input: &[u8], limit: usize) -> Vec<Frame> {
        let mut reader = LineReader::new(input, limit);
        let mut out = Vec::new();
        while let Some(f) = reader.next().await.unwrap() {
            out.push(f);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn splits_lines_and_skips_blank_ones() {
        let got = frames(b"a\n\n  \r\nb\r\n\nc", 10).await;
        assert_eq!(got, vec![line("a"), line("b\r"), line("c")]);
        assert!(frames(b"", 10).await.is_empty());
        assert!(frames(b"\n \n", 10).await.is_empty());
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_passes_one_more_byte_does_not() {
        let got = frames(b"12345\n123456\nok\n", 5).await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], line("12345"));
        assert!(matches!(got[1], Frame::Oversized { bytes: 6, .. }));
        assert_eq!(got[2], line("ok"));
    }

    #[tokio::test]
    async fn an_oversized_line_is_skipped_to_its_newline_and_addressed() {
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":42,\"method\":\"tools/call\",\"params\":{{\"x\":\"{}\"}}}}\n",
            "y".repeat(300_000)
        );
        let input = format!("{big}{{\"after\":1}}\n");
        let got = frames(input.as_bytes(), 1000).await;
        assert_eq!(got.len(), 2, "{got:?}");
        match &got[0] {
            Frame::Oversized { bytes, head } => {
                assert_eq!(*bytes, big.len() - 1);
                assert_eq!(head.id, Some(Id::Number(42)));
                assert!(head.method && !head.outcome);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[1], line("{\"after\":1}"));
    }

    #[tokio::test]
    async fn eof_inside_a_line_or_an_oversized_line_is_reported() {
        assert_eq!(
            frames(b"a\npartial", 100).await,
            vec![line("a"), line("partial")]
        );
        let got = frames(&[b'x'; 500], 100).await;
        assert!(
            matches!(got[..], [Frame::Oversized { bytes: 500, .. }]),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn memory_stays_bounded_while_a_peer_streams_an_endless_line() {
        let (mut tx, rx) = tokio::io::duplex(8192);
        let writer = tokio::spawn(async move {
            for _ in 0..512 {
                tx.write_all(&[b'z'; 8192]).await.unwrap();
            }
            tx.write_all(b"\n{}\n").await.unwrap();
        });
        let mut reader = LineReader::new(rx, 10_000);
        let first = reader.next().await.unwrap().unwrap();
        assert!(matches!(first, Frame::Oversized { bytes, .. } if bytes == 512 * 8192));
        // Neither the line buffer nor the kept head grew past their bounds.
        assert!(reader.line.capacity() <= 10_000 + READ_BUFFER);
        assert_eq!(reader.next().await.unwrap(), Some(line("{}")));
        assert_eq!(reader.next().await.unwrap(), None);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn lines_split_across_reads_are_joined() {
        let (mut tx, rx) = tokio::io::duplex(4);
        let writer = tokio::spawn(async move {
            for piece in [&b"{\"a\""[..], b":1}", b"\n{\"b\":", b"2}\n"] {
                tx.write_all(piece).await.unwrap();
            }
        });
        let mut reader = LineReader::new(rx, 100);
        assert_eq!(reader.next().await.unwrap(), Some(line("{\"a\":1}")));
        assert_eq!(reader.next().await.unwrap(), Some(line("{\"b\":2}")));
        assert_eq!(reader.next().await.unwrap(), None);
        writer.await.unwrap();
    }

    #[test]
    fn sniff_reads_only_top_level_members() {
        let h = sniff(br#"{"jsonrpc":"2.0","method":"x","params":{"id":7,"result":1}"#);
        assert_eq!(
            h,
            Head {
                id: None,
                has_id: false,
                method: true,
                outcome: false
            }
        );
        let h = sniff(br#" { "jsonrpc" : "2.0", "id" : "a\"b", "result" : {"content":[ "#);
        assert_eq!(h.id, Some(Id::String("a\"b".into())));
        assert!(h.outcome && !h.method);
        let h = sniff(br#"{"id":-3,"error":{"#);
        assert_eq!(h.id, Some(Id::Number(-3)));
        let h = sniff(br#"{"params":{"s":"}"},"id":0,"method":"m""#);
        assert_eq!(h.id, Some(Id::Number(0)));
    }

    #[test]
    fn sniff_refuses_doubtful_ids() {
        // Cut off mid-number, a fraction, two ids, an id that is an object.
        assert_eq!(sniff(br#"{"id":12"#).id, None);
        assert_eq!(sniff(br#"{"id":1.5,"method":"m""#).id, None);
        assert_eq!(sniff(br#"{"id":1,"id":2,"method":"m""#).id, None);
        let h = sniff(br#"{"id":{"a":1},"method":"m""#);
        assert!(h.id.is_none() && h.has_id && h.method);
        assert_eq!(sniff(br#"[{"id":1}]"#), Head::default());
        assert_eq!(sniff(b"not json"), Head::default());
    }
}
