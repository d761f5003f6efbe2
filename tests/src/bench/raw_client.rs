//! A keep-alive HTTP/1.1 client as lean as wrk, for loads that must look
//! at each answer (the cold start: until every key has been answered
//! valid). Requests are formatted before the clock starts; an answer is
//! read by its `Content-Length` and only its status and first bytes are
//! looked at. Measured on a 2-core machine, reqwest with serde_json cost
//! the bench more CPU per request than the API spent answering it, and the
//! bench shares the API's cores.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `POST path` with a Bearer token and a JSON body, ready to send.
pub fn post_json(port: u16, path: &str, bearer: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An answer: its status and its body.
pub struct Answer<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` that belong to the answer handed out last.
    consumed: usize,
}

impl RawClient {
    pub async fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the API");
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::with_capacity(4096),
            consumed: 0,
        }
    }

    /// Sends `request` (from `post_json`) and reads its answer.
    pub async fn send(&mut self, request: &[u8]) -> Answer<'_> {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        self.stream.write_all(request).await.expect("send");
        let head = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await;
        };
        let (status, length) = parse_head(&self.buf[..head]);
        while self.buf.len() < head + length {
            self.fill().await;
        }
        self.consumed = head + length;
        Answer {
            status,
            body: &self.buf[head..head + length],
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the API closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// Status and `Content-Length` of an answer's head; an answer without a
/// length (chunked) is not what the API sends for these requests.
fn parse_head(head: &[u8]) -> (u16, usize) {
    let text = std::str::from_utf8(head).expect("an ASCII head");
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .expect("a Content-Length");
    (status, length)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_gives_its_status_and_length() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 17\r\nx-request-id: a\r\n\r\n";
        assert_eq!(parse_head(head), (200, 17));
        let head = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_head(head), (401, 0));
    }

    #[test]
    fn a_request_declares_its_body_length() {
        let r = post_json(8080, "/api/v1/verify", "t", r#"{"apiKey":"k"}"#);
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("Content-Length: 14\r\n\r\n{\"apiKey\":\"k\"}"));
        assert!(text.starts_with("POST /api/v1/verify HTTP/1.1\r\n"));
    }
}
