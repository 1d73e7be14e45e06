//! Closing a listening socket without resetting connections a client already uses.
//!
//! The kernel completes TCP handshakes on its own and queues the connections until the
//! server accepts them. Closing the listener resets every connection still queued, and
//! the client may have sent its request down one already: a proxy in front then sees a
//! reset *after* sending, which it may not retry (nginx does not when it streams request
//! bodies, `proxy_request_buffering off`), and answers `502`. Under load the accept loop
//! lags and a few connections are always queued, so each replica stopped in a rolling
//! upgrade could cost a client a request.
//!
//! So, before the listener is closed, [`stop_accepting`]:
//! 1. attaches a socket filter that drops every packet reaching the listener: new
//!    handshakes go unanswered (the client's SYN is retransmitted, and once the
//!    listener is closed it is refused, so the proxy tries another replica without
//!    having sent anything);
//! 2. waits, still accepting, until the accept queue is empty (`TCP_INFO` on a
//!    listening socket reports the queue's length in `tcpi_unacked`).
//!
//! Connections accepted before the filter was attached are separate sockets and keep
//! working; the filter is only copied to connections created after it, and none are.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How long the accept queue may take to empty before the listener is closed anyway.
const QUEUE_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Stops new connections reaching the listener `fd`, then waits until every connection
/// already queued on it was accepted (or [`QUEUE_DRAIN_LIMIT`] passed). The caller's
/// accept loop must keep running meanwhile; `fd` must stay open until this returns.
/// Failures are logged: the listener is then closed as before.
pub async fn stop_accepting(fd: RawFd) {
    if let Err(e) = drop_new_handshakes(fd) {
        tracing::warn!(error = %e, "could not stop new connections before closing the listener");
        return;
    }
    let start = Instant::now();
    loop {
        match queued_connections(fd) {
            Ok(0) => return,
            Ok(n) if start.elapsed() >= QUEUE_DRAIN_LIMIT => {
                tracing::warn!(
                    queued = n,
                    "the accept queue did not empty in time; closing the listener"
                );
                return;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the listener's accept queue");
                return;
            }
        }
    }
}

/// Attaches a classic BPF program of one instruction, "return 0" (keep no byte of the
/// packet), to the socket: every packet for the listener is dropped.
fn drop_new_handshakes(fd: RawFd) -> std::io::Result<()> {
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let mut drop_all = [libc::sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let program = libc::sock_fprog {
        len: drop_all.len() as u16,
        filter: drop_all.as_mut_ptr(),
    };
    // SAFETY: `program` points at `drop_all`, both alive for the call; the kernel copies
    // the program.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&program as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Connections the kernel has queued on the listening socket `fd`, not yet accepted.
fn queued_connections(fd: RawFd) -> std::io::Result<u32> {
    // SAFETY: tcp_info is plain data; the kernel writes at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(info.tcpi_unacked)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Connections queued before the listener stops accepting are all accepted and
    /// answered; a connection attempted afterwards never completes its handshake, and
    /// is refused once the listener is closed.
    #[tokio::test]
    async fn queued_connections_are_accepted_and_later_ones_are_not_reset_after_sending() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.as_raw_fd();
        // Three clients connect and send before anything is accepted: all queued.
        let mut early = Vec::new();
        for i in 0..3u8 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&[i]).await.unwrap();
            early.push(c);
        }
        assert_eq!(queued_connections(fd).unwrap(), 3);
        // The server stops accepting new connections while its loop drains the queue.
        let server = tokio::spawn(async move {
            let mut answered = 0;
            let mut stop = Box::pin(stop_accepting(listener.as_raw_fd()));
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    accepted = listener.accept() => {
                        let (mut s, _) = accepted.unwrap();
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).await.unwrap();
                        s.write_all(&[b[0] + 100]).await.unwrap();
                        answered += 1;
                    }
                }
            }
            drop(listener);
            answered
        });
        for (i, c) in early.iter_mut().enumerate() {
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i as u8 + 100);
        }
        assert_eq!(
            server.await.unwrap(),
            3,
            "every queued connection was served"
        );
        // The listener is closed: a new connection is refused, not reset after sending.
        let late = tokio::net::TcpStream::connect(addr).await;
        assert_eq!(
            late.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
    }

    /// A handshake attempted after the filter went on is not completed by the kernel
    /// (nothing is queued that closing would reset).
    #[tokio::test]
    async fn no_handshake_completes_once_new_connections_are_dropped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop_new_handshakes(listener.as_raw_fd()).unwrap();
        let attempt = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        assert!(attempt.is_err(), "the handshake completed: {attempt:?}");
        assert_eq!(queued_connections(listener.as_raw_fd()).unwrap(), 0);
    }
}
