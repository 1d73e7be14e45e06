//! nginx (Debian's) as the load balancer in front of replicas, configured as
//! docs/cluster.md recommends: round robin, no request buffering (uploads stream
//! through), no response buffering, HTTP/1.1 keep-alive to the replicas, and a response
//! header naming the replica that answered. Stopped with SIGTERM on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// `server_params` go on every `server` line of the upstream (e.g.
    /// `max_fails=1 fail_timeout=2s`); `next_upstream` is `proxy_next_upstream`'s value.
    pub fn start(upstreams: &[String], server_params: &str, next_upstream: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::support::free_port();
        let servers: String = upstreams
            .iter()
            .map(|a| format!("    server {a} {server_params};\n"))
            .collect();
        // `user` only matters when the master runs as root (then workers may read the
        // temp directory); otherwise nginx ignores it with a warning.
        let conf = format!(
            r#"user root;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream wharf {{
{servers}    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    location / {{
      proxy_pass http://wharf;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_next_upstream {next_upstream};
      proxy_read_timeout 60s;
      add_header X-Upstream $upstream_addr always;
    }}
  }}
}}
"#,
            dir = dir.path().display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let base = format!("http://127.0.0.1:{port}");
        wait_until_listening(port);
        Nginx { child, base, dir }
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    pub fn access_log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if crate::support::wait_with_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
