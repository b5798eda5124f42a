//! A loopback HTTP file server for stand-ins of what a captain reaches over the network (the
//! Go download server, a module proxy): files given in memory or read from a directory,
//! counting the requests it answers, stopped when dropped.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) struct HttpFiles {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    addr: std::net::SocketAddr,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    stopped: Arc<AtomicBool>,
}

impl HttpFiles {
    /// Serves what [`HttpFiles::serve`] adds, then (for other paths) the files below `root`.
    pub(crate) fn start(root: Option<&Path>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files = Arc::new(Mutex::new(HashMap::<String, Vec<u8>>::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (served, counted, stop) = (files.clone(), requests.clone(), stopped.clone());
        let asked = paths.clone();
        let root: Option<PathBuf> = root.map(Path::to_owned);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut client) = client else { continue };
                let mut reader = std::io::BufReader::new(client.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                        break;
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                // As a static file server: the query (git's `?service=`) is not part of the file.
                let target = line.split_whitespace().nth(1).unwrap_or("/");
                let path = target.split('?').next().unwrap_or("/").to_owned();
                asked.lock().unwrap().push(path.clone());
                let body = served.lock().unwrap().get(&path).cloned().or_else(|| {
                    let root = root.as_ref()?;
                    (!path.contains("..")).then_some(())?;
                    std::fs::read(root.join(path.trim_start_matches('/'))).ok()
                });
                let _ = match body {
                    Some(body) => client
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| client.write_all(&body)),
                    None => client.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        Self {
            url: format!("http://{addr}"),
            addr,
            files,
            requests,
            paths,
            stopped,
        }
    }

    /// Serves `body` at `path` (`/dl/go1.99.1.linux-amd64.tar.gz`).
    pub(crate) fn serve(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_owned(), body);
    }

    /// The paths asked for so far, in order.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    /// How many requests it answered.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpFiles {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and closes the listener.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}
