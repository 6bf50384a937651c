//! A minimal single-threaded HTTP/1.1 keep-alive server for `bench/run.sh`: one tokio
//! current-thread runtime, a fixed 2-byte response, no parsing beyond finding the end of each
//! request head. It is there to be cheaper than any generator, so the generators are measured.
//!
//! Usage: `bench_server PORT` (bind 127.0.0.1).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18080);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (mut sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut filled = 0usize;
                loop {
                    let n = match sock.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    filled += n;
                    // answer every complete request head in the buffer (GET, no body).
                    let mut responses = 0;
                    let mut start = 0;
                    while let Some(pos) =
                        buf[start..filled].windows(4).position(|w| w == b"\r\n\r\n")
                    {
                        start += pos + 4;
                        responses += 1;
                    }
                    buf.copy_within(start..filled, 0);
                    filled -= start;
                    if filled == buf.len() {
                        return; // a request head larger than 8 KiB: not a benchmark request.
                    }
                    for _ in 0..responses {
                        if sock.write_all(RESPONSE).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    })
}
