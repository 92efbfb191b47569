//! JSON for the answers hyper writes itself.
//!
//! A request hyper cannot parse (a broken request line or header, a bad
//! `content-length`, a head over the hard limit) never reaches a handler: hyper
//! answers it with a bodiless 400 (or 431) and closes. [`JsonErrors`] wraps the
//! connection and, when such an answer is written, writes the same status with
//! sluice's JSON error body instead, so every error a client sees is JSON.
//!
//! It recognises hyper's answer by its exact head (`connection: close` then
//! `content-length: 0`, which no handler of sluice writes: their errors all carry
//! a JSON body); the e2e corpus (tests/e2e/hostile) fails if hyper changes it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// hyper's answers, by the start of their head, and what sluice writes instead.
const BARE: [(&[u8], &str, &str, &str); 2] = [
    (
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n",
        "400 Bad Request",
        "bad_request",
        "the request could not be read as HTTP/1.1 (its request line or a header is malformed)",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n",
        "431 Request Header Fields Too Large",
        "headers_too_large",
        "the request's header block is too large",
    ),
];

/// A connection whose bodiless error answers from hyper become JSON ones.
pub struct JsonErrors<S> {
    inner: S,
    /// A replacement being written, and how much of it is out.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonErrors<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The JSON answer to write for `head`, if it is one of hyper's bare ones.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let (_, status, code, message) = BARE.iter().find(|(bare, ..)| head.starts_with(bare))?;
    let body = sluice_router::error::error_body(code, message, None).to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            match replacement(buf) {
                Some(answer) => self.pending = Some((answer, 0)),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        // Write the replacement whole; hyper is told its own answer was written.
        let this = &mut *self;
        let (answer, done) = this.pending.as_mut().expect("set above");
        while *done < answer.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &answer[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.pending = None;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then hands each answer's head over as one buffer,
    // which is what `replacement` looks at.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_answers_are_replaced() {
        let bare = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let json = String::from_utf8(replacement(bare).unwrap()).unwrap();
        assert!(json.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"));
        assert!(json.ends_with(r#""code":"bad_request","message":"the request could not be read as HTTP/1.1 (its request line or a header is malformed)"}}"#), "{json}");
        let ours =
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n";
        assert!(replacement(ours).is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\n").is_none());
    }
}
