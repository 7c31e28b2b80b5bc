//! A small fake OCI registry on loopback, one thread per connection, `Connection: close`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use corral_image::Digest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The first download stops halfway and the connection closes.
    CutOnce,
    /// Downloads send half the blob, then nothing, forever.
    Stall,
    /// Downloads send other bytes than the digest promises.
    Corrupt,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, Vec<u8>>,
    manifests: HashMap<(String, String), Vec<u8>>,
    uploads: HashMap<String, Vec<u8>>,
    next_upload: usize,
    faults: HashMap<String, Fault>,
    basic: Option<String>,
    bearer: Option<(String, String)>,
    requests: Vec<String>,
}

pub struct Fake {
    addr: String,
    state: Arc<Mutex<State>>,
}

impl Fake {
    pub fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let (st, a) = (state.clone(), addr.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (st, a) = (st.clone(), a.clone());
                std::thread::spawn(move || handle(conn, &st, &a));
            }
        });
        Fake { addr, state }
    }

    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    pub fn require_basic(&self, user: &str, pass: &str) {
        self.state.lock().unwrap().basic = Some(corral_registry::auth::base64(format!("{user}:{pass}").as_bytes()));
    }

    pub fn require_bearer(&self, user: &str, pass: &str) {
        let basic = corral_registry::auth::base64(format!("{user}:{pass}").as_bytes());
        self.state.lock().unwrap().bearer = Some((basic, "tok-123".into()));
    }

    pub fn fault(&self, digest: &Digest, fault: Fault) {
        self.state.lock().unwrap().faults.insert(digest.to_string(), fault);
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn has_manifest(&self, repo: &str, tag: &str, digest: &Digest) -> bool {
        let st = self.state.lock().unwrap();
        st.manifests.get(&(repo.to_string(), tag.to_string())).is_some_and(|m| Digest::of(m) == *digest)
    }

    /// Adds an image with one gzip layer of about `size` bytes; returns the layer digest and size.
    pub fn add_image(&self, repo: &str, tag: &str, size: usize) -> (Digest, u64) {
        let mut tar = tar::Builder::new(Vec::new());
        let content: Vec<u8> = (0..size).map(|i| (i * 7919 % 251) as u8).collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "data.bin", &content[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let diff_id = Digest::of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        gz.write_all(&tar).unwrap();
        let layer = gz.finish().unwrap();
        let layer_digest = Digest::of(&layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        let config_digest = Digest::of(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let mut st = self.state.lock().unwrap();
        let size = layer.len() as u64;
        st.blobs.insert(config_digest.to_string(), config.into_bytes());
        st.blobs.insert(layer_digest.to_string(), layer);
        st.manifests.insert((repo.to_string(), tag.to_string()), manifest.into_bytes());
        (layer_digest, size)
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(conn: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length").and_then(|n| n.parse::<usize>().ok()) {
        body.resize(n, 0);
        conn.read_exact(&mut body).ok()?;
    } else if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            conn.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(Request { method, path, headers, body })
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.write_all(body);
}

fn handle(stream: TcpStream, state: &Mutex<State>, addr: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(req) = read_request(&mut reader) else { return };
    let mut conn = stream;
    let range = req.headers.get("range").cloned();
    state.lock().unwrap().requests.push(format!(
        "{} {}{}",
        req.method,
        req.path,
        range.as_ref().map(|r| format!(" range={r}")).unwrap_or_default()
    ));
    // Authentication.
    let auth = req.headers.get("authorization").cloned().unwrap_or_default();
    let (basic, bearer) = {
        let st = state.lock().unwrap();
        (st.basic.clone(), st.bearer.clone())
    };
    if req.path.starts_with("/token") {
        return match bearer {
            Some((creds, token)) if auth == format!("Basic {creds}") => {
                respond(&mut conn, "200 OK", &[], format!(r#"{{"token":"{token}"}}"#).as_bytes())
            }
            _ => respond(&mut conn, "401 Unauthorized", &[], b"{}"),
        };
    }
    if let Some((_, token)) = &bearer {
        if auth != format!("Bearer {token}") {
            let repo = req
                .path
                .trim_start_matches("/v2/")
                .split("/manifests/")
                .next()
                .unwrap_or("")
                .split("/blobs/")
                .next()
                .unwrap_or("");
            let challenge =
                format!(r#"Bearer realm="http://{addr}/token",service="fake",scope="repository:{repo}:pull""#);
            return respond(&mut conn, "401 Unauthorized", &[("WWW-Authenticate", challenge)], b"{}");
        }
    }
    if let Some(creds) = &basic {
        if auth != format!("Basic {creds}") {
            return respond(
                &mut conn,
                "401 Unauthorized",
                &[("WWW-Authenticate", r#"Basic realm="fake""#.into())],
                b"{}",
            );
        }
    }
    let path = req.path.split('?').next().unwrap_or("").to_string();
    let query = req.path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
    let rest = path.trim_start_matches("/v2/");
    if let Some((repo, reference)) = rest.split_once("/manifests/") {
        let key = (repo.to_string(), reference.to_string());
        if req.method == "PUT" {
            state.lock().unwrap().manifests.insert(key, req.body.clone());
            let d = Digest::of(&req.body).to_string();
            return respond(&mut conn, "201 Created", &[("Docker-Content-Digest", d)], b"");
        }
        let found = state.lock().unwrap().manifests.get(&key).cloned();
        return match found {
            Some(m) => respond(
                &mut conn,
                "200 OK",
                &[
                    ("Content-Type", "application/vnd.oci.image.manifest.v1+json".into()),
                    ("Docker-Content-Digest", Digest::of(&m).to_string()),
                ],
                &m,
            ),
            None => respond(&mut conn, "404 Not Found", &[], b"{}"),
        };
    }
    if let Some((_, digest)) = rest.split_once("/blobs/") {
        if digest == "uploads/" || digest == "uploads" {
            let id = {
                let mut st = state.lock().unwrap();
                st.next_upload += 1;
                let id = format!("u{}", st.next_upload);
                st.uploads.insert(id.clone(), Vec::new());
                id
            };
            return respond(&mut conn, "202 Accepted", &[("Location", format!("/upload/{id}"))], b"");
        }
        let (blob, fault) = {
            let st = state.lock().unwrap();
            (st.blobs.get(digest).cloned(), st.faults.get(digest).copied())
        };
        let Some(blob) = blob else { return respond(&mut conn, "404 Not Found", &[], b"{}") };
        if req.method == "HEAD" {
            return respond(&mut conn, "200 OK", &[], b"");
        }
        let start: usize = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse().ok())
            .unwrap_or(0);
        let body = &blob[start.min(blob.len())..];
        let status = if start > 0 { "206 Partial Content" } else { "200 OK" };
        match fault {
            Some(Fault::CutOnce) | Some(Fault::Stall) => {
                if fault == Some(Fault::CutOnce) {
                    state.lock().unwrap().faults.remove(digest);
                }
                let head = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body[..body.len() / 2]);
                let _ = conn.flush();
                if fault == Some(Fault::Stall) {
                    // Hold the connection open, sending nothing, until the test process ends.
                    loop {
                        std::thread::park();
                    }
                }
            }
            Some(Fault::Corrupt) => {
                let mut bad = body.to_vec();
                bad[0] ^= 0xff;
                respond(&mut conn, status, &[], &bad);
            }
            None => respond(&mut conn, status, &[], body),
        }
        return;
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        let mut st = state.lock().unwrap();
        let Some(buf) = st.uploads.get_mut(id) else { return respond(&mut conn, "404 Not Found", &[], b"") };
        buf.extend_from_slice(&req.body);
        if req.method == "PATCH" {
            let end = buf.len().saturating_sub(1);
            return respond(
                &mut conn,
                "202 Accepted",
                &[("Location", format!("/upload/{id}")), ("Range", format!("0-{end}"))],
                b"",
            );
        }
        let want = query.split('&').find_map(|kv| kv.strip_prefix("digest=")).unwrap_or("").replace("%3A", ":");
        let data = st.uploads.remove(id).unwrap_or_default();
        if Digest::of(&data).to_string() != want {
            drop(st);
            return respond(&mut conn, "400 Bad Request", &[], br#"{"errors":[{"code":"DIGEST_INVALID"}]}"#);
        }
        st.blobs.insert(want, data);
        drop(st);
        return respond(&mut conn, "201 Created", &[], b"");
    }
    respond(&mut conn, "404 Not Found", &[], b"{}");
}
