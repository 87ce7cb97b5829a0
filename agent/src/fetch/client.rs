//! A small HTTP/1.1 client for the agent: GET (whole or byte range) and
//! POST of JSON, one connection per request, every read and write under a
//! timeout and every body under a size bound. Plain HTTP by design: the
//! image's integrity comes from the signed manifest, not the channel.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use kernel_cmdline::ServerUrl;

use super::response::{dechunk, head_end, parse_head, Head, MAX_HEAD};

/// Talks to one drover server.
#[derive(Debug, Clone)]
pub struct Client {
    pub server: ServerUrl,
    /// Connect, and each read or write, give up after this long.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer …` when set.
    pub token: Option<String>,
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(server: ServerUrl) -> Client {
        Client {
            server,
            timeout: Duration::from_secs(30),
            token: None,
        }
    }

    /// The full URL of a server-relative path, for messages.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// GET `path`, expecting 200 and at most `limit` body bytes.
    pub fn get(&self, path: &str, limit: usize) -> Result<Vec<u8>> {
        let r = self.request("GET", path, None, None, limit)?;
        expect(&r, 200, &self.url(path))?;
        Ok(r.body)
    }

    /// GET `len` bytes of `path` from `offset` (a ranged GET). Accepts a 206
    /// whose Content-Range matches, or a 200 when the range is the whole file.
    pub fn get_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let last = offset + len as u64 - 1;
        let range = format!("bytes={offset}-{last}");
        let r = self.request("GET", path, Some(&range), None, len)?;
        let url = self.url(path);
        match (r.head.status, r.head.content_range) {
            (206, Some((first, l, _))) if first == offset && l == last => {}
            (206, other) => {
                bail!("{url}: asked for bytes {offset}-{last}, server sent range {other:?}")
            }
            (200, _) if offset == 0 && r.body.len() == len => {}
            _ => expect(&r, 206, &url)?,
        }
        if r.body.len() != len {
            bail!(
                "{url}: range {offset}-{last} returned {} bytes, expected {len}",
                r.body.len()
            );
        }
        Ok(r.body)
    }

    /// POST a JSON body; returns the response for the caller to judge.
    pub fn post_json(&self, path: &str, json: &[u8], limit: usize) -> Result<Response> {
        self.request("POST", path, None, Some(json), limit)
    }

    /// Any method, with an optional JSON body; returns the response,
    /// whatever its status, for the caller to judge (the server's admin
    /// CLI: DELETE, and error bodies shown whole).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        json: Option<&[u8]>,
        limit: usize,
    ) -> Result<Response> {
        self.request(method, path, None, json, limit)
    }

    fn connect(&self) -> Result<TcpStream> {
        let authority = self.server.authority();
        let addrs: Vec<SocketAddr> = authority
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(anyhow!(e).context(format!("connecting to {a}"))),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("{authority} resolves to no address")))
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        range: Option<&str>,
        body: Option<&[u8]>,
        limit: usize,
    ) -> Result<Response> {
        let url = self.url(path);
        let mut s = self.connect().with_context(|| format!("{method} {url}"))?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: drover-agent/{}\r\nConnection: close\r\n",
            self.server.path,
            self.server.authority(),
            crate::VERSION
        );
        if let Some(r) = range {
            req += &format!("Range: {r}\r\n");
        }
        if let Some(t) = &self.token {
            req += &format!("Authorization: Bearer {t}\r\n");
        }
        if let Some(b) = body {
            req += &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            );
        }
        req += "\r\n";
        s.write_all(req.as_bytes())
            .and_then(|()| s.write_all(body.unwrap_or_default()))
            .with_context(|| format!("sending {method} {url}"))?;
        read_response(&mut s, limit).with_context(|| format!("{method} {url}"))
    }
}

