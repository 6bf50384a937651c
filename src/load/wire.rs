//! HTTP/1.1 on one keep-alive connection, as cheap as the generator needs it to be.
//!
//! Each request of the scenario is serialised once, before the test; a request is then one
//! `write` of those bytes and the response is parsed in place with `httparse` (the parser hyper
//! itself uses) and its body discarded as it arrives. Nothing is allocated per request.
//! hyper's client was the hot path before: its dispatcher hands every request through a channel,
//! a oneshot and a body channel, which cost about 3 µs of user CPU per request on loopback, 4x
//! wrk's whole user time. This keeps what a load generator needs of HTTP/1.1: Content-Length,
//! chunked and close-delimited bodies, interim 1xx responses, HEAD/204/304 without bodies,
//! `Connection: close`, and the keep-alive race (a server that closed an idle connection).

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use crate::http1::{Buf, Framing, closed};

/// A byte stream: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The response head may not exceed this (hyper's default limit is about 400 KiB).
const MAX_HEAD: usize = 256 * 1024;
/// The read buffer's starting size: a typical response head and a small body fit at once.
const BUF: usize = 16 * 1024;
/// Headers parsed per response; more is an invalid response.
const MAX_HEADERS: usize = 128;

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A reused connection was closed by the server before any byte of the response: the
    /// keep-alive race (the server timed the idle connection out while the request was on its
    /// way). The server never read the request, so it may be sent again on a new connection.
    Stale,
    /// Anything else, as the kind recorded in the error map.
    Kind(&'static str),
}

impl Failure {
    /// The kind recorded in the error map.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Stale => "connection closed",
            Failure::Kind(k) => k,
        }
    }
}

/// One keep-alive connection and its read buffer.
pub struct Conn {
    io: Box<dyn Io>,
    buf: Buf,
    /// Responses read on this connection.
    served: u64,
    /// False once the server said `Connection: close`, the body ran to EOF, or an exchange
    /// failed midway: the connection's state is then unknown.
    reusable: bool,
}

impl Conn {
    pub fn new(io: Box<dyn Io>) -> Conn {
        Conn {
            io,
            buf: Buf::new(BUF),
            served: 0,
            reusable: true,
        }
    }

    /// Whether another request may be sent on this connection.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Sends `request` (a whole serialised request) and reads the response to its end.
    /// `head` is true for a HEAD request, whose response has no body whatever it says.
    /// Returns the final status. After an error the connection must be dropped.
    pub async fn exchange(&mut self, request: &[u8], head: bool) -> Result<u16, Failure> {
        let reused = self.served > 0;
        self.reusable = false;
        if let Err(e) = self.io.write_all(request).await {
            return Err(if reused && closed(&e) {
                Failure::Stale
            } else {
                Failure::Kind(io_kind(&e))
            });
        }
        let mut first_byte = true;
        loop {
            let (status, framing, close) = match self.read_head().await {
                Ok(h) => h,
                Err(HeadError::Eof) if reused && first_byte && self.buf.is_empty() => {
                    return Err(Failure::Stale);
                }
                Err(HeadError::Io(e))
                    if reused && first_byte && self.buf.is_empty() && closed(&e) =>
                {
                    return Err(Failure::Stale);
                }
                Err(HeadError::Eof) => return Err(Failure::Kind("connection closed")),
                Err(HeadError::Io(e)) => return Err(Failure::Kind(io_kind(&e))),
                Err(HeadError::Invalid) => return Err(Failure::Kind("invalid response")),
            };
            first_byte = false;
            // 1xx responses (100 Continue, 103 Early Hints) come before the real one.
            // 101 would switch protocols, which a load test never asks for.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let framing = if head || status == 204 || status == 304 || status == 101 {
                Framing::None
            } else {
                framing
            };
            let until_close = matches!(framing, Framing::UntilClose);
            self.skip_body(framing).await?;
            self.served += 1;
            self.reusable = !close && !until_close && status != 101;
            return Ok(status);
        }
    }

    /// Reads more bytes into the buffer; `Ok(false)` at EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        Ok(self.buf.fill(&mut self.io).await? > 0)
    }

    async fn read_head(&mut self) -> Result<(u16, Framing, bool), HeadError> {
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(self.buf.bytes()) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.ok_or(HeadError::Invalid)?;
                        let head = crate::http1::response(resp.version, resp.headers)
                            .map_err(|_| HeadError::Invalid)?;
                        let (framing, close) = (head.framing, head.close);
                        self.buf.consume(n);
                        return Ok((status, framing, close));
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() >= MAX_HEAD => {
                        return Err(HeadError::Invalid);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Err(HeadError::Invalid),
                }
            }
            if !self.fill().await.map_err(HeadError::Io)? {
                return Err(HeadError::Eof);
            }
        }
    }

    async fn skip_body(&mut self, framing: Framing) -> Result<(), Failure> {
        match framing {
            Framing::None => Ok(()),
            Framing::Length(n) => self.skip(n).await,
            Framing::UntilClose => loop {
                self.buf.consume(self.buf.len());
                match self.fill().await {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(e) => return Err(Failure::Kind(io_kind(&e))),
                }
            },
            Framing::Chunked => loop {
                let size = loop {
                    match httparse::parse_chunk_size(self.buf.bytes()) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            self.buf.consume(used);
                            break size;
                        }
                        Ok(httparse::Status::Partial) => self.more().await?,
                        Err(_) => return Err(Failure::Kind("invalid response")),
                    }
                };
                if size == 0 {
                    return self.skip_trailers().await;
                }
                self.skip(size).await?;
                self.expect_crlf().await?;
            },
        }
    }

    /// Discards `n` body bytes.
    async fn skip(&mut self, mut n: u64) -> Result<(), Failure> {
        loop {
            let take = ((self.buf.len()) as u64).min(n);
            self.buf.consume(take as usize);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.more().await?;
        }
    }

    async fn expect_crlf(&mut self) -> Result<(), Failure> {
        while self.buf.len() < 2 {
            self.more().await?;
        }
        if &self.buf.bytes()[..2] != b"\r\n" {
            return Err(Failure::Kind("invalid response"));
        }
        self.buf.consume(2);
        Ok(())
    }

    /// After the last chunk: trailer lines up to an empty one.
    async fn skip_trailers(&mut self) -> Result<(), Failure> {
        loop {
            match self.buf.bytes().windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.buf.consume(2);
                    return Ok(());
                }
                Some(i) => self.buf.consume(i + 2),
                None if self.buf.len() >= MAX_HEAD => {
                    return Err(Failure::Kind("invalid response"));
                }
                None => self.more().await?,
            }
        }
    }

    /// More body bytes, or a failure: EOF inside a body is a truncated response. Framing that
    /// never ends (a chunk-size line without its CRLF) stops at MAX_HEAD bytes.
    async fn more(&mut self) -> Result<(), Failure> {
        if self.buf.len() >= MAX_HEAD {
            return Err(Failure::Kind("invalid response"));
        }
        match self.fill().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::Kind("connection closed")),
            Err(e) => Err(Failure::Kind(io_kind(&e))),
        }
    }
}

