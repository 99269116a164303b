//! Spotting user actions in what a browser sends over a proxied WebSocket.
//!
//! The proxy relays WebSockets as bytes after the 101, so auto-stop cannot see messages. A
//! [`Scanner`] watches the client→server bytes of one connection and counts the messages that
//! a person caused, ignoring what an open tab does by itself (pings, reconnects,
//! `kernel_info_request`/status polling, comm traffic):
//!
//! * kernel channel messages (`/api/kernels/{id}/channels`) whose header `msg_type` is
//!   `execute_request` or `input_reply`, in either wire format: JSON text frames (the legacy
//!   protocol) or binary `v1.kernel.websocket.jupyter.org` frames (u64 LE count `n`, `n` u64
//!   LE offsets, then channel, header, parent header, metadata, content, buffers);
//! * terminal input on terminado sockets (`/terminals/websocket/{name}`): text frames holding
//!   `["stdin", …]`.
//!
//! ```text
//! bytes ─► frame header (2..14 bytes, copied) ─► payload: unmask the first bytes of each
//!          message (256-byte stack blocks) into a matcher until it decides, skip the rest
//!       ─► final frame of a message complete ─► +1 if the matcher said "action"
//! ```
//!
//! Nothing is buffered but a frame header: the matcher is a small state machine, so a pattern
//! cut across chunks or fragments is still found, and memory per connection is fixed.
//!
//! Where the header sits: in the binary format it is the second part, a few dozen bytes in,
//! and only that part is searched. In JSON text JupyterLab serializes the message object with
//! `content` *before* `header` (`{"buffers":[],"channel":"shell","content":{…"code":"…"},
//! "header":{…"msg_type":"execute_request"…}…}`), so a big code cell pushes the header far
//! from the start; text messages are therefore searched up to [`TEXT_SCAN_LIMIT`] bytes.
//! The first `"msg_type": "…"` pair found decides (it is the header's in every serializer we
//! know: the header precedes `parent_header`), so the message counts at most once.
//!
//! A malformed stream (unmasked client frame, reserved opcode or bits, bad fragmentation,
//! oversized control frame) makes the scanner inert: it never panics and reports nothing more.
//! Compressed messages (permessage-deflate, RSV1 on the first frame) cannot be searched; they
//! are skipped and never count.

/// How far into a text message the matcher looks for the header's `msg_type` (JupyterLab
/// puts `content`, with the cell's code, before `header`). Past this the message is skipped.
pub const TEXT_SCAN_LIMIT: u64 = 256 * 1024;

/// How much of a binary message's header part is searched for `msg_type`.
const V1_HEADER_LIMIT: u64 = 4096;

/// Largest offset count accepted in a binary v1 message (6 parts + buffers).
const V1_MAX_OFFSETS: u64 = 1024;

/// Longest channel name accepted in a binary v1 message (`shell`, `stdin`, `control`, …).
const V1_MAX_CHANNEL: u64 = 64;