/// Read one response: the head (bounded), then exactly Content-Length body
/// bytes, a chunked body, or (neither given) up to EOF — never more than
/// `limit` body bytes.
fn read_response(s: &mut impl Read, limit: usize) -> Result<Response> {
    let mut buf = Vec::with_capacity(8192);
    let mut tmp = [0u8; 8192];
    let end = loop {
        if let Some(e) = head_end(&buf) {
            break e;
        }
        if buf.len() > MAX_HEAD {
            bail!("response head larger than {MAX_HEAD} bytes");
        }
        let n = s.read(&mut tmp).context("reading response head")?;
        if n == 0 {
            bail!("connection closed before the response head was complete");
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = parse_head(&buf[..end])?;
    let mut body = buf.split_off(end);
    // Read the rest with a hard cap: the declared length if any, else the limit.
    let cap = match (head.chunked, head.content_length) {
        (false, Some(len)) => {
            if len > limit as u64 {
                bail!("response body of {len} bytes exceeds the limit of {limit}");
            }
            len as usize
        }
        // Chunk framing adds a little: allow for it, dechunk re-checks the limit.
        (true, _) => limit + limit / 8 + 4096,
        (false, None) => limit,
    };
    while body.len() < cap {
        let want = (cap - body.len()).min(1 << 20);
        let start = body.len();
        body.resize(start + want, 0);
        let n = s
            .read(&mut body[start..])
            .context("reading response body")?;
        body.truncate(start + n);
        if n == 0 {
            break;
        }
        if head.chunked && body.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    let body = if head.chunked {
        dechunk(&body, limit)?
    } else {
        if let Some(len) = head.content_length {
            if (body.len() as u64) < len {
                bail!("connection closed after {} of {len} body bytes", body.len());
            }
            body.truncate(len as usize);
        }
        body
    };
    Ok(Response { head, body })
}

fn expect(r: &Response, status: u16, url: &str) -> Result<()> {
    if r.head.status != status {
        let text = String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
            .trim()
            .to_string();
        return Err(StatusError {
            url: url.to_owned(),
            status: r.head.status,
            reason: r.head.reason.clone(),
            text,
        }
        .into());
    }
    Ok(())
}

/// The server answered, but not with the status expected.
#[derive(Debug, thiserror::Error)]
#[error("{url}: server answered {status} {reason}{}", if text.is_empty() { String::new() } else { format!(": {text}") })]
pub struct StatusError {
    pub url: String,
    pub status: u16,
    pub reason: String,
    /// The start of the body: servers say why there.
    pub text: String,
}

/// Whether asking again later may help: the server could not be reached,
/// the connection broke or timed out, or it answered 5xx. A 4xx, a bad
/// signature or a malformed manifest are final.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some()
            || c.downcast_ref::<StatusError>()
                .is_some_and(|s| s.status >= 500)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serve one canned response on loopback and return the client.
    fn serve(response: &'static [u8]) -> (Client, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = vec![0u8; 4096];
            let n = s.read(&mut req).unwrap();
            s.write_all(response).unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let server: ServerUrl = format!("http://127.0.0.1:{port}/base").parse().unwrap();
        let mut c = Client::new(server);
        c.timeout = Duration::from_secs(5);
        (c, h)
    }

    #[test]
    fn ranged_get_checks_the_range() {
        let (c, h) = serve(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 4\r\nContent-Range: bytes 10-13/100\r\n\r\nabcd");
        assert_eq!(c.get_range("/payload", 10, 4).unwrap(), b"abcd");
        let req = h.join().unwrap();
        assert!(req.starts_with("GET /base/payload HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Range: bytes=10-13\r\n"), "{req}");

        let (c, _) = serve(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 4\r\nContent-Range: bytes 0-3/100\r\n\r\nabcd");
        let e = c.get_range("/payload", 10, 4).unwrap_err();
        assert!(format!("{e:#}").contains("asked for bytes 10-13"), "{e:#}");
    }

    #[test]
    fn short_body_is_an_error_not_data() {
        let (c, _) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        let e = c.get("/x", 100).unwrap_err();
        assert!(format!("{e:#}").contains("after 3 of 10"), "{e:#}");
    }

    #[test]
    fn oversized_body_is_refused() {
        let (c, _) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
        let e = c.get("/x", 100).unwrap_err();
        assert!(format!("{e:#}").contains("exceeds the limit"), "{e:#}");
    }

    #[test]
    fn chunked_and_errors() {
        let (c, _) =
            serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(c.get("/x", 100).unwrap(), b"abc");
        let (c, _) = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nno such image");
        let e = c.get("/x", 100).unwrap_err();
        assert!(
            format!("{e:#}").contains("404 Not Found: no such image"),
            "{e:#}"
        );
    }

    #[test]
    fn unreachable_server_names_the_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Client::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let e = c.get("/x", 10).unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("127.0.0.1:{port}")),
            "{e:#}"
        );
    }
}
