//! What a policy writes to its stdout and stderr, kept for when it fails.
//!
//! An interpreted policy reports its own errors there: componentize-py
//! prints a Python traceback to stderr before the call traps, a JavaScript
//! engine its exception and stack. Without them the operator only sees
//! "wasm `unreachable` instruction executed". Both streams go to one
//! bounded buffer per instance, emptied at the start of every call, that
//! keeps the last [`CAPACITY`] bytes (a traceback ends with the error); a
//! guest that writes more loses its oldest bytes, never a write.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per call, stdout and stderr together.
pub const CAPACITY: usize = 4096;
/// Longest text reported, escapes included.
const MAX_TEXT_BYTES: usize = 2 * CAPACITY;

/// The shared tail of one instance's output.
#[derive(Clone, Default)]
pub struct GuestOutput {
    tail: Arc<Mutex<Tail>>,
}

#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
    /// Older bytes were dropped to keep the last [`CAPACITY`].
    cut: bool,
}

impl GuestOutput {
    /// Forgets what an earlier call wrote.
    pub fn clear(&self) {
        let mut tail = self.lock();
        tail.bytes.clear();
        tail.cut = false;
    }

    /// The output of the call so far, as one line of text with every control
    /// character escaped (`\n` between lines); `None` when the guest wrote
    /// nothing.
    pub fn text(&self) -> Option<String> {
        let tail = self.lock();
        if tail.bytes.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let mut bytes: Vec<u8> = tail.bytes.iter().copied().collect();
        let cut = tail.cut;
        drop(tail);
        if cut {
            // Start at a whole line: the first one lost its beginning.
            let start = bytes.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
            bytes.drain(..start);
        }
        let text = String::from_utf8_lossy(&bytes);
        let text = if cut {
            format!("[earlier output cut]\n{}", text.trim())
        } else {
            text.trim().to_owned()
        };
        // Newlines too: this text reaches log lines, which it must not forge.
        let escaped = crate::text::escape_controls(&text);
        // Escapes lengthen control characters up to tenfold; keep the end.
        let start = escaped.len().saturating_sub(MAX_TEXT_BYTES);
        Some(escaped[escaped.ceil_char_boundary(start)..].to_owned())
    }

    fn append(&self, bytes: &[u8]) {
        let mut tail = self.lock();
        let kept = &bytes[bytes.len().saturating_sub(CAPACITY)..];
        let overflow = (tail.bytes.len() + kept.len()).saturating_sub(CAPACITY);
        tail.bytes.drain(..overflow);
        tail.bytes.extend(kept);
        tail.cut |= overflow > 0 || kept.len() < bytes.len();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always room: the buffer drops its oldest bytes instead.
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_and_escapes_them() {
        let mut out = GuestOutput::default();
        assert_eq!(out.text(), None);
        out.write(Bytes::from_static(b"  \n")).expect("write");
        assert_eq!(out.text(), None, "only whitespace is nothing to show");
        for _ in 0..1000 {
            out.write(Bytes::from_static(b"noise noise\n")).expect("write");
        }
        out.write(Bytes::from_static(
            b"Traceback (most recent call last):\n  ValueError: bad\x1b[31m\r\n",
        ))
        .expect("write");
        let text = out.text().expect("text");
        assert!(text.len() <= MAX_TEXT_BYTES, "{}", text.len());
        assert!(text.ends_with("\\n  ValueError: bad\\u{1b}[31m"), "{text:?}");
        assert!(
            text.starts_with("[earlier output cut]\\nnoise noise\\n"),
            "cut at a line: {text:?}"
        );
        assert!(
            !text.chars().any(char::is_control),
            "no raw control characters: {text:?}"
        );
        out.clear();
        assert_eq!(out.text(), None);
    }

    #[test]
    fn one_huge_write_keeps_its_end() {
        let mut out = GuestOutput::default();
        let mut big = vec![b'x'; 3 * CAPACITY];
        big.extend_from_slice(b"\nthe end");
        out.write(Bytes::from(big)).expect("write");
        let text = out.text().expect("text");
        assert_eq!(text, "[earlier output cut]\\nthe end");
    }
}
