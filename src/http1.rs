//! HTTP/1.1 response framing (RFC 9112 6.3 and 9.3), read from a head `httparse` parsed: what
//! the load generator ([`crate::load::wire`]) and the gate's plain path
//! (`gate::server::fast`) both need to know of an answer before its body, and the read buffer
//! both parse heads from.

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What a response head says about its body and its connection.
#[derive(Debug)]
pub struct Head<'h> {
    /// The framing its headers give; answers to HEAD and 1xx/204/304 have no body whatever
    /// they say, which the caller knows and this does not.
    pub framing: Framing,
    /// The server closes the connection after this answer.
    pub close: bool,
    /// Whether a `Transfer-Encoding` was given (a forwarder then drops `Content-Length`).
    pub coded: bool,
    /// The other headers `Connection` names (hop-by-hop: a forwarder drops them).
    pub connection_named: Vec<&'h [u8]>,
}

/// The head's framing is contradictory: conflicting or unreadable `Content-Length`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// Reads the framing of a response head.
pub fn response<'h>(
    version: Option<u8>,
    headers: &[httparse::Header<'h>],
) -> Result<Head<'h>, Invalid> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut coded = false;
    let mut close = version == Some(0);
    let mut connection_named = Vec::new();
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| Invalid)?;
            // `Content-Length: 5, 5` and repeated equal headers are allowed; different values
            // are not (request smuggling territory).
            for part in v.split(',') {
                let n: u64 = part.trim().parse().map_err(|_| Invalid)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Invalid);
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // chunked must be the final coding for the body to be chunk-framed; any other
            // coding leaves the body delimited by the close, whatever Content-Length says.
            coded = true;
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Some(0) {
                        close = false;
                    }
                } else if !t.is_empty() {
                    connection_named.push(t);
                }
            }
        }
    }
    let framing = if chunked {
        Framing::Chunked
    } else if coded {
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Head {
        framing,
        close,
        coded,
        connection_named,
    })
}

/// A connection's read buffer: bytes read and not yet consumed, kept at the front, growing only
/// when what is unconsumed fills it (callers bound how much they let accumulate).
pub struct Buf {
    data: Vec<u8>,
    /// Unconsumed bytes are `data[start..end]`.
    start: usize,
    end: usize,
}

impl Buf {
    pub fn new(capacity: usize) -> Buf {
        Buf {
            data: vec![0; capacity.max(1)],
            start: 0,
            end: 0,
        }
    }

    /// The unconsumed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes after the unconsumed ones (moved to the front first, or into a buffer
    /// twice the size when they fill it). `Ok(0)` at EOF.
    pub async fn fill<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        r: &mut R,
    ) -> std::io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.data.len() * 2;
                self.data.resize(n, 0);
            }
        }
        let n = r.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// Whether an I/O error means the peer closed the connection.
pub fn closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(v: u8, hs: &[(&'static str, &'static [u8])]) -> Result<Head<'static>, Invalid> {
        let hs: Vec<httparse::Header<'static>> = hs
            .iter()
            .map(|(name, value)| httparse::Header { name, value })
            .collect();
        response(Some(v), &hs)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            head(1, &[("Content-Length", b"5, 5")]).unwrap().framing,
            Framing::Length(5)
        );
        assert_eq!(
            head(1, &[("content-length", b"5"), ("Content-Length", b"6")]).unwrap_err(),
            Invalid
        );
        let h = head(
            1,
            &[
                ("Transfer-Encoding", b"gzip, chunked"),
                ("Content-Length", b"9"),
            ],
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.coded);
        assert_eq!(
            head(1, &[("Transfer-Encoding", b"gzip")]).unwrap().framing,
            Framing::UntilClose
        );
        assert_eq!(head(1, &[]).unwrap().framing, Framing::UntilClose);
        let h = head(1, &[("Connection", b"close, x-secret, , keep-alive")]).unwrap();
        assert!(h.close);
        assert_eq!(h.connection_named, vec![&b"x-secret"[..]]);
        assert!(head(0, &[]).unwrap().close);
        assert!(!head(0, &[("Connection", b"keep-alive")]).unwrap().close);
        assert!(!head(1, &[("Connection", b"keep-alive")]).unwrap().close);
    }
}