enum HeadError {
    Eof,
    Io(std::io::Error),
    Invalid,
}

fn io_kind(e: &std::io::Error) -> &'static str {
    if closed(e) {
        "connection closed"
    } else {
        "io error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;
    use tokio::io::{DuplexStream, duplex};

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

    /// A connection whose server side is scripted by the test.
    fn pair() -> (Conn, DuplexStream) {
        let (client, server) = duplex(1 << 20);
        (Conn::new(Box::new(client)), server)
    }

    /// Writes `parts` one at a time with a yield in between, so the client sees split reads.
    async fn respond(server: &mut DuplexStream, parts: &[&[u8]]) {
        for p in parts {
            server.write_all(p).await.unwrap();
            server.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
    }

    /// An exchange that fails the test instead of hanging it.
    async fn ex(c: &mut Conn, req: &[u8], head: bool) -> Result<u16, Failure> {
        tokio::time::timeout(std::time::Duration::from_secs(5), c.exchange(req, head))
            .await
            .expect("the exchange should have finished")
    }

    async fn read_request(server: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        server.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn content_length_bodies_split_anywhere_leave_the_connection_ready() {
        let (mut c, mut s) = pair();
        let server = tokio::spawn(async move {
            assert_eq!(read_request(&mut s, GET.len()).await, GET);
            respond(
                &mut s,
                &[
                    b"HTTP/1.1 200 OK\r\nContent-Len",
                    b"gth: 10\r\n\r\n01234",
                    b"56789",
                ],
            )
            .await;
            assert_eq!(read_request(&mut s, GET.len()).await, GET);
            respond(
                &mut s,
                &[b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"],
            )
            .await;
            s
        });
        assert_eq!(ex(&mut c, GET, false).await, Ok(200));
        assert!(c.reusable());
        assert_eq!(ex(&mut c, GET, false).await, Ok(404));
        assert!(c.reusable());
        let _s = server.await.unwrap();
        assert!(c.buf.is_empty(), "nothing left over");
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers() {
        let (mut c, mut s) = pair();
        tokio::spawn(async move {
            read_request(&mut s, GET.len()).await;
            respond(
                &mut s,
                &[
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                    b"5;ext=1\r\nhel",
                    b"lo\r\n1",
                    b"0\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n",
                    b"\r\n",
                ],
            )
            .await;
            read_request(&mut s, GET.len()).await;
            respond(
                &mut s,
                &[b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"],
            )
            .await;
            std::future::pending::<()>().await;
        });
        assert_eq!(ex(&mut c, GET, false).await, Ok(200));
        assert_eq!(ex(&mut c, GET, false).await, Ok(201));
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_bodiless_statuses_have_no_body() {
        let (mut c, mut s) = pair();
        tokio::spawn(async move {
            read_request(&mut s, GET.len()).await;
            respond(
                &mut s,
                &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\ncontent-length: 99\r\n\r\n"],
            )
            .await;
            // HEAD: a content-length with no body after it.
            read_request(&mut s, GET.len()).await;
            respond(
                &mut s,
                &[b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"],
            )
            .await;
            read_request(&mut s, GET.len()).await;
            respond(&mut s, &[b"HTTP/1.1 304 Not Modified\r\n\r\n"]).await;
            std::future::pending::<()>().await;
        });
        assert_eq!(ex(&mut c, GET, false).await, Ok(204));
        assert_eq!(ex(&mut c, GET, true).await, Ok(200));
        assert_eq!(ex(&mut c, GET, false).await, Ok(304));
        assert!(c.reusable());
    }

    #[tokio::test]
    async fn close_delimited_bodies_and_connection_close_end_the_connection() {
        let (mut c, mut s) = pair();
        tokio::spawn(async move {
            read_request(&mut s, GET.len()).await;
            respond(&mut s, &[b"HTTP/1.1 200 OK\r\n\r\nuntil the ", b"end"]).await;
            drop(s);
        });
        assert_eq!(ex(&mut c, GET, false).await, Ok(200));
        assert!(!c.reusable());

        let (mut c, mut s) = pair();
        tokio::spawn(async move {
            read_request(&mut s, GET.len()).await;
            respond(
                &mut s,
                &[b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n"],
            )
            .await;
            std::future::pending::<()>().await;
        });
        assert_eq!(ex(&mut c, GET, false).await, Ok(200));
        assert!(!c.reusable());

        // HTTP/1.0 closes unless it asks to keep the connection alive.
        let (mut c, mut s) = pair();
        tokio::spawn(async move {
            read_request(&mut s, GET.len()).await;
            respond(&mut s, &[b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
            read_request(&mut s, GET.len()).await;
            std::future::pending::<()>().await;
        });
        assert_eq!(ex(&mut c, GET, false).await, Ok(200));
        assert!(!c.reusable());
    }

    #[tokio::test]
    async fn malformed_and_truncated_responses_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab",
                "connection closed",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                "invalid response",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: five\r\n\r\n",
                "invalid response",
            ),
            (b"SMTP ready\r\n\r\n", "invalid response"),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                "invalid response",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXY",
                "invalid response",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-le", "connection closed"),
            (b"", "connection closed"),
        ];
        for (response, want) in cases {
            let (mut c, mut s) = pair();
            let response = response.to_vec();
            tokio::spawn(async move {
                read_request(&mut s, GET.len()).await;
                s.write_all(&response).await.unwrap();
                drop(s);
            });
            assert_eq!(
                ex(&mut c, GET, false).await,
                Err(Failure::Kind(want)),
                "{}",
                String::from_utf8_lossy(response_of(cases, want))
            );
            assert!(!c.reusable());
        }
    }

    fn response_of<'a>(cases: &'a [(&'a [u8], &str)], want: &str) -> &'a [u8] {
        cases.iter().find(|c| c.1 == want).map_or(b"", |c| c.0)
    }

    #[tokio::test]
    async fn an_endless_head_is_invalid_not_a_memory_leak() {
        let (mut c, mut s) = pair();
        tokio::spawn(async move {
            read_request(&mut s, GET.len()).await;
            s.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            let line = b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
            while s.write_all(line).await.is_ok() {}
        });
        assert_eq!(
            ex(&mut c, GET, false).await,
            Err(Failure::Kind("invalid response"))
        );
        assert!(c.buf.len() <= 2 * MAX_HEAD);
    }

    #[tokio::test]
    async fn an_endless_chunk_size_line_is_invalid_too() {
        let (mut c, mut s) = pair();
        tokio::spawn(async move {
            read_request(&mut s, GET.len()).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;")
                .await
                .unwrap();
            while s.write_all(&[b'x'; 1024]).await.is_ok() {}
        });
        assert_eq!(
            ex(&mut c, GET, false).await,
            Err(Failure::Kind("invalid response"))
        );
        assert!(c.buf.len() <= 2 * MAX_HEAD);
    }

    #[tokio::test]
    async fn a_reused_connection_closed_before_any_response_byte_is_stale() {
        let (mut c, mut s) = pair();
        tokio::spawn(async move {
            read_request(&mut s, GET.len()).await;
            respond(&mut s, &[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
            // the idle timeout fires as the next request arrives.
            read_request(&mut s, GET.len()).await;
            drop(s);
        });
        assert_eq!(ex(&mut c, GET, false).await, Ok(200));
        assert_eq!(ex(&mut c, GET, false).await, Err(Failure::Stale));

        // on a fresh connection the same thing is a plain failure: the server saw the request.
        let (mut c, mut s) = pair();
        tokio::spawn(async move {
            read_request(&mut s, GET.len()).await;
            drop(s);
        });
        assert_eq!(
            ex(&mut c, GET, false).await,
            Err(Failure::Kind("connection closed"))
        );
    }
}
