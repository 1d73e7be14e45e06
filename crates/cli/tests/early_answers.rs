//! Early answers (401, 404, 413, 416) sent before a request body is read, seen from a
//! raw socket, as a proxy streaming the body sees them: the client can send its whole
//! body without a broken pipe, reads the answer, and uses the same connection again.

mod support;

#[path = "support/secure.rs"]
mod secure;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use secure::{admin, bearer_at};
use support::TestServer;

const BODY: usize = 8 << 20;

/// How the request body is framed on the wire.
#[derive(Clone, Copy, Debug)]
enum Framing {
    ContentLength,
    Chunked,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_answer(reader: &mut BufReader<TcpStream>) -> Answer {
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .expect("the answer's status line is readable");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("name: value");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("the answer's body");
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends `head` and a body of `BODY` bytes from another thread (so the answer can come
/// while the body is still going out, as through a proxy), reads the answer, and
/// returns it once the whole body was sent: a write that fails is a broken connection.
fn send_with_body(
    stream: &TcpStream,
    reader: &mut BufReader<TcpStream>,
    head: &str,
    framing: Framing,
) -> Answer {
    let mut writer = stream.try_clone().unwrap();
    let head = match framing {
        Framing::ContentLength => format!("{head}Content-Length: {BODY}\r\n\r\n"),
        Framing::Chunked => format!("{head}Transfer-Encoding: chunked\r\n\r\n"),
    };
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(head.as_bytes())?;
        let piece = vec![b'x'; 64 << 10];
        for _ in 0..BODY / piece.len() {
            match framing {
                Framing::ContentLength => writer.write_all(&piece)?,
                Framing::Chunked => {
                    writer.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
                    writer.write_all(&piece)?;
                    writer.write_all(b"\r\n")?;
                }
            }
        }
        if let Framing::Chunked = framing {
            writer.write_all(b"0\r\n\r\n")?;
        }
        writer.flush()
    });
    let answer = read_answer(reader);
    let sent = sender.join().unwrap();
    assert!(
        sent.is_ok(),
        "sending the body after an early {} failed: {:?}",
        answer.status,
        sent
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_read_the_body_and_keep_the_connection() {
    let server = TestServer::start_secure();
    let token = bearer_at(
        &server.base,
        &admin(),
        &["repository:team/app:pull,push,delete"],
    )
    .await;
    let auth = format!("Authorization: Bearer {token}\r\n");
    // A real upload session, for the 416 (a chunk that does not start where it ended).
    let c = reqwest::Client::new();
    let started = c
        .post(server.url("/v2/team/app/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_string();
    let upload_path = location
        .strip_prefix(&server.base)
        .unwrap_or(&location)
        .to_string();
    let host = format!("Host: {}\r\n", server.addr);
    let unknown = "/v2/team/app/blobs/uploads/0f6c8e0c-6b4a-4a8e-9d7e-1c2f3a4b5c6d";

    let cases: Vec<(&str, String, u16)> = vec![
        (
            "a chunk sent without credentials",
            format!("PATCH {upload_path} HTTP/1.1\r\n{host}Content-Type: application/octet-stream\r\n"),
            401,
        ),
        (
            "a chunk for an unknown upload",
            format!("PATCH {unknown} HTTP/1.1\r\n{host}{auth}"),
            404,
        ),
        (
            "a chunk whose range does not follow the upload's",
            format!("PATCH {upload_path} HTTP/1.1\r\n{host}{auth}Content-Range: 100-{}\r\n", 100 + BODY - 1),
            416,
        ),
        (
            "a manifest over the size limit",
            format!("PUT /v2/team/app/manifests/big HTTP/1.1\r\n{host}{auth}Content-Type: application/vnd.oci.image.manifest.v1+json\r\n"),
            413,
        ),
    ];
    for framing in [Framing::ContentLength, Framing::Chunked] {
        let stream = TcpStream::connect(&server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        for (what, head, status) in &cases {
            let answer = send_with_body(&stream, &mut reader, head, framing);
            assert_eq!(
                answer.status,
                *status,
                "{what} ({framing:?}): {}",
                String::from_utf8_lossy(&answer.body)
            );
            assert!(
                serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .is_ok_and(|v| v["errors"][0]["code"].is_string()),
                "{what} ({framing:?}): the answer is not the spec's error JSON: {}",
                String::from_utf8_lossy(&answer.body)
            );
            assert_ne!(
                answer.header("connection"),
                Some("close"),
                "{what} ({framing:?}): a body within the bound closes the connection"
            );
        }
        // The same connection still serves: the bodies were read, not left in the way.
        (&stream)
            .write_all(format!("GET /v2/ HTTP/1.1\r\n{host}{auth}\r\n").as_bytes())
            .unwrap();
        let answer = read_answer(&mut reader);
        assert_eq!(
            answer.status, 200,
            "GET /v2/ after the early answers ({framing:?})"
        );
    }
}