/// Watches the bytes a client sends on one WebSocket (after the 101) and reports user actions.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// Frame header bytes received so far, and how many the header needs (2, then 2 + length
    /// extension + mask key once the second byte is known).
    hdr: [u8; 14],
    hdr_len: u8,
    hdr_need: u8,
    /// The frame whose payload is streaming: its mask key, the payload position modulo 4,
    /// whether it carries message data (not control) and whether it ends its message.
    mask: [u8; 4],
    mask_pos: usize,
    data_frame: bool,
    fin: bool,
    /// A data message is open (its first frame seen, its final frame not yet complete).
    in_message: bool,
    /// The open message's matcher, and how many of its bytes the matcher has been fed.
    matcher: Matcher,
    scanned: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a frame header.
    Header,
    /// In a frame's payload, this many bytes left.
    Payload(u64),
    /// After a close frame or a protocol error: everything is ignored.
    Inert,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            state: State::Header,
            hdr: [0; 14],
            hdr_len: 0,
            hdr_need: 2,
            mask: [0; 4],
            mask_pos: 0,
            data_frame: false,
            fin: false,
            in_message: false,
            matcher: Matcher::decided(false),
            scanned: 0,
        }
    }

    /// Feeds the next chunk of the client's byte stream (any split: frame headers and
    /// payloads may be cut anywhere between calls). Returns how many user actions completed
    /// frames in this chunk carried (0 almost always).
    pub fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut actions = 0;
        while !bytes.is_empty() {
            match self.state {
                State::Inert => break,
                State::Header => {
                    let at = self.hdr_len as usize;
                    let take = (self.hdr_need as usize - at).min(bytes.len());
                    self.hdr[at..at + take].copy_from_slice(&bytes[..take]);
                    self.hdr_len += take as u8;
                    bytes = &bytes[take..];
                    if self.hdr_len < self.hdr_need {
                        continue;
                    }
                    if self.hdr_need == 2 {
                        // Clients must mask every frame (RFC 6455 §5.1).
                        if self.hdr[1] & 0x80 == 0 {
                            self.state = State::Inert;
                            continue;
                        }
                        let ext = match self.hdr[1] & 0x7f {
                            126 => 2,
                            127 => 8,
                            _ => 0,
                        };
                        self.hdr_need = 2 + ext + 4;
                        continue;
                    }
                    actions += self.begin_frame();
                }
                State::Payload(left) => {
                    let n = left.min(bytes.len() as u64) as usize;
                    let (now, rest) = bytes.split_at(n);
                    if self.data_frame {
                        self.scan(now);
                    }
                    self.mask_pos = (self.mask_pos + n) & 3;
                    bytes = rest;
                    if left == n as u64 {
                        actions += self.end_frame();
                    } else {
                        self.state = State::Payload(left - n as u64);
                    }
                }
            }
        }
        actions
    }

    /// A full frame header is in `hdr`: checks it and enters the payload (or finishes the
    /// frame at once when it has none). Returns the actions a finished frame completed.
    fn begin_frame(&mut self) -> usize {
        let b0 = self.hdr[0];
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = b0 & 0x0f;
        let (len, key_at) = match self.hdr[1] & 0x7f {
            126 => (u16::from_be_bytes([self.hdr[2], self.hdr[3]]) as u64, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.hdr[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            l => (l as u64, 2),
        };
        self.mask.copy_from_slice(&self.hdr[key_at..key_at + 4]);
        self.mask_pos = 0;
        self.fin = fin;
        self.hdr_len = 0;
        self.hdr_need = 2;

        // RSV2/RSV3 belong to no extension we allow; the top bit of a 64-bit length must be 0.
        if b0 & 0x30 != 0 || len >> 63 != 0 {
            self.state = State::Inert;
            return 0;
        }
        match opcode {
            // Close: the client sends nothing after it.
            0x8 => {
                self.state = State::Inert;
                return 0;
            }
            // Ping, pong: never actions; interleaving within a fragmented message is fine.
            0x9 | 0xa => {
                if !fin || rsv1 || len > 125 {
                    self.state = State::Inert;
                    return 0;
                }
                self.data_frame = false;
            }
            // Text, binary: a new message.
            0x1 | 0x2 => {
                if self.in_message {
                    self.state = State::Inert;
                    return 0;
                }
                self.in_message = true;
                self.scanned = 0;
                // A compressed message (permessage-deflate) cannot be searched.
                self.matcher = if rsv1 {
                    Matcher::decided(false)
                } else if opcode == 0x1 {
                    Matcher::text()
                } else {
                    Matcher::binary()
                };
                self.data_frame = true;
            }
            // Continuation of the open message; RSV1 is only valid on a message's first frame.
            0x0 => {
                if !self.in_message || rsv1 {
                    self.state = State::Inert;
                    return 0;
                }
                self.data_frame = true;
            }
            _ => {
                self.state = State::Inert;
                return 0;
            }
        }
        if len == 0 {
            self.end_frame()
        } else {
            self.state = State::Payload(len);
            0
        }
    }

    /// The current frame's payload is complete. Returns 1 if it completed a message that is a
    /// user action.
    fn end_frame(&mut self) -> usize {
        self.state = State::Header;
        if !(self.data_frame && self.fin) {
            return 0;
        }
        self.in_message = false;
        let action = self.matcher.verdict() == Some(true);
        self.matcher = Matcher::decided(false);
        action as usize
    }

    /// Feeds (unmasked) payload bytes of the open message to its matcher while it is
    /// undecided and within its scan limit; otherwise does nothing.
    fn scan(&mut self, payload: &[u8]) {
        if self.matcher.verdict().is_some() {
            return;
        }
        let room = self.matcher.limit().saturating_sub(self.scanned);
        let take = (payload.len() as u64).min(room) as usize;
        // Unmask in blocks on the stack (a multiple of 4 long, so one rotated key serves all).
        let key: [u8; 4] = std::array::from_fn(|k| self.mask[(self.mask_pos + k) & 3]);
        let mut block = [0u8; 256];
        for part in payload[..take].chunks(block.len()) {
            let plain = &mut block[..part.len()];
            for (j, (d, s)) in plain.iter_mut().zip(part).enumerate() {
                *d = s ^ key[j & 3];
            }
            if self.matcher.push(plain) {
                break;
            }
        }
        self.scanned += take as u64;
        if self.scanned >= self.matcher.limit() {
            self.matcher.give_up();
        }
    }
}

/// Is this the start of a user-action message? `message_prefix` is the first bytes of an
/// unmasked WebSocket message (text or binary v1 kernel message, told apart by content); the
/// answer is `false` when the prefix is too short to tell.
pub fn is_action(message_prefix: &[u8]) -> bool {
    let binary = message_prefix
        .get(..8)
        .map(le64)
        .is_some_and(|n| (6..=V1_MAX_OFFSETS).contains(&n));
    let mut m = if binary {
        Matcher::binary()
    } else {
        Matcher::text()
    };
    m.push(message_prefix);
    m.verdict() == Some(true)
}

/// Decides, a byte at a time, whether a message is a user action.
#[derive(Debug, Clone, Copy)]
enum Matcher {
    /// Text: before the first non-blank byte (`[` terminado, `{` kernel JSON).
    TextStart,
    /// Text `[`…: this many bytes of `"stdin"` matched (7: then only `,` is missing).
    Stdin(u8),
    /// Text `{`…: searching the whole (limited) message for the `msg_type` pair.
    Json(Pair),
    /// Binary v1: collecting the offset count and the first three offsets.
    V1Table { buf: [u8; 32], len: u8 },
    /// Binary v1: skipping the rest of the offset table and the channel name.
    V1Skip { left: u64, header: u64 },
    /// Binary v1: searching the header part, this many bytes of it left.
    V1Header { left: u64, pair: Pair },
    /// Decided: an action or not.
    Done(bool),
}

/// Finds the first `"msg_type"` key with a string value in JSON text and tells whether the
/// value is `execute_request` or `input_reply`. Blanks may surround the colon.
#[derive(Debug, Clone, Copy)]
enum Pair {
    /// This many bytes of `"msg_type"` matched.
    Key(u8),
    /// After the key, before `:`.
    Colon,
    /// After `:`, before the value's opening quote.
    Open,
    /// After the value's opening quote.
    ValueStart,
    /// Matching `execute_request"` (true) or `input_reply"` (false), this many bytes matched.
    Value(bool, u8),
}

const KEY: &[u8] = b"\"msg_type\"";
const EXECUTE: &[u8] = b"execute_request\"";
const INPUT: &[u8] = b"input_reply\"";
const STDIN: &[u8] = b"\"stdin\"";

fn blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Pair {
    /// Takes the next byte; `Some(verdict)` once a `msg_type` pair has been read.
    fn step(&mut self, b: u8) -> Option<bool> {
        match *self {
            Pair::Key(i) => {
                *self = if b == KEY[i as usize] {
                    if i as usize + 1 == KEY.len() {
                        Pair::Colon
                    } else {
                        Pair::Key(i + 1)
                    }
                } else {
                    // `"` occurs in the key only at its ends, so a mismatch can restart only
                    // at this byte.
                    Pair::Key((b == b'"') as u8)
                };
            }
            Pair::Colon => {
                if b == b':' {
                    *self = Pair::Open;
                } else if !blank(b) {
                    *self = Pair::Key((b == b'"') as u8);
                }
            }
            Pair::Open => {
                if b == b'"' {
                    *self = Pair::ValueStart;
                } else if !blank(b) {
                    // Not a string value (null, object…): keep looking.
                    *self = Pair::Key(0);
                }
            }
            Pair::ValueStart => match b {
                b'e' => *self = Pair::Value(true, 1),
                b'i' => *self = Pair::Value(false, 1),
                _ => return Some(false),
            },
            Pair::Value(exec, i) => {
                let want = if exec { EXECUTE } else { INPUT };
                if b != want[i as usize] {
                    return Some(false);
                }
                if i as usize + 1 == want.len() {
                    return Some(true);
                }
                *self = Pair::Value(exec, i + 1);
            }
        }
        None
    }
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl Matcher {
    fn text() -> Matcher {
        Matcher::TextStart
    }

    fn binary() -> Matcher {
        Matcher::V1Table {
            buf: [0; 32],
            len: 0,
        }
    }

    fn decided(action: bool) -> Matcher {
        Matcher::Done(action)
    }

    fn verdict(&self) -> Option<bool> {
        match *self {
            Matcher::Done(a) => Some(a),
            _ => None,
        }
    }

    /// How many bytes of a message this matcher may be fed (binary ones decide well before).
    fn limit(&self) -> u64 {
        TEXT_SCAN_LIMIT
    }

    /// The scan limit is reached: an undecided message is no action.
    fn give_up(&mut self) {
        if self.verdict().is_none() {
            *self = Matcher::Done(false);
        }
    }

    /// Takes the next unmasked bytes of the message; true once decided.
    fn push(&mut self, mut bytes: &[u8]) -> bool {
        while let Some(&b) = bytes.first() {
            // Fast path: looking for the opening quote of a key, all else is irrelevant.
            if let Matcher::Json(Pair::Key(0)) = self
                && b != b'"'
            {
                match bytes.iter().position(|&c| c == b'"') {
                    Some(k) => bytes = &bytes[k..],
                    None => return false,
                }
                continue;
            }
            if self.step(b) {
                return true;
            }
            bytes = &bytes[1..];
        }
        false
    }

    /// Takes the next unmasked byte of the message; true once decided.
    fn step(&mut self, b: u8) -> bool {
        match self {
            Matcher::TextStart => match b {
                b'[' => *self = Matcher::Stdin(0),
                b'{' => *self = Matcher::Json(Pair::Key(0)),
                _ if blank(b) => {}
                _ => *self = Matcher::Done(false),
            },
            Matcher::Stdin(i) => {
                let i = *i as usize;
                let skip = (i == 0 || i == STDIN.len()) && blank(b);
                if !skip {
                    *self = if i == STDIN.len() {
                        Matcher::Done(b == b',')
                    } else if b == STDIN[i] {
                        Matcher::Stdin(i as u8 + 1)
                    } else {
                        Matcher::Done(false)
                    };
                }
            }
            Matcher::Json(pair) => {
                if let Some(v) = pair.step(b) {
                    *self = Matcher::Done(v);
                }
            }
            Matcher::V1Table { buf, len } => {
                buf[*len as usize] = b;
                *len += 1;
                if (*len as usize) < buf.len() {
                    return false;
                }
                let n = le64(&buf[0..]);
                let (channel, header, parent) =
                    (le64(&buf[8..]), le64(&buf[16..]), le64(&buf[24..]));
                let ok = (6..=V1_MAX_OFFSETS).contains(&n)
                    && channel == 8 * (n + 1)
                    && channel <= header
                    && header - channel <= V1_MAX_CHANNEL
                    && header < parent;
                *self = if ok {
                    // `header >= channel >= 56 > 32`: at least one byte to skip.
                    Matcher::V1Skip {
                        left: header - 32,
                        header: (parent - header).min(V1_HEADER_LIMIT),
                    }
                } else {
                    Matcher::Done(false)
                };
            }
            Matcher::V1Skip { left, header } => {
                *left -= 1;
                if *left == 0 {
                    *self = Matcher::V1Header {
                        left: *header,
                        pair: Pair::Key(0),
                    };
                }
            }
            Matcher::V1Header { left, pair } => {
                if let Some(v) = pair.step(b) {
                    *self = Matcher::Done(v);
                } else {
                    *left -= 1;
                    if *left == 0 {
                        *self = Matcher::Done(false);
                    }
                }
            }
            Matcher::Done(_) => {}
        }
        matches!(self, Matcher::Done(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), for mask keys and chunk sizes.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    /// A masked client frame: FIN bit, RSV1 bit, opcode, payload.
    fn frame_with(rng: &mut Rng, fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(payload.len() + 14);
        f.push((fin as u8) << 7 | (rsv1 as u8) << 6 | opcode);
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let key = (rng.next() as u32).to_be_bytes();
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
        f
    }

    fn frame(rng: &mut Rng, opcode: u8, payload: &[u8]) -> Vec<u8> {
        frame_with(rng, true, false, opcode, payload)
    }

    fn text(rng: &mut Rng, s: &str) -> Vec<u8> {
        frame(rng, 0x1, s.as_bytes())
    }

    /// A legacy JSON kernel message the way JupyterLab serializes it (content before header).
    fn json_msg(msg_type: &str, colon: &str, code: &str) -> String {
        format!(
            r#"{{"buffers":[],"channel":"shell","content":{{"silent":false,"code":"{code}"}},"header":{{"date":"2024-05-01T10:00:00.000Z","msg_id":"5e0c","msg_type"{colon}"{msg_type}","session":"a1b2","username":"","version":"5.2"}},"metadata":{{}},"parent_header":{{}}}}"#
        )
    }

    /// A binary v1 kernel message (count, offsets, channel, header, parent, metadata,
    /// content, buffers).
    fn v1_msg(channel: &str, msg_type: &str, content: &[u8], buffers: &[&[u8]]) -> Vec<u8> {
        let header = format!(
            r#"{{"date":"2024-05-01T10:00:00.000Z","msg_id":"5e0c","msg_type":"{msg_type}","session":"a1b2","username":"","version":"5.2"}}"#
        );
        let mut parts: Vec<&[u8]> =
            vec![channel.as_bytes(), header.as_bytes(), b"{}", b"{}", content];
        parts.extend_from_slice(buffers);
        let n = parts.len() + 1;
        let mut offsets = vec![8 * (n as u64 + 1)];
        for p in &parts {
            offsets.push(offsets.last().unwrap() + p.len() as u64);
        }
        let mut out = (n as u64).to_le_bytes().to_vec();
        for o in offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        for p in parts {
            out.extend_from_slice(p);
        }
        out
    }

    fn count(stream: &[u8]) -> usize {
        Scanner::new().feed(stream)
    }

    fn count_bytewise(stream: &[u8]) -> usize {
        let mut s = Scanner::new();
        stream.iter().map(|b| s.feed(std::slice::from_ref(b))).sum()
    }

    fn count_chunked(stream: &[u8], rng: &mut Rng, max: usize) -> usize {
        let mut s = Scanner::new();
        let mut total = 0;
        let mut rest = stream;
        while !rest.is_empty() {
            let n = (rng.next() as usize % max + 1).min(rest.len());
            total += s.feed(&rest[..n]);
            rest = &rest[n..];
        }
        total
    }

    #[test]
    fn json_execute_request_counts() {
        let mut r = Rng(1);
        assert_eq!(
            count(&text(&mut r, &json_msg("execute_request", ":", "1+1"))),
            1
        );
        assert_eq!(
            count(&text(&mut r, &json_msg("execute_request", ": ", "1+1"))),
            1
        );
        assert_eq!(
            count(&text(&mut r, &json_msg("execute_request", " :\n ", "1+1"))),
            1
        );
        assert_eq!(count(&text(&mut r, &json_msg("input_reply", ":", ""))), 1);
        assert_eq!(count(&text(&mut r, &json_msg("input_reply", ": ", ""))), 1);
    }

    #[test]
    fn json_header_first_counts() {
        // Python's and the classic notebook's order: header first.
        let mut r = Rng(2);
        let m = r#"{"header": {"msg_id": "x", "msg_type": "execute_request", "session": "s"}, "parent_header": {}, "metadata": {}, "content": {"code": "print(1)"}, "channel": "shell"}"#;
        assert_eq!(count(&text(&mut r, m)), 1);
    }

    #[test]
    fn json_background_traffic_does_not_count() {
        let mut r = Rng(3);
        for t in [
            "kernel_info_request",
            "comm_msg",
            "comm_info_request",
            "status",
            "complete_request",
            "inspect_request",
            "execute_reply",
            "input_request",
            "execute_requests",
            "execute_reques",
            "",
        ] {
            assert_eq!(count(&text(&mut r, &json_msg(t, ":", ""))), 0, "{t}");
        }
    }

    #[test]
    fn pattern_in_code_or_later_pair_does_not_count() {
        let mut r = Rng(4);
        // Escaped quotes inside the code string can't form the pair.
        let code = r#"print(\"msg_type\": \"execute_request\")"#;
        assert_eq!(count(&text(&mut r, &json_msg("comm_msg", ":", code))), 0);
        // The first pair decides: a parent header's execute_request doesn't count.
        let m =
            r#"{"header":{"msg_type":"comm_msg"},"parent_header":{"msg_type":"execute_request"}}"#;
        assert_eq!(count(&text(&mut r, m)), 0);
        assert!(!is_action(m.as_bytes()));
    }

    #[test]
    fn pattern_twice_counts_once() {
        let mut r = Rng(5);
        let m = r#"{"header":{"msg_type":"execute_request"},"parent_header":{"msg_type":"execute_request"}}"#;
        assert_eq!(count(&text(&mut r, m)), 1);
    }

    #[test]
    fn big_code_cell_before_header_counts() {
        // JupyterLab puts content (the code) before the header.
        let mut r = Rng(6);
        let code = "x = 1\\n".repeat(20_000); // ~140 kB
        let f = text(&mut r, &json_msg("execute_request", ":", &code));
        assert!(f.len() > 126_000);
        assert_eq!(count(&f), 1);
        assert_eq!(count_chunked(&f, &mut r, 5000), 1);
    }

    #[test]
    fn binary_v1() {
        let mut r = Rng(7);
        let exec = v1_msg(
            "shell",
            "execute_request",
            br#"{"code":"1+1","silent":false}"#,
            &[],
        );
        assert!(is_action(&exec));
        assert_eq!(count(&frame(&mut r, 0x2, &exec)), 1);
        let input = v1_msg("stdin", "input_reply", br#"{"value":"y"}"#, &[]);
        assert_eq!(count(&frame(&mut r, 0x2, &input)), 1);
        for t in ["kernel_info_request", "comm_msg", "status"] {
            let m = v1_msg("shell", t, b"{}", &[]);
            assert!(!is_action(&m));
            assert_eq!(count(&frame(&mut r, 0x2, &m)), 0, "{t}");
        }
        // With buffers, and the pattern only in the content or a buffer: not an action.
        let tricky = br#"{"data":{"msg_type":"execute_request"}}"#;
        let m = v1_msg("shell", "comm_msg", tricky, &[tricky, b"\x00\x01"]);
        assert_eq!(count(&frame(&mut r, 0x2, &m)), 0);
        let m = v1_msg("shell", "execute_request", b"{}", &[b"abc", b"\xff\xfe"]);
        assert_eq!(count(&frame(&mut r, 0x2, &m)), 1);
        // The same JSON as a binary frame isn't a v1 message.
        let j = json_msg("execute_request", ":", "");
        assert_eq!(count(&frame(&mut r, 0x2, j.as_bytes())), 0);
        // Bad offset tables.
        let mut bad = exec.clone();
        bad[8] ^= 1; // channel offset no longer 8 * (n + 1)
        assert_eq!(count(&frame(&mut r, 0x2, &bad)), 0);
        let mut bad = exec.clone();
        bad[0] = 200; // count disagrees with the table
        assert_eq!(count(&frame(&mut r, 0x2, &bad)), 0);
        assert_eq!(count(&frame(&mut r, 0x2, &exec[..40])), 0);
    }

    #[test]
    fn terminado() {
        let mut r = Rng(8);
        assert_eq!(count(&text(&mut r, r#"["stdin","ls\r"]"#)), 1);
        assert_eq!(count(&text(&mut r, r#"[ "stdin" , "x"]"#)), 1);
        assert_eq!(count(&text(&mut r, r#"["set_size",24,80,600,800]"#)), 0);
        assert_eq!(count(&text(&mut r, r#"["stdinx","a"]"#)), 0);
        assert_eq!(count(&text(&mut r, r#"["stdout","a"]"#)), 0);
        assert_eq!(count(&text(&mut r, "stdin")), 0);
        assert!(is_action(br#"["stdin","q"]"#));
        assert!(!is_action(br#"["stdin""#));
    }

    #[test]
    fn control_frames_never_count() {
        let mut r = Rng(9);
        let p = br#"["stdin","ls\r"]"#;
        assert_eq!(count(&frame(&mut r, 0x9, p)), 0);
        assert_eq!(count(&frame(&mut r, 0xa, p)), 0);
        assert_eq!(count(&frame(&mut r, 0x9, b"")), 0);
        let mut s = frame(&mut r, 0x8, &[0x03, 0xe8]);
        // Nothing after a close counts.
        s.extend(text(&mut r, r#"["stdin","x"]"#));
        assert_eq!(count(&s), 0);
    }

    #[test]
    fn empty_messages() {
        let mut r = Rng(10);
        let mut s = text(&mut r, "");
        s.extend(frame(&mut r, 0x2, b""));
        s.extend(text(&mut r, r#"["stdin","x"]"#));
        assert_eq!(count(&s), 1);
    }

    #[test]
    fn fragmented_message_counts_once_across_boundaries() {
        let mut r = Rng(11);
        let m = json_msg("execute_request", ": ", "print(1)");
        let at = m.find("execute_req").unwrap();
        let (a, rest) = m.as_bytes().split_at(at - 5); // cut inside `"msg_type": "`
        let (b, c) = rest.split_at(10); // cut inside `execute_request`
        let mut s = frame_with(&mut r, false, false, 0x1, a);
        s.extend(frame(&mut r, 0x9, b"ping")); // control frames may interleave
        s.extend(frame_with(&mut r, false, false, 0x0, b));
        s.extend(frame_with(&mut r, true, false, 0x0, c));
        s.extend(text(&mut r, r#"["set_size",1,2]"#));
        assert_eq!(count(&s), 1);
        assert_eq!(count_bytewise(&s), 1);
        // The action is reported when the final frame is complete, not before.
        let end = s.len() - text(&mut r, r#"["set_size",1,2]"#).len() - 1;
        let mut sc = Scanner::new();
        assert_eq!(sc.feed(&s[..end]), 0);
        assert_eq!(sc.feed(&s[end..]), 1);
    }

    #[test]
    fn fragmented_terminado_and_binary() {
        let mut r = Rng(12);
        let mut s = frame_with(&mut r, false, false, 0x1, b"[\"st");
        s.extend(frame_with(&mut r, true, false, 0x0, b"din\",\"a\"]"));
        let exec = v1_msg("shell", "execute_request", b"{}", &[]);
        for cut in [1, 8, 20, 33, 60, 70, 90] {
            s.extend(frame_with(&mut r, false, false, 0x2, &exec[..cut]));
            s.extend(frame_with(&mut r, true, false, 0x0, &exec[cut..]));
        }
        assert_eq!(count(&s), 8);
        assert_eq!(count_bytewise(&s), 8);
    }

    /// A session's worth of mixed traffic.
    fn mixed_stream(r: &mut Rng) -> (Vec<u8>, usize) {
        let mut s = Vec::new();
        s.extend(text(r, &json_msg("kernel_info_request", ":", "")));
        s.extend(frame(r, 0x9, b""));
        s.extend(text(r, &json_msg("execute_request", ":", "import os")));
        s.extend(text(r, &json_msg("comm_msg", ": ", "")));
        s.extend(frame(
            r,
            0x2,
            &v1_msg("shell", "execute_request", b"{}", &[]),
        ));
        s.extend(frame(r, 0xa, b"pong"));
        s.extend(frame(
            r,
            0x2,
            &v1_msg("control", "interrupt_request", b"{}", &[]),
        ));
        s.extend(text(r, r#"["stdin","ls -l\r"]"#));
        s.extend(text(r, r#"["set_size",40,120,800,1200]"#));
        s.extend(text(r, &json_msg("input_reply", ": ", "")));
        s.extend(frame(r, 0x1, &vec![b' '; 300])); // 16-bit length, blanks only
        (s, 4)
    }

    #[test]
    fn any_split_gives_the_same_count() {
        let mut r = Rng(13);
        let (s, want) = mixed_stream(&mut r);
        assert_eq!(count(&s), want);
        assert_eq!(count_bytewise(&s), want);
        for max in [2, 3, 7, 64, 1000] {
            assert_eq!(count_chunked(&s, &mut r, max), want, "max chunk {max}");
        }
    }

    #[test]
    fn long_messages() {
        let mut r = Rng(14);
        // 16-bit length up to 65 535 bytes; 70 000 already needs the 64-bit form.
        for size in [60_000usize, 70_000, 10 * 1024 * 1024] {
            let mut p = json_msg("execute_request", ":", "").into_bytes();
            p.resize(size, b' ');
            let f = frame(&mut r, 0x1, &p);
            assert_eq!(f[1] & 0x7f, if size <= 0xffff { 126 } else { 127 });
            let mut r2 = Rng(size as u64);
            assert_eq!(count_chunked(&f, &mut r2, 100_000), 1, "{size}");
            assert_eq!(count(&f), 1);

            let mut p = v1_msg("shell", "execute_request", b"{}", &[]);
            p.resize(size, 0xab);
            let f = frame(&mut r, 0x2, &p);
            assert_eq!(count_chunked(&f, &mut r2, 100_000), 1, "{size} binary");
        }
    }

    #[test]
    fn big_message_without_action_then_action() {
        let mut r = Rng(15);
        let mut p = json_msg("comm_msg", ":", "").into_bytes();
        p.resize(10 * 1024 * 1024, b'x');
        let mut s = frame(&mut r, 0x1, &p);
        s.extend(text(&mut r, &json_msg("execute_request", ":", "1")));
        let mut r2 = Rng(99);
        assert_eq!(count_chunked(&s, &mut r2, 1 << 20), 1);
        // An undecided text message (no msg_type at all) stops being searched at the limit.
        let mut s = frame(&mut r, 0x1, &vec![b'{'; 10 * 1024 * 1024]);
        s.extend(text(&mut r, r#"["stdin","x"]"#));
        assert_eq!(count_chunked(&s, &mut r2, 1 << 20), 1);
        // A binary upload: nothing, then the next action counts.
        let mut s = frame(&mut r, 0x2, &vec![7u8; 10 * 1024 * 1024]);
        s.extend(text(&mut r, r#"["stdin","x"]"#));
        assert_eq!(count_chunked(&s, &mut r2, 1 << 20), 1);
    }

    #[test]
    fn action_past_the_text_limit_is_not_seen() {
        let mut r = Rng(16);
        let code = "a".repeat(TEXT_SCAN_LIMIT as usize);
        assert_eq!(
            count(&text(&mut r, &json_msg("execute_request", ":", &code))),
            0
        );
    }

    #[test]
    fn compressed_frames_are_skipped() {
        let mut r = Rng(17);
        let p = json_msg("execute_request", ":", "");
        let mut s = frame_with(&mut r, true, true, 0x1, p.as_bytes());
        s.extend(frame_with(&mut r, false, true, 0x1, br#"["stdin","x"]"#));
        s.extend(frame_with(&mut r, true, false, 0x0, b"more"));
        s.extend(text(&mut r, &p));
        assert_eq!(count(&s), 1);
        assert_eq!(count_bytewise(&s), 1);
    }

    #[test]
    fn protocol_errors_make_it_inert() {
        let mut r = Rng(18);
        let action = text(&mut r, r#"["stdin","x"]"#);
        let bad: Vec<Vec<u8>> = vec![
            // Unmasked client frame.
            vec![0x81, 0x02, b'h', b'i'],
            // Continuation without a message.
            frame_with(&mut r, true, false, 0x0, b"x"),
            // Reserved opcodes.
            frame(&mut r, 0x3, b"x"),
            frame(&mut r, 0xb, b"x"),
            // Fragmented or oversized control frames.
            frame_with(&mut r, false, false, 0x9, b"x"),
            frame(&mut r, 0x9, &[0; 126]),
            // RSV2, RSV1 on a control frame or a continuation.
            {
                let mut f = text(&mut r, "x");
                f[0] |= 0x20;
                f
            },
            frame_with(&mut r, true, true, 0xa, b""),
            {
                let mut f = frame_with(&mut r, false, false, 0x1, b"[");
                f.extend(frame_with(&mut r, true, true, 0x0, b"]"));
                f
            },
            // A new message inside a fragmented one.
            {
                let mut f = frame_with(&mut r, false, false, 0x1, b"[");
                f.extend(action.clone());
                f
            },
            // A 64-bit length with the top bit set.
            vec![0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
        ];
        for (i, b) in bad.iter().enumerate() {
            let mut s = b.clone();
            s.extend(action.clone());
            assert_eq!(count(&s), 0, "case {i}");
            assert_eq!(count_bytewise(&s), 0, "case {i}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut r = Rng(19);
        for _ in 0..2000 {
            let len = r.next() as usize % 300;
            let g: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
            let mut s = Scanner::new();
            s.feed(&g);
            s.feed(&g);
            let _ = is_action(&g);
        }
        // Frames with random (masked) payloads.
        for _ in 0..2000 {
            let len = r.next() as usize % 200;
            let mut g: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
            if len >= 8 {
                g[..8].copy_from_slice(&(6 + r.next() % 4).to_le_bytes());
            }
            let op = [0x1, 0x2][r.next() as usize & 1];
            let f = frame(&mut r, op, &g);
            assert_eq!(count(&f), count_bytewise(&f));
            let _ = is_action(&g);
        }
        // A huge declared length is skipped without trouble.
        let mut s = Scanner::new();
        assert_eq!(
            s.feed(&[
                0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4
            ]),
            0
        );
        assert_eq!(s.feed(&[0u8; 4096]), 0);
    }

    #[test]
    fn is_action_on_prefixes() {
        assert!(is_action(json_msg("execute_request", ":", "").as_bytes()));
        assert!(is_action(json_msg("input_reply", ": ", "").as_bytes()));
        assert!(!is_action(json_msg("status", ":", "").as_bytes()));
        assert!(is_action(br#"  ["stdin","x"]"#));
        assert!(!is_action(b""));
        assert!(!is_action(b"\x06\0\0\0\0\0\0\0"));
        let m = json_msg("execute_request", ":", "");
        let cut = m.find("execute_request").unwrap() + 5;
        assert!(!is_action(&m.as_bytes()[..cut]));
    }

    /// Property tests: whatever bytes a client sends, split however the network splits them.
    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Counts with the stream cut at the given points (sorted, deduplicated, in range).
        fn count_split(stream: &[u8], cuts: &[prop::sample::Index]) -> usize {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            at.sort_unstable();
            at.dedup();
            let mut s = Scanner::new();
            let mut from = 0;
            let mut total = 0;
            for cut in at.into_iter().chain([stream.len()]) {
                total += s.feed(&stream[from..cut]);
                from = cut;
            }
            total
        }

        /// A masked frame with the reference encoding (`frame_with`) and the given key.
        fn encode(key: u32, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
            frame_with(
                &mut Rng(u64::from(key) | 1 << 40),
                fin,
                false,
                opcode,
                payload,
            )
        }

        /// One client message: its payload, its opcode, whether it is a user action.
        #[derive(Debug, Clone)]
        enum Message {
            Json {
                msg_type: &'static str,
                code: String,
                pad: usize,
            },
            Terminal {
                stdin: bool,
                text: String,
            },
            Binary {
                msg_type: &'static str,
                content: Vec<u8>,
                buffer: Vec<u8>,
            },
        }

        impl Message {
            fn bytes(&self) -> (u8, Vec<u8>, bool) {
                match self {
                    Message::Json {
                        msg_type,
                        code,
                        pad,
                    } => {
                        let mut m = json_msg(msg_type, ": ", code).into_bytes();
                        // Trailing blanks: lengths across the 7/16/64-bit length forms.
                        m.resize(m.len() + pad, b' ');
                        (
                            0x1,
                            m,
                            matches!(*msg_type, "execute_request" | "input_reply"),
                        )
                    }
                    Message::Terminal { stdin, text } => {
                        let kind = if *stdin { "stdin" } else { "set_size" };
                        let m = serde_json::json!([kind, text]).to_string();
                        (0x1, m.into_bytes(), *stdin)
                    }
                    Message::Binary {
                        msg_type,
                        content,
                        buffer,
                    } => (
                        0x2,
                        v1_msg("shell", msg_type, content, &[buffer]),
                        matches!(*msg_type, "execute_request" | "input_reply"),
                    ),
                }
            }
        }

        const MSG_TYPES: [&str; 6] = [
            "execute_request",
            "input_reply",
            "kernel_info_request",
            "comm_msg",
            "complete_request",
            "status",
        ];

        fn message() -> impl Strategy<Value = Message> {
            prop_oneof![
                (
                    prop::sample::select(MSG_TYPES.to_vec()),
                    "[a-zA-Z0-9 +()=_.,:\\[\\]]{0,200}",
                    prop_oneof![Just(0usize), 0..200usize, Just(65_600usize)],
                )
                    .prop_map(|(msg_type, code, pad)| Message::Json {
                        msg_type,
                        code,
                        pad
                    }),
                (any::<bool>(), "\\PC{0,40}")
                    .prop_map(|(stdin, text)| Message::Terminal { stdin, text }),
                (
                    prop::sample::select(MSG_TYPES.to_vec()),
                    prop::collection::vec(any::<u8>(), 0..64),
                    prop::collection::vec(any::<u8>(), 0..300),
                )
                    .prop_map(|(msg_type, content, buffer)| Message::Binary {
                        msg_type,
                        content,
                        buffer
                    }),
            ]
        }

        /// A message sent as one or more frames (cut at `cuts`), with a ping after each
        /// fragment when `pings` (control frames may come between fragments), and the
        /// masking keys drawn from `keys`.
        fn frames(
            m: &Message,
            cuts: &[prop::sample::Index],
            pings: bool,
            keys: &mut impl Iterator<Item = u32>,
        ) -> (Vec<u8>, bool) {
            let (opcode, payload, action) = m.bytes();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
            at.sort_unstable();
            at.dedup();
            at.retain(|&c| c > 0 && c < payload.len());
            let mut out = Vec::new();
            let mut from = 0;
            let ends: Vec<usize> = at.into_iter().chain([payload.len()]).collect();
            for (i, &end) in ends.iter().enumerate() {
                let last = i + 1 == ends.len();
                let op = if i == 0 { opcode } else { 0x0 };
                let key = keys.next().unwrap_or(7);
                out.extend(encode(key, last, op, &payload[from..end]));
                if pings && !last {
                    out.extend(encode(key ^ 0x5a5a, true, 0x9, b"ping"));
                }
                from = end;
            }
            (out, action)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Arbitrary bytes: no panic, and the same count however they are split.
            #[test]
            fn arbitrary_bytes_never_panic_and_any_split_agrees(
                bytes in prop::collection::vec(any::<u8>(), 0..4096),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
            ) {
                let whole = count(&bytes);
                prop_assert_eq!(count_split(&bytes, &cuts), whole);
                let _ = is_action(&bytes);
            }

            /// Frames with arbitrary header bits (reserved bits, opcodes, the mask bit, every
            /// length form) and payloads: no panic, and splits agree.
            #[test]
            fn frame_soup_never_panics_and_any_split_agrees(
                frames in prop::collection::vec(
                    (any::<u8>(), any::<bool>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..300)),
                    0..12,
                ),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
            ) {
                let mut stream = Vec::new();
                for (first, masked, key, payload) in &frames {
                    let mut f = encode(*key, true, 0, payload);
                    f[0] = *first;
                    if !masked {
                        f[1] &= 0x7f;
                    }
                    stream.extend(f);
                }
                let whole = count(&stream);
                prop_assert_eq!(count_split(&stream, &cuts), whole);
            }

            /// Messages a browser sends, built by the reference encoder, fragmented, with
            /// control frames between fragments: every user action counts once, nothing
            /// else counts, however the stream is split.
            #[test]
            fn encoded_messages_count_the_same_whatever_the_split(
                messages in prop::collection::vec(
                    (message(), prop::collection::vec(any::<prop::sample::Index>(), 0..4), any::<bool>()),
                    1..8,
                ),
                keys in prop::collection::vec(any::<u32>(), 64),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..32),
            ) {
                let mut keys = keys.into_iter();
                let mut stream = Vec::new();
                let mut want = 0;
                for (m, fragment_cuts, pings) in &messages {
                    let (f, action) = frames(m, fragment_cuts, *pings, &mut keys);
                    stream.extend(f);
                    want += usize::from(action);
                }
                prop_assert_eq!(count(&stream), want);
                prop_assert_eq!(count_split(&stream, &cuts), want);
            }
        }
    }
}
